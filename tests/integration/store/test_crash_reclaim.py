"""A gateway process SIGKILLed while holding leases: the next start of that gateway reclaims
exactly its open leases, and nothing else in the database is lost or changed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from sengd.store.allocator import Allocator, Counters, EndReason
from sengd.store.db import create_store_engine, migrate, open_database
from sengd.store.legacy import import_legacy_file
from sengd.store.models import App, AuditEvent, Category, EnclaveSubnet, HostRouteRow, Lease
from tests.unit.store.helpers import lease, make_subnet
from tests.unit.store.legacy_fixtures import netfilter_demo_db

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("lease_worker.py")


def _everything(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, for before/after comparison."""
    with Session(engine) as session:
        return {
            model.__tablename__: sorted(
                tuple(getattr(row, c.key) for c in model.__table__.columns)  # type: ignore[attr-defined]
                for row in session.scalars(select(model))
            )
            for model in (App, AuditEvent, Category, EnclaveSubnet, HostRouteRow, Lease)
        }


def test_sigkilled_gateway_leases_are_reclaimed_on_next_start(db_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(db_url)
    migrate(engine)
    import_legacy_file(engine, netfilter_demo_db(tmp_path))  # some policy that must survive
    subnet_id = make_subnet(engine, "10.30.0.0/24", name="crash")
    other = Allocator(engine, "gw-other")
    held_by_other = [lease(other, subnet_id) for _ in range(3)]
    history = Allocator(engine, "gw-test")
    closed = lease(history, subnet_id)
    history.release(closed.lease_id, EndReason.CLOSED, Counters(1000, 2000, 10, 20))
    history.close()

    process = subprocess.Popen(
        [sys.executable, str(WORKER), db_url, "gw-test", str(subnet_id)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdin is not None
        assert process.stdout is not None
        assert json.loads(process.stdout.readline()) == {"ready": []}
        process.stdin.write("lease 5\n")
        process.stdin.flush()
        leased = json.loads(process.stdout.readline())["leased"]
        assert len(leased) == 5
        before_crash = _everything(engine)
        process.send_signal(signal.SIGKILL)
        assert process.wait(10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    assert _everything(engine) == before_crash  # the kill itself lost nothing committed
    restarted_engine = open_database(db_url)  # the daemon's start-up path
    restarted = Allocator(restarted_engine, "gw-test")
    reclaimed = restarted.start()
    assert sorted(str(r.address) for r in reclaimed) == sorted(leased)

    after = _everything(engine)
    changed = [name for name in before_crash if before_crash[name] != after[name]]
    assert changed == ["leases"]  # only the leases table changed ...
    columns = [c.key for c in Lease.__table__.columns]
    with Session(engine) as session:
        rows = {row.id: row for row in session.scalars(select(Lease))}
    reclaimed_ids = {r.lease_id for r in reclaimed}
    for before_row in before_crash["leases"]:
        row = dict(zip(columns, before_row, strict=True))
        now = rows[int(row["id"])]  # type: ignore[call-overload]
        if row["id"] in reclaimed_ids:  # ... and only the crashed gateway's open leases
            assert row["ended_at"] is None
            assert row["gateway_id"] == "gw-test"
            assert now.end_reason == "reclaimed"
            assert now.ended_at is not None
            assert now.ended_at <= datetime.now(UTC)
        else:
            assert tuple(getattr(now, c) for c in columns) == before_row
    assert {rows[g.lease_id].ended_at for g in held_by_other} == {None}
    assert rows[closed.lease_id].bytes_out == 2000

    # The reclaimed addresses are reusable, after the fresh ones.
    assert lease(restarted, subnet_id).address == IPv4Address("10.30.0.11")
    restarted.close()
    other.close()
    restarted_engine.dispose()
    engine.dispose()
