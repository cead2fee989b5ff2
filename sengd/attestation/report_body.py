"""The SGX report body (`sgx_report_body_t`, 384 bytes), shared by EPID and DCAP quotes.

Layout (offsets relative to the body; PROTOCOL.md §5): cpu_svn 16, misc_select u32, reserved
12, isv_ext_prod_id 16, attributes (flags u64, xfrm u64), mr_enclave 32, reserved 32, mr_signer
32, reserved 32, config_id 64, isv_prod_id u16, isv_svn u16, config_svn u16, reserved 42,
isv_family_id 16, report_data 64. All integers little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

REPORT_BODY_SIZE = 384

SGX_FLAG_INIT = 0x01
SGX_FLAG_DEBUG = 0x02
SGX_FLAG_MODE64BIT = 0x04

# cpu_svn, misc_select, reserved1, isv_ext_prod_id, flags, xfrm, mr_enclave, reserved2,
# mr_signer, reserved3, config_id, isv_prod_id, isv_svn, config_svn, reserved4,
# isv_family_id, report_data
REPORT_BODY = struct.Struct("<16sI12s16sQQ32s32s32s32s64sHHH42s16s64s")
assert REPORT_BODY.size == REPORT_BODY_SIZE


@dataclass(frozen=True, slots=True)
class ReportBody:
    """An SGX report body (`sgx_report_body_t`); `raw` is its exact 384 bytes."""

    raw: bytes
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
    def attributes(self) -> bytes:
        """The 16 attribute bytes as they appear in the report (flags then xfrm, LE)."""
        return self.raw[48:64]

    @property
    def debug(self) -> bool:
        """True for a debug enclave."""
        return bool(self.flags & SGX_FLAG_DEBUG)


def parse_report_body(data: bytes) -> ReportBody:
    """Decode a 384-byte report body (callers guarantee the length)."""
    (
        cpu_svn,
        misc_select,
        _r1,
        isv_ext_prod_id,
        flags,
        xfrm,
        mr_enclave,
        _r2,
        mr_signer,
        _r3,
        config_id,
        isv_prod_id,
        isv_svn,
        config_svn,
        _r4,
        isv_family_id,
        report_data,
    ) = REPORT_BODY.unpack(data)
    return ReportBody(
        raw=bytes(data),
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


def build_report_body(
    *,
    mr_enclave: bytes = bytes(32),
    mr_signer: bytes = bytes(32),
    report_data: bytes = bytes(64),
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    flags: int = 0x5,
    xfrm: int = 0x3,
    cpu_svn: bytes = bytes(16),
    misc_select: int = 0,
    config_svn: int = 0,
) -> bytes:
    """A 384-byte report body, reserved fields zero (the inverse of `parse_report_body`)."""
    for name, value, size in (
        ("mr_enclave", mr_enclave, 32),
        ("mr_signer", mr_signer, 32),
        ("report_data", report_data, 64),
        ("cpu_svn", cpu_svn, 16),
    ):
        if len(value) != size:
            raise ValueError(f"{name} must be {size} bytes, not {len(value)}")
    return REPORT_BODY.pack(
        cpu_svn,
        misc_select,
        bytes(12),
        bytes(16),
        flags,
        xfrm,
        mr_enclave,
        bytes(32),
        mr_signer,
        bytes(32),
        bytes(64),
        isv_prod_id,
        isv_svn,
        config_svn,
        bytes(42),
        bytes(16),
        report_data,
    )
