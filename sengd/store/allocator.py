"""Enclave address leases: which enclave holds which address of which enclave subnet.

Rules (docs/store.md has the reasoning):
- A subnet from /8 to /30 hands out every address except its network address, its broadcast
  address and the gateway's address. /31, /32 and anything shorter than /8 are refused.
- Order: addresses never leased before come first, in ascending order; once those are gone,
  the address released longest ago. A released address is therefore not reused while a fresher
  one exists, so stale firewall and conntrack state of the last holder has the most time to go.
- The database decides: at most one open lease per address is a unique index, so two gateways
  allocating from one PostgreSQL cannot hand out one address twice. The in-memory index only
  proposes candidates; a candidate another gateway took in the meantime is skipped (and the
  index catches up with what the other gateways did), and when the index runs dry it is rebuilt
  from the database before the pool is declared exhausted.
- On start a gateway ends its own leases left open by a crash (`reclaim_stale_leases`), with
  end reason "reclaimed".

Every failure is a `StoreError`: the allocator's own refusals, and `DatabaseError` when the
database fails (the connection is re-established on the next call) or refuses a row.

Not thread-safe: one `Allocator` belongs to the daemon's single event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Self, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from sengd.store.errors import DatabaseError, PoolExhausted, UnknownLease, UnknownSubnet
from sengd.store.models import HASH_SIZE, EnclaveSubnet, Lease
from sengd.store.subnets import validate_enclave_subnet

OPEN_ADDRESS_INDEX = "uq_leases_open_address"
"""The unique index on the address of open leases (see `sengd.store.models.Lease`)."""

_LEASES = cast(Table, Lease.__table__)
_SUBNETS = cast(Table, EnclaveSubnet.__table__)
# Statements are prepared once: building them costs more than SQLite takes to run them.
_INSERT_LEASE = insert(_LEASES)
_OPEN_FLAG = func.max(case((_LEASES.c.ended_at.is_(None), 1), else_=0)).label("open")
_USED_FROM_CURSOR = (
    select(_LEASES.c.address, _OPEN_FLAG)
    .where(_LEASES.c.subnet_id == bindparam("subnet_id"), _LEASES.c.address >= bindparam("cursor"))
    .group_by(_LEASES.c.address)
)
_OPEN_IN_SUBNET = select(_LEASES.c.address).where(
    _LEASES.c.subnet_id == bindparam("subnet_id"), _LEASES.c.ended_at.is_(None)
)
_COUNTER_COLUMNS = ("bytes_in", "bytes_out", "packets_in", "packets_out")
_OPEN_LEASE_OF_OWNER = and_(
    _LEASES.c.id == bindparam("lease_id"),
    _LEASES.c.gateway_id == bindparam("owner"),
    _LEASES.c.ended_at.is_(None),
)
_RELEASE = (
    update(_LEASES)
    .where(_OPEN_LEASE_OF_OWNER)
    .values(ended_at=bindparam("now"), end_reason=bindparam("reason"))
    .returning(_LEASES.c.subnet_id, _LEASES.c.address)
)
_RELEASE_WITH_COUNTERS = _RELEASE.values(
    {name: bindparam(f"new_{name}") for name in _COUNTER_COLUMNS}
)
_UPDATE_COUNTERS = (
    update(_LEASES)
    .where(_OPEN_LEASE_OF_OWNER)
    .values({name: bindparam(f"new_{name}") for name in _COUNTER_COLUMNS})
)


class EndReason(StrEnum):
    """Why a lease ended (stored in `leases.end_reason`)."""

    CLOSED = "closed"
    """The enclave closed its tunnels (close_notify)."""
    TIMEOUT = "timeout"
    """No traffic or no setup progress within the configured time."""
    KILLED = "killed"
    """An administrator ended the session."""
    REVOKED = "revoked"
    """The allowlist entry was disabled or removed while the session ran."""
    SHUTDOWN = "shutdown"
    """The gateway shut down cleanly."""
    SETUP_FAILED = "setup-failed"
    """The address was assigned but the setup exchange did not complete."""
    ERROR = "error"
    """The session failed (bad input, internal error)."""
    RECLAIMED = "reclaimed"
    """Left open by a gateway that crashed; ended when that gateway started again."""


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """An open lease: `address` in `network` belongs to the enclave until released."""

    lease_id: int
    subnet_id: int
    address: IPv4Address
    network: IPv4Network
    gateway: IPv4Address
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Counters:
    """Traffic of one lease, as seen from the enclave ("in" = towards the enclave)."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0

    def as_values(self) -> dict[str, int]:
        """The counters as column values of `leases`."""
        return {name: getattr(self, name) for name in _COUNTER_COLUMNS}


