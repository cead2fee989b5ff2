"""Attestation: RA-TLS client certificate -> verified `Evidence` (pure; no I/O but trust anchors
and collateral files; `pccs` fetches in its own thread, never on a verification's behalf).

Entry points: `verify_certificate(cert_der, trust, now) -> Evidence` for RA-TLS client
certificates (SENG's EPID/IAS form, and DCAP in the Gramine and sgx-ra-tls forms),
`verify_report(body, signature, signing_cert_der, trust, now) -> IasReport` for a raw IAS
report triple, and `verify_quote(quote, collateral, trust, now) -> DcapVerdict` for a raw DCAP
quote. Every rejection is an `AttestationError` with a stable `Reason`. `docs/attestation.md`
explains the reasons, the order of checks, the collateral sources and the trust settings.
"""

from sengd.attestation.collateral import (
    Collateral,
    CollateralStore,
    RawCollateral,
    read_collateral_dir,
    verify_raw,
)
from sengd.attestation.dcap import DcapVerdict, verify_quote
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.evidence import Attributes, DcapDetails, Evidence, verify_certificate
from sengd.attestation.ias import ACCEPTABLE_QUOTE_STATUSES, IasReport, verify_report
from sengd.attestation.quote import Quote, parse_quote_body
from sengd.attestation.ratls import KeyBinding, check_key_binding
from sengd.attestation.trust import (
    IasAnchor,
    SgxRootAnchor,
    TrustConfig,
    TrustConfigError,
    builtin_sgx_roots,
    load_sgx_roots,
)

__all__ = [
    "ACCEPTABLE_QUOTE_STATUSES",
    "AttestationError",
    "Attributes",
    "Collateral",
    "CollateralStore",
    "DcapDetails",
    "DcapVerdict",
    "Evidence",
    "IasAnchor",
    "IasReport",
    "KeyBinding",
    "Quote",
    "RawCollateral",
    "Reason",
    "SgxRootAnchor",
    "TrustConfig",
    "TrustConfigError",
    "builtin_sgx_roots",
    "check_key_binding",
    "load_sgx_roots",
    "parse_quote_body",
    "read_collateral_dir",
    "verify_certificate",
    "verify_quote",
    "verify_raw",
    "verify_report",
]
