"""Administration of the store: allowlist entries, enclave subnets, categories, audit, apply.

The operations work on a SQLAlchemy `Session` inside the caller's transaction (the caller
commits; nothing here commits). Each change is written to the audit log with the given
`Actor`, together with the object's JSON snapshot before and after, and is returned as a
`Change` so that callers can print a diff. Operations that find nothing to change change
nothing and write no audit event.

Results are JSON-ready dicts: hashes as lowercase hex, addresses as dotted or CIDR text.
Errors are `AdminError`s naming what was wrong: `NotFound`, `Conflict` (the request clashes
with the stored state) and `InvalidInput` (the request itself is wrong).

`STORE_METHODS` describes the same operations as RPC methods (`StoreMethod`): the daemon serves
them on its control socket and `sengadm --db URL` runs them on a database directly, both
through the same handlers, which validate their parameters with `sengd.rpc.protocol.Params`
and raise `RpcError`s with the JSON-RPC codes of the errors above.

Rules (docs/apply.md describes them for administrators):
- An allowlist entry is named; names are unique (entries imported from legacy databases under
  one name can be addressed as `#ID`). No two entries allowlist the same MRENCLAVE, nor the
  same signer and product: removing or disabling an entry must shut its enclaves out, which a
  second entry for the same identity would silently undo.
- An entry needs at least one host route `CIDR[=SUBNET]`: clients on host subnet CIDR may
  bring the enclave into enclave subnet SUBNET (a subnet name or CIDR). Without `=SUBNET` the
  route leads to the default enclave subnet: the one marked default, else the only one; on a
  database without subnets, 192.168.28.0/24 with gateway 192.168.28.1 is created and marked
  default, as the original SENG servers had it.
- A subnet that host routes lead to, or that has open leases, is only removed when forced;
  then the routes into it go too (the result names the entries that lost routes) and its
  lease rows are deleted (the history of a subnet that no longer exists).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from sengd.policy import DEFAULT_QUOTE_STATUSES, KNOWN_TCB_STATUSES, OPT_IN_QUOTE_STATUSES
from sengd.rpc.protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, Params, RpcError
from sengd.store import audit
from sengd.store.allocator import assignable_count
from sengd.store.audit import Actor
from sengd.store.errors import InvalidSubnet, StoreError
from sengd.store.models import (
    HASH_SIZE,
    App,
    AuditEvent,
    Category,
    EnclaveSubnet,
    HostRouteRow,
    Lease,
)
from sengd.store.subnets import find_subnet, overlapping_subnets, validate_enclave_subnet

ADMIN = "admin"
"""Role of the methods that change the store (root and the admin group)."""
MONITOR = "monitor"
"""Role of the methods that only read (the monitor group, too)."""

DEFAULT_SUBNET_NAME = "default"
DEFAULT_SUBNET = IPv4Network("192.168.28.0/24")
DEFAULT_GATEWAY = IPv4Address("192.168.28.1")
"""The enclave subnet created on first need in a database without subnets (the originals')."""

MAX_ENTRY_NAME = 128
MAX_SUBNET_NAME = 64
MAX_CATEGORY_NAME = 64
MAX_TEXT = 4096
MAX_LIST = 1024
"""Upper bound of every list parameter (host routes, categories, statuses, advisories)."""
DEFAULT_AUDIT_LIMIT = 50
MAX_AUDIT_LIMIT = 1000
APPLY_VERSION = 1
"""The version of the `sengadm apply` document format (docs/apply.md)."""

_CATEGORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ADVISORY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HEX = re.compile(r"[0-9a-fA-F]*")
_ENTRY_ID_REF = re.compile(r"#([0-9]{1,9})")


# -- errors --------------------------------------------------------------------------------


class AdminError(StoreError):
    """An administration request that cannot be carried out; `rpc_code` is its JSON-RPC code."""

    rpc_code = INVALID_PARAMS

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def as_rpc(self) -> RpcError:
        """The same error as an RPC error answer."""
        return RpcError(self.rpc_code, self.message, self.data)


class NotFound(AdminError, LookupError):
    """No entry, subnet or category by that name."""

    rpc_code = NOT_FOUND


class Conflict(AdminError):
    """The request clashes with what is stored (a name taken, a subnet in use, an overlap)."""

    rpc_code = CONFLICT


class InvalidInput(AdminError, ValueError):
    """The request itself is wrong: a malformed hash, CIDR or name, a missing field."""

    rpc_code = INVALID_PARAMS


# -- snapshots -----------------------------------------------------------------------------


def subnet_json(subnet: EnclaveSubnet) -> dict[str, Any]:
    """An enclave subnet as a JSON object (the audit snapshot, too)."""
    return {
        "id": subnet.id,
        "name": subnet.name,
        "network": str(subnet.cidr),
        "gateway": str(subnet.gateway_address),
        "description": subnet.description,
        "marked_default": subnet.is_default,
    }


def category_json(category: Category) -> dict[str, Any]:
    """A category as a JSON object (the audit snapshot, too)."""
    return {"id": category.id, "name": category.name, "description": category.description}


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _sorted_or_none(values: Iterable[str] | None) -> list[str] | None:
    return None if values is None else sorted(set(values))


def _route_json(host: IPv4Network, subnet: EnclaveSubnet) -> dict[str, Any]:
    return {
        "host_subnet": str(host),
        "enclave_subnet": subnet.name,
        "enclave_cidr": str(subnet.cidr),
        "enclave_subnet_id": subnet.id,
    }


def _entry_doc(
    spec: EntrySpec, routes: Sequence[tuple[IPv4Network, EnclaveSubnet]]
) -> dict[str, Any]:
    # One function renders both a stored entry and a requested one, so that "unchanged" is
    # plain equality of the two documents. Routes in decision order (sengd.store.allowlist).
    ordered = sorted(routes, key=lambda r: (-r[0].prefixlen, int(r[0].network_address)))
    return {
        "name": spec.name,
        "match": "mr_enclave" if spec.mr_enclave is not None else "signer",
        "mr_enclave": _hex(spec.mr_enclave),
        "mr_signer": _hex(spec.mr_signer),
        "isv_prod_id": spec.isv_prod_id,
        "min_isv_svn": spec.min_isv_svn,
        "host_routes": [_route_json(host, subnet) for host, subnet in ordered],
        "categories": sorted(set(spec.categories)),
        "allow_debug": spec.allow_debug,
        "quote_statuses": _sorted_or_none(spec.quote_statuses),
        "tcb_statuses": _sorted_or_none(spec.tcb_statuses),
        "denied_advisories": sorted(set(spec.denied_advisories)),
        "enabled": spec.enabled,
        "comment": spec.comment,
    }


def entry_json(app: App) -> dict[str, Any]:
    """An allowlist entry as a JSON object (the audit snapshot, too).

    Host routes are listed in decision order (most specific host subnet first), each with the
    name, CIDR and id of its enclave subnet; lists are sorted.
    """
    routes = [(row.host_subnet, row.enclave_subnet) for row in app.host_routes]
    return {"id": app.id, **_entry_doc(EntrySpec.of(app), routes)}


def _times(app: App) -> dict[str, Any]:
    return {"created_at": app.created_at.isoformat(), "updated_at": app.updated_at.isoformat()}


# -- changes and their audit events --------------------------------------------------------

_AUDIT_TYPE = {"entry": "app", "subnet": "enclave_subnet", "category": "category"}
"""Audit object types (the names `sengd.store.legacy` uses for the same objects)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One object created, updated or deleted, with its snapshots before and after."""

    object: str  # "entry", "subnet" or "category"
    action: str  # "create", "update" or "delete"
    name: str
    id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def fields(self) -> list[str]:
        """The keys whose values differ (for an update)."""
        if self.before is None or self.after is None:
            return []
        keys = dict.fromkeys([*self.before, *self.after])
        return [k for k in keys if self.before.get(k) != self.after.get(k)]

    def as_json(self) -> dict[str, Any]:
        """The change as a JSON object."""
        doc: dict[str, Any] = {
            "object": self.object,
            "action": self.action,
            "name": self.name,
            "id": self.id,
            "before": self.before,
            "after": self.after,
        }
        if self.action == "update":
            doc["fields"] = self.fields
        return doc


@dataclass
class ChangeLog:
    """Collects the changes of one request and writes an audit event for each."""

    session: Session
    actor: Actor
    changes: list[Change] = field(default_factory=list)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(
        self,
        change: Change,
        audit_action: str | None = None,
    ) -> None:
        """Record `change` (audit action defaults to the change's action)."""
        self.changes.append(change)
        audit.record(
            self.session,
            self.actor,
            audit_action or change.action,
            _AUDIT_TYPE[change.object],
            change.id,
            before=change.before,
            after=change.after,
            at=self.at,
        )

    def result(self, **extra: Any) -> dict[str, Any]:
        """The JSON result of a write: what changed, and `extra`."""
        return {
            **extra,
            "changed": bool(self.changes),
            "changes": [c.as_json() for c in self.changes],
        }


# -- validation of single values -----------------------------------------------------------


def _check_name(name: str, what: str, limit: int) -> str:
    if not name:
        raise InvalidInput(f"{what} name must not be empty")
    if len(name) > limit:
        raise InvalidInput(f"{what} name {name[:40]!r}...: longer than {limit} characters")
    if name != name.strip() or any(not ch.isprintable() for ch in name):
        raise InvalidInput(
            f"{what} name {name!r}: no leading or trailing blanks nor control characters"
        )
    if name.startswith("#"):
        raise InvalidInput(f"{what} name {name!r}: must not start with '#' (that means an id)")
    return name


def check_entry_name(name: str) -> str:
    """Return `name` if it can name an allowlist entry, else raise `InvalidInput`."""
    return _check_name(name, "entry", MAX_ENTRY_NAME)


def check_category_name(name: str) -> str:
    """Return `name` if it can name a category (letters, digits, `_.-`), else raise."""
    if len(name) > MAX_CATEGORY_NAME or not _CATEGORY_NAME.fullmatch(name):
        raise InvalidInput(
            f"category {name!r}: 1 to {MAX_CATEGORY_NAME} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_hash(text: str, what: str) -> bytes:
    """A 32-byte measurement from 64 hexadecimal digits (an optional `0x` is accepted)."""
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if len(digits) != 2 * HASH_SIZE or not _HEX.fullmatch(digits):
        raise InvalidInput(
            f"{what} must be {2 * HASH_SIZE} hexadecimal digits ({HASH_SIZE} bytes), got "
            f"{len(digits)} characters: {text[:80]!r}"
        )
    return bytes.fromhex(digits)


def parse_network(text: str, what: str) -> IPv4Network:
    """An IPv4 network in CIDR notation; host bits set are refused, naming the network meant."""
    try:
        return IPv4Network(text)
    except ValueError as exc:
        try:
            meant = IPv4Network(text, strict=False)
        except ValueError:
            raise InvalidInput(f"{what} {text!r} is not an IPv4 CIDR ({exc})") from None
        raise InvalidInput(f"{what} {text!r} has host bits set: the network is {meant}") from None


def _parse_address(text: str, what: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an IPv4 address") from None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A requested host route: clients on `host` -> enclave subnet `subnet` (None: default)."""

    host: IPv4Network
    subnet: str | None

    @classmethod
    def parse(cls, text: str) -> RouteSpec:
        """`CIDR` or `CIDR=SUBNET` (SUBNET: a subnet name or CIDR)."""
        host_text, sep, subnet = text.partition("=")
        host = parse_network(host_text.strip(), "host subnet")
        if sep and not subnet.strip():
            raise InvalidInput(f"host route {text!r}: nothing after '='")
        return cls(host, subnet.strip() if sep else None)

    def __str__(self) -> str:
        return str(self.host) if self.subnet is None else f"{self.host}={self.subnet}"


def _check_statuses(values: Sequence[str], allowed: frozenset[str], what: str) -> tuple[str, ...]:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise InvalidInput(
            f"{what}: {', '.join(unknown)} cannot be accepted; choose from "
            f"{', '.join(sorted(allowed))}"
        )
    return tuple(sorted(set(values)))


def _check_advisories(values: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if len(value) > 64 or not _ADVISORY_ID.fullmatch(value):
            raise InvalidInput(f"denied advisory {value!r} is not an advisory id (INTEL-SA-00334)")
    return tuple(sorted(set(values)))


# -- allowlist entries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """The complete requested state of an allowlist entry (docs/apply.md lists the fields).

    `routes` are unresolved (`RouteSpec`); `routes=None` only in the spec of a stored entry
    (`EntrySpec.of`), whose routes are already resolved.
    """

    name: str
    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    routes: tuple[RouteSpec, ...] | None = ()
    categories: tuple[str, ...] = ()
    allow_debug: bool | None = None
    quote_statuses: tuple[str, ...] | None = None
    tcb_statuses: tuple[str, ...] | None = None
    denied_advisories: tuple[str, ...] = ()
    comment: str = ""
    enabled: bool = True

    @classmethod
    def of(cls, app: App) -> EntrySpec:
        """The stored entry's fields (routes left out: `routes=None`)."""
        return cls(
            name=app.name,
            mr_enclave=app.mr_enclave,
            mr_signer=app.mr_signer,
            isv_prod_id=app.isv_prod_id,
            min_isv_svn=app.min_isv_svn,
            routes=None,
            categories=tuple(c.name for c in app.categories),
            allow_debug=app.allow_debug,
            quote_statuses=None if app.quote_statuses is None else tuple(app.quote_statuses),
            tcb_statuses=None if app.tcb_statuses is None else tuple(app.tcb_statuses),
            denied_advisories=tuple(app.denied_advisories or ()),
            comment=app.comment,
            enabled=app.enabled,
        )

    def check(self) -> None:
        """Raise `InvalidInput` unless the fields make a usable entry."""
        where = f"entry {self.name!r}"
        if self.mr_enclave is None and (self.mr_signer is None or self.isv_prod_id is None):
            raise InvalidInput(
                f"{where}: needs an MRENCLAVE, or an MRSIGNER together with an ISV product id"
            )
        if self.isv_prod_id is not None and not 0 <= self.isv_prod_id <= 0xFFFF:
            raise InvalidInput(f"{where}: ISV product id must be 0..65535")
        if not 0 <= self.min_isv_svn <= 0xFFFF:
            raise InvalidInput(f"{where}: minimum ISV SVN must be 0..65535")
        if self.routes is not None:
            if not self.routes:
                raise InvalidInput(
                    f"{where}: needs at least one host route (0.0.0.0/0 admits clients on any "
                    "host); an entry without one admits nobody"
                )
            hosts = [r.host for r in self.routes]
            twice = sorted({str(h) for h in hosts if hosts.count(h) > 1})
            if twice:
                raise InvalidInput(f"{where}: host subnet {', '.join(twice)} given twice")
        if len(self.comment) > MAX_TEXT:
            raise InvalidInput(f"{where}: comment longer than {MAX_TEXT} characters")


_ENTRY_FIELDS = (
    "mr_enclave",
    "mr_signer",
    "isv_prod_id",
    "min_isv_svn",
    "host_routes",
    "categories",
    "allow_debug",
    "quote_statuses",
    "tcb_statuses",
    "denied_advisories",
    "comment",
    "enabled",
)
"""Parameters of `allowlist.add` and `allowlist.update` besides the name."""

_NULL_MEANS = {
    "mr_enclave": None,
    "mr_signer": None,
    "isv_prod_id": None,
    "min_isv_svn": 0,
    "categories": (),
    "allow_debug": None,
    "quote_statuses": None,
    "tcb_statuses": None,
    "denied_advisories": (),
    "comment": "",
}
"""In `allowlist.update`, a parameter given as null resets the field to this."""


def _limited(values: list[str], name: str) -> list[str]:
    if len(values) > MAX_LIST:
        raise InvalidInput(f"{name}: more than {MAX_LIST} items")
    return values


def read_entry_fields(p: Params, routes_key: str = "host_routes") -> dict[str, Any]:
    """The entry fields present (and not null) in `p`, validated, as `EntrySpec` keywords.

    `routes_key` names the host routes parameter (`host_subnets` in apply documents). Type
    errors raise `RpcError(INVALID_PARAMS)` (from `Params`), bad values `InvalidInput`.
    """
    out: dict[str, Any] = {}
    for key in ("mr_enclave", "mr_signer"):
        text = p.get_str(key)
        if text is not None:
            out[key] = parse_hash(text, key)
    for key in ("isv_prod_id", "min_isv_svn"):
        number = p.get_int(key)
        if number is not None:
            out[key] = number
    routes = p.get_strs(routes_key)
    if routes is not None:
        out["routes"] = tuple(RouteSpec.parse(r) for r in _limited(routes, routes_key))
    categories = p.get_strs("categories")
    if categories is not None:
        out["categories"] = tuple(
            sorted({check_category_name(c) for c in _limited(categories, "categories")})
        )
    for key in ("allow_debug", "enabled"):
        flag = p.get_bool(key)
        if flag is not None:
            out[key] = flag
    quote = p.get_strs("quote_statuses")
    if quote is not None:
        out["quote_statuses"] = _check_statuses(
            _limited(quote, "quote_statuses"),
            DEFAULT_QUOTE_STATUSES | OPT_IN_QUOTE_STATUSES,
            "quote_statuses",
        )
    tcb = p.get_strs("tcb_statuses")
    if tcb is not None:
        out["tcb_statuses"] = _check_statuses(
            _limited(tcb, "tcb_statuses"), KNOWN_TCB_STATUSES, "tcb_statuses"
        )
    advisories = p.get_strs("denied_advisories")
    if advisories is not None:
        out["denied_advisories"] = _check_advisories(_limited(advisories, "denied_advisories"))
    comment = p.get_str("comment")
    if comment is not None:
        out["comment"] = comment
    return out


def _entry_query() -> Select[App]:
    return select(App).options(
        selectinload(App.host_routes).selectinload(HostRouteRow.enclave_subnet),
        selectinload(App.categories),
    )


def find_entry(session: Session, ref: str) -> App:
    """The entry named `ref`, or with id N for `#N`; `NotFound`, or `Conflict` if ambiguous."""
    by_id = _ENTRY_ID_REF.fullmatch(ref)
    if by_id:
        app = session.scalars(_entry_query().where(App.id == int(by_id.group(1)))).first()
        if app is None:
            raise NotFound(f"no allowlist entry with id {by_id.group(1)}")
        return app
    apps = list(session.scalars(_entry_query().where(App.name == ref).order_by(App.id)))
    if not apps:
        raise NotFound(f"no allowlist entry named {ref!r}")
    if len(apps) > 1:
        ids = ", ".join(f"#{a.id}" for a in apps)
        raise Conflict(
            f"{len(apps)} allowlist entries are named {ref!r} ({ids}): name one by its id"
        )
    return apps[0]


def find_subnet_ref(session: Session, ref: str) -> EnclaveSubnet:
    """The enclave subnet named `ref`, else the one whose CIDR is `ref`; or `NotFound`."""
    subnet = session.scalars(select(EnclaveSubnet).where(EnclaveSubnet.name == ref)).first()
    if subnet is not None:
        return subnet
    try:
        network = IPv4Network(ref)
    except ValueError:
        network = None
    if network is not None:
        subnet = find_subnet(session, network)
        if subnet is not None:
            return subnet
    raise NotFound(f"no enclave subnet named {ref!r} or with that CIDR")


def _marked_default(session: Session) -> EnclaveSubnet | None:
    return session.scalars(select(EnclaveSubnet).where(EnclaveSubnet.is_default.is_(True))).first()


def effective_default(session: Session) -> EnclaveSubnet | None:
    """The subnet host routes without `=SUBNET` lead to: the marked one, else the only one."""
    marked = _marked_default(session)
    if marked is not None:
        return marked
    subnets = list(session.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.id).limit(2)))
    return subnets[0] if len(subnets) == 1 else None


def default_subnet(session: Session, log: ChangeLog) -> EnclaveSubnet:
    """The default enclave subnet, created (192.168.28.0/24, marked) if there is no subnet.

    `Conflict` when there are several subnets and none is marked default.
    """
    subnet = effective_default(session)
    if subnet is not None:
        return subnet
    names = list(session.scalars(select(EnclaveSubnet.name).order_by(EnclaveSubnet.id)))
    if names:
        raise Conflict(
            f"there are {len(names)} enclave subnets ({', '.join(names)}) and none is the "
            "default: give the subnet as CIDR=SUBNET, or mark one default (`sengadm subnet "
            "set-default`, or `default = true` in an apply document)"
        )
    subnet = EnclaveSubnet(
        name=DEFAULT_SUBNET_NAME,
        description="default enclave subnet (as the original SENG servers)",
        network=int(DEFAULT_SUBNET.network_address),
        prefix_len=DEFAULT_SUBNET.prefixlen,
        gateway=int(DEFAULT_GATEWAY),
        is_default=True,
    )
    session.add(subnet)
    session.flush()
    log.add(Change("subnet", "create", subnet.name, subnet.id, None, subnet_json(subnet)))
    return subnet


def _resolve_routes(
    session: Session, routes: Sequence[RouteSpec], log: ChangeLog
) -> list[tuple[IPv4Network, EnclaveSubnet]]:
    resolved: list[tuple[IPv4Network, EnclaveSubnet]] = []
    for route in routes:
        if route.subnet is None:
            subnet = default_subnet(session, log)
        else:
            try:
                subnet = find_subnet_ref(session, route.subnet)
            except NotFound as exc:
                raise NotFound(f"host route {route}: {exc}") from None
        resolved.append((route.host, subnet))
    return resolved


def _check_identity_free(session: Session, spec: EntrySpec, own_id: int | None) -> None:
    others = select(App).where(App.id != own_id) if own_id is not None else select(App)
    same_name = session.scalars(others.where(App.name == spec.name)).first()
    if same_name is not None:
        raise Conflict(f"an allowlist entry named {spec.name!r} exists already (#{same_name.id})")
    if spec.mr_enclave is not None:
        clash = session.scalars(others.where(App.mr_enclave == spec.mr_enclave)).first()
        what = f"MRENCLAVE {spec.mr_enclave.hex()}"
    else:
        clash = session.scalars(
            others.where(
                App.mr_enclave.is_(None),
                App.mr_signer == spec.mr_signer,
                App.isv_prod_id == spec.isv_prod_id,
            )
        ).first()
        what = f"MRSIGNER {_hex(spec.mr_signer)} product {spec.isv_prod_id}"
    if clash is not None:
        raise Conflict(
            f"allowlist entry {clash.name!r} (#{clash.id}) already allowlists {what}: change "
            "that entry instead (two entries for one identity would keep it admitted after "
            "one is removed)"
        )


def _category(session: Session, name: str, log: ChangeLog) -> Category:
    category = session.scalars(select(Category).where(Category.name == name)).first()
    if category is None:
        category = Category(name=name, description="")
        session.add(category)
        session.flush()
        log.add(Change("category", "create", name, category.id, None, category_json(category)))
    return category


def _write_entry(
    session: Session,
    app: App,
    spec: EntrySpec,
    routes: Sequence[tuple[IPv4Network, EnclaveSubnet]],
    log: ChangeLog,
) -> None:
    app.name = spec.name
    app.mr_enclave = spec.mr_enclave
    app.mr_signer = spec.mr_signer
    app.isv_prod_id = spec.isv_prod_id
    app.min_isv_svn = spec.min_isv_svn
    app.allow_debug = spec.allow_debug
    app.quote_statuses = _sorted_or_none(spec.quote_statuses)
    app.tcb_statuses = _sorted_or_none(spec.tcb_statuses)
    app.denied_advisories = sorted(set(spec.denied_advisories))
    app.enabled = spec.enabled
    app.comment = spec.comment
    app.updated_at = log.at
    # Reuse the rows of host subnets that stay, so that the (entry, host subnet) unique
    # constraint never sees a new row beside the old one it replaces.
    existing = {row.host_subnet: row for row in app.host_routes}
    wanted = dict(routes)
    for host, row in existing.items():
        if host not in wanted:
            app.host_routes.remove(row)
    for host, subnet in routes:
        kept = existing.get(host)
        if kept is None:
            app.host_routes.append(
                HostRouteRow(
                    host_network=int(host.network_address),
                    host_prefix_len=host.prefixlen,
                    enclave_subnet=subnet,
                )
            )
        elif kept.enclave_subnet_id != subnet.id:
            kept.enclave_subnet = subnet
    app.categories = [_category(session, name, log) for name in sorted(set(spec.categories))]
    session.flush()


def put_entry(
    session: Session, spec: EntrySpec, log: ChangeLog, app: App | None = None
) -> tuple[App, bool]:
    """Create an entry from `spec`, or make `app` equal to it; return (entry, changed).

    Writes nothing (and records no change) when `app` already equals the spec.
    """
    assert spec.routes is not None
    spec.check()
    _check_identity_free(session, spec, None if app is None else app.id)
    routes = _resolve_routes(session, spec.routes, log)
    if app is not None:
        before = entry_json(app)
        if {k: v for k, v in before.items() if k != "id"} == _entry_doc(spec, routes):
            return app, False
    else:
        before = None
        app = App(name=spec.name, denied_advisories=[], created_at=log.at)
        session.add(app)
    _write_entry(session, app, spec, routes, log)
    after = entry_json(app)
    log.add(Change("entry", "update" if before else "create", app.name, app.id, before, after))
    return app, True


def add_entry(session: Session, actor: Actor, spec: EntrySpec) -> dict[str, Any]:
    """Add an allowlist entry (creating its categories and, if needed, the default subnet)."""
    log = ChangeLog(session, actor)
    app, _ = put_entry(session, spec, log)
    return log.result(entry=entry_json(app))


def update_entry(
    session: Session,
    actor: Actor,
    ref: str,
    fields: dict[str, Any],
    *,
    add_routes: Sequence[RouteSpec] = (),
    remove_hosts: Sequence[IPv4Network] = (),
    add_categories: Sequence[str] = (),
    remove_categories: Sequence[str] = (),
) -> dict[str, Any]:
    """Change the given fields of entry `ref` (`EntrySpec` keywords; `routes` replaces all).

    `add_routes`/`remove_hosts` and `add_categories`/`remove_categories` edit the lists
    instead; removing a host subnet or category the entry does not have is `NotFound`.
    """
    app = find_entry(session, ref)
    current = EntrySpec.of(app)
    routes = tuple(
        RouteSpec(row.host_subnet, row.enclave_subnet.name)
        for row in sorted(app.host_routes, key=lambda r: r.id)
    )
    spec = replace(current, **{"routes": routes, **fields})
    assert spec.routes is not None
    missing = [str(h) for h in remove_hosts if h not in {r.host for r in spec.routes}]
    if missing:
        raise NotFound(f"entry {app.name!r} has no host route for {', '.join(missing)}")
    kept = tuple(r for r in spec.routes if r.host not in set(remove_hosts))
    replaced = {r.host for r in add_routes}
    new_routes = tuple(r for r in kept if r.host not in replaced) + tuple(add_routes)
    missing = [c for c in remove_categories if c not in spec.categories]
    if missing:
        raise NotFound(f"entry {app.name!r} is not in category {', '.join(missing)}")
    categories = (set(spec.categories) - set(remove_categories)) | set(add_categories)
    spec = replace(spec, routes=new_routes, categories=tuple(sorted(categories)))
    log = ChangeLog(session, actor)
    app, _ = put_entry(session, spec, log, app)
    return log.result(entry=entry_json(app))


def remove_entry(session: Session, actor: Actor, ref: str) -> dict[str, Any]:
    """Delete entry `ref` with its host routes and category links (leases keep their history,
    with the entry id set to NULL)."""
    app = find_entry(session, ref)
    before = entry_json(app)
    log = ChangeLog(session, actor)
    session.delete(app)
    session.flush()
    log.add(Change("entry", "delete", before["name"], before["id"], before, None))
    return log.result(entry=before)


def set_entry_enabled(session: Session, actor: Actor, ref: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable entry `ref`; nothing changes if it is already so."""
    app = find_entry(session, ref)
    log = ChangeLog(session, actor)
    if app.enabled != enabled:
        before = entry_json(app)
        app.enabled = enabled
        app.updated_at = log.at
        session.flush()
        log.add(
            Change("entry", "update", app.name, app.id, before, entry_json(app)),
            audit_action="enable" if enabled else "disable",
        )
    return log.result(entry=entry_json(app))


def _open_leases_by_app(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(Lease.app_id, func.count())
        .where(Lease.ended_at.is_(None), Lease.app_id.is_not(None))
        .group_by(Lease.app_id)
    )
    return {app_id: count for app_id, count in rows if app_id is not None}


def list_entries(session: Session) -> list[dict[str, Any]]:
    """Every allowlist entry by id, with its open lease count and times."""
    leases = _open_leases_by_app(session)
    return [
        {**entry_json(app), **_times(app), "open_leases": leases.get(app.id, 0)}
        for app in session.scalars(_entry_query().order_by(App.id))
    ]


def get_entry(session: Session, ref: str) -> dict[str, Any]:
    """One entry (`find_entry`), with its open lease count and times."""
    app = find_entry(session, ref)
    return {
        **entry_json(app),
        **_times(app),
        "open_leases": _open_leases_by_app(session).get(app.id, 0),
    }


# -- subnets -------------------------------------------------------------------------------


def _unmark(session: Session, subnet: EnclaveSubnet, log: ChangeLog) -> None:
    before = subnet_json(subnet)
    subnet.is_default = False
    session.flush()  # the partial unique index allows one mark at any moment
    log.add(Change("subnet", "update", subnet.name, subnet.id, before, subnet_json(subnet)))


def _mark_default(session: Session, subnet: EnclaveSubnet, log: ChangeLog) -> bool:
    """Make `subnet` the marked default (unmarking the previous one); True if it changed."""
    previous = _marked_default(session)
    if previous is subnet:
        return False
    if previous is not None:
        _unmark(session, previous, log)
    before = subnet_json(subnet)
    subnet.is_default = True
    session.flush()
    log.add(Change("subnet", "update", subnet.name, subnet.id, before, subnet_json(subnet)))
    return True


def _new_subnet(
    session: Session,
    network: IPv4Network,
    gateway: IPv4Address | None,
    name: str | None,
    description: str,
    log: ChangeLog,
    *,
    default: bool = False,
) -> EnclaveSubnet:
    """Create, flush and log a subnet; `default` marks it (unmarking the marked one)."""
    if gateway is None:
        gateway = network.network_address + 1
    try:
        validate_enclave_subnet(network, gateway)
    except InvalidSubnet as exc:
        raise InvalidInput(str(exc)) from None
    name = _check_name(name if name is not None else str(network), "subnet", MAX_SUBNET_NAME)
    try:
        named_network = IPv4Network(name)
    except ValueError:
        named_network = network
    if named_network != network:
        raise InvalidInput(
            f"subnet {network}: the name {name!r} is another subnet's CIDR (names are looked "
            "up before CIDRs)"
        )
    if len(description) > MAX_TEXT:
        raise InvalidInput(f"subnet {name!r}: description longer than {MAX_TEXT} characters")
    existing = find_subnet(session, network)
    if existing is not None:
        raise Conflict(f"enclave subnet {network} exists already (as {existing.name!r})")
    clash = overlapping_subnets(session, network)
    if clash:
        others = ", ".join(f"{s.cidr} ({s.name!r})" for s in clash)
        raise Conflict(f"enclave subnet {network} overlaps {others}")
    taken = session.scalars(select(EnclaveSubnet).where(EnclaveSubnet.name == name)).first()
    if taken is not None:
        raise Conflict(f"an enclave subnet named {name!r} exists already ({taken.cidr})")
    previous = _marked_default(session) if default else None
    if previous is not None:
        _unmark(session, previous, log)
    subnet = EnclaveSubnet(
        name=name,
        description=description,
        network=int(network.network_address),
        prefix_len=network.prefixlen,
        gateway=int(gateway),
        is_default=default,
    )
    session.add(subnet)
    session.flush()
    log.add(Change("subnet", "create", subnet.name, subnet.id, None, subnet_json(subnet)))
    return subnet


def add_subnet(
    session: Session,
    actor: Actor,
    network: IPv4Network,
    gateway: IPv4Address | None = None,
    *,
    name: str | None = None,
    description: str = "",
    default: bool | None = None,
) -> dict[str, Any]:
    """Add an enclave subnet (gateway: the first address; name: the CIDR text).

    `default=True` marks it default (unmarking another); `None` marks it when it is the first
    subnet. `Conflict` for an existing CIDR or name or an overlap, `InvalidInput` for a bad
    prefix or gateway.
    """
    first = session.scalars(select(EnclaveSubnet.id).limit(1)).first() is None
    log = ChangeLog(session, actor)
    mark = bool(default) or (default is None and first)
    subnet = _new_subnet(session, network, gateway, name, description, log, default=mark)
    return log.result(subnet=subnet_json(subnet))


def set_default_subnet(session: Session, actor: Actor, ref: str) -> dict[str, Any]:
    """Mark subnet `ref` (name or CIDR) the default; nothing changes if it is already."""
    subnet = find_subnet_ref(session, ref)
    log = ChangeLog(session, actor)
    _mark_default(session, subnet, log)
    return log.result(subnet=subnet_json(subnet))


def _subnet_usage(session: Session, subnet: EnclaveSubnet) -> tuple[list[App], int, int]:
    apps = list(
        session.scalars(
            _entry_query()
            .where(App.host_routes.any(HostRouteRow.enclave_subnet_id == subnet.id))
            .order_by(App.id)
        )
    )
    open_count = session.scalar(
        select(func.count()).where(Lease.subnet_id == subnet.id, Lease.ended_at.is_(None))
    )
    total = session.scalar(select(func.count()).where(Lease.subnet_id == subnet.id))
    return apps, int(open_count or 0), int(total or 0)


def remove_subnet(
    session: Session, actor: Actor, ref: str, *, force: bool = False
) -> dict[str, Any]:
    """Delete subnet `ref` (name or CIDR).

    In use (host routes lead to it, or open leases) it is refused with `Conflict` unless
    `force`; forced, the routes into it are deleted (`entries_lost_routes` names the entries
    and routes, `entries_without_routes` those left admitting nobody). Its lease rows, open
    ones included when forced, are deleted with it (`leases_deleted`). A daemon closes the
    subnet's sessions before calling this; open leases left are other gateways' or stale.
    """
    subnet = find_subnet_ref(session, ref)
    apps, open_leases, total_leases = _subnet_usage(session, subnet)
    if (apps or open_leases) and not force:
        uses = []
        if apps:
            uses.append(f"host routes of {', '.join(repr(a.name) for a in apps)} lead to it")
        if open_leases:
            uses.append(f"{open_leases} enclave(s) hold addresses in it")
        raise Conflict(
            f"enclave subnet {subnet.name!r} ({subnet.cidr}) is in use: {'; '.join(uses)}; "
            "force the removal to delete those routes and close those sessions",
            {"entries": [a.name for a in apps], "open_leases": open_leases},
        )
    log = ChangeLog(session, actor)
    lost: list[dict[str, Any]] = []
    orphaned: list[str] = []
    for app in apps:
        before = entry_json(app)
        gone = [row for row in app.host_routes if row.enclave_subnet_id == subnet.id]
        for row in gone:
            app.host_routes.remove(row)
        app.updated_at = log.at
        session.flush()
        log.add(Change("entry", "update", app.name, app.id, before, entry_json(app)))
        lost.append({"name": app.name, "host_subnets": [str(r.host_subnet) for r in gone]})
        if not app.host_routes:
            orphaned.append(app.name)
    before = subnet_json(subnet)
    session.execute(delete(Lease).where(Lease.subnet_id == subnet.id))
    session.delete(subnet)
    session.flush()
    log.add(Change("subnet", "delete", before["name"], before["id"], before, None))
    return log.result(
        subnet=before,
        entries_lost_routes=lost,
        entries_without_routes=orphaned,
        leases_deleted={"open": open_leases, "closed": total_leases - open_leases},
    )


def list_subnets(session: Session) -> list[dict[str, Any]]:
    """Every enclave subnet by id, with `default` (host routes without `=SUBNET` lead there),
    the entries routing into it, its open leases and its number of assignable addresses."""
    default = effective_default(session)
    entries: dict[int, list[str]] = {}
    for subnet_id, name in session.execute(
        select(HostRouteRow.enclave_subnet_id, App.name)
        .join(App, App.id == HostRouteRow.app_id)
        .distinct()
        .order_by(App.name)
    ):
        entries.setdefault(subnet_id, []).append(name)
    leases: dict[int, int] = {
        subnet_id: count
        for subnet_id, count in session.execute(
            select(Lease.subnet_id, func.count())
            .where(Lease.ended_at.is_(None))
            .group_by(Lease.subnet_id)
        )
    }
    return [
        {
            **subnet_json(subnet),
            "default": default is not None and subnet.id == default.id,
            "entries": entries.get(subnet.id, []),
            "open_leases": leases.get(subnet.id, 0),
            "addresses": assignable_count(subnet.cidr),
        }
        for subnet in session.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.id))
    ]


# -- categories and the audit log ----------------------------------------------------------


def list_categories(session: Session) -> list[dict[str, Any]]:
    """Every category by name, with the names of its entries."""
    categories = session.scalars(
        select(Category).options(selectinload(Category.apps)).order_by(Category.name)
    )
    return [{**category_json(c), "entries": sorted(app.name for app in c.apps)} for c in categories]


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 time (a trailing Z is accepted; without a zone: UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def audit_json(event: AuditEvent) -> dict[str, Any]:
    """One audit event as a JSON object."""
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor_uid": event.actor_uid,
        "actor_name": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "before": event.before,
        "after": event.after,
    }


def list_audit(
    session: Session, limit: int = DEFAULT_AUDIT_LIMIT, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The newest `limit` audit events (at or after `since`), oldest first."""
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_AUDIT_LIMIT}")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return [audit_json(e) for e in reversed(list(session.scalars(query)))]


# -- apply: a declarative document ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    """A subnet of an apply document (`name` None: named after its CIDR / matched by it)."""

    network: IPv4Network
    name: str | None
    gateway: IPv4Address | None
    description: str | None
    default: bool | None


@dataclass(frozen=True, slots=True)
class CategorySpec:
    """A category of an apply document (`description` None: leave it as it is)."""

    name: str
    description: str | None


@dataclass(frozen=True, slots=True)
class Document:
    """A validated apply document."""

    subnets: tuple[SubnetSpec, ...]
    categories: tuple[CategorySpec, ...]
    entries: tuple[EntrySpec, ...]
    digest: str


_DOCUMENT_KEYS = {"version", "subnet", "category", "enclave"}


def _tables(document: dict[str, Any], key: str, problems: list[str]) -> list[dict[str, Any]]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        problems.append(f"{key}: must be an array of tables ([[{key}]])")
        return []
    return value


def _where(key: str, index: int, table: dict[str, Any]) -> str:
    name = table.get("name")
    label = table.get("cidr") if name is None else name
    return f"{key}[{index + 1}]" + (f" ({label})" if isinstance(label, str) else "")


def _read_subnet(p: Params) -> SubnetSpec:
    network = parse_network(p.required_str("cidr"), "cidr")
    name = p.get_str("name")
    gateway = p.get_str("gateway")
    spec = SubnetSpec(
        network=network,
        name=None if name is None else _check_name(name, "subnet", MAX_SUBNET_NAME),
        gateway=None if gateway is None else _parse_address(gateway, "gateway"),
        description=p.get_str("description"),
        default=p.get_bool("default"),
    )
    p.done()
    return spec


def _read_category(p: Params) -> CategorySpec:
    spec = CategorySpec(check_category_name(p.required_str("name")), p.get_str("description"))
    p.done()
    return spec


def _read_enclave(p: Params) -> EntrySpec:
    name = check_entry_name(p.required_str("name"))
    fields = read_entry_fields(p, routes_key="host_subnets")
    p.done()
    if "routes" not in fields:
        raise InvalidInput("host_subnets is required (0.0.0.0/0 admits clients on any host)")
    spec = EntrySpec(name=name, **fields)
    spec.check()
    return spec


def _duplicates(values: Iterable[Any]) -> list[str]:
    seen: set[Any] = set()
    twice: list[str] = []
    for value in values:
        if value in seen and str(value) not in twice:
            twice.append(str(value))
        seen.add(value)
    return twice


def _cross_checks(doc: Document, problems: list[str]) -> None:
    subnet_keys = [s.name if s.name is not None else str(s.network) for s in doc.subnets]
    checks: list[tuple[str, list[str]]] = [
        ("subnet named", _duplicates(subnet_keys)),
        ("subnet CIDR", _duplicates(s.network for s in doc.subnets)),
        ("category", _duplicates(c.name for c in doc.categories)),
        ("enclave named", _duplicates(e.name for e in doc.entries)),
        ("MRENCLAVE", _duplicates(e.mr_enclave.hex() for e in doc.entries if e.mr_enclave)),
        (
            "signer and product",
            _duplicates(
                f"{_hex(e.mr_signer)}/{e.isv_prod_id}" for e in doc.entries if not e.mr_enclave
            ),
        ),
    ]
    for what, twice in checks:
        problems.extend(f"{what} {value} appears twice" for value in twice)
    defaults = [key for key, s in zip(subnet_keys, doc.subnets, strict=True) if s.default]
    if len(defaults) > 1:
        problems.append(f"only one subnet can be the default, not {', '.join(defaults)}")


def parse_document(document: dict[str, Any]) -> Document:
    """Validate a parsed apply document (docs/apply.md); every problem found is reported.

    Raises `InvalidInput` listing all problems (also as `data["problems"]`).
    """
    problems: list[str] = []
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(unknown)} (expected [[subnet]], "
            "[[category]], [[enclave]] and version)"
        )
    version = document.get("version", APPLY_VERSION)
    if version != APPLY_VERSION or isinstance(version, bool):
        problems.append(
            f"version {version!r} is not supported (this release reads {APPLY_VERSION})"
        )
    readers: list[tuple[str, Callable[[Params], Any], list[Any]]] = [
        ("subnet", _read_subnet, []),
        ("category", _read_category, []),
        ("enclave", _read_enclave, []),
    ]
    for key, reader, out in readers:
        for index, table in enumerate(_tables(document, key, problems)):
            try:
                out.append(reader(Params(dict(table))))
            except (RpcError, AdminError) as exc:
                problems.append(f"{_where(key, index, table)}: {exc.message}")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    doc = Document(
        subnets=tuple(readers[0][2]),
        categories=tuple(readers[1][2]),
        entries=tuple(readers[2][2]),
        digest=hashlib.sha256(canonical.encode()).hexdigest()[:16],
    )
    _cross_checks(doc, problems)
    if problems:
        raise InvalidInput(
            f"the document has {len(problems)} problem(s): " + "; ".join(problems),
            {"problems": problems},
        )
    return doc


@dataclass
class _Applier:
    session: Session
    log: ChangeLog
    prune: bool
    unchanged: dict[str, int] = field(
        default_factory=lambda: {"subnet": 0, "category": 0, "entry": 0}
    )
    notes: list[str] = field(default_factory=list)

    def subnet(self, spec: SubnetSpec) -> EnclaveSubnet:
        if spec.name is not None:
            subnet = self.session.scalars(
                select(EnclaveSubnet).where(EnclaveSubnet.name == spec.name)
            ).first()
            other = find_subnet(self.session, spec.network) if subnet is None else None
            if other is not None:
                raise Conflict(
                    f"subnet {spec.name!r}: {spec.network} exists under the name "
                    f"{other.name!r}; use that name in the document"
                )
        else:
            subnet = find_subnet(self.session, spec.network)
        if subnet is None:
            return _new_subnet(
                self.session,
                spec.network,
                spec.gateway,
                spec.name,
                spec.description or "",
                self.log,
                default=bool(spec.default),
            )
        if subnet.cidr != spec.network or (
            spec.gateway is not None and subnet.gateway_address != spec.gateway
        ):
            raise Conflict(
                f"subnet {subnet.name!r} is {subnet.cidr} gateway {subnet.gateway_address} in "
                f"the database, {spec.network} gateway {spec.gateway or '(any)'} in the "
                "document: a subnet's addresses cannot change in place (leases refer to them); "
                "remove it or give the new one another name"
            )
        if spec.description is not None and subnet.description != spec.description:
            before = subnet_json(subnet)
            subnet.description = spec.description
            self.session.flush()
            self.log.add(
                Change("subnet", "update", subnet.name, subnet.id, before, subnet_json(subnet))
            )
        else:
            self.unchanged["subnet"] += 1
        return subnet

    def default_mark(self, specs: Sequence[SubnetSpec], subnets: Sequence[EnclaveSubnet]) -> None:
        for spec, subnet in zip(specs, subnets, strict=True):
            if spec.default:
                _mark_default(self.session, subnet, self.log)
            elif spec.default is False and subnet.is_default:
                _unmark(self.session, subnet, self.log)

    def category(self, spec: CategorySpec) -> None:
        category = self.session.scalars(select(Category).where(Category.name == spec.name)).first()
        if category is None:
            category = Category(name=spec.name, description=spec.description or "")
            self.session.add(category)
            self.session.flush()
            self.log.add(
                Change("category", "create", spec.name, category.id, None, category_json(category))
            )
        elif spec.description is not None and category.description != spec.description:
            before = category_json(category)
            category.description = spec.description
            self.session.flush()
            self.log.add(
                Change(
                    "category", "update", spec.name, category.id, before, category_json(category)
                )
            )
        else:
            self.unchanged["category"] += 1

    def entry(self, spec: EntrySpec, stored: dict[str, list[App]]) -> None:
        apps = stored.get(spec.name, [])
        if len(apps) > 1:
            raise Conflict(
                f"enclave {spec.name!r}: {len(apps)} entries have this name "
                f"({', '.join(f'#{a.id}' for a in apps)}); rename or remove all but one"
            )
        _, changed = put_entry(self.session, spec, self.log, apps[0] if apps else None)
        if not changed:
            self.unchanged["entry"] += 1

    def prune_entries(self, keep: set[str]) -> None:
        for app in self.session.scalars(_entry_query().order_by(App.id)):
            if app.name not in keep:
                before = entry_json(app)
                self.session.delete(app)
                self.session.flush()
                self.log.add(Change("entry", "delete", app.name, before["id"], before, None))

    def prune_categories(self, keep: set[str]) -> None:
        categories = self.session.scalars(
            select(Category).options(selectinload(Category.apps)).order_by(Category.name)
        )
        for category in categories:
            if category.name not in keep and not category.apps:
                before = category_json(category)
                self.session.delete(category)
                self.session.flush()
                self.log.add(Change("category", "delete", category.name, category.id, before, None))

    def prune_subnets(self, keep: set[int]) -> None:
        for subnet in self.session.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.id)):
            if subnet.id in keep:
                continue
            apps, open_leases, _ = _subnet_usage(self.session, subnet)
            if apps:
                continue  # routes of entries in the document lead to it
            if open_leases:
                self.notes.append(
                    f"kept subnet {subnet.name!r} ({subnet.cidr}): {open_leases} enclave(s) "
                    "still hold addresses in it; apply again once their sessions closed"
                )
                continue
            before = subnet_json(subnet)
            self.session.execute(delete(Lease).where(Lease.subnet_id == subnet.id))
            self.session.delete(subnet)
            self.session.flush()
            self.log.add(Change("subnet", "delete", subnet.name, before["id"], before, None))

    def run(self, doc: Document) -> None:
        subnets = [self.subnet(spec) for spec in doc.subnets]
        self.default_mark(doc.subnets, subnets)
        for spec in doc.categories:
            self.category(spec)
        if self.prune:
            self.prune_entries({e.name for e in doc.entries})
        # Every entry with its routes and categories in three queries, not three per entry.
        stored: dict[str, list[App]] = {}
        for app in self.session.scalars(_entry_query().order_by(App.id)):
            stored.setdefault(app.name, []).append(app)
        for entry in doc.entries:
            try:
                self.entry(entry, stored)
            except AdminError as exc:
                raise type(exc)(f"enclave {entry.name!r}: {exc.message}", exc.data) from None
        if self.prune:
            self.prune_categories({c.name for c in doc.categories})
            self.prune_subnets({s.id for s in subnets})


