"""SGX ECDSA quotes, version 3 (`sgx_quote_3_t`): layout and strict parsing, no cryptography.

    offset  size  field
    0       2     version (3)
    2       2     attestation key type (2 = ECDSA-256-with-P-256)
    4       4     TEE type / reserved (0 = SGX)
    8       2     QE SVN                      10  2   PCE SVN
    12      16    QE vendor id (Intel: 939a7233f79c4ca9940a0db3957f0607)
    28      20    user data (QE-specific; the first 16 bytes are the platform's QE id)
    48      384   ISV enclave report body (the same layout as in EPID quotes, PROTOCOL.md §5)
    432     4     signature data length
    436     ...   signature data:
                  64 ISV report signature (ECDSA r||s over bytes 0..431)
                  64 attestation public key (P-256 x||y)
                  384 QE report body;  64 QE report signature (r||s, by the PCK key)
                  2 + n QE authentication data
                  2 certification data type, 4 size, certification data

Certification data types: 5 = the PCK certificate chain (PEM, in the quote); 1, 2 and 3 =
the PPID (clear, RSA-2048- or RSA-3072-encrypted) followed by CPUSVN and PCESVN (type 3 also
the PCE id), in which case the PCK certificate comes from collateral. Every length must add
up exactly; there are no trailing bytes. All integers are little-endian.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.report_body import (
    REPORT_BODY_SIZE,
    ReportBody,
    build_report_body,
    parse_report_body,
)

__all__ = [
    "REPORT_BODY_SIZE",
    "ReportBody",
    "build_report_body",
    "parse_report_body",
]

QUOTE_VERSION = 3
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
HEADER_SIZE = 48
SIGNED_SIZE = HEADER_SIZE + REPORT_BODY_SIZE
MAX_QUOTE_BYTES = 16 * 1024
"""Larger quotes are refused unparsed (genuine ones are 1-5 KB)."""

CERT_DATA_PPID_CLEARTEXT = 1
CERT_DATA_PPID_RSA2048 = 2
CERT_DATA_PPID_RSA3072 = 3
CERT_DATA_PCK_CHAIN = 5
# PPID size and whether the PCE id follows CPUSVN and PCESVN
_PPID_LAYOUT = {
    CERT_DATA_PPID_CLEARTEXT: (16, False),
    CERT_DATA_PPID_RSA2048: (256, False),
    CERT_DATA_PPID_RSA3072: (384, True),
}
PPID_TYPES = frozenset(_PPID_LAYOUT)

_HEADER = struct.Struct("<HHIHH16s20s")
_FIXED_SIG = 64 + 64 + REPORT_BODY_SIZE + 64
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True, slots=True)
class PpidData:
    """Certification data of types 1-3: which PCK certificate the platform needs."""

    ppid: bytes  # clear (16 bytes) or encrypted (256/384 bytes)
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes | None  # type 3 only: 2 bytes as the quote stores them (a little-endian u16)


@dataclass(frozen=True, slots=True)
class DcapQuote:
    """A parsed quote v3. Nothing here is verified; `dcap.py` does that."""

    raw: bytes
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    report: ReportBody
    isv_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    cert_data_type: int
    cert_data: bytes
    ppid: PpidData | None

    @property
    def signed_bytes(self) -> bytes:
        """What the attestation key signed: the header and the ISV report body."""
        return self.raw[:SIGNED_SIZE]

    @property
    def body(self) -> bytes:
        """The first 432 bytes (header + report body): what both tunnels must share."""
        return self.raw[:SIGNED_SIZE]

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the whole quote."""
        return hashlib.sha256(self.raw).digest()


def _malformed(message: str) -> AttestationError:
    return AttestationError(Reason.DCAP_QUOTE_MALFORMED, message)


def _unsupported(message: str) -> AttestationError:
    return AttestationError(Reason.DCAP_QUOTE_UNSUPPORTED, message)


def _check_header(version: int, key_type: int, tee_type: int, vendor: bytes) -> None:
    if version != QUOTE_VERSION:
        raise _unsupported(f"quote version {version} (only SGX ECDSA quotes of version 3)")
    if key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _unsupported(f"attestation key type {key_type} (only 2 = ECDSA P-256)")
    if tee_type != TEE_TYPE_SGX:
        raise _unsupported(f"TEE type 0x{tee_type:x} is not SGX")
    if vendor != INTEL_QE_VENDOR_ID:
        raise _unsupported(f"QE vendor {vendor.hex()} is not Intel's quoting enclave")


