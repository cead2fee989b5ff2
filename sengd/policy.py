"""Allowlist policy (pure): Evidence + client host address + allowlist -> Decision or Denial.

The types here are the contract between the store (which loads allowlist entries from the
database), the data plane (which asks for decisions) and the control plane (which shows them).

How `decide()` chooses (deterministic; docs/attestation.md has the same text):

1. If the global `PolicyDefaults.host_subnets` is set and the client host is in none of them:
   `host-not-allowed`.
2. Candidates, in this order: entries matching the enclave's MRENCLAVE, then signer entries
   matching (MRSIGNER, ISV product id). An entry with an MRENCLAVE is an MRENCLAVE entry; its
   MRSIGNER / product id, if any, are informational (like the originals', which stored the
   signer but never checked it).
3. Within each group, every (entry, host route) pair whose host subnet contains the client
   host is tried: most specific host prefix first, then lower entry id, then the route's
   position in the entry. The first pair whose entry admits the enclave wins.
4. An entry admits the enclave unless (checked in this order) it is disabled
   (`entry-disabled`), the ISV SVN is below its minimum (`svn-too-low`), the enclave is a debug
   enclave and debug is not allowed (`debug-enclave`), the quote status (`quote-status-rejected`)
   or DCAP TCB status (`tcb-status-rejected`) is not accepted, or the report lists a denied
   advisory (`advisory-denied`). Entry settings of `None` fall back to the global defaults.
5. No winner: the reason of the first candidate tried; `host-not-allowed` if entries match
   the enclave but none has a route for this host; `not-allowlisted` if no entry matches.

A disabled entry grants nothing but blocks nothing either: a signer entry can still admit an
enclave whose MRENCLAVE entry is disabled. To shut a build out, raise the signer entry's
minimum SVN or remove the entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sengd.attestation.evidence import Evidence

DEFAULT_QUOTE_STATUSES: frozenset[str] = frozenset({"OK", "GROUP_OUT_OF_DATE"})
"""IAS quote statuses accepted unless configured otherwise (what both original servers accept)."""

OPT_IN_QUOTE_STATUSES: frozenset[str] = frozenset(
    {"CONFIGURATION_NEEDED", "SW_HARDENING_NEEDED", "CONFIGURATION_AND_SW_HARDENING_NEEDED"}
)
"""IAS quote statuses an administrator may additionally accept; all others are never accepted."""

DEFAULT_TCB_STATUSES: frozenset[str] = frozenset({"UpToDate", "SWHardeningNeeded"})
"""DCAP TCB statuses accepted unless configured otherwise."""

KNOWN_TCB_STATUSES: frozenset[str] = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)
"""DCAP TCB statuses a configuration may list (Revoked is never acceptable)."""

MEASUREMENT_SIZE = 32


@dataclass(frozen=True, slots=True)
class HostRoute:
    """Clients on `host_subnet` are admitted into the enclave subnet `enclave_subnet_id`."""

    host_subnet: IPv4Network
    enclave_subnet_id: int


@dataclass(frozen=True, slots=True)
class AllowlistEntry:
    """One allowlisted application.

    It matches by exact MRENCLAVE (`mr_enclave` set), or by signer: `mr_signer` and
    `isv_prod_id` set and the enclave's ISV SVN >= `min_isv_svn`. The `None` overrides fall back
    to the global `PolicyDefaults`.
    """

    id: int
    name: str
    host_routes: tuple[HostRoute, ...]
    mr_enclave: bytes | None = None
    mr_signer: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int = 0
    categories: tuple[str, ...] = ()
    enabled: bool = True
    allow_debug: bool | None = None
    quote_statuses: frozenset[str] | None = None
    tcb_statuses: frozenset[str] | None = None
    denied_advisories: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicyDefaults:
    """Global policy knobs from the `[attestation]` section of the config.

    `host_subnets`: if not None, clients outside all of these subnets are refused before any
    entry is considered (entries' own host routes still apply on top).
    """

    allow_debug: bool = False
    quote_statuses: frozenset[str] = DEFAULT_QUOTE_STATUSES
    tcb_statuses: frozenset[str] = DEFAULT_TCB_STATUSES
    denied_advisories: frozenset[str] = field(default_factory=frozenset)
    host_subnets: tuple[IPv4Network, ...] | None = None


class DenialReason(StrEnum):
    """Why the policy refused an attested enclave. Stable codes, like `attestation.Reason`."""

    NOT_ALLOWLISTED = "not-allowlisted"
    HOST_NOT_ALLOWED = "host-not-allowed"
    ENTRY_DISABLED = "entry-disabled"
    SVN_TOO_LOW = "svn-too-low"
    DEBUG_ENCLAVE = "debug-enclave"
    QUOTE_STATUS_REJECTED = "quote-status-rejected"
    TCB_STATUS_REJECTED = "tcb-status-rejected"
    ADVISORY_DENIED = "advisory-denied"


@dataclass(frozen=True, slots=True)
class Decision:
    """The enclave is admitted through `entry`, into the enclave subnet of `route`."""

    entry: AllowlistEntry
    route: HostRoute
    matched_by: str  # "mr_enclave" or "signer"

    @property
    def enclave_subnet_id(self) -> int:
        """The enclave subnet to lease an address from."""
        return self.route.enclave_subnet_id


@dataclass(frozen=True, slots=True)
class Denial:
    """The enclave is refused. `reason` is a stable `DenialReason` value; `message` is prose.

    `entry_id` names the entry whose check failed, if the denial came from one.
    """

    reason: str
    message: str
    entry_id: int | None = None


class AllowlistError(ValueError):
    """An allowlist entry is inconsistent; the message names the entry."""


def _check_entry(entry: AllowlistEntry) -> None:
    where = f"allowlist entry {entry.id} ({entry.name!r})"
    if entry.mr_enclave is not None and len(entry.mr_enclave) != MEASUREMENT_SIZE:
        raise AllowlistError(f"{where}: mr_enclave must be 32 bytes")
    if entry.mr_signer is not None and len(entry.mr_signer) != MEASUREMENT_SIZE:
        raise AllowlistError(f"{where}: mr_signer must be 32 bytes")
    if entry.mr_enclave is None and (entry.mr_signer is None or entry.isv_prod_id is None):
        raise AllowlistError(f"{where}: needs an mr_enclave, or an mr_signer and an isv_prod_id")
    if entry.isv_prod_id is not None and not 0 <= entry.isv_prod_id <= 0xFFFF:
        raise AllowlistError(f"{where}: isv_prod_id must be 0..65535")
    if not 0 <= entry.min_isv_svn <= 0xFFFF:
        raise AllowlistError(f"{where}: min_isv_svn must be 0..65535")
    if entry.quote_statuses is not None:
        unknown = entry.quote_statuses - DEFAULT_QUOTE_STATUSES - OPT_IN_QUOTE_STATUSES
        if unknown:
            raise AllowlistError(f"{where}: quote statuses never accepted: {sorted(unknown)}")
    if entry.tcb_statuses is not None and entry.tcb_statuses - KNOWN_TCB_STATUSES:
        unknown_tcb = sorted(entry.tcb_statuses - KNOWN_TCB_STATUSES)
        raise AllowlistError(f"{where}: unknown TCB statuses: {unknown_tcb}")


@dataclass(frozen=True, slots=True)
class _Route:
    # Host routes flattened for matching with two integer operations per candidate.
    prefixlen: int
    network: int
    mask: int
    entry: AllowlistEntry
    route: HostRoute
    position: int


def _routes(entry: AllowlistEntry) -> list[_Route]:
    return [
        _Route(
            r.host_subnet.prefixlen,
            int(r.host_subnet.network_address),
            int(r.host_subnet.netmask),
            entry,
            r,
            i,
        )
        for i, r in enumerate(entry.host_routes)
    ]


def _sort_key(route: _Route) -> tuple[int, int, int]:
    return (-route.prefixlen, route.entry.id, route.position)


class Allowlist:
    """An immutable, indexed set of allowlist entries (deciding is ~O(1) in their number).

    Indexes: MRENCLAVE -> routes, (MRSIGNER, ISV product id) -> routes, each pre-sorted in
    decision order. Raises `AllowlistError` for inconsistent entries or duplicate ids.
    """

    __slots__ = ("_by_mr_enclave", "_by_signer", "_entries", "_unrouted")

    def __init__(self, entries: Iterable[AllowlistEntry] = ()) -> None:
        by_id: dict[int, AllowlistEntry] = {}
        by_mr_enclave: dict[bytes, list[_Route]] = {}
        by_signer: dict[tuple[bytes, int], list[_Route]] = {}
        for entry in entries:
            _check_entry(entry)
            if entry.id in by_id:
                raise AllowlistError(f"allowlist entry id {entry.id} appears twice")
            by_id[entry.id] = entry
            if entry.mr_enclave is not None:
                by_mr_enclave.setdefault(entry.mr_enclave, []).extend(_routes(entry))
            elif entry.mr_signer is not None and entry.isv_prod_id is not None:
                key = (entry.mr_signer, entry.isv_prod_id)
                by_signer.setdefault(key, []).extend(_routes(entry))
        self._entries: tuple[AllowlistEntry, ...] = tuple(sorted(by_id.values(), key=_entry_id))
        self._by_mr_enclave: Mapping[bytes, tuple[_Route, ...]] = MappingProxyType(
            {k: tuple(sorted(v, key=_sort_key)) for k, v in by_mr_enclave.items()}
        )
        self._by_signer: Mapping[tuple[bytes, int], tuple[_Route, ...]] = MappingProxyType(
            {k: tuple(sorted(v, key=_sort_key)) for k, v in by_signer.items()}
        )
        # Entries without any host route still "match" the enclave (for the denial reason).
        self._unrouted: frozenset[bytes | tuple[bytes, int]] = frozenset(
            _index_key(e) for e in by_id.values() if not e.host_routes
        )

    @property
    def entries(self) -> tuple[AllowlistEntry, ...]:
        """All entries, by id."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[AllowlistEntry]:
        return iter(self._entries)

    def candidates(self, evidence: Evidence) -> tuple[tuple[_Route, ...], tuple[_Route, ...]]:
        """Host routes of the MRENCLAVE entries and of the signer entries for `evidence`."""
        return (
            self._by_mr_enclave.get(evidence.mr_enclave, ()),
            self._by_signer.get((evidence.mr_signer, evidence.isv_prod_id), ()),
        )

    def knows(self, evidence: Evidence) -> bool:
        """True if some entry names this enclave (whatever its host routes)."""
        by_enclave, by_signer = self.candidates(evidence)
        return bool(
            by_enclave
            or by_signer
            or evidence.mr_enclave in self._unrouted
            or (evidence.mr_signer, evidence.isv_prod_id) in self._unrouted
        )


def _entry_id(entry: AllowlistEntry) -> int:
    return entry.id


def _index_key(entry: AllowlistEntry) -> bytes | tuple[bytes, int]:
    if entry.mr_enclave is not None:
        return entry.mr_enclave
    assert entry.mr_signer is not None and entry.isv_prod_id is not None  # _check_entry
    return (entry.mr_signer, entry.isv_prod_id)


def _refusal(entry: AllowlistEntry, evidence: Evidence, defaults: PolicyDefaults) -> Denial | None:
    """Why `entry` does not admit the enclave, or None if it does."""
    eid = entry.id
    if not entry.enabled:
        return Denial(DenialReason.ENTRY_DISABLED, f"entry {eid} is disabled", eid)
    if evidence.isv_svn < entry.min_isv_svn:
        return Denial(
            DenialReason.SVN_TOO_LOW,
            f"ISV SVN {evidence.isv_svn} is below entry {eid}'s minimum {entry.min_isv_svn}",
            eid,
        )
    allow_debug = defaults.allow_debug if entry.allow_debug is None else entry.allow_debug
    if evidence.attributes.debug and not allow_debug:
        return Denial(
            DenialReason.DEBUG_ENCLAVE, f"debug enclaves are not allowed (entry {eid})", eid
        )
    return _status_refusal(entry, evidence, defaults) or _advisory_refusal(
        entry, evidence, defaults
    )


def _status_refusal(
    entry: AllowlistEntry, evidence: Evidence, defaults: PolicyDefaults
) -> Denial | None:
    eid = entry.id
    if evidence.tcb_status is None:
        statuses = defaults.quote_statuses if entry.quote_statuses is None else entry.quote_statuses
        if evidence.quote_status not in statuses:
            return Denial(
                DenialReason.QUOTE_STATUS_REJECTED,
                f"quote status {evidence.quote_status} is not accepted (entry {eid})",
                eid,
            )
        return None
    tcb = defaults.tcb_statuses if entry.tcb_statuses is None else entry.tcb_statuses
    if evidence.tcb_status not in tcb:
        return Denial(
            DenialReason.TCB_STATUS_REJECTED,
            f"TCB status {evidence.tcb_status} is not accepted (entry {eid})",
            eid,
        )
    return None


def _advisory_refusal(
    entry: AllowlistEntry, evidence: Evidence, defaults: PolicyDefaults
) -> Denial | None:
    if not evidence.advisory_ids:
        return None
    denied = (defaults.denied_advisories | entry.denied_advisories).intersection(
        evidence.advisory_ids
    )
    if not denied:
        return None
    return Denial(
        DenialReason.ADVISORY_DENIED,
        f"advisories {', '.join(sorted(denied))} are denied (entry {entry.id})",
        entry.id,
    )


def decide(
    evidence: Evidence,
    host_ip: IPv4Address | str,
    allowlist: Allowlist,
    defaults: PolicyDefaults | None = None,
) -> Decision | Denial:
    """Admit or refuse an attested enclave connecting from `host_ip` (module docstring)."""
    defaults = defaults or _DEFAULTS
    host = IPv4Address(host_ip) if isinstance(host_ip, str) else host_ip
    host_int = int(host)
    if defaults.host_subnets is not None and not any(host in n for n in defaults.host_subnets):
        return Denial(DenialReason.HOST_NOT_ALLOWED, f"host {host} is outside the allowed subnets")
    first_refusal: Denial | None = None
    by_enclave, by_signer = allowlist.candidates(evidence)
    for matched_by, routes in (("mr_enclave", by_enclave), ("signer", by_signer)):
        for route in routes:
            if host_int & route.mask != route.network:
                continue
            refusal = _refusal(route.entry, evidence, defaults)
            if refusal is None:
                return Decision(route.entry, route.route, matched_by)
            if first_refusal is None:
                first_refusal = refusal
    if first_refusal is not None:
        return first_refusal
    if allowlist.knows(evidence):
        return Denial(
            DenialReason.HOST_NOT_ALLOWED,
            f"the enclave is allowlisted, but not for clients on host {host}",
        )
    return Denial(
        DenialReason.NOT_ALLOWLISTED,
        f"no allowlist entry for MRENCLAVE {evidence.mr_enclave.hex()} or MRSIGNER "
        f"{evidence.mr_signer.hex()} / product {evidence.isv_prod_id}",
    )


_DEFAULTS = PolicyDefaults()
