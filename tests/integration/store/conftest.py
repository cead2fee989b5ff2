"""Fixtures of the store integration tests: a private PostgreSQL server and per-test databases.

`db_url` runs a test once on a fresh SQLite file and once on a fresh PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .pg import PostgresServer, private_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL server for the whole session (fails if PostgreSQL is missing)."""
    with private_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database, dropped after the test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh empty database URL: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'seng.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
