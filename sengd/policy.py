"""Allowlist policy (pure): Evidence + client host address + allowlist -> Decision or Denial.

The types here are the contract between the store (which loads allowlist entries from the
database), the data plane (which asks for decisions) and the control plane (which shows them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network

DEFAULT_QUOTE_STATUSES: frozenset[str] = frozenset({"OK", "GROUP_OUT_OF_DATE"})
"""IAS quote statuses accepted unless configured otherwise (what both original servers accept)."""

OPT_IN_QUOTE_STATUSES: frozenset[str] = frozenset(
    {"CONFIGURATION_NEEDED", "SW_HARDENING_NEEDED", "CONFIGURATION_AND_SW_HARDENING_NEEDED"}
)
"""IAS quote statuses an administrator may additionally accept; all others are never accepted."""

DEFAULT_TCB_STATUSES: frozenset[str] = frozenset({"UpToDate", "SWHardeningNeeded"})
"""DCAP TCB statuses accepted unless configured otherwise."""


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
    """Global policy knobs from the `[attestation]` section of the config."""

    allow_debug: bool = False
    quote_statuses: frozenset[str] = DEFAULT_QUOTE_STATUSES
    tcb_statuses: frozenset[str] = DEFAULT_TCB_STATUSES
    denied_advisories: frozenset[str] = field(default_factory=frozenset)