def _ppid(cert_type: int, data: bytes) -> PpidData:
    size, with_pce_id = _PPID_LAYOUT[cert_type]
    expected = size + 18 + (2 if with_pce_id else 0)
    if len(data) != expected:
        raise _malformed(
            f"certification data type {cert_type} holds {len(data)} bytes, expected {expected}"
        )
    pce_svn = struct.unpack_from("<H", data, size + 16)[0]
    pce_id = data[size + 18 :] if with_pce_id else None
    return PpidData(data[:size], data[size : size + 16], pce_svn, pce_id)


def parse_dcap_quote(data: bytes | bytearray | memoryview) -> DcapQuote:
    """Decode a quote v3 strictly.

    Raises `dcap-quote-malformed` (lengths that do not add up, trailing bytes, oversize) or
    `dcap-quote-unsupported` (another version, key type, TEE, QE vendor or certification data
    type), and nothing else.
    """
    raw = bytes(data)
    if len(raw) > MAX_QUOTE_BYTES:
        raise _malformed(f"quote is {len(raw)} bytes (limit {MAX_QUOTE_BYTES})")
    if len(raw) < SIGNED_SIZE + 4:
        raise _malformed(f"quote is {len(raw)} bytes, shorter than its fixed part")
    version, key_type, tee_type, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack_from(raw)
    _check_header(version, key_type, tee_type, vendor)
    (sig_len,) = struct.unpack_from("<I", raw, SIGNED_SIZE)
    sig = raw[SIGNED_SIZE + 4 :]
    if sig_len != len(sig):
        raise _malformed(f"signature data length {sig_len}, but {len(sig)} bytes follow")
    if len(sig) < _FIXED_SIG + 2:
        raise _malformed("signature data is shorter than its fixed part")
    qe_report = sig[128 : 128 + REPORT_BODY_SIZE]
    pos = _FIXED_SIG
    (auth_len,) = struct.unpack_from("<H", sig, pos)
    pos += 2
    if pos + auth_len + 6 > len(sig):
        raise _malformed("QE authentication data runs past the signature data")
    auth = sig[pos : pos + auth_len]
    pos += auth_len
    cert_type, cert_len = struct.unpack_from("<HI", sig, pos)
    pos += 6
    if pos + cert_len != len(sig):
        raise _malformed(f"certification data length {cert_len}, but {len(sig) - pos} bytes remain")
    cert_data = sig[pos:]
    if cert_type == CERT_DATA_PCK_CHAIN:
        ppid = None
    elif cert_type in PPID_TYPES:
        ppid = _ppid(cert_type, cert_data)
    else:
        raise _unsupported(
            f"certification data type {cert_type} (supported: 5 = PCK chain, 1-3 = PPID)"
        )
    return DcapQuote(
        raw=raw,
        version=version,
        att_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user_data,
        report=parse_report_body(raw[HEADER_SIZE:SIGNED_SIZE]),
        isv_signature=sig[:64],
        attestation_key=sig[64:128],
        qe_report=parse_report_body(qe_report),
        qe_report_signature=sig[128 + REPORT_BODY_SIZE : _FIXED_SIG],
        qe_auth_data=auth,
        cert_data_type=cert_type,
        cert_data=cert_data,
        ppid=ppid,
    )


def build_dcap_quote(
    *,
    report_body: bytes,
    isv_signature: bytes,
    attestation_key: bytes,
    qe_report_body: bytes,
    qe_report_signature: bytes,
    qe_auth_data: bytes,
    cert_data_type: int,
    cert_data: bytes,
    qe_svn: int = 0,
    pce_svn: int = 0,
    user_data: bytes = bytes(20),
    version: int = QUOTE_VERSION,
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256,
    tee_type: int = TEE_TYPE_SGX,
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID,
) -> bytes:
    """Encode a quote (the inverse of `parse_dcap_quote`); for the test kit and benchmarks.

    The ISV signature must cover `quote_header(...) + report_body`; the kit computes it.
    """
    header = quote_header(
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        user_data=user_data,
        version=version,
        att_key_type=att_key_type,
        tee_type=tee_type,
        qe_vendor_id=qe_vendor_id,
    )
    sig = (
        isv_signature
        + attestation_key
        + qe_report_body
        + qe_report_signature
        + struct.pack("<H", len(qe_auth_data))
        + qe_auth_data
        + struct.pack("<HI", cert_data_type, len(cert_data))
        + cert_data
    )
    return header + report_body + struct.pack("<I", len(sig)) + sig


def quote_header(
    *,
    qe_svn: int = 0,
    pce_svn: int = 0,
    user_data: bytes = bytes(20),
    version: int = QUOTE_VERSION,
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256,
    tee_type: int = TEE_TYPE_SGX,
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID,
) -> bytes:
    """The 48-byte quote header."""
    return _HEADER.pack(version, att_key_type, tee_type, qe_svn, pce_svn, qe_vendor_id, user_data)
