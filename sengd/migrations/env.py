"""Alembic environment: runs the packaged migrations against the store's metadata.

`sengd.store.db` passes an open connection in `config.attributes["connection"]` (the normal
path, inside its own transaction and lock). Without one, `sqlalchemy.url` is used, and offline
mode (`alembic upgrade --sql`) renders the SQL for review.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from sengd.store.db import create_store_engine
from sengd.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )


def run_offline() -> None:
    """Render the migrations as SQL for the configured URL without connecting."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the given connection (or on a new one to `sqlalchemy.url`)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    engine = create_store_engine(url)
    try:
        with engine.begin() as new_connection:
            _configure(new_connection)
            context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
