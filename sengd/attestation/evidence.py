"""The verified facts an RA-TLS certificate establishes about the enclave behind it.

`verify_certificate()` (the attestation entry point) lives here too once implemented.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SGX_FLAG_DEBUG = 0x02


@dataclass(frozen=True, slots=True)
class Attributes:
    """SGX enclave attributes from the report body (`sgx_attributes_t`)."""

    flags: int
    xfrm: int

    @property
    def debug(self) -> bool:
        """True for a debug enclave: its memory can be read by the host, so it proves nothing."""
        return bool(self.flags & SGX_FLAG_DEBUG)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was verified about one enclave. Every field was checked; nothing here is a claim.

    Measurements are the raw 32 bytes in report order (hex of these bytes is what logs and the
    allowlist show). `quote_body` is the 432-byte quote prefix both tunnels of one enclave must
    share (PROTOCOL.md §1.4); `spki_sha256` is the SHA-256 of the certificate's DER
    SubjectPublicKeyInfo, a fingerprint for display and pairing.
    """

    scheme: str  # "epid-ias" or "dcap"
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    cpu_svn: bytes
    misc_select: int
    attributes: Attributes
    report_data: bytes
    quote_body: bytes
    quote_status: str  # IAS isvEnclaveQuoteStatus, or the DCAP TCB status
    tcb_status: str | None  # DCAP TCB status; None for EPID
    advisory_ids: tuple[str, ...]
    report_id: str
    report_timestamp: datetime  # timezone-aware UTC
    key_type: str  # "rsa-2048", "rsa-3072", "ec-p256", "ec-p384", ...
    spki_sha256: bytes
