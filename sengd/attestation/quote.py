"""The EPID SGX quote body (`sgx_quote_t` without its signature): 432 bytes, PROTOCOL.md §5.

IAS reports carry exactly these 432 bytes (base64) in `isvEnclaveQuoteBody`. All integers are
little-endian; hashes and identifiers are byte strings in report order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.report_body import (
    REPORT_BODY,
    REPORT_BODY_SIZE,
    SGX_FLAG_DEBUG,
    SGX_FLAG_INIT,
    SGX_FLAG_MODE64BIT,
    build_report_body,
)

__all__ = [
    "QUOTE_BODY_SIZE",
    "REPORT_BODY_SIZE",
    "SGX_FLAG_DEBUG",
    "SGX_FLAG_INIT",
    "SGX_FLAG_MODE64BIT",
    "Quote",
    "build_quote_body",
    "parse_quote_body",
]

QUOTE_BODY_SIZE = 432
REPORT_BODY_OFFSET = 48

SIGN_TYPE_UNLINKABLE = 0
SIGN_TYPE_LINKABLE = 1
EPID_QUOTE_VERSIONS = frozenset({1, 2})
"""EPID quote versions (the SGX SDK has produced 2 since 2016; 1 predates it)."""


# version, sign_type, epid_group_id, qe_svn, pce_svn, xeid, basename
_HEADER = struct.Struct("<HHIHHI32s")
assert _HEADER.size == REPORT_BODY_OFFSET


@dataclass(frozen=True, slots=True)
class Quote:
    """A decoded quote body. `raw` is the exact 432 bytes it was decoded from."""

    raw: bytes
    version: int
    sign_type: int
    epid_group_id: int
    qe_svn: int
    pce_svn: int
    xeid: int
    basename: bytes
    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    flags: int
    xfrm: int
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        """True if the enclave was launched in debug mode."""
        return bool(self.flags & SGX_FLAG_DEBUG)


def parse_quote_body(data: bytes) -> Quote:
    """Decode a 432-byte EPID quote body.

    Raises `AttestationError(QUOTE_MALFORMED)` unless `data` is exactly 432 bytes of an EPID
    quote (version 1 or 2, sign type unlinkable or linkable). Reserved bytes are not checked:
    IAS signed them, and SDK versions have assigned some of them over time.
    """
    if len(data) != QUOTE_BODY_SIZE:
        raise AttestationError(
            Reason.QUOTE_MALFORMED,
            f"quote body is {len(data)} bytes, expected exactly {QUOTE_BODY_SIZE}",
        )
    raw = bytes(data)
    version, sign_type, group_id, qe_svn, pce_svn, xeid, basename = _HEADER.unpack_from(raw, 0)
    if version not in EPID_QUOTE_VERSIONS:
        raise AttestationError(
            Reason.QUOTE_MALFORMED, f"quote version {version} is not an EPID quote (1 or 2)"
        )
    if sign_type not in (SIGN_TYPE_UNLINKABLE, SIGN_TYPE_LINKABLE):
        raise AttestationError(Reason.QUOTE_MALFORMED, f"unknown EPID signature type {sign_type}")
    (
        cpu_svn,
        misc_select,
        _reserved1,
        isv_ext_prod_id,
        flags,
        xfrm,
        mr_enclave,
        _reserved2,
        mr_signer,
        _reserved3,
        config_id,
        isv_prod_id,
        isv_svn,
        config_svn,
        _reserved4,
        isv_family_id,
        report_data,
    ) = REPORT_BODY.unpack_from(raw, REPORT_BODY_OFFSET)
    return Quote(
        raw=raw,
        version=version,
        sign_type=sign_type,
        epid_group_id=group_id,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        xeid=xeid,
        basename=basename,
        cpu_svn=cpu_svn,
        misc_select=misc_select,
        isv_ext_prod_id=isv_ext_prod_id,
        flags=flags,
        xfrm=xfrm,
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        config_id=config_id,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=config_svn,
        isv_family_id=isv_family_id,
        report_data=report_data,
    )


def build_quote_body(
    *,
    mr_enclave: bytes,
    mr_signer: bytes,
    report_data: bytes = bytes(64),
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    flags: int = SGX_FLAG_INIT | SGX_FLAG_MODE64BIT,
    xfrm: int = 0x3,
    cpu_svn: bytes = bytes(16),
    misc_select: int = 0,
    version: int = 2,
    sign_type: int = SIGN_TYPE_LINKABLE,
    epid_group_id: int = 0,
    qe_svn: int = 0,
    pce_svn: int = 0,
    basename: bytes = bytes(32),
    config_svn: int = 0,
) -> bytes:
    """Encode a quote body (the inverse of `parse_quote_body`, reserved fields zero).

    Used by the test kit and the benchmarks; the verifier never builds quotes. Raises
    `ValueError` for a field of the wrong length (struct would silently pad or cut it).
    """
    if len(basename) != 32:
        raise ValueError(f"basename must be 32 bytes, not {len(basename)}")
    header = _HEADER.pack(version, sign_type, epid_group_id, qe_svn, pce_svn, 0, basename)
    body = build_report_body(
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        report_data=report_data,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        flags=flags,
        xfrm=xfrm,
        cpu_svn=cpu_svn,
        misc_select=misc_select,
        config_svn=config_svn,
    )
    return header + body
