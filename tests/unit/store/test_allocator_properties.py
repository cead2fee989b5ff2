"""Property-based tests of the allocator on SQLite (the PostgreSQL run is an integration test)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import Engine

from sengd.store.allocator import _Pool

from .allocator_machine import AllocatorMachine


def test_allocator_matches_model_on_sqlite(engine: Engine) -> None:
    AllocatorMachine.engine = engine
    run_state_machine_as_test(
        AllocatorMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@given(
    prefix=st.integers(min_value=8, max_value=30),
    network_pick=st.integers(min_value=0, max_value=2**32 - 1),
    gateway_pick=st.integers(min_value=0),
    used=st.lists(st.integers(min_value=0), max_size=20),
    start_pick=st.integers(min_value=0),
)
def test_index_never_proposes_network_broadcast_gateway_or_used(
    prefix: int, network_pick: int, gateway_pick: int, used: list[int], start_pick: int
) -> None:
    # The in-memory index alone, for any prefix and gateway position: drain it from an
    # arbitrary point (as after a history of leases) and check every candidate.
    network = IPv4Network((network_pick, prefix), strict=False)
    size = network.num_addresses
    base = int(network.network_address)
    gateway = base + 1 + gateway_pick % (size - 2)
    pool = _Pool(network, IPv4Address(gateway))
    for offset in used:  # addresses leased before, by anyone
        address = base + offset % size
        if pool.assignable(address):
            pool.mark_leased(address)
    pool.cursor = max(pool.first, pool.last - 40 + start_pick % 40)
    proposed = []
    while (candidate := pool.candidate()) is not None and len(proposed) < 64:
        assert candidate not in (base, base + size - 1, gateway)
        assert network.network_address <= IPv4Address(candidate) <= network.broadcast_address
        assert candidate not in pool.active
        proposed.append(candidate)
        pool.mark_leased(candidate)
    assert proposed == sorted(proposed)  # fresh addresses come in ascending order
    assert len(proposed) < 64  # the top of the pool was drained completely
