"""Engine settings, URL handling and schema state on real SQLite files."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from sengd.store.db import (
    DEFAULT_DATABASE_URL,
    SchemaState,
    create_store_engine,
    database_url,
    display_url,
    head_revision,
    migrate,
    open_database,
    require_current,
    schema_status,
)
from sengd.store.errors import SchemaTooNew, UpgradeRequired
from sengd.store.models import App, AuditEvent


def test_default_url_is_the_documented_file() -> None:
    assert DEFAULT_DATABASE_URL == "sqlite:////var/lib/seng/seng.db"
    assert database_url(DEFAULT_DATABASE_URL).database == "/var/lib/seng/seng.db"


def test_urls_and_paths(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "x.db")).render_as_string() == f"sqlite:///{tmp_path}/x.db"
    assert database_url("postgresql://u:secret@db/seng").drivername == "postgresql+psycopg"
    assert "secret" not in display_url(database_url("postgresql://u:secret@db/seng"))
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        database_url("mysql://u@db/seng")
    with pytest.raises(ValueError, match="empty"):
        database_url("")
    with pytest.raises(ValueError, match="not a database URL"):
        database_url("::://")


def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "seng.db"  # missing parents are created
    engine = create_store_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    assert path.exists()
    assert (path.parent.stat().st_mode & 0o777) == 0o750
    engine.dispose()


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO app_host_routes (app_id, host_network, host_prefix_len, "
                "enclave_subnet_id) VALUES (99, 0, 0, 99)"
            )
        )


def test_writers_queue_instead_of_failing(tmp_path: Path) -> None:
    # Two engines (as two processes would) write at once: the second waits for the first
    # (BEGIN IMMEDIATE + busy timeout) instead of failing with "database is locked".
    url = f"sqlite:///{tmp_path / 'seng.db'}"
    first, second = create_store_engine(url), create_store_engine(url)
    migrate(first)
    holding = threading.Event()
    errors: list[BaseException] = []

    def hold_write_lock() -> None:
        try:
            with first.begin() as conn:
                conn.execute(text("INSERT INTO categories (name, description) VALUES ('a', '')"))
                holding.set()
                threading.Event().wait(0.5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=hold_write_lock)
    thread.start()
    assert holding.wait(5)
    with second.begin() as conn:
        conn.execute(text("INSERT INTO categories (name, description) VALUES ('b', '')"))
    thread.join()
    assert not errors
    with second.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM categories")).scalar() == 2
    first.dispose()
    second.dispose()


def test_schema_states_and_upgrade(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'seng.db'}")
    assert schema_status(engine).state is SchemaState.EMPTY
    with pytest.raises(UpgradeRequired, match=r"no schema .* `sengadm db upgrade"):
        require_current(engine)
    assert migrate(engine) == (None, head_revision())
    assert migrate(engine) == (head_revision(), head_revision())  # idempotent
    assert schema_status(engine).state is SchemaState.CURRENT
    require_current(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    status = schema_status(engine)
    assert (status.state, status.current) == (SchemaState.TOO_NEW, "ffff_future")
    with pytest.raises(SchemaTooNew, match="newer seng-gateway"):
        migrate(engine)
    with pytest.raises(SchemaTooNew):
        require_current(engine)
    engine.dispose()


def test_open_database_upgrades_unless_forbidden(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'seng.db'}"
    with pytest.raises(UpgradeRequired, match="automatic upgrades are disabled"):
        open_database(url, auto_upgrade=False)
    engine = open_database(url)
    assert schema_status(engine).state is SchemaState.CURRENT
    engine.dispose()
    engine = open_database(url, auto_upgrade=False)  # already current: accepted
    engine.dispose()


def test_times_are_aware_utc_and_naive_ones_refused(engine: Engine) -> None:
    local = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    with Session(engine) as session:
        session.add(
            AuditEvent(
                at=local, actor_name="t", action="test", object_type="none", after={"k": [1, "x"]}
            )
        )
        session.commit()
    with Session(engine) as session:
        event = session.scalars(select(AuditEvent)).one()
        assert event.at == local
        assert event.at.tzinfo is UTC
        assert event.at.hour == 5
        assert event.after == {"k": [1, "x"]}
        session.add(
            AuditEvent(at=datetime(2031, 1, 1), actor_name="t", action="x", object_type="y")
        )
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


def test_an_entry_needs_mrenclave_or_signer_and_product(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(App(name="nothing", denied_advisories=[]))
        with pytest.raises(IntegrityError, match="match_mode"):
            session.commit()
        session.rollback()
        session.add(App(name="signer only", mr_signer=b"s" * 32, denied_advisories=[]))
        with pytest.raises(IntegrityError, match="match_mode"):
            session.commit()
        session.rollback()
        session.add(App(name="by signer", mr_signer=b"s" * 32, isv_prod_id=1, denied_advisories=[]))
        session.add(App(name="by enclave", mr_enclave=b"e" * 32, denied_advisories=[]))
        session.commit()
