"""Fixtures of the store unit tests: a migrated SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from sengd.store.db import create_store_engine, migrate


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite file upgraded to head."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'seng.db'}")
    migrate(engine)
    yield engine
    engine.dispose()
