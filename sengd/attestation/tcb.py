"""TCB info (versions 1, 2 and 3) and the TCB status of one platform.

Intel publishes, per FMSPC (platform family), a signed list of TCB levels, newest first: the
16 CPUSVN components and the PCESVN of each level, its status and (v3) the security advisories
that apply to platforms at that level. A platform's level is the first one whose every
component and PCESVN is lower than or equal to the values in its PCK certificate.

Statuses: UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded,
OutOfDate, OutOfDateConfigurationNeeded, Revoked. The quoting enclave's own TCB (QE identity)
can lower the platform's status; `converge()` applies Intel's rule:

    QE OutOfDate, platform UpToDate or SWHardeningNeeded     -> OutOfDate
    QE OutOfDate, platform Configuration(AndSWHardening)Needed -> OutOfDateConfigurationNeeded
    QE Revoked or platform Revoked                           -> Revoked (never accepted)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sengd.attestation.signed_json import (
    CollateralFormatError,
    advisory_ids,
    date_field,
    field,
    hex_field,
    integer,
)

UP_TO_DATE = "UpToDate"
SW_HARDENING_NEEDED = "SWHardeningNeeded"
CONFIGURATION_NEEDED = "ConfigurationNeeded"
CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
TCB_STATUSES = frozenset(
    {
        UP_TO_DATE,
        SW_HARDENING_NEEDED,
        CONFIGURATION_NEEDED,
        CONFIGURATION_AND_SW_HARDENING_NEEDED,
        OUT_OF_DATE,
        OUT_OF_DATE_CONFIGURATION_NEEDED,
        REVOKED,
    }
)
COMPONENTS = 16
MAX_LEVELS = 256


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One TCB level: a platform at or above `components` and `pce_svn` has `status`."""

    components: tuple[int, ...]
    pce_svn: int
    status: str
    tcb_date: datetime | None
    advisory_ids: tuple[str, ...]

    def admits(self, components: tuple[int, ...], pce_svn: int) -> bool:
        """Whether a platform with these PCK certificate values is at this level or above."""
        return pce_svn >= self.pce_svn and all(
            have >= need for have, need in zip(components, self.components, strict=True)
        )


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """The fields of a TCB info that verification uses (signature checked elsewhere)."""

    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    evaluation_number: int  # -1 for version 1, which has none
    levels: tuple[TcbLevel, ...]

    def level_for(self, components: tuple[int, ...], pce_svn: int) -> TcbLevel | None:
        """The first level the platform reaches, or None (a TCB Intel does not list)."""
        for level in self.levels:
            if level.admits(components, pce_svn):
                return level
        return None


def _status(doc: dict[str, Any], key: str, where: str) -> str:
    status: str = field(doc, key, str, where)
    if status not in TCB_STATUSES:
        raise CollateralFormatError(f"{where}: unknown TCB status {status[:40]!r}")
    return status


def _components_v3(tcb: dict[str, Any], where: str) -> tuple[int, ...]:
    comps = field(tcb, "sgxtcbcomponents", list, where)
    if len(comps) != COMPONENTS or not all(isinstance(c, dict) for c in comps):
        raise CollateralFormatError(f"{where}: sgxtcbcomponents must list 16 objects")
    return tuple(integer(c, "svn", where, 0, 255) for c in comps)


def _components_v1(tcb: dict[str, Any], where: str) -> tuple[int, ...]:
    return tuple(integer(tcb, f"sgxtcbcomp{n:02d}svn", where, 0, 255) for n in range(1, 17))


def _level(raw: Any, version: int, index: int) -> TcbLevel:
    where = f"tcbInfo.tcbLevels[{index}]"
    if not isinstance(raw, dict):
        raise CollateralFormatError(f"{where} must be an object")
    tcb = field(raw, "tcb", dict, where)
    comps = _components_v3(tcb, where) if version >= 3 else _components_v1(tcb, where)
    return TcbLevel(
        components=comps,
        pce_svn=integer(tcb, "pcesvn", where, 0, 0xFFFF),
        status=_status(raw, "status" if version == 1 else "tcbStatus", where),
        tcb_date=None if version == 1 else date_field(raw, "tcbDate", where),
        advisory_ids=advisory_ids(raw, where) if version >= 3 else (),
    )


def parse_tcb_info(doc: dict[str, Any]) -> TcbInfo:
    """Read the fields of a `tcbInfo` object; raises `CollateralFormatError`."""
    where = "tcbInfo"
    version = integer(doc, "version", where, 1, 3)
    if version >= 3 and field(doc, "id", str, where) != "SGX":
        raise CollateralFormatError(f"{where}: id must be SGX (not a TDX TCB info)")
    tcb_type = integer(doc, "tcbType", where, 0, 0) if version >= 2 else 0
    raw_levels = field(doc, "tcbLevels", list, where)
    if not 0 < len(raw_levels) <= MAX_LEVELS:
        raise CollateralFormatError(f"{where}: tcbLevels must list 1-{MAX_LEVELS} levels")
    return TcbInfo(
        version=version,
        issue_date=date_field(doc, "issueDate", where),
        next_update=date_field(doc, "nextUpdate", where),
        fmspc=hex_field(doc, "fmspc", 6, where),
        pce_id=hex_field(doc, "pceId", 2, where),
        tcb_type=tcb_type,
        evaluation_number=integer(doc, "tcbEvaluationDataNumber", where) if version >= 2 else -1,
        levels=tuple(_level(raw, version, i) for i, raw in enumerate(raw_levels)),
    )


_CONFIGURATION = frozenset({CONFIGURATION_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED})


def converge(platform: str, qe: str | None) -> str:
    """The status of the whole attestation from the platform's and the QE's TCB status."""
    if REVOKED in (platform, qe):
        return REVOKED
    if qe == OUT_OF_DATE:
        if platform in (UP_TO_DATE, SW_HARDENING_NEEDED):
            return OUT_OF_DATE
        if platform in _CONFIGURATION:
            return OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


def merge_advisories(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Advisory ids of several levels, each once, in first-seen order."""
    seen: dict[str, None] = {}
    for group in groups:
        for advisory in group:
            seen.setdefault(advisory, None)
    return tuple(seen)
