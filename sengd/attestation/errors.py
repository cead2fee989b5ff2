"""The one exception type attestation raises, with stable machine-readable reason codes.

Reason codes are part of the product's interface: they appear in logs, in the RPC's denial
records, in `sengadm attest inspect --json` and in operators' alerting rules. Never rename one;
add new ones at the end of their group. `docs/attestation.md` explains each in words.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a certificate or report was rejected."""

    # Certificate structure
    CERT_MALFORMED = "cert-malformed"
    CHAIN_NOT_LEAF = "chain-not-leaf"
    NO_SGX_EXTENSION = "no-sgx-extension"
    EXTENSION_MISSING = "extension-missing"
    EXTENSION_DUPLICATED = "extension-duplicated"
    EXTENSION_MALFORMED = "extension-malformed"
    CERT_NOT_YET_VALID = "cert-not-yet-valid"
    CERT_EXPIRED = "cert-expired"
    CERT_SIGNATURE_INVALID = "cert-signature-invalid"
    KEY_UNSUPPORTED = "key-unsupported"
    CERT_CRITICAL_EXTENSION = "cert-critical-extension"
    # IAS report and its signing chain (EPID)
    IAS_CHAIN_UNTRUSTED = "ias-chain-untrusted"
    IAS_CHAIN_EXPIRED = "ias-chain-expired"
    REPORT_SIGNATURE_INVALID = "report-signature-invalid"
    REPORT_MALFORMED = "report-malformed"
    REPORT_TOO_OLD = "report-too-old"
    REPORT_FROM_FUTURE = "report-from-future"
    QUOTE_MALFORMED = "quote-malformed"
    QUOTE_STATUS_REJECTED = "quote-status-rejected"
    IAS_CHAIN_NOT_YET_VALID = "ias-chain-not-yet-valid"
    # Binding and enclave properties
    KEY_BINDING_MISMATCH = "key-binding-mismatch"
    DEBUG_ENCLAVE = "debug-enclave"
    # DCAP (ECDSA) quotes, their PCK certificate chain and their collateral
    DCAP_QUOTE_MALFORMED = "dcap-quote-malformed"
    DCAP_QUOTE_UNSUPPORTED = "dcap-quote-unsupported"
    PCK_CHAIN_UNTRUSTED = "pck-chain-untrusted"
    PCK_CHAIN_EXPIRED = "pck-chain-expired"
    PCK_CHAIN_NOT_YET_VALID = "pck-chain-not-yet-valid"
    PCK_CERT_MALFORMED = "pck-cert-malformed"
    PCK_REVOKED = "pck-revoked"
    QE_REPORT_SIGNATURE_INVALID = "qe-report-signature-invalid"
    QE_REPORT_DATA_MISMATCH = "qe-report-data-mismatch"
    QUOTE_SIGNATURE_INVALID = "quote-signature-invalid"
    QE_IDENTITY_MISMATCH = "qe-identity-mismatch"
    COLLATERAL_MISSING = "collateral-missing"
    COLLATERAL_MALFORMED = "collateral-malformed"
    COLLATERAL_CHAIN_UNTRUSTED = "collateral-chain-untrusted"
    COLLATERAL_SIGNATURE_INVALID = "collateral-signature-invalid"
    COLLATERAL_EXPIRED = "collateral-expired"
    COLLATERAL_NOT_YET_VALID = "collateral-not-yet-valid"
    TCB_INFO_MISMATCH = "tcb-info-mismatch"
    TCB_LEVEL_NOT_FOUND = "tcb-level-not-found"
    TCB_REVOKED = "tcb-revoked"


class AttestationError(Exception):
    """Evidence was rejected. `reason` is stable; `message` is for humans and may change.

    This is the only exception the attestation package lets escape for bad input, whatever the
    bytes (property-based tests hold it to that). Messages never contain key material.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[AttestationError], tuple[Reason, str]]:
        # Exceptions with extra constructor arguments do not pickle by default; the data plane may
        # hand rejections across a process boundary (and caches hold them).
        return (type(self), (self.reason, self.message))
