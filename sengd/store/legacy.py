"""Import of the original SENG server's SQLite databases (PROTOCOL.md §9).

Two schemas exist:
- vanilla (`seng_db_creator.sql`): `enclave_subnets(id, subnet, submask, gateway)` and
  `apps(id, name, mr_enclave, mr_signer, host_subnet, host_submask, enc_subnet_id)`, one row per
  (application, host subnet);
- netfilter (`seng_netfilter_db_creator.sql`): `apps(id, name, mr_enclave, mr_signer)` and
  `categories(id, name, apps_id)`, no subnets.

Addresses and masks are "in_addr values": the integer whose little-endian bytes are the address
in network order (192.168.28.2 is stored as 0x021CA8C0). `decode_in_addr` undoes that.

Mapping (docs/store.md explains the choices):
- each legacy enclave subnet becomes an enclave subnet (matched to an existing one by CIDR);
- the rows of one MRENCLAVE become one allowlist entry matched by MRENCLAVE, with one host
  route per row (host subnet -> enclave subnet); the stored MRSIGNER is kept in the entry,
  informational there as it was in the original (which never checked it);
- netfilter apps become entries with the host route 0.0.0.0/0 into the default subnet
  192.168.28.0/24 (gateway .1), with their categories.

Importing is idempotent: what exists already is left alone, differences are reported as
conflicts and never overwritten. Every change is written to the audit log as actor
"legacy-import".
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

from sengd.store import audit
from sengd.store.db import SchemaState, require_current_on, status_on, upgrade_on
from sengd.store.errors import InvalidSubnet, LegacyImportError
from sengd.store.models import HASH_SIZE, App, Category, EnclaveSubnet, HostRouteRow
from sengd.store.subnets import (
    find_subnet,
    overlapping_subnets,
    validate_enclave_subnet,
)

ACTOR_NAME = "legacy-import"
"""The actor name of every audit event the import writes."""

DEFAULT_SUBNET = IPv4Network("192.168.28.0/24")
DEFAULT_GATEWAY = IPv4Address("192.168.28.1")
"""The original server's single subnet when it has no subnet table (netfilter mode)."""

NETFILTER_SUBNET_KEY = "default"
ANY_HOST = IPv4Network("0.0.0.0/0")
SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_NAME = 128

_VANILLA_SUBNET_COLUMNS = {"id", "subnet", "submask", "gateway"}
_VANILLA_APP_COLUMNS = {
    "id",
    "name",
    "mr_enclave",
    "mr_signer",
    "host_subnet",
    "host_submask",
    "enc_subnet_id",
}
_NETFILTER_APP_COLUMNS = {"id", "name", "mr_enclave", "mr_signer"}
_NETFILTER_CATEGORY_COLUMNS = {"name", "apps_id"}


class LegacySchema(StrEnum):
    """Which original schema a file has."""

    VANILLA = "vanilla"
    NETFILTER = "netfilter"


@dataclass(frozen=True, slots=True)
class LegacySubnet:
    """An enclave subnet of the legacy file, decoded. `key` is its legacy id as text."""

    key: str
    network: IPv4Network
    gateway: IPv4Address


@dataclass(frozen=True, slots=True)
class LegacyApp:
    """One application of the legacy file: all its rows merged (they share the MRENCLAVE).

    `routes` are (host subnet, legacy subnet key) pairs in row order.
    """

    legacy_ids: tuple[int, ...]
    name: str
    mr_enclave: bytes
    mr_signer: bytes | None
    routes: tuple[tuple[IPv4Network, str], ...]
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LegacyDatabase:
    """The decoded content of a legacy file, and what could not be decoded."""

    schema: LegacySchema
    subnets: tuple[LegacySubnet, ...]
    apps: tuple[LegacyApp, ...]
    problems: tuple[str, ...]
    """Rows that cannot be imported, each with the reason."""
    notes: tuple[str, ...]
    """Things decoded with an interpretation the operator should know about."""


@dataclass(slots=True)
class ImportReport:
    """What an import did (or, for a dry run, would do)."""

    source: str
    schema: str
    dry_run: bool
    changes: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subnets_created: int = 0
    entries_created: int = 0
    entries_updated: int = 0
    routes_added: int = 0
    categories_created: int = 0
    category_links_added: int = 0

    @property
    def changed(self) -> bool:
        """True when the import changed (or would change) the database."""
        return bool(self.changes)

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        data = asdict(self)
        data["changed"] = self.changed
        return data


