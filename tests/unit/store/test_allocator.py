"""The allocator on real SQLite files: address rules, reuse order, reclaim, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sengd.store.allocator import Allocator, Counters, EndReason, _Pool, assignable_count
from sengd.store.errors import (
    DatabaseError,
    InvalidSubnet,
    PoolExhausted,
    UnknownLease,
    UnknownSubnet,
    UnsupportedPrefix,
)
from sengd.store.models import EnclaveSubnet, Lease
from sengd.store.subnets import add_enclave_subnet, validate_enclave_subnet

from .helpers import HOST, MR_ENCLAVE, MR_SIGNER, FakeClock, lease, make_subnet


def addresses(network: str) -> list[IPv4Address]:
    return list(IPv4Network(network).hosts())


@pytest.mark.parametrize("cidr", ["10.0.0.0/31", "10.0.0.1/32", "10.0.0.0/7", "0.0.0.0/0"])
def test_unsupported_prefixes_are_refused_clearly(engine: Engine, cidr: str) -> None:
    network = IPv4Network(cidr)
    with pytest.raises(UnsupportedPrefix, match=rf"/{network.prefixlen}\b"):
        validate_enclave_subnet(network, network.network_address)
    with Session(engine) as session, pytest.raises(UnsupportedPrefix):
        add_enclave_subnet(session, network, name="bad")


def test_database_refuses_unusable_subnet_rows(engine: Engine) -> None:
    # The check constraints hold even for rows written around the validating code.
    bad_rows = [
        {"network": int(IPv4Address("10.0.0.0")), "prefix_len": 31, "gateway": 167772161},
        {"network": int(IPv4Address("10.0.0.0")), "prefix_len": 24, "gateway": 167772160},
        {"network": int(IPv4Address("10.0.0.0")), "prefix_len": 24, "gateway": 167772415},
        {"network": int(IPv4Address("10.0.0.8")), "prefix_len": 24, "gateway": 167772169},
    ]
    for row in bad_rows:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                insert(EnclaveSubnet),
                {**row, "name": "raw", "description": "", "created_at": datetime.now(UTC)},
            )


@pytest.mark.parametrize(
    ("gateway", "message"),
    [("10.0.1.1", "outside"), ("10.0.0.0", "network or broadcast"), ("10.0.0.255", "network")],
)
def test_gateway_must_be_inside(engine: Engine, gateway: str, message: str) -> None:
    with Session(engine) as session, pytest.raises(InvalidSubnet, match=message):
        add_enclave_subnet(session, IPv4Network("10.0.0.0/24"), IPv4Address(gateway), name="x")


def test_overlapping_subnets_are_refused(engine: Engine) -> None:
    make_subnet(engine, "10.1.0.0/16")
    with Session(engine) as session, pytest.raises(InvalidSubnet, match=r"overlaps 10\.1\.0\.0/16"):
        add_enclave_subnet(session, IPv4Network("10.1.2.0/24"), name="inner")
    with Session(engine) as session, pytest.raises(InvalidSubnet, match="overlaps"):
        add_enclave_subnet(session, IPv4Network("10.0.0.0/8"), name="outer")


@pytest.mark.parametrize("prefix", range(8, 31))
def test_every_prefix_from_8_to_30(engine: Engine, prefix: int) -> None:
    network = IPv4Network(f"10.0.0.0/{prefix}")
    subnet_id = make_subnet(engine, str(network))  # gateway: the first address
    allocator = Allocator(engine, "gw-a")
    allocator.start()
    assert allocator.stats(subnet_id).assignable == network.num_addresses - 3
    if prefix >= 24:  # small enough to drain completely
        got = [lease(allocator, subnet_id).address for _ in range(assignable_count(network))]
        assert got == addresses(str(network))[1:]  # ascending, gateway (first) skipped
        with pytest.raises(PoolExhausted, match=f"{network}"):
            lease(allocator, subnet_id)
    else:
        got = [lease(allocator, subnet_id).address for _ in range(3)]
        base = network.network_address
        assert got == [base + 2, base + 3, base + 4]
    # The top of the pool, for every prefix: jump the index near the broadcast address (the
    # bottom was drawn above) and drain it; broadcast is never a candidate.
    pool = _Pool(network, network.network_address + 1)
    pool.cursor = max(pool.first, int(network.broadcast_address) - 3)
    drained = []
    while (candidate := pool.candidate()) is not None:
        pool.mark_leased(candidate)
        drained.append(IPv4Address(candidate))
    top = [network.broadcast_address - 3, network.broadcast_address - 2]
    expected = [a for a in top if a > network.network_address + 1]
    assert drained == [*expected, network.broadcast_address - 1]


def test_gateway_in_the_middle_is_skipped(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/29", "192.0.2.5")
    allocator = Allocator(engine, "gw-a")
    got = [str(lease(allocator, subnet_id).address) for _ in range(5)]
    assert got == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.6"]
    with pytest.raises(PoolExhausted, match="all 5 assignable addresses are leased"):
        lease(allocator, subnet_id)


def test_grant_carries_subnet_and_gateway(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "172.16.28.0/26", "172.16.28.1")
    grant = lease(Allocator(engine, "gw-a"), subnet_id)
    assert grant.network == IPv4Network("172.16.28.0/26")
    assert grant.gateway == IPv4Address("172.16.28.1")
    assert grant.address == IPv4Address("172.16.28.2")
    assert grant.started_at.tzinfo is not None


def test_fresh_addresses_before_any_reuse(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    allocator = Allocator(engine, "gw-a", clock=FakeClock())
    first = [lease(allocator, subnet_id) for _ in range(3)]  # .2 .3 .4
    allocator.release(first[0].lease_id, EndReason.CLOSED)
    nxt = lease(allocator, subnet_id)
    assert nxt.address == IPv4Address("192.0.2.5")  # fresh, not the just released .2


def test_least_recently_released_first_also_after_restart(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/29")  # .2 ... .6 assignable
    clock = FakeClock()
    allocator = Allocator(engine, "gw-a", clock=clock)
    grants = {str(g.address): g for g in (lease(allocator, subnet_id) for _ in range(5))}
    for name in ["192.0.2.4", "192.0.2.2", "192.0.2.6"]:
        allocator.release(grants[name].lease_id, EndReason.CLOSED)
    restarted = Allocator(engine, "gw-b", clock=clock)  # another gateway: nothing reclaimed
    restarted.start()
    for candidate in (allocator, restarted):
        assert candidate.stats(subnet_id).released == 3
    got = [str(lease(allocator, subnet_id).address) for _ in range(3)]
    assert got == ["192.0.2.4", "192.0.2.2", "192.0.2.6"]


def test_reload_reproduces_the_order(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/29")
    clock = FakeClock()
    allocator = Allocator(engine, "gw-a", clock=clock)
    grants = [lease(allocator, subnet_id) for _ in range(5)]
    for grant in reversed(grants):
        allocator.release(grant.lease_id, EndReason.TIMEOUT)
    reloaded = Allocator(engine, "gw-a", clock=clock)
    reloaded.start()
    got = [lease(reloaded, subnet_id).address for _ in range(5)]
    assert got == [g.address for g in reversed(grants)]


def test_reclaim_ends_only_this_gateways_open_leases(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/27")
    clock = FakeClock()
    a, b = Allocator(engine, "gw-a", clock=clock), Allocator(engine, "gw-b", clock=clock)
    a1, a2 = lease(a, subnet_id), lease(a, subnet_id)
    b1 = lease(b, subnet_id)
    a.release(a1.lease_id, EndReason.CLOSED, Counters(1, 2, 3, 4))

    restarted = Allocator(engine, "gw-a", clock=clock)
    reclaimed = restarted.start()
    assert [(r.lease_id, r.address) for r in reclaimed] == [(a2.lease_id, a2.address)]
    with Session(engine) as session:
        rows = {row.id: row for row in session.scalars(select(Lease))}
    assert rows[a2.lease_id].end_reason == "reclaimed"
    assert rows[a2.lease_id].ended_at is not None
    assert rows[a1.lease_id].end_reason == "closed"  # untouched history
    assert (rows[a1.lease_id].bytes_in, rows[a1.lease_id].packets_out) == (1, 4)
    assert rows[b1.lease_id].ended_at is None  # another gateway's lease: untouched
    assert restarted.reclaim_stale_leases() == []  # nothing left to reclaim
    # The reclaimed address is the most recently released one: fresh ones come first.
    assert lease(restarted, subnet_id).address == IPv4Address("192.0.2.5")


def test_release_refuses_unknown_closed_and_foreign_leases(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    a, b = Allocator(engine, "gw-a"), Allocator(engine, "gw-b")
    grant = lease(a, subnet_id)
    with pytest.raises(UnknownLease, match="gw-b"):
        b.release(grant.lease_id, EndReason.CLOSED)
    with pytest.raises(UnknownLease):
        b.update_counters(grant.lease_id, Counters(1, 1, 1, 1))
    assert a.release(grant.lease_id, EndReason.KILLED) == grant.address
    with pytest.raises(UnknownLease):
        a.release(grant.lease_id, EndReason.KILLED)
    with pytest.raises(UnknownLease):
        a.release(999_999, EndReason.KILLED)


def test_release_records_reason_time_and_counters(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    clock = FakeClock()
    allocator = Allocator(engine, "gw-a", clock=clock)
    grant = allocator.lease(
        subnet_id,
        mr_enclave=MR_ENCLAVE,
        mr_signer=MR_SIGNER,
        host_address=HOST,
        host_port=12345,
        isv_prod_id=7,
        isv_svn=3,
    )
    allocator.update_counters(grant.lease_id, Counters(10, 20, 1, 2))
    allocator.release(grant.lease_id, EndReason.REVOKED, Counters(100, 200, 10, 20))
    with Session(engine) as session:
        row = session.get_one(Lease, grant.lease_id)
    assert row.started_at == grant.started_at
    assert row.ended_at is not None
    assert row.ended_at > row.started_at
    assert row.end_reason == "revoked"
    assert (row.bytes_in, row.bytes_out, row.packets_in, row.packets_out) == (100, 200, 10, 20)
    assert (row.mr_enclave, row.mr_signer, row.isv_prod_id, row.isv_svn) == (
        MR_ENCLAVE,
        MR_SIGNER,
        7,
        3,
    )
    assert (row.host_ip, row.host_port, row.gateway_id) == (HOST, 12345, "gw-a")


def test_one_open_lease_per_address_is_a_database_constraint(engine: Engine) -> None:
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
    with pytest.raises(IntegrityError, match=r"leases\.address"), engine.begin() as conn:
        conn.execute(insert(Lease), {**row, "gateway_id": "other"})
    with engine.begin() as conn:  # closed leases of the address do not count
        conn.execute(insert(Lease), {**row, "ended_at": datetime.now(UTC), "end_reason": "closed"})
    with pytest.raises(IntegrityError), engine.begin() as conn:  # end without reason
        conn.execute(insert(Lease), {**row, "address": row["address"] + 1, "end_reason": "x"})


def test_candidate_taken_by_another_gateway_is_skipped(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    a, b = Allocator(engine, "gw-a"), Allocator(engine, "gw-b")
    a.start()
    b.start()  # both indexes think .2 is free
    assert lease(a, subnet_id).address == IPv4Address("192.0.2.2")
    assert lease(b, subnet_id).address == IPv4Address("192.0.2.3")
    assert lease(a, subnet_id).address == IPv4Address("192.0.2.4")


def test_exhausted_index_is_refreshed_before_giving_up(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/30")  # one assignable address: .2
    a, b = Allocator(engine, "gw-a"), Allocator(engine, "gw-b")
    grant = lease(a, subnet_id)
    with pytest.raises(PoolExhausted):
        lease(b, subnet_id)
    a.release(grant.lease_id, EndReason.CLOSED)  # b does not know
    assert lease(b, subnet_id).address == IPv4Address("192.0.2.2")


def test_slash_8_starts_without_materializing_the_pool(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "10.0.0.0/8")
    allocator = Allocator(engine, "gw-a")
    started = time.perf_counter()
    allocator.start()
    grant = lease(allocator, subnet_id)
    assert time.perf_counter() - started < 1.0
    assert grant.address == IPv4Address("10.0.0.2")
    stats = allocator.stats(subnet_id)
    assert (stats.assignable, stats.leased, stats.fresh) == (2**24 - 3, 1, 2**24 - 4)


def test_unknown_subnet_and_bad_enclave_values(engine: Engine) -> None:
    allocator = Allocator(engine, "gw-a")
    with pytest.raises(UnknownSubnet, match="42"):
        lease(allocator, 42)
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    with pytest.raises(ValueError, match="32 bytes"):
        allocator.lease(
            subnet_id, mr_enclave=b"short", mr_signer=MR_SIGNER, host_address=HOST, host_port=1
        )
    with pytest.raises(ValueError, match="port"):
        allocator.lease(
            subnet_id, mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, host_address=HOST, host_port=-1
        )
    with pytest.raises(ValueError, match="gateway id"):
        Allocator(engine, "")
    assert allocator.stats(subnet_id).leased == 0  # nothing was leased by the failures


def test_subnet_refresh_sees_new_and_removed_subnets(engine: Engine) -> None:
    allocator = Allocator(engine, "gw-a")
    allocator.start()
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    assert lease(allocator, subnet_id).address == IPv4Address("192.0.2.2")  # loaded lazily
    other = make_subnet(engine, "198.51.100.0/28")
    with Session(engine) as session:
        session.delete(session.get_one(EnclaveSubnet, other))
        session.commit()
    allocator.refresh()
    with pytest.raises(UnknownSubnet):
        lease(allocator, other)


def test_database_refusals_are_store_errors(engine: Engine) -> None:
    subnet_id = make_subnet(engine, "192.0.2.0/28")
    allocator = Allocator(engine, "gw-a")
    with pytest.raises(DatabaseError, match="refused the lease: FOREIGN KEY"):
        allocator.lease(
            subnet_id,
            mr_enclave=MR_ENCLAVE,
            mr_signer=MR_SIGNER,
            host_address=HOST,
            host_port=1,
            app_id=999,  # no such allowlist entry
        )
    assert lease(allocator, subnet_id).address == IPv4Address("192.0.2.2")  # nothing was lost