@dataclass(frozen=True, slots=True)
class ReclaimedLease:
    """A lease ended by `reclaim_stale_leases` (the caller cleans up its firewall state)."""

    lease_id: int
    subnet_id: int
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class PoolStats:
    """How an enclave subnet's assignable addresses are used, as this allocator knows it."""

    subnet_id: int
    network: IPv4Network
    gateway: IPv4Address
    assignable: int
    leased: int
    fresh: int
    released: int


def assignable_count(network: IPv4Network) -> int:
    """How many addresses of `network` can be leased (all but network, broadcast, gateway)."""
    return network.num_addresses - 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Pool:
    """The in-memory index of one subnet: candidates in allocation order.

    Invariants: `seen` holds every assignable address known to have been leased at least once;
    every assignable address below `cursor` is in `seen`; `active` holds the addresses known to
    be leased now; `released` holds the others of `seen`, least recently released first.
    """

    __slots__ = ("active", "cursor", "first", "gateway", "last", "network", "released", "seen")

    def __init__(self, network: IPv4Network, gateway: IPv4Address) -> None:
        self.network = network
        self.gateway = int(gateway)
        self.first = int(network.network_address) + 1
        self.last = int(network.broadcast_address) - 1
        self.cursor = self.first
        self.seen: set[int] = set()
        self.active: set[int] = set()
        self.released: dict[int, None] = {}

    def assignable(self, address: int) -> bool:
        return self.first <= address <= self.last and address != self.gateway

    def candidate(self) -> int | None:
        """The next address to try: lowest never-leased one, else least recently released."""
        cursor, seen, gateway, last = self.cursor, self.seen, self.gateway, self.last
        while cursor <= last and (cursor in seen or cursor == gateway):
            cursor += 1
        self.cursor = cursor
        if cursor <= last:
            return cursor
        for address in self.released:
            return address
        return None

    def mark_leased(self, address: int) -> None:
        self.seen.add(address)
        self.active.add(address)
        self.released.pop(address, None)

    def mark_released(self, address: int) -> None:
        self.seen.add(address)
        self.active.discard(address)
        self.released.pop(address, None)
        self.released[address] = None

    def stats(self, subnet_id: int) -> PoolStats:
        assignable = assignable_count(self.network)
        return PoolStats(
            subnet_id=subnet_id,
            network=self.network,
            gateway=IPv4Address(self.gateway),
            assignable=assignable,
            leased=len(self.active),
            fresh=assignable - len(self.seen),
            released=len(self.released),
        )


def _is_open_address_conflict(exc: IntegrityError) -> bool:
    """True when `exc` is the open-lease unique index refusing an address already leased."""
    orig: Any = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg: the violated constraint is named
        return getattr(diag, "constraint_name", None) == OPEN_ADDRESS_INDEX
    return "UNIQUE constraint failed: leases.address" in str(orig)  # sqlite3


