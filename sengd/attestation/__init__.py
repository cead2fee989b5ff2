"""Attestation: RA-TLS client certificate -> verified `Evidence` (pure; no I/O but trust anchors).

Entry points: `verify_certificate(cert_der, trust, now) -> Evidence` for SENG RA-TLS client
certificates, and `verify_report(body, signature, signing_cert_der, trust, now) -> IasReport`
for a raw IAS report triple. Every rejection is an `AttestationError` with a stable `Reason`.
`docs/attestation.md` explains the reasons, the order of checks and the trust settings.
"""

from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.evidence import Attributes, Evidence, verify_certificate
from sengd.attestation.ias import ACCEPTABLE_QUOTE_STATUSES, IasReport, verify_report
from sengd.attestation.quote import Quote, parse_quote_body
from sengd.attestation.ratls import KeyBinding, check_key_binding
from sengd.attestation.trust import IasAnchor, TrustConfig, TrustConfigError

__all__ = [
    "ACCEPTABLE_QUOTE_STATUSES",
    "AttestationError",
    "Attributes",
    "Evidence",
    "IasAnchor",
    "IasReport",
    "KeyBinding",
    "Quote",
    "Reason",
    "TrustConfig",
    "TrustConfigError",
    "check_key_binding",
    "parse_quote_body",
    "verify_certificate",
    "verify_report",
]
