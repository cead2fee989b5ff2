"""The daemon's reason codes in words, for operators (pure, no Textual, no daemon imports).

Denial codes come from three places in sengd: the attestation verifier (`Reason`), the
admission policy (`DenialReason`) and the gateway itself (limits, pairing, the store); session
end reasons from the gateway and the DTLS layer. The codes are stable interfaces of the daemon
(docs/attestation.md, docs/rpc.md); a unit test checks that every code the daemon defines has
words here. Unknown codes are shown as they are.
"""

from __future__ import annotations

DENIALS: dict[str, str] = {
    # the certificate
    "cert-malformed": "the client certificate is not one well-formed DER certificate",
    "chain-not-leaf": "the client sent a certificate chain; only the self-signed leaf may "
    "carry evidence",
    "no-sgx-extension": "an ordinary certificate without SGX evidence (no SENG RA-TLS extensions)",
    "extension-missing": "some of the SENG RA-TLS extensions are missing",
    "extension-duplicated": "an RA-TLS extension appears twice",
    "extension-malformed": "an RA-TLS extension cannot be decoded",
    "cert-not-yet-valid": "the certificate is not valid yet (clock of the enclave host ahead?)",
    "cert-expired": "the certificate has expired",
    "cert-signature-invalid": "the certificate is not signed by its own key",
    "key-unsupported": "the key is neither RSA >= 2048 bits nor EC P-256/P-384",
    "cert-critical-extension": "the certificate has a critical extension the gateway does not "
    "understand",
    # the attestation report
    "ias-chain-untrusted": "the attestation report is not signed by a trusted IAS signing "
    "certificate",
    "ias-chain-expired": "the IAS signing certificate or its root has expired",
    "report-signature-invalid": "the attestation report's signature does not verify (it was "
    "altered)",
    "report-malformed": "the attestation report is not a well-formed IAS report",
    "report-too-old": "the attestation report is older than the configured maximum age",
    "report-from-future": "the attestation report is dated in the future (clock skew)",
    "quote-malformed": "the SGX quote in the report cannot be parsed",
    "quote-status-rejected": "the platform's quote status is not accepted (e.g. revoked, or "
    "an update the entry does not allow)",
    "ias-chain-not-yet-valid": "the IAS signing certificate was not valid yet at the checked time",
    "key-binding-mismatch": "the report belongs to another key than the certificate's "
    "(report data does not bind the key)",
    "debug-enclave": "a debug enclave, and debug enclaves are not allowed",
    # DCAP quotes and their collateral
    "dcap-quote-malformed": "the DCAP quote cannot be parsed",
    "dcap-quote-unsupported": "a DCAP quote version or key type the gateway does not support",
    "pck-chain-untrusted": "the PCK certificate chain does not lead to Intel's SGX root",
    "pck-chain-expired": "a certificate of the PCK chain has expired",
    "pck-chain-not-yet-valid": "a certificate of the PCK chain is not valid yet",
    "pck-cert-malformed": "the PCK certificate or its SGX extension cannot be decoded",
    "pck-revoked": "the platform's PCK certificate is revoked",
    "qe-report-signature-invalid": "the quoting enclave's report is not signed by the PCK key",
    "qe-report-data-mismatch": "the quoting enclave's report does not bind the attestation key",
    "quote-signature-invalid": "the quote's signature does not verify",
    "qe-identity-mismatch": "the quoting enclave is not one Intel's QE identity accepts",
    "collateral-missing": "the gateway has no collateral (TCB info, QE identity, CRLs) for "
    "this platform",
    "collateral-malformed": "the collateral cannot be parsed",
    "collateral-chain-untrusted": "the collateral is not signed by a chain to Intel's root",
    "collateral-signature-invalid": "the collateral's signature does not verify",
    "collateral-expired": "the collateral is past its next update (refresh it)",
    "collateral-not-yet-valid": "the collateral is not valid yet",
    "tcb-info-mismatch": "the TCB info belongs to another platform (FMSPC or PCE id)",
    "tcb-level-not-found": "no TCB level of the TCB info matches the platform",
    "tcb-revoked": "the platform's TCB level is revoked",
    # the admission policy
    "not-allowlisted": "no allowlist entry names this MRENCLAVE (or MRSIGNER and product id)",
    "host-not-allowed": "the enclave is allowlisted, but not for clients on this host",
    "entry-disabled": "the matching allowlist entry is disabled",
    "svn-too-low": "the enclave's security version (ISV SVN) is below the entry's minimum",
    "tcb-status-rejected": "the platform's TCB status is not accepted",
    "advisory-denied": "the report lists a security advisory the entry denies",
    # the gateway
    "max-sessions": "the gateway's session limit is reached",
    "pool-exhausted": "no free address is left in the enclave subnet",
    "store-error": "the gateway could not record the lease in its database",
    "no-matching-tunnel1": "a second tunnel without a matching first tunnel from this host",
}
"""Why an enclave was refused, by denial code."""

SESSION_ENDS: dict[str, str] = {
    "close-notify": "the enclave closed the tunnel",
    "killed": "closed by an administrator",
    "revoked": "its allowlist entry was removed, disabled or changed",
    "no-ack": "the enclave never acknowledged its address",
    "pairing-timeout": "the second tunnel did not arrive in time",
    "idle-timeout": "no traffic for longer than the idle timeout",
    "shutdown": "the gateway shut down",
    "replaced": "the enclave reconnected from the same address",
    "subnet-removed": "its enclave subnet was removed",
    "firewall-error": "its firewall rules could not be installed",
    "fatal-alert": "the DTLS peer sent a fatal alert",
    "protocol-error": "a DTLS protocol error",
    "handshake-timeout": "the DTLS handshake did not finish in time",
    "handshake-failed": "the DTLS handshake failed",
    "no-client-certificate": "the client presented no certificate",
    "export-failed": "the keys of the finished handshake could not be exported",
    "worker-lost": "the handshake worker running its handshake exited",
    "bad-ack": "the enclave sent a malformed address acknowledgement",
}
"""Why a session ended, by reason code."""


def explain_denial(code: str) -> str:
    """The denial `code` in words (the code itself if unknown)."""
    return DENIALS.get(code, code)


def explain_end(code: str) -> str:
    """The session end reason `code` in words (`bad-ack: ...` keeps its detail)."""
    base, _, detail = code.partition(":")
    words = SESSION_ENDS.get(base.strip())
    if words is None:
        return code
    return f"{words} ({detail.strip()})" if detail.strip() else words
