"""Engines, sessions and schema migrations for SQLite (embedded default) and PostgreSQL.

Every connection gets the same guarantees whatever the backend:
- SQLite: WAL journal (readers never block the writer), `synchronous=NORMAL` (a crash of the
  process loses nothing committed; a power loss may lose the last transactions, never corrupt
  the file), foreign keys enforced, a busy timeout, and every transaction starts with
  `BEGIN IMMEDIATE` so that two writers queue on the busy timeout instead of failing on a lock
  upgrade. The directory of the database file is created if missing.
- PostgreSQL: the psycopg 3 driver (a bare `postgresql://` URL is taken to mean it), liveness
  checked on checkout; migrations hold an advisory lock so gateways starting together upgrade
  once.

Migrations are alembic scripts inside the package (`sengd/migrations`), run programmatically: no
alembic.ini is needed at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from sengd.store.errors import SchemaError, SchemaTooNew, UpgradeRequired

DEFAULT_DATABASE_URL = "sqlite:////var/lib/seng/seng.db"
"""The embedded database of a single gateway."""

SQLITE_BUSY_TIMEOUT_MS = 5000
"""How long a SQLite writer waits for another one before giving up."""

MIGRATION_LOCK_ID = 0x5E46_0001
"""PostgreSQL advisory lock key held while migrating (any constant unique to seng-gateway)."""

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class SchemaState(StrEnum):
    """Where a database stands relative to this software's migration head."""

    CURRENT = "current"
    EMPTY = "empty"
    """No seng-gateway schema at all (a new database)."""
    OUTDATED = "outdated"
    """An older schema: `sengadm db upgrade` (or an upgrading start) brings it to head."""
    TOO_NEW = "too-new"
    """A revision this release does not know: written by a newer release."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The revision a database is at, this software's head, and what that means."""

    current: str | None
    head: str
    state: SchemaState


def database_url(value: str) -> URL:
    """Parse a database URL, or a plain file path meaning an SQLite file.

    `postgresql://` without a driver selects psycopg 3 (the only PostgreSQL driver installed).
    Raises `ValueError` with the reason when `value` is neither.
    """
    if "://" not in value:
        if not value:
            raise ValueError("empty database URL")
        return URL.create("sqlite", database=str(Path(value).absolute()))
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {value!r}") from exc
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ValueError(
            f"unsupported database {url.get_backend_name()!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return url


def display_url(url: URL | str) -> str:
    """The URL with any password masked, for messages and logs."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: the "begin" listener issues the BEGIN itself, so the
    # driver's implicit deferred BEGIN (which can fail on lock upgrade) never happens.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Straight to the driver: this runs for every transaction, on the allocator's hot path.
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def create_store_engine(url: URL | str, **kwargs: Any) -> Engine:
    """Create an engine for `url` (see `database_url`) with the store's connection settings.

    For an SQLite file, the parent directory is created (mode 0750) when missing.
    Extra keyword arguments go to `sqlalchemy.create_engine`.
    """
    parsed = url if isinstance(url, URL) else database_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to `engine`; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic `Config` for the packaged migrations, optionally bound to `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision this software ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise SchemaError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _has_store_tables(connection: Connection) -> bool:
    # alembic_version alone (left by a downgrade to base) is no schema.
    return bool(set(inspect(connection).get_table_names()) - {"alembic_version"})


def status_on(connection: Connection) -> SchemaStatus:
    """Compare the revision of the database behind `connection` with this software's head."""
    script = ScriptDirectory.from_config(alembic_config())
    head = head_revision()
    current = _current_revision(connection)
    if current is None:
        state = SchemaState.OUTDATED if _has_store_tables(connection) else SchemaState.EMPTY
    elif current == head:
        state = SchemaState.CURRENT
    else:
        try:
            script.get_revision(current)
        except CommandError:
            state = SchemaState.TOO_NEW
        else:
            state = SchemaState.OUTDATED
    return SchemaStatus(current=current, head=head, state=state)


def schema_status(engine: Engine) -> SchemaStatus:
    """Compare the database's revision with this software's head (reads only)."""
    with engine.connect() as connection:
        return status_on(connection)


def _too_new(connection: Connection, status: SchemaStatus) -> SchemaTooNew:
    return SchemaTooNew(
        f"database {display_url(connection.engine.url)} is at revision {status.current}, "
        f"unknown to this release (head {status.head}): it was upgraded by a newer seng-gateway"
    )


def _lock_for_migration(connection: Connection) -> None:
    # PostgreSQL: gateways starting together migrate one after the other. SQLite needs no
    # lock: every transaction begins IMMEDIATE, which already excludes other writers.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})


def upgrade_on(connection: Connection, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade inside the caller's transaction on `connection`; return (before, after).

    Refuses (`SchemaTooNew`) a database at a revision this release does not know.
    """
    _lock_for_migration(connection)
    status = status_on(connection)
    if status.state is SchemaState.TOO_NEW:
        raise _too_new(connection, status)
    before = status.current
    command.upgrade(alembic_config(connection), revision)
    return before, _current_revision(connection)


def migrate(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to `revision` (default: head); return (before, after) revisions.

    One transaction (DDL is transactional on both backends: a failed upgrade leaves the old
    schema). Idempotent; safe when several gateways start at once (they serialize on a lock
    and the later ones find nothing to do). Refuses (`SchemaTooNew`) a database at a revision
    this release does not know.
    """
    with engine.begin() as connection:
        return upgrade_on(connection, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the database to `revision` (default: base, i.e. drop everything we own)."""
    with engine.begin() as connection:
        _lock_for_migration(connection)
        command.downgrade(alembic_config(connection), revision)


def require_current_on(
    connection: Connection, why: str = "automatic upgrades are disabled"
) -> None:
    """Raise unless the database behind `connection` is exactly at this software's head.

    `UpgradeRequired` (saying `why` the upgrade is not done here, and what to run) for an
    empty or older database, `SchemaTooNew` for a newer one.
    """
    status = status_on(connection)
    if status.state is SchemaState.CURRENT:
        return
    if status.state is SchemaState.TOO_NEW:
        raise _too_new(connection, status)
    found = "no schema" if status.state is SchemaState.EMPTY else f"revision {status.current}"
    raise UpgradeRequired(
        f"database {display_url(connection.engine.url)} has {found} but this release needs "
        f"revision {status.head}, and {why}: run `sengadm db upgrade --db URL`"
    )


def require_current(engine: Engine) -> None:
    """Raise unless the database is exactly at this software's head (see `require_current_on`)."""
    with engine.connect() as connection:
        require_current_on(connection)


def open_database(url: URL | str = DEFAULT_DATABASE_URL, *, auto_upgrade: bool = True) -> Engine:
    """The daemon's start-up path: an engine on `url` whose schema is at head.

    With `auto_upgrade` the schema is migrated to head; without it a database that is not
    already at head is refused (`UpgradeRequired` / `SchemaTooNew`). The engine is disposed
    of when refused.
    """
    engine = create_store_engine(url)
    try:
        if auto_upgrade:
            migrate(engine)
        else:
            require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
