"""The allocator on a shared database: the model test on PostgreSQL, two real gateway
processes racing for one subnet, and the constraint that makes double allocation impossible."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sengd.store.allocator import Allocator
from sengd.store.db import create_store_engine, migrate
from sengd.store.errors import DatabaseError
from sengd.store.models import Lease
from tests.unit.store.allocator_machine import AllocatorMachine
from tests.unit.store.helpers import HOST, MR_ENCLAVE, MR_SIGNER, lease, make_subnet

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("lease_worker.py")


class Worker:
    """One `lease_worker.py` gateway process."""

    def __init__(self, url: str, gateway_id: str, subnet_id: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), url, gateway_id, str(subnet_id)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait(10)}")
        message: dict[str, object] = json.loads(line)
        return message

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def test_allocator_matches_model_on_postgresql(pg_url: str) -> None:
    engine = create_store_engine(pg_url)
    migrate(engine)
    AllocatorMachine.engine = engine
    try:
        run_state_machine_as_test(
            AllocatorMachine,
            settings=settings(
                max_examples=25,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        engine.dispose()


def test_open_address_constraint_on_postgresql(pg_url: str) -> None:
    engine = create_store_engine(pg_url)
    migrate(engine)
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    row = {
        "subnet_id": subnet_id,
        "address": int(IPv4Address("192.0.2.9")),
        "gateway_id": "raw",
        "mr_enclave": MR_ENCLAVE,
        "mr_signer": MR_SIGNER,
        "host_address": int(HOST),
        "host_port": 1,
        "started_at": datetime.now(UTC),
    }
    with engine.begin() as conn:
        conn.execute(insert(Lease), row)
    with pytest.raises(IntegrityError, match="uq_leases_open_address"), engine.begin() as conn:
        conn.execute(insert(Lease), {**row, "gateway_id": "other"})
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_gateway_processes_never_collide(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, workers: list[Worker]
) -> None:
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = create_store_engine(url)
    migrate(engine)
    network = IPv4Network("10.20.0.0/22")  # 1021 addresses: long enough for the two to overlap
    subnet_id = make_subnet(engine, str(network), "10.20.0.1")
    assignable = {str(a) for a in network.hosts()} - {"10.20.0.1"}

    workers.extend([Worker(url, "gw-a", subnet_id), Worker(url, "gw-b", subnet_id)])
    for worker in workers:
        assert worker.receive() == {"ready": []}

    for round_ in ("fresh addresses", "released addresses"):
        start_at = time.time() + 0.5
        for worker in workers:  # identical indexes, one start time: they race for every address
            worker.send(f"drain {start_at}")
        results = [worker.receive() for worker in workers]
        got = [set(r["leased"]) for r in results]  # type: ignore[call-overload]
        assert got[0].isdisjoint(got[1]), round_
        assert got[0] | got[1] == assignable, round_
        # They really ran at the same time, and the database arbitrated: candidates were lost
        # to the other process. (The one behind may lose nearly every race, which is fine.)
        began = max(float(r["began"]) for r in results)  # type: ignore[arg-type]
        ended = min(float(r["ended"]) for r in results)  # type: ignore[arg-type]
        assert began < ended, round_
        assert sum(int(r["conflicts"]) for r in results) > 0  # type: ignore[call-overload]
        with Session(engine) as session:
            open_addresses = session.scalars(
                select(Lease.address).where(Lease.ended_at.is_(None))
            ).all()
        assert sorted(open_addresses) == sorted(int(IPv4Address(a)) for a in assignable)
        for worker in workers:
            worker.send("release")
        for worker in workers:
            assert worker.receive() == {"released": True}
    for worker in workers:
        worker.send("quit")
        assert worker.process.wait(30) == 0
    engine.dispose()


def test_lost_connection_is_a_store_error_and_recovers(pg_url: str) -> None:
    engine = create_store_engine(pg_url)
    migrate(engine)
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    allocator = Allocator(engine, "gw-a")
    first = lease(allocator, subnet_id)
    with engine.begin() as conn:  # the server drops every other session (as on a restart)
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    with pytest.raises(DatabaseError, match="database operation failed"):
        lease(allocator, subnet_id)
    second = lease(allocator, subnet_id)  # reconnected
    assert second.address == first.address + 1
    allocator.close()
    engine.dispose()