def decode_in_addr(value: object) -> IPv4Address:
    """Decode an in_addr value: the integer whose little-endian bytes are the address.

    Values written through a signed 32-bit API (negative, -2**31 ... -1) are accepted as their
    two's complement. Anything else raises `ValueError`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    if -(2**31) <= value < 0:
        value += 2**32
    if not 0 <= value < 2**32:
        raise ValueError(f"{value} is not a 32-bit value")
    return IPv4Address(value.to_bytes(4, "little"))


def encode_in_addr(address: IPv4Address) -> int:
    """The in_addr value of `address` (the inverse of `decode_in_addr`)."""
    return int.from_bytes(address.packed, "little")


def decode_netmask(value: object) -> int:
    """The prefix length of an in_addr-encoded netmask; `ValueError` if not contiguous."""
    mask = int(decode_in_addr(value))
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise ValueError(f"{IPv4Address(mask)} is not a contiguous netmask")
    return 32 - inverted.bit_length()


def _decode_network(address_value: object, mask_value: object) -> tuple[IPv4Network, bool]:
    """The network of an (address, mask) in_addr pair and whether host bits had to be cleared."""
    address = decode_in_addr(address_value)
    prefix = decode_netmask(mask_value)
    network = IPv4Network((address, prefix), strict=False)
    return network, network.network_address != address


def _decode_hash(value: object, what: str) -> tuple[bytes, str | None]:
    """A 32-byte hash stored as BLOB (or, leniently, as 64 hex digits of TEXT)."""
    if isinstance(value, bytes) and len(value) == HASH_SIZE:
        return value, None
    if isinstance(value, str) and len(value) == 2 * HASH_SIZE:
        try:
            return bytes.fromhex(value), f"{what} stored as hex text, decoded"
        except ValueError:
            pass
    shown = f"{len(value)}-byte BLOB" if isinstance(value, bytes) else repr(value)[:80]
    raise ValueError(f"{what} is {shown}, not a 32-byte hash")


def _decode_name(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"name {value!r} is empty or not text")
    if len(value) > MAX_NAME:
        raise ValueError(f"name is longer than {MAX_NAME} characters")
    return value


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    # `table` is one of this module's constant names, never input.
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def _detect(conn: sqlite3.Connection, path: Path) -> tuple[LegacySchema, set[str]]:
    tables = {
        str(row[0]) for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    apps = _columns(conn, "apps") if "apps" in tables else set()
    if (
        "enclave_subnets" in tables
        and apps >= _VANILLA_APP_COLUMNS
        and _columns(conn, "enclave_subnets") >= _VANILLA_SUBNET_COLUMNS
    ):
        return LegacySchema.VANILLA, tables - {"apps", "enclave_subnets"}
    if (
        "enclave_subnets" not in tables
        and "categories" in tables
        and apps >= _NETFILTER_APP_COLUMNS
        and _columns(conn, "categories") >= _NETFILTER_CATEGORY_COLUMNS
    ):
        return LegacySchema.NETFILTER, tables - {"apps", "categories"}
    found = ", ".join(sorted(tables)) or "none"
    raise LegacyImportError(
        f"{path}: neither the vanilla SENG schema (tables enclave_subnets(id, subnet, submask, "
        "gateway) and apps(..., host_subnet, host_submask, enc_subnet_id)) nor the netfilter "
        f"SENG schema (tables apps(id, name, mr_enclave, mr_signer) and categories(name, "
        f"apps_id)); tables found: {found}"
    )


def _open_readonly(path: Path) -> sqlite3.Connection:
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LegacyImportError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if magic != SQLITE_MAGIC:
        raise LegacyImportError(f"{path}: not an SQLite database file")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LegacyImportError(f"{path}: cannot open: {exc}") from exc


def read_legacy_database(path: Path) -> LegacyDatabase:
    """Read and decode a legacy SENG database without modifying it.

    Raises `LegacyImportError` for a file that is unreadable, not SQLite, or of neither schema.
    Rows that cannot be represented are listed in `problems` rather than raised.
    """
    conn = _open_readonly(path)
    try:
        schema, extra_tables = _detect(conn, path)
        notes = [
            f"table {name} is not part of the {schema} schema; ignored"
            for name in sorted(extra_tables)
        ]
        if schema is LegacySchema.VANILLA:
            return _read_vanilla(conn, notes)
        return _read_netfilter(conn, notes)
    except sqlite3.Error as exc:
        raise LegacyImportError(f"{path}: cannot read as an SQLite database: {exc}") from exc
    finally:
        conn.close()


def _read_vanilla(conn: sqlite3.Connection, notes: list[str]) -> LegacyDatabase:
    problems: list[str] = []
    subnets: list[LegacySubnet] = []
    for legacy_id, subnet, submask, gateway in conn.execute(
        "SELECT id, subnet, submask, gateway FROM enclave_subnets ORDER BY id"
    ):
        where = f"enclave_subnets id {legacy_id}"
        try:
            network, had_host_bits = _decode_network(subnet, submask)
        except ValueError as exc:
            problems.append(f"{where}: {exc}; not imported")
            continue
        if had_host_bits:
            notes.append(
                f"{where}: address {decode_in_addr(subnet)} has host bits set; using {network}"
            )
        if gateway is None:
            gateway_address = network.network_address + 1
            notes.append(f"{where}: no gateway stored; using {gateway_address}")
        else:
            try:
                gateway_address = decode_in_addr(gateway)
            except ValueError as exc:
                problems.append(f"{where} ({network}): gateway {exc}; not imported")
                continue
        try:
            validate_enclave_subnet(network, gateway_address)
        except InvalidSubnet as exc:
            problems.append(f"{where}: {exc}; not imported")
            continue
        subnets.append(LegacySubnet(key=str(legacy_id), network=network, gateway=gateway_address))

    rows: dict[bytes, list[tuple[int, str, bytes | None, IPv4Network, str]]] = {}
    query = (
        "SELECT id, name, mr_enclave, mr_signer, host_subnet, host_submask, enc_subnet_id "
        "FROM apps ORDER BY id"
    )
    for (
        legacy_id,
        name,
        mr_enclave,
        mr_signer,
        host_subnet,
        host_submask,
        subnet_id,
    ) in conn.execute(query):
        where = f"apps id {legacy_id}"
        try:
            app_name = _decode_name(name)
            enclave, enclave_note = _decode_hash(mr_enclave, "MRENCLAVE")
            signer = _decode_signer(mr_signer, where, notes)
            host_network, had_host_bits = _decode_network(host_subnet, host_submask)
        except ValueError as exc:
            problems.append(f"{where}: {exc}; not imported")
            continue
        if enclave_note:
            notes.append(f"{where}: {enclave_note}")
        if had_host_bits:
            notes.append(
                f"{where}: host address {decode_in_addr(host_subnet)} has host bits set; "
                f"using {host_network}"
            )
        rows.setdefault(enclave, []).append(
            (legacy_id, app_name, signer, host_network, str(subnet_id))
        )

    apps = []
    for enclave, app_rows in rows.items():
        apps.append(_merge_rows(enclave, app_rows, notes, categories=()))
    return LegacyDatabase(
        schema=LegacySchema.VANILLA,
        subnets=tuple(subnets),
        apps=tuple(apps),
        problems=tuple(problems),
        notes=tuple(notes),
    )


def _decode_signer(value: object, where: str, notes: list[str]) -> bytes | None:
    # MRSIGNER was never checked by the original; a malformed one is dropped, not fatal.
    if value is None:
        return None
    try:
        signer, note = _decode_hash(value, "MRSIGNER")
    except ValueError as exc:
        notes.append(f"{where}: {exc}; MRSIGNER not kept")
        return None
    if note:
        notes.append(f"{where}: {note}")
    return signer


def _merge_rows(
    enclave: bytes,
    app_rows: list[tuple[int, str, bytes | None, IPv4Network, str]],
    notes: list[str],
    categories: Iterable[str],
) -> LegacyApp:
    first_id, name, signer, _host, _subnet = app_rows[0]
    names = {row[1] for row in app_rows}
    if len(names) > 1:
        notes.append(
            f"apps ids {', '.join(str(r[0]) for r in app_rows)} share MRENCLAVE "
            f"{enclave.hex()} under different names {sorted(names)}; using {name!r} "
            f"(id {first_id})"
        )
    signers = {row[2] for row in app_rows if row[2] is not None}
    if len(signers) > 1:
        notes.append(
            f"apps with MRENCLAVE {enclave.hex()} store different MRSIGNERs; keeping the one of "
            f"id {first_id}"
        )
    return LegacyApp(
        legacy_ids=tuple(row[0] for row in app_rows),
        name=name,
        mr_enclave=enclave,
        mr_signer=signer,
        routes=tuple((row[3], row[4]) for row in app_rows),
        categories=tuple(categories),
    )


def _read_netfilter(conn: sqlite3.Connection, notes: list[str]) -> LegacyDatabase:
    problems: list[str] = []
    categories: dict[object, list[str]] = {}
    for name, apps_id in conn.execute("SELECT name, apps_id FROM categories ORDER BY rowid"):
        try:
            category = _decode_name(name)
        except ValueError as exc:
            problems.append(f"categories row for apps id {apps_id}: {exc}; not imported")
            continue
        if len(category) > 64:
            problems.append(f"category {category[:64]!r}...: longer than 64 characters")
            continue
        categories.setdefault(apps_id, []).append(category)

    rows: dict[bytes, list[tuple[int, str, bytes | None, IPv4Network, str]]] = {}
    app_categories: dict[bytes, list[str]] = {}
    known_ids: set[object] = set()
    for legacy_id, name, mr_enclave, mr_signer in conn.execute(
        "SELECT id, name, mr_enclave, mr_signer FROM apps ORDER BY id"
    ):
        known_ids.add(legacy_id)
        where = f"apps id {legacy_id}"
        try:
            app_name = _decode_name(name)
            enclave, enclave_note = _decode_hash(mr_enclave, "MRENCLAVE")
        except ValueError as exc:
            problems.append(f"{where}: {exc}; not imported")
            continue
        if enclave_note:
            notes.append(f"{where}: {enclave_note}")
        signer = _decode_signer(mr_signer, where, notes)
        rows.setdefault(enclave, []).append(
            (legacy_id, app_name, signer, ANY_HOST, NETFILTER_SUBNET_KEY)
        )
        merged = app_categories.setdefault(enclave, [])
        merged.extend(c for c in categories.get(legacy_id, []) if c not in merged)
    for apps_id, names in categories.items():
        if apps_id not in known_ids:
            problems.append(
                f"categories {sorted(names)} refer to apps id {apps_id}, which does not exist; "
                "not imported"
            )
    apps = [
        _merge_rows(enclave, app_rows, notes, categories=app_categories[enclave])
        for enclave, app_rows in rows.items()
    ]
    subnets = (
        (LegacySubnet(key=NETFILTER_SUBNET_KEY, network=DEFAULT_SUBNET, gateway=DEFAULT_GATEWAY),)
        if apps
        else ()
    )
    return LegacyDatabase(
        schema=LegacySchema.NETFILTER,
        subnets=subnets,
        apps=tuple(apps),
        problems=tuple(problems),
        notes=tuple(notes),
    )


class _Importer:
    """Applies a decoded legacy database to a session, filling in an `ImportReport`."""

    def __init__(
        self, session: Session, legacy: LegacyDatabase, report: ImportReport, now: datetime
    ) -> None:
        self.session = session
        self.legacy = legacy
        self.report = report
        self.now = now
        self.actor = audit.Actor.local(ACTOR_NAME)
        self.subnets: dict[str, EnclaveSubnet | None] = {}

    def audit(
        self,
        action: str,
        object_type: str,
        object_id: int | str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        audit.record(
            self.session,
            self.actor,
            action,
            object_type,
            object_id,
            before=before,
            after=after,
            at=self.now,
        )

    def run(self) -> None:
        for subnet in self.legacy.subnets:
            self.subnets[subnet.key] = self._subnet(subnet)
        for app in self.legacy.apps:
            self._app(app)

    def _unused_subnet_name(self, key: str) -> str:
        base = f"legacy-{key}"
        name, n = base, 1
        while self.session.scalars(
            select(EnclaveSubnet.id).where(EnclaveSubnet.name == name)
        ).first():
            n += 1
            name = f"{base}-{n}"
        return name

    def _subnet(self, legacy: LegacySubnet) -> EnclaveSubnet | None:
        label = f"enclave subnet {legacy.network} gw {legacy.gateway} (legacy {legacy.key})"
        existing = find_subnet(self.session, legacy.network)
        if existing is not None:
            if existing.gateway != int(legacy.gateway):
                self.report.conflicts.append(
                    f"{label}: exists as {existing.name!r} with gateway "
                    f"{existing.gateway_address}; kept that gateway"
                )
            else:
                self.report.unchanged.append(f"{label}: exists as {existing.name!r}")
            return existing
        clash = overlapping_subnets(self.session, legacy.network)
        if clash:
            others = ", ".join(f"{s.cidr} ({s.name!r})" for s in clash)
            self.report.conflicts.append(
                f"{label}: overlaps existing {others}; not imported, nor the host routes into it"
            )
            return None
        subnet = EnclaveSubnet(
            name=self._unused_subnet_name(legacy.key),
            description=f"imported from {self.report.source} ({self.legacy.schema} SENG "
            f"database{'' if legacy.key == NETFILTER_SUBNET_KEY else f', id {legacy.key}'})",
            network=int(legacy.network.network_address),
            prefix_len=legacy.network.prefixlen,
            gateway=int(legacy.gateway),
            created_at=self.now,
        )
        self.session.add(subnet)
        self.session.flush()
        self.report.subnets_created += 1
        self.report.changes.append(f"create {label} as {subnet.name!r}")
        self.audit("create", "enclave_subnet", subnet.id, None, audit.subnet_snapshot(subnet))
        return subnet

    def _category(self, name: str) -> Category:
        category = self.session.scalars(select(Category).where(Category.name == name)).first()
        if category is None:
            category = Category(name=name, description="")
            self.session.add(category)
            self.session.flush()
            self.report.categories_created += 1
            self.report.changes.append(f"create category {name!r}")
            self.audit("create", "category", category.id, None, audit.category_snapshot(category))
        return category

    def _app(self, legacy: LegacyApp) -> None:
        label = f"app {legacy.name!r} {legacy.mr_enclave.hex()}"
        routes: dict[IPv4Network, EnclaveSubnet] = {}
        for host, key in legacy.routes:
            subnet = self.subnets.get(key)
            if subnet is None:
                self.report.conflicts.append(
                    f"{label}: host route {host} -> legacy enclave subnet {key} skipped (that "
                    "subnet was not imported)"
                )
                continue
            first = routes.setdefault(host, subnet)
            if first is not subnet:
                self.report.conflicts.append(
                    f"{label}: the legacy file maps host subnet {host} to both {first.cidr} and "
                    f"{subnet.cidr}; kept {first.cidr} (the lower apps id)"
                )
        app = self.session.scalars(
            select(App)
            .where(App.mr_enclave == legacy.mr_enclave)
            .options(selectinload(App.host_routes), selectinload(App.categories))
            .order_by(App.id)
        ).first()
        if app is None:
            if not routes:
                self.report.conflicts.append(f"{label}: no usable host route; not imported")
                return
            self._create_app(legacy, label, routes)
            return
        self._update_app(app, legacy, label, routes)

    def _create_app(
        self, legacy: LegacyApp, label: str, routes: dict[IPv4Network, EnclaveSubnet]
    ) -> None:
        ids = ", ".join(str(i) for i in legacy.legacy_ids)
        app = App(
            name=legacy.name,
            mr_enclave=legacy.mr_enclave,
            mr_signer=legacy.mr_signer,
            enabled=True,
            denied_advisories=[],
            comment=f"imported from {self.report.source} ({self.legacy.schema} SENG database, "
            f"apps id {ids})",
            created_at=self.now,
            updated_at=self.now,
        )
        for host, subnet in routes.items():
            app.host_routes.append(
                HostRouteRow(
                    host_network=int(host.network_address),
                    host_prefix_len=host.prefixlen,
                    enclave_subnet=subnet,
                )
            )
        app.categories = [self._category(name) for name in legacy.categories]
        self.session.add(app)
        self.session.flush()
        self.report.entries_created += 1
        self.report.routes_added += len(app.host_routes)
        self.report.category_links_added += len(app.categories)
        routes_text = ", ".join(
            f"{r.host_subnet} -> {r.enclave_subnet.cidr}" for r in app.host_routes
        )
        cats = f"; categories {', '.join(c.name for c in app.categories)}" if app.categories else ""
        self.report.changes.append(f"create {label} (#{app.id}): {routes_text}{cats}")
        self.audit("create", "app", app.id, None, audit.app_snapshot(app))

    def _update_app(
        self,
        app: App,
        legacy: LegacyApp,
        label: str,
        routes: dict[IPv4Network, EnclaveSubnet],
    ) -> None:
        before = audit.app_snapshot(app)
        changed: list[str] = []
        if app.name != legacy.name:
            self.report.conflicts.append(
                f"{label}: entry #{app.id} has this MRENCLAVE under the name {app.name!r}; "
                "kept that name"
            )
        for host, subnet in routes.items():
            existing = next(
                (
                    r
                    for r in app.host_routes
                    if r.host_network == int(host.network_address)
                    and r.host_prefix_len == host.prefixlen
                ),
                None,
            )
            if existing is None:
                app.host_routes.append(
                    HostRouteRow(
                        host_network=int(host.network_address),
                        host_prefix_len=host.prefixlen,
                        enclave_subnet=subnet,
                    )
                )
                self.report.routes_added += 1
                changed.append(f"add host route {host} -> {subnet.cidr}")
            elif existing.enclave_subnet_id != subnet.id:
                self.report.conflicts.append(
                    f"{label}: entry #{app.id} maps host subnet {host} to enclave subnet "
                    f"#{existing.enclave_subnet_id}, the legacy file to {subnet.cidr}; kept "
                    "the entry's"
                )
        have = {c.name for c in app.categories}
        for name in legacy.categories:
            if name not in have:
                app.categories.append(self._category(name))
                have.add(name)
                self.report.category_links_added += 1
                changed.append(f"add category {name!r}")
        if app.mr_signer is None and legacy.mr_signer is not None:
            app.mr_signer = legacy.mr_signer
            changed.append("record the MRSIGNER (informational)")
        if not changed:
            self.report.unchanged.append(f"{label}: present as entry #{app.id}")
            return
        app.updated_at = self.now
        self.session.flush()
        self.report.entries_updated += 1
        self.report.changes.append(f"update entry #{app.id} {label}: {'; '.join(changed)}")
        self.audit("update", "app", app.id, before, audit.app_snapshot(app))


def import_legacy(
    session: Session,
    legacy: LegacyDatabase,
    *,
    source: str,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ImportReport:
    """Apply `legacy` to the store through `session` and report what changed.

    The caller commits (or, for a dry run, rolls back): this only adds to the session.
    Idempotent: importing the same content again changes nothing and writes no audit event.
    """
    report = ImportReport(source=source, schema=str(legacy.schema), dry_run=dry_run)
    report.conflicts.extend(legacy.problems)
    report.notes.extend(legacy.notes)
    when = now if now is not None else datetime.now(UTC)
    importer = _Importer(session, legacy, report, when)
    importer.run()
    if report.changed:
        importer.audit(
            "import-legacy",
            "legacy_database",
            source,
            None,
            {
                "schema": str(legacy.schema),
                "subnets_created": report.subnets_created,
                "entries_created": report.entries_created,
                "entries_updated": report.entries_updated,
                "routes_added": report.routes_added,
                "categories_created": report.categories_created,
                "category_links_added": report.category_links_added,
                "conflicts": len(report.conflicts),
            },
        )
        session.flush()
    return report


def import_legacy_file(engine: Engine, path: Path, *, dry_run: bool = False) -> ImportReport:
    """Read `path` and import it in one transaction (rolled back for a dry run).

    An empty database gets the schema first, in the same transaction (so a dry run leaves
    it empty); an outdated one is refused (`UpgradeRequired`): upgrading is
    `sengadm db upgrade`'s decision. Raises `LegacyImportError` when the file is not a legacy
    SENG database.
    """
    legacy = read_legacy_database(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    source = f"{path.name} (sha256 {digest[:16]})"
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if status_on(connection).state is SchemaState.EMPTY:
                upgrade_on(connection)
            else:
                require_current_on(connection, "the import does not upgrade a database")
            with Session(bind=connection) as session:
                report = import_legacy(session, legacy, source=source, dry_run=dry_run)
                session.flush()
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    return report