def apply_document(
    session: Session,
    actor: Actor,
    document: dict[str, Any],
    *,
    prune: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make the store match `document` (docs/apply.md); idempotent.

    Subnets, categories and entries the document lists are created or changed to match it;
    with `prune`, entries it does not list are deleted, and so are categories it does not
    list that no entry uses and subnets it does not list that no host route leads to (a
    subnet where enclaves still hold addresses is kept, with a note). All or nothing: any
    problem raises and nothing changes. `dry_run` computes the same result and changes
    nothing. Returns the changes, the counts of unchanged objects and notes.
    """
    doc = parse_document(document)
    log = ChangeLog(session, actor)
    applier = _Applier(session, log, prune)
    savepoint = session.begin_nested()
    try:
        applier.run(doc)
        if log.changes:
            counts = {
                action: sum(1 for c in log.changes if c.action == action)
                for action in ("create", "update", "delete")
            }
            audit.record(
                session,
                actor,
                "apply",
                "document",
                doc.digest,
                after={**counts, "prune": prune},
                at=log.at,
            )
    except BaseException:
        savepoint.rollback()
        raise
    if dry_run:
        savepoint.rollback()
    else:
        savepoint.commit()
    return log.result(
        dry_run=dry_run,
        prune=prune,
        document=doc.digest,
        unchanged=applier.unchanged,
        notes=applier.notes,
    )


# -- the RPC method table ------------------------------------------------------------------

StoreHandler = Callable[[Session, Actor, Params], Any]


@dataclass(frozen=True, slots=True)
class StoreMethod:
    """A store operation as an RPC method.

    `role` is ADMIN or MONITOR; `handler(session, actor, params)` runs inside the caller's
    transaction (commit after it returns, roll back if it raises `RpcError`); `writes` says
    whether it may change the store (the daemon then reloads its policy).
    """

    role: str
    handler: StoreHandler
    summary: str
    writes: bool


def _rpc(handler: StoreHandler) -> StoreHandler:
    """Translate store errors into RPC errors."""

    def run(session: Session, actor: Actor, params: Params) -> Any:
        try:
            return handler(session, actor, params)
        except AdminError as exc:
            raise exc.as_rpc() from None
        except InvalidSubnet as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        except IntegrityError as exc:
            # Only a concurrent change gets here (everything else is checked first).
            raise RpcError(
                CONFLICT, f"the database refused the change (changed concurrently?): {exc.orig}"
            ) from None

    run.__doc__ = handler.__doc__
    return run


def _strs(p: Params, name: str) -> list[str]:
    values: list[str] = _limited(p.get_strs(name, []), name)
    return values


def _h_allowlist_list(session: Session, actor: Actor, p: Params) -> Any:
    p.done()
    return list_entries(session)


def _h_allowlist_get(session: Session, actor: Actor, p: Params) -> Any:
    name = p.required_str("name")
    p.done()
    return get_entry(session, name)


def _h_allowlist_add(session: Session, actor: Actor, p: Params) -> Any:
    name = check_entry_name(p.required_str("name"))
    fields = read_entry_fields(p)
    p.done()
    if "routes" not in fields:
        raise InvalidInput(
            "host_routes is required: CIDR or CIDR=SUBNET per host subnet (0.0.0.0/0 admits "
            "clients on any host)"
        )
    return add_entry(session, actor, EntrySpec(name=name, **fields))


def _h_allowlist_update(session: Session, actor: Actor, p: Params) -> Any:
    raw = p.raw()
    q = Params(raw)
    ref = q.required_str("name")
    new_name = q.get_str("new_name")
    fields = read_entry_fields(q)
    add_routes = tuple(RouteSpec.parse(r) for r in _strs(q, "add_host_routes"))
    remove_hosts = tuple(
        parse_network(h.partition("=")[0].strip(), "host subnet")
        for h in _strs(q, "remove_host_routes")
    )
    add_categories = [check_category_name(c) for c in _strs(q, "add_categories")]
    remove_categories = _strs(q, "remove_categories")
    q.done()
    if "enabled" in raw and raw["enabled"] is None:
        raise InvalidInput("enabled cannot be null")
    if "host_routes" in raw and raw["host_routes"] is None:
        raise InvalidInput("host_routes cannot be null (an entry needs a host route)")
    for key, value in raw.items():
        if value is None and key in _NULL_MEANS:
            fields[key] = _NULL_MEANS[key]
    if new_name is not None:
        fields["name"] = check_entry_name(new_name)
    return update_entry(
        session,
        actor,
        ref,
        fields,
        add_routes=add_routes,
        remove_hosts=remove_hosts,
        add_categories=add_categories,
        remove_categories=remove_categories,
    )


def _h_allowlist_remove(session: Session, actor: Actor, p: Params) -> Any:
    name = p.required_str("name")
    p.done()
    return remove_entry(session, actor, name)


def _h_allowlist_enable(session: Session, actor: Actor, p: Params) -> Any:
    name = p.required_str("name")
    p.done()
    return set_entry_enabled(session, actor, name, True)


def _h_allowlist_disable(session: Session, actor: Actor, p: Params) -> Any:
    name = p.required_str("name")
    p.done()
    return set_entry_enabled(session, actor, name, False)


def _h_subnets_list(session: Session, actor: Actor, p: Params) -> Any:
    p.done()
    return list_subnets(session)


def _h_subnets_add(session: Session, actor: Actor, p: Params) -> Any:
    network = parse_network(p.required_str("cidr"), "cidr")
    gateway = p.get_str("gateway")
    name = p.get_str("name")
    description = p.get_str("description", "")
    default = p.get_bool("default")
    p.done()
    return add_subnet(
        session,
        actor,
        network,
        None if gateway is None else _parse_address(gateway, "gateway"),
        name=name,
        description=description,
        default=default,
    )


def _h_subnets_remove(session: Session, actor: Actor, p: Params) -> Any:
    ref = p.required_str("name_or_cidr")
    force = p.get_bool("force", False)
    p.done()
    return remove_subnet(session, actor, ref, force=force)


def _h_subnets_set_default(session: Session, actor: Actor, p: Params) -> Any:
    ref = p.required_str("name_or_cidr")
    p.done()
    return set_default_subnet(session, actor, ref)


def _h_categories_list(session: Session, actor: Actor, p: Params) -> Any:
    p.done()
    return list_categories(session)


def _h_audit_list(session: Session, actor: Actor, p: Params) -> Any:
    limit = p.get_int("limit", DEFAULT_AUDIT_LIMIT)
    since = p.get_str("since")
    p.done()
    return list_audit(session, limit, None if since is None else parse_time(since, "since"))


def _h_apply(session: Session, actor: Actor, p: Params) -> Any:
    raw = p.raw()
    document = raw.pop("document", None)
    if not isinstance(document, dict):
        raise InvalidInput("missing parameter 'document' (an object: the parsed TOML file)")
    q = Params(raw)
    prune = q.get_bool("prune", False)
    dry_run = q.get_bool("dry_run", False)
    q.done()
    return apply_document(session, actor, document, prune=prune, dry_run=dry_run)


STORE_METHODS: dict[str, StoreMethod] = {
    "allowlist.list": StoreMethod(MONITOR, _rpc(_h_allowlist_list), "allowlist entries", False),
    "allowlist.get": StoreMethod(MONITOR, _rpc(_h_allowlist_get), "one entry {name}", False),
    "allowlist.add": StoreMethod(
        ADMIN,
        _rpc(_h_allowlist_add),
        "add an entry {name, mr_enclave | mr_signer + isv_prod_id, host_routes, ...}",
        True,
    ),
    "allowlist.update": StoreMethod(
        ADMIN, _rpc(_h_allowlist_update), "change an entry {name, fields...}", True
    ),
    "allowlist.remove": StoreMethod(
        ADMIN, _rpc(_h_allowlist_remove), "remove an entry {name}", True
    ),
    "allowlist.enable": StoreMethod(
        ADMIN, _rpc(_h_allowlist_enable), "enable an entry {name}", True
    ),
    "allowlist.disable": StoreMethod(
        ADMIN, _rpc(_h_allowlist_disable), "disable an entry {name}", True
    ),
    "subnets.list": StoreMethod(MONITOR, _rpc(_h_subnets_list), "enclave subnets", False),
    "subnets.add": StoreMethod(
        ADMIN,
        _rpc(_h_subnets_add),
        "add an enclave subnet {cidr, gateway?, name?, description?, default?}",
        True,
    ),
    "subnets.remove": StoreMethod(
        ADMIN, _rpc(_h_subnets_remove), "remove an enclave subnet {name_or_cidr, force?}", True
    ),
    "subnets.set_default": StoreMethod(
        ADMIN, _rpc(_h_subnets_set_default), "mark the default subnet {name_or_cidr}", True
    ),
    "categories.list": StoreMethod(MONITOR, _rpc(_h_categories_list), "categories", False),
    "audit.list": StoreMethod(MONITOR, _rpc(_h_audit_list), "audit events {limit?, since?}", False),
    "apply": StoreMethod(
        ADMIN,
        _rpc(_h_apply),
        "make the allowlist and subnets match a document {document, prune?, dry_run?}",
        True,
    ),
}
"""The store's RPC methods (docs/rpc.md documents their parameters and results)."""
