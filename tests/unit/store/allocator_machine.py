"""A Hypothesis state machine checking the allocator against a model, on any database.

Two gateways share the database: "ours" leases, releases, crashes and restarts; "other" only
leases, behind our back. The model knows the truth, and after every step:
- every address handed out is assignable (never network, broadcast or gateway) and was not
  leased at that moment by anyone;
- ours hands out the lowest never-used address while one exists, and only then the address
  released longest ago (skipping those the other gateway holds);
- the database's open leases are exactly the model's.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from sengd.store.allocator import Allocator, EndReason
from sengd.store.errors import PoolExhausted
from sengd.store.models import EnclaveSubnet, Lease
from sengd.store.subnets import add_enclave_subnet

from .helpers import FakeClock, lease


class AllocatorMachine(RuleBasedStateMachine):
    """Set `engine` (a migrated database) on the class before running it."""

    engine: Engine

    def __init__(self) -> None:
        super().__init__()
        with self.engine.begin() as conn:
            conn.execute(delete(Lease))
            conn.execute(delete(EnclaveSubnet))
        self.clock = FakeClock()
        self.subnet_id = 0
        self.assignable: set[int] = set()
        self.ever: set[int] = set()
        self.released: list[int] = []  # ours, least recently released first
        self.ours_active: dict[int, int] = {}  # lease id -> address
        self.other_active: set[int] = set()
        self.ours: Allocator | None = None
        self.other: Allocator | None = None

    @initialize(prefix=st.integers(min_value=27, max_value=30), gateway_pick=st.integers(0, 99))
    def create_subnet(self, prefix: int, gateway_pick: int) -> None:
        network = IPv4Network(f"10.9.8.0/{prefix}")
        hosts = list(network.hosts())
        gateway = hosts[gateway_pick % len(hosts)]
        with Session(self.engine) as session:
            self.subnet_id = add_enclave_subnet(session, network, gateway, name="prop").id
            session.commit()
        self.assignable = {int(a) for a in hosts} - {int(gateway)}
        self.ours = Allocator(self.engine, "gw-ours", clock=self.clock)
        self.other = Allocator(self.engine, "gw-other", clock=self.clock)
        assert self.ours.start() == []
        assert self.other.start() == []

    def teardown(self) -> None:
        for allocator in (self.ours, self.other):
            if allocator is not None:
                allocator.close()

    def _expected(self) -> int | None:
        fresh = self.assignable - self.ever
        if fresh:
            return min(fresh)
        return next((a for a in self.released if a not in self.other_active), None)

    def _held(self) -> set[int]:
        return set(self.ours_active.values()) | self.other_active

    @rule()
    def lease_ours(self) -> None:
        assert self.ours is not None
        expected = self._expected()
        if expected is None:
            with pytest.raises(PoolExhausted):
                lease(self.ours, self.subnet_id)
            return
        grant = lease(self.ours, self.subnet_id)
        address = int(grant.address)
        assert address in self.assignable
        assert address not in self._held()
        assert address == expected, (IPv4Address(address), IPv4Address(expected))
        self.ever.add(address)
        if address in self.released:
            self.released.remove(address)
        self.ours_active[grant.lease_id] = address

    @precondition(lambda self: bool(self.ours_active))
    @rule(data=st.data())
    def release_ours(self, data: st.DataObject) -> None:
        assert self.ours is not None
        lease_id = data.draw(st.sampled_from(sorted(self.ours_active)))
        address = self.ours_active.pop(lease_id)
        assert self.ours.release(lease_id, EndReason.CLOSED) == IPv4Address(address)
        self.released.append(address)

    @rule()
    def lease_other(self) -> None:
        assert self.other is not None
        free = self.assignable - self._held()
        if not free:
            with pytest.raises(PoolExhausted):
                lease(self.other, self.subnet_id)
            return
        address = int(lease(self.other, self.subnet_id).address)
        assert address in free
        self.other_active.add(address)
        self.ever.add(address)
        if address in self.released:
            self.released.remove(address)

    @rule()
    def crash_and_restart_ours(self) -> None:
        assert self.ours is not None
        self.ours.close()
        self.ours = Allocator(self.engine, "gw-ours", clock=self.clock)
        reclaimed = self.ours.start()
        assert sorted(int(r.address) for r in reclaimed) == sorted(self.ours_active.values())
        # All reclaimed at one instant: reloaded in ascending address order, after the rest.
        self.released.extend(sorted(self.ours_active.values()))
        self.ours_active.clear()

    @rule()
    def reload_ours(self) -> None:
        assert self.ours is not None
        self.ours.refresh()

    @invariant()
    def database_matches_model(self) -> None:
        if not self.subnet_id:
            return
        with Session(self.engine) as session:
            open_rows = session.execute(
                select(Lease.address, Lease.gateway_id).where(Lease.ended_at.is_(None))
            ).all()
        ours = sorted(a for a, gw in open_rows if gw == "gw-ours")
        other = sorted(a for a, gw in open_rows if gw == "gw-other")
        assert ours == sorted(self.ours_active.values())
        assert other == sorted(self.other_active)
