"""The gateway's persistent state as SQLAlchemy 2.0 typed ORM models.

Addresses are stored as integers only (the IPv4 address as an unsigned 32-bit number in host
order, `int(IPv4Address(...))`, kept in a 64-bit column so that PostgreSQL's signed types hold
every value) plus a prefix length. One representation per fact: the canonical text forms are
derived properties, never stored. Integers make the range arithmetic of the allocator and the
containment checks of the policy plain comparisons on both SQLite and PostgreSQL.

Hashes (MRENCLAVE, MRSIGNER) are the raw 32 bytes; they are shown as lowercase hex.
Times are timezone-aware UTC in Python; see `UTCDateTime` for the storage form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

HASH_SIZE = 32
"""Size in bytes of MRENCLAVE and MRSIGNER."""

MIN_ENCLAVE_PREFIX = 8
MAX_ENCLAVE_PREFIX = 30
"""Enclave subnets range from /8 to /30: a /31 or /32 has no address besides the gateway."""

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, so that migrations can address them on every backend."""

# Row ids of the tables that grow without bound (leases, audit events): 64-bit on PostgreSQL,
# SQLite's INTEGER PRIMARY KEY (the rowid, already 64-bit) there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime.

    PostgreSQL stores `timestamp with time zone`; SQLite stores the UTC wall-clock time as text
    (fixed width, so text order is time order). Naive datetimes are refused on the way in, so a
    local time can never be mistaken for UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only accepts aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata (and its naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EnclaveSubnet(Base):
    """A subnet enclave addresses are leased from; the gateway's TUN carries `gateway`.

    `is_default` marks the subnet a host route without an explicit enclave subnet leads to
    (`sengadm enclave add --host-subnet CIDR`). At most one subnet carries the mark: the
    partial unique index `uq_enclave_subnets_default` enforces it on SQLite and PostgreSQL.
    With no subnet marked, the only subnet (if there is exactly one) is the default
    (`sengd.store.admin.default_subnet`).
    """

    __tablename__ = "enclave_subnets"
    __table_args__ = (
        UniqueConstraint("network", "prefix_len"),
        Index(
            "uq_enclave_subnets_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
        CheckConstraint(
            f"prefix_len >= {MIN_ENCLAVE_PREFIX} AND prefix_len <= {MAX_ENCLAVE_PREFIX}",
            name="prefix_len_range",
        ),
        CheckConstraint("network >= 0 AND network <= 4294967295", name="network_range"),
        CheckConstraint(
            "network % (CAST(1 AS BIGINT) << (32 - prefix_len)) = 0", name="network_aligned"
        ),
        CheckConstraint(
            "gateway > network"
            " AND gateway < network + (CAST(1 AS BIGINT) << (32 - prefix_len)) - 1",
            name="gateway_inside",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    network: Mapped[int] = mapped_column(BigInteger)
    prefix_len: Mapped[int] = mapped_column(SmallInteger)
    gateway: Mapped[int] = mapped_column(BigInteger)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)

    @property
    def cidr(self) -> IPv4Network:
        """The subnet as an `IPv4Network`."""
        return IPv4Network((self.network, self.prefix_len))

    @property
    def gateway_address(self) -> IPv4Address:
        """The gateway's own address inside the subnet (never leased)."""
        return IPv4Address(self.gateway)

    def __repr__(self) -> str:
        return f"EnclaveSubnet(id={self.id!r}, {self.cidr} gw {self.gateway_address})"


app_categories = Table(
    "app_categories",
    Base.metadata,
    Column("app_id", ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "category_id",
        ForeignKey("categories.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
)
"""Which categories an allowlist entry belongs to (many to many)."""


class Category(Base):
    """A named group of applications (the netfilter extension's categories, firewall sets)."""

    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")

    apps: Mapped[list[App]] = relationship(
        secondary=app_categories, back_populates="categories", order_by="App.id"
    )


class App(Base):
    """An allowlist entry: one application allowed to connect.

    An entry with `mr_enclave` matches by exact MRENCLAVE; its `mr_signer`/`isv_prod_id`, if
    set, are informational (like the original SENG databases' MRSIGNER, stored but never
    checked). An entry without `mr_enclave` matches by signer: `mr_signer` and `isv_prod_id`
    set, `min_isv_svn` the lowest accepted ISV SVN; the check constraint `match_mode` refuses
    an entry that is neither. (`sengd.policy` documents the decision.) The `None` overrides
    fall back to the global policy defaults.
    """

    __tablename__ = "apps"
    __table_args__ = (
        CheckConstraint(
            "mr_enclave IS NOT NULL OR (mr_signer IS NOT NULL AND isv_prod_id IS NOT NULL)",
            name="match_mode",
        ),
        CheckConstraint("min_isv_svn >= 0 AND min_isv_svn <= 65535", name="min_isv_svn_range"),
        CheckConstraint("isv_prod_id >= 0 AND isv_prod_id <= 65535", name="isv_prod_id_range"),
        Index("ix_apps_mr_enclave", "mr_enclave"),
        Index("ix_apps_mr_signer_isv_prod_id", "mr_signer", "isv_prod_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    mr_enclave: Mapped[bytes | None] = mapped_column(LargeBinary(HASH_SIZE))
    mr_signer: Mapped[bytes | None] = mapped_column(LargeBinary(HASH_SIZE))
    isv_prod_id: Mapped[int | None] = mapped_column(Integer)
    min_isv_svn: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    allow_debug: Mapped[bool | None] = mapped_column(Boolean)
    quote_statuses: Mapped[list[str] | None] = mapped_column(JSON)
    tcb_statuses: Mapped[list[str] | None] = mapped_column(JSON)
    denied_advisories: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, onupdate=_utcnow)

    host_routes: Mapped[list[HostRouteRow]] = relationship(
        back_populates="app", cascade="all, delete-orphan", passive_deletes=True
    )
    categories: Mapped[list[Category]] = relationship(
        secondary=app_categories, back_populates="apps", order_by="Category.name"
    )

    def __repr__(self) -> str:
        ident = (self.mr_enclave or self.mr_signer or b"").hex()
        return f"App(id={self.id!r}, name={self.name!r}, {ident})"


class HostRouteRow(Base):
    """Clients on host subnet `host_network/host_prefix_len` may bring `app` into a subnet.

    The policy tries an entry's routes most specific prefix first, then by ascending host
    network (see docs/store.md); a host in none of them is denied.
    """

    __tablename__ = "app_host_routes"
    __table_args__ = (
        UniqueConstraint("app_id", "host_network", "host_prefix_len"),
        CheckConstraint("host_prefix_len >= 0 AND host_prefix_len <= 32", name="prefix_len_range"),
        CheckConstraint(
            "host_network >= 0 AND host_network <= 4294967295", name="host_network_range"
        ),
        CheckConstraint(
            "host_network % (CAST(1 AS BIGINT) << (32 - host_prefix_len)) = 0",
            name="host_network_aligned",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    host_network: Mapped[int] = mapped_column(BigInteger)
    host_prefix_len: Mapped[int] = mapped_column(SmallInteger)
    enclave_subnet_id: Mapped[int] = mapped_column(
        ForeignKey("enclave_subnets.id", ondelete="RESTRICT"), index=True
    )

    app: Mapped[App] = relationship(back_populates="host_routes")
    enclave_subnet: Mapped[EnclaveSubnet] = relationship()

    @property
    def host_subnet(self) -> IPv4Network:
        """The host subnet as an `IPv4Network`."""
        return IPv4Network((self.host_network, self.host_prefix_len))


class Lease(Base):
    """One enclave's hold on one enclave address, from assignment to release.

    At most one lease per address is open (`ended_at` NULL) at any time, across every gateway
    sharing the database: the partial unique index `uq_leases_open_address` enforces it, so
    two allocators racing for one address cannot both succeed. Closed leases are the history
    the allocator reads to reuse the least recently released address first.
    """

    __tablename__ = "leases"
    __table_args__ = (
        Index(
            "uq_leases_open_address",
            "address",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("ix_leases_subnet_id_address", "subnet_id", "address"),
        Index("ix_leases_gateway_id_ended_at", "gateway_id", "ended_at"),
        CheckConstraint("address >= 0 AND address <= 4294967295", name="address_range"),
        CheckConstraint("host_address >= 0 AND host_address <= 4294967295", name="host_range"),
        CheckConstraint("host_port >= 0 AND host_port <= 65535", name="host_port_range"),
        CheckConstraint(
            "(ended_at IS NULL AND end_reason IS NULL)"
            " OR (ended_at IS NOT NULL AND end_reason IS NOT NULL)",
            name="end_consistent",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subnet_id: Mapped[int] = mapped_column(ForeignKey("enclave_subnets.id", ondelete="RESTRICT"))
    address: Mapped[int] = mapped_column(BigInteger)
    gateway_id: Mapped[str] = mapped_column(String(64))
    mr_enclave: Mapped[bytes] = mapped_column(LargeBinary(HASH_SIZE))
    mr_signer: Mapped[bytes] = mapped_column(LargeBinary(HASH_SIZE))
    isv_prod_id: Mapped[int | None] = mapped_column(Integer)
    isv_svn: Mapped[int | None] = mapped_column(Integer)
    app_id: Mapped[int | None] = mapped_column(
        ForeignKey("apps.id", ondelete="SET NULL"), index=True
    )
    host_address: Mapped[int] = mapped_column(BigInteger)
    host_port: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    packets_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    packets_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))

    subnet: Mapped[EnclaveSubnet] = relationship()
    app: Mapped[App | None] = relationship()

    @property
    def ip(self) -> IPv4Address:
        """The leased enclave address."""
        return IPv4Address(self.address)

    @property
    def host_ip(self) -> IPv4Address:
        """The untrusted host the enclave's first tunnel came from."""
        return IPv4Address(self.host_address)


class AuditEvent(Base):
    """One change made to the policy or state, by whom, and the object before and after.

    `actor_uid` is the Unix uid of the requesting process when known (peer credentials of the
    control socket, or the uid running `sengadm`); `actor_name` the user or component name.
    `before`/`after` are JSON objects (NULL for a creation / deletion).
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, index=True)
    actor_uid: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