class Allocator:
    """Leases enclave addresses for the gateway `gateway_id`, recording them in the database.

    `clock` returns the current aware UTC time (injected for tests).
    """

    def __init__(
        self, engine: Engine, gateway_id: str, *, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        if not gateway_id or len(gateway_id) > 64:
            raise ValueError(f"gateway id must be 1 to 64 characters, got {gateway_id!r}")
        self._engine = engine
        self.gateway_id = gateway_id
        self._clock = clock
        self._pools: dict[int, _Pool] = {}
        self._conn: Connection | None = None
        self.conflicts = 0
        """How many candidates were lost to another gateway (a measure of contention)."""

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction on the allocator's own connection (kept open: checking a connection
        out of the pool for every lease would cost a third of the time)."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            try:
                self._conn = self._engine.connect()
            except SQLAlchemyError as exc:
                raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        conn = self._conn
        try:
            with conn.begin():
                yield conn
        except IntegrityError:
            raise  # the caller decides (a lost race is not a failure)
        except DBAPIError as exc:
            if exc.connection_invalidated:  # a broken connection: reconnect on the next call
                self.close()
            raise DatabaseError(f"database operation failed: {exc.orig or exc}") from exc
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database operation failed: {exc}") from exc

    def close(self) -> None:
        """Return the allocator's database connection (it reconnects when used again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> list[ReclaimedLease]:
        """Start-up: end this gateway's leases left open by a crash, then index every subnet.

        Returns the reclaimed leases, so that the caller can remove what a crash left behind
        for those addresses (firewall set elements, conntrack entries).
        """
        reclaimed = self.reclaim_stale_leases()
        self.refresh()
        return reclaimed

    def reclaim_stale_leases(self, gateway_id: str | None = None) -> list[ReclaimedLease]:
        """End every open lease of `gateway_id` (default: this gateway) as "reclaimed".

        Only call it for a gateway that is not running: its sessions are gone, so its leases
        are stale. Leases of other gateways are never touched.
        """
        owner = self.gateway_id if gateway_id is None else gateway_id
        now = self._clock()
        statement = (
            update(_LEASES)
            .where(_LEASES.c.gateway_id == owner, _LEASES.c.ended_at.is_(None))
            .values(ended_at=now, end_reason=EndReason.RECLAIMED.value)
            .returning(_LEASES.c.id, _LEASES.c.subnet_id, _LEASES.c.address)
        )
        with self._transaction() as conn:
            rows = conn.execute(statement).all()
        reclaimed = sorted(
            (ReclaimedLease(row.id, row.subnet_id, IPv4Address(row.address)) for row in rows),
            key=lambda lease: lease.lease_id,
        )
        for lease in reclaimed:
            pool = self._pools.get(lease.subnet_id)
            if pool is not None and pool.assignable(int(lease.address)):
                pool.mark_released(int(lease.address))
        return reclaimed

    def refresh(self, subnet_ids: Iterable[int] | None = None) -> None:
        """Rebuild the index of `subnet_ids` (default: every subnet) from the database.

        Subnets that no longer exist are forgotten. Call it after subnets change.
        """
        with self._transaction() as conn:
            if subnet_ids is None:
                rows = conn.execute(select(_SUBNETS)).all()
                self._pools.clear()
            else:
                wanted = list(subnet_ids)
                rows = conn.execute(select(_SUBNETS).where(_SUBNETS.c.id.in_(wanted))).all()
                for subnet_id in wanted:
                    self._pools.pop(subnet_id, None)
            for row in rows:
                self._pools[row.id] = self._load_pool(conn, row)

    def _load_pool(self, conn: Connection, subnet: Any) -> _Pool:
        network = IPv4Network((subnet.network, subnet.prefix_len))
        gateway = IPv4Address(subnet.gateway)
        validate_enclave_subnet(network, gateway)
        pool = _Pool(network, gateway)
        last_end = func.max(_LEASES.c.ended_at)
        history = conn.execute(
            select(_LEASES.c.address, _OPEN_FLAG, last_end.label("last_end"))
            .where(_LEASES.c.subnet_id == subnet.id)
            .group_by(_LEASES.c.address)
        ).all()
        released: list[tuple[datetime, int]] = []
        for row in history:
            if not pool.assignable(row.address):
                continue
            if row.open:
                pool.mark_leased(row.address)
            else:
                released.append((_as_utc(row.last_end), row.address))
        for _ended, address in sorted(released):
            pool.mark_released(address)
        return pool

    def _pool(self, subnet_id: int) -> _Pool:
        pool = self._pools.get(subnet_id)
        if pool is None:
            self.refresh([subnet_id])
            pool = self._pools.get(subnet_id)
            if pool is None:
                raise UnknownSubnet(f"no enclave subnet with id {subnet_id}")
        return pool

    def lease(
        self,
        subnet_id: int,
        *,
        mr_enclave: bytes,
        mr_signer: bytes,
        host_address: IPv4Address,
        host_port: int,
        app_id: int | None = None,
        isv_prod_id: int | None = None,
        isv_svn: int | None = None,
    ) -> LeaseGrant:
        """Lease the next address of subnet `subnet_id` to the described enclave.

        Raises `UnknownSubnet`, `UnsupportedPrefix` (a subnet row this release cannot use),
        `PoolExhausted` when every assignable address is leased (by any gateway), `ValueError`
        for malformed enclave or host values.
        """
        if len(mr_enclave) != HASH_SIZE or len(mr_signer) != HASH_SIZE:
            raise ValueError("MRENCLAVE and MRSIGNER must be 32 bytes each")
        if not 0 <= host_port <= 0xFFFF:
            raise ValueError(f"host port {host_port} out of range")
        pool = self._pool(subnet_id)
        values: dict[str, Any] = {
            "subnet_id": subnet_id,
            "gateway_id": self.gateway_id,
            "mr_enclave": mr_enclave,
            "mr_signer": mr_signer,
            "isv_prod_id": isv_prod_id,
            "isv_svn": isv_svn,
            "app_id": app_id,
            "host_address": int(host_address),
            "host_port": host_port,
        }
        for attempt in range(2):
            if attempt:  # the index ran dry: other gateways may have released addresses
                self.refresh([subnet_id])
                pool = self._pool(subnet_id)
            grant = self._lease_from(pool, subnet_id, values)
            if grant is not None:
                return grant
        stats = pool.stats(subnet_id)
        raise PoolExhausted(
            f"enclave subnet {stats.network} (id {subnet_id}) has no free address: all "
            f"{stats.assignable} assignable addresses are leased"
        )

    def _lease_from(self, pool: _Pool, subnet_id: int, values: dict[str, Any]) -> LeaseGrant | None:
        while (address := pool.candidate()) is not None:
            now = self._clock()
            try:
                with self._transaction() as conn:
                    result = conn.execute(
                        _INSERT_LEASE, {"address": address, "started_at": now, **values}
                    )
                lease_id = result.inserted_primary_key[0]  # type: ignore[index]
            except IntegrityError as exc:
                if not _is_open_address_conflict(exc):
                    raise DatabaseError(f"the database refused the lease: {exc.orig}") from exc
                self.conflicts += 1
                pool.mark_leased(address)  # another gateway holds it, and maybe more:
                self._catch_up(pool, subnet_id)
                continue
            pool.mark_leased(address)
            return LeaseGrant(
                lease_id=int(lease_id),
                subnet_id=subnet_id,
                address=IPv4Address(address),
                network=pool.network,
                gateway=IPv4Address(pool.gateway),
                started_at=now,
            )
        return None

    def _catch_up(self, pool: _Pool, subnet_id: int) -> None:
        """After losing a candidate to another gateway, learn in one round trip what the other
        gateways did since this index was built, instead of losing one candidate per address
        they took (a gateway behind another would otherwise pay a failed insert for each).

        Addresses at or above the fresh cursor that were leased are no longer fresh: open ones
        are marked leased, closed ones join the back of the reuse order (their exact place is
        restored by the next full refresh). Once fresh addresses are used up, the subnet's open
        leases are marked leased too.
        """
        params = {"subnet_id": subnet_id, "cursor": pool.cursor}
        with self._transaction() as conn:
            ahead = conn.execute(_USED_FROM_CURSOR, params).all()
            held = (
                conn.execute(_OPEN_IN_SUBNET, params).scalars().all()
                if (pool.cursor > pool.last)
                else []
            )
        for row in ahead:
            if pool.assignable(row.address) and row.address not in pool.seen:
                if row.open:
                    pool.mark_leased(row.address)
                else:
                    pool.mark_released(row.address)
        for address in held:
            if pool.assignable(address):
                pool.mark_leased(address)

    def release(
        self, lease_id: int, reason: EndReason, counters: Counters | None = None
    ) -> IPv4Address:
        """End this gateway's open lease `lease_id`; return the address it frees.

        The address goes to the back of its subnet's reuse order. Raises `UnknownLease` when
        no such lease is open for this gateway (already released, or another gateway's).
        """
        params: dict[str, Any] = {
            "lease_id": lease_id,
            "owner": self.gateway_id,
            "now": self._clock(),
            "reason": EndReason(reason).value,
        }
        statement = _RELEASE
        if counters is not None:
            statement = _RELEASE_WITH_COUNTERS
            params.update({f"new_{name}": value for name, value in counters.as_values().items()})
        with self._transaction() as conn:
            row = conn.execute(statement, params).first()
        if row is None:
            raise UnknownLease(f"no open lease {lease_id} of gateway {self.gateway_id!r}")
        pool = self._pools.get(row.subnet_id)
        if pool is not None and pool.assignable(row.address):
            pool.mark_released(row.address)
        return IPv4Address(row.address)

    def update_counters(self, lease_id: int, counters: Counters) -> None:
        """Checkpoint the traffic counters of this gateway's open lease `lease_id`."""
        params: dict[str, Any] = {"lease_id": lease_id, "owner": self.gateway_id}
        params.update({f"new_{name}": value for name, value in counters.as_values().items()})
        with self._transaction() as conn:
            if conn.execute(_UPDATE_COUNTERS, params).rowcount != 1:
                raise UnknownLease(f"no open lease {lease_id} of gateway {self.gateway_id!r}")

    def stats(self, subnet_id: int) -> PoolStats:
        """Usage of subnet `subnet_id` as indexed (other gateways' changes since the last
        refresh are not included)."""
        return self._pool(subnet_id).stats(subnet_id)


def _as_utc(value: datetime | str) -> datetime:
    # Aggregates (MAX) bypass the column type on SQLite and come back as text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
