"""Migrations on SQLite and a real PostgreSQL: upgrade, no drift from the models, downgrade."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sengd.store.db import (
    SchemaState,
    create_store_engine,
    downgrade,
    head_revision,
    migrate,
    schema_status,
)
from sengd.store.models import Base

pytestmark = pytest.mark.integration

TABLES = {
    "alembic_version",
    "app_categories",
    "app_host_routes",
    "apps",
    "audit_events",
    "categories",
    "enclave_subnets",
    "leases",
}


def test_upgrade_matches_models_and_downgrade_removes_everything(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        assert schema_status(engine).state is SchemaState.EMPTY
        assert migrate(engine) == (None, head_revision())
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == TABLES
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            indexes = {i["name"]: i for i in inspect(conn).get_indexes("leases")}
        assert indexes["uq_leases_open_address"]["unique"]
        assert indexes["uq_leases_open_address"]["column_names"] == ["address"]

        downgrade(engine)
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        assert schema_status(engine).state is SchemaState.EMPTY

        assert migrate(engine) == (None, head_revision())  # and back up again
        assert schema_status(engine).state is SchemaState.CURRENT
    finally:
        engine.dispose()


def test_models_detect_drift(db_url: str) -> None:
    # The drift check can fail: a schema missing an index and a column is reported.
    engine = create_store_engine(db_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_leases_gateway_id_ended_at")
            conn.exec_driver_sql("ALTER TABLE categories DROP COLUMN description")
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        kinds = sorted(str(d[0]) if isinstance(d, tuple) else str(d[0][0]) for d in diff)
        assert kinds == ["add_column", "add_index"]
    finally:
        engine.dispose()


def test_gateways_starting_together_migrate_once(pg_url: str) -> None:
    engines = [create_store_engine(pg_url) for _ in range(3)]
    results: list[tuple[str | None, str | None]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def run(index: int) -> None:
        try:
            start.wait()
            results.append(migrate(engines[index]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert errors == []
    head = head_revision()
    assert sorted(results, key=str) == sorted([(None, head), (head, head), (head, head)], key=str)
