"""The QE identity: which quoting enclave Intel vouches for, and at which TCB.

A quote is only as good as the enclave that signed it. The QE report (signed by the PCK key)
must match Intel's signed QE identity: the same MRSIGNER and ISVPRODID, MISCSELECT and
ATTRIBUTES equal under their masks, and an ISVSVN that reaches one of the identity's TCB
levels, which gives the QE's TCB status and advisories. Version 2 (`enclaveIdentity`, id "QE")
lists TCB levels; version 1 (`qeIdentity`) has a single minimum ISVSVN (UpToDate at or above
it, OutOfDate below).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sengd.attestation.dcap_quote import ReportBody
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.signed_json import (
    CollateralFormatError,
    advisory_ids,
    date_field,
    field,
    hex_field,
    integer,
)
from sengd.attestation.tcb import OUT_OF_DATE, TCB_STATUSES, UP_TO_DATE

BODY_NAMES = ("enclaveIdentity", "qeIdentity")
MAX_LEVELS = 256


@dataclass(frozen=True, slots=True)
class QeLevel:
    """A QE at ISVSVN >= `isv_svn` has `status`."""

    isv_svn: int
    status: str
    tcb_date: datetime | None
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """The fields of a QE identity that verification uses (signature checked elsewhere)."""

    version: int
    issue_date: datetime
    next_update: datetime
    evaluation_number: int  # -1 for version 1
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[QeLevel, ...]


@dataclass(frozen=True, slots=True)
class QeMatch:
    """The QE's TCB status according to the identity."""

    status: str
    advisory_ids: tuple[str, ...]


def _levels(doc: dict[str, Any], where: str) -> tuple[QeLevel, ...]:
    raw_levels = field(doc, "tcbLevels", list, where)
    if not 0 < len(raw_levels) <= MAX_LEVELS:
        raise CollateralFormatError(f"{where}: tcbLevels must list 1-{MAX_LEVELS} levels")
    out = []
    for index, raw in enumerate(raw_levels):
        at = f"{where}.tcbLevels[{index}]"
        if not isinstance(raw, dict):
            raise CollateralFormatError(f"{at} must be an object")
        status: str = field(raw, "tcbStatus", str, at)
        if status not in TCB_STATUSES:
            raise CollateralFormatError(f"{at}: unknown TCB status {status[:40]!r}")
        out.append(
            QeLevel(
                isv_svn=integer(field(raw, "tcb", dict, at), "isvsvn", at, 0, 0xFFFF),
                status=status,
                tcb_date=date_field(raw, "tcbDate", at),
                advisory_ids=advisory_ids(raw, at),
            )
        )
    return tuple(out)


def parse_qe_identity(name: str, doc: dict[str, Any]) -> QeIdentity:
    """Read a QE identity (`name` is the body member it came in); `CollateralFormatError`."""
    where = name
    version = integer(doc, "version", where, 1, 2)
    if (name == "qeIdentity") != (version == 1):
        raise CollateralFormatError(f"{where}: version {version} does not fit member {name}")
    if version == 2:
        if field(doc, "id", str, where) != "QE":
            raise CollateralFormatError(f"{where}: id must be QE (not QVE or TD_QE)")
        levels = _levels(doc, where)
        evaluation = integer(doc, "tcbEvaluationDataNumber", where)
    else:
        minimum = integer(doc, "isvsvn", where, 0, 0xFFFF)
        levels = (QeLevel(minimum, UP_TO_DATE, None, ()), QeLevel(0, OUT_OF_DATE, None, ()))
        evaluation = -1
    return QeIdentity(
        version=version,
        issue_date=date_field(doc, "issueDate", where),
        next_update=date_field(doc, "nextUpdate", where),
        evaluation_number=evaluation,
        miscselect=int.from_bytes(hex_field(doc, "miscselect", 4, where), "big"),
        miscselect_mask=int.from_bytes(hex_field(doc, "miscselectMask", 4, where), "big"),
        attributes=hex_field(doc, "attributes", 16, where),
        attributes_mask=hex_field(doc, "attributesMask", 16, where),
        mr_signer=hex_field(doc, "mrsigner", 32, where),
        isv_prod_id=integer(doc, "isvprodid", where, 0, 0xFFFF),
        levels=levels,
    )


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def match_qe(identity: QeIdentity, qe: ReportBody) -> QeMatch:
    """Check the QE report against the identity; raises `qe-identity-mismatch` or
    `tcb-level-not-found`."""
    problems = []
    if qe.mr_signer != identity.mr_signer:
        problems.append(f"MRSIGNER {qe.mr_signer.hex()} is not {identity.mr_signer.hex()}")
    if qe.isv_prod_id != identity.isv_prod_id:
        problems.append(f"ISVPRODID {qe.isv_prod_id} is not {identity.isv_prod_id}")
    mask = identity.miscselect_mask
    if qe.misc_select & mask != identity.miscselect & mask:
        problems.append(f"MISCSELECT 0x{qe.misc_select:08x} does not match under the mask")
    if _masked(qe.attributes, identity.attributes_mask) != _masked(
        identity.attributes, identity.attributes_mask
    ):
        problems.append(f"ATTRIBUTES {qe.attributes.hex()} do not match under the mask")
    if problems:
        raise AttestationError(
            Reason.QE_IDENTITY_MISMATCH,
            "the quoting enclave is not the one Intel's QE identity names: " + "; ".join(problems),
        )
    for level in identity.levels:
        if qe.isv_svn >= level.isv_svn:
            return QeMatch(level.status, level.advisory_ids)
    raise AttestationError(
        Reason.TCB_LEVEL_NOT_FOUND,
        f"the quoting enclave's ISVSVN {qe.isv_svn} is below every level of the QE identity",
    )
