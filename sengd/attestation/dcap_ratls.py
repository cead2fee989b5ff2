"""DCAP RA-TLS certificates in their two common forms: find the quote, the embedded
collateral, and how report_data binds the certificate key.

Both forms are self-signed X.509 certificates whose extensions sit under 1.2.840.113741.1337
(values are raw bytes, not base64):

- **Gramine** (`gramine-ratls`, `ra_tls_attest.c`): only .6, the quote. The verifier fetches
  the collateral. Binding: report_data[0:32] = SHA-256 of the DER SubjectPublicKeyInfo
  (`mbedtls_pk_write_pubkey_der`). Gramine uses EC P-384 keys (RSA-3072 in older releases).
- **sgx-ra-tls ECDSA** (Intel Labs, PROTOCOL.md §11): .6 quote, .7 PCK certificate (PEM), .8 PCK
  issuer chain (PEM, URL-encoded in practice), .9 TCB info (PCS body), .10 TCB signing chain,
  .11 QE identity (PCS body), .12 Root CA CRL (PEM), .13 PCK CRL (PEM). .11-.13 are later
  additions; 2019 certificates stop at .10. Binding: report_data[0:32] = SHA-256 of the
  SubjectPublicKeyInfo BIT STRING contents (the PKCS#1 RSAPublicKey for RSA), as in SENG.

A certificate with .6 alone is of the Gramine form; one with any of .7-.13 is of the sgx-ra-tls
form. Items that need a partner (.9 with .10, .11 with .10, .13 with .8, .7 with .8) must have
it. The QE identity and the PCK CRL are verified with the TCB signing chain (.10) and the PCK
issuer chain (.8), since that is who signs them.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from sengd.attestation.collateral import RawCollateral
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.pem import PemError, url_decode_pem
from sengd.attestation.ratls import DCAP_OIDS, SENG_EPID_OIDS, SENG_OID_ARC

OID_QUOTE = x509.ObjectIdentifier(f"{SENG_OID_ARC}.6")
OID_PCK_CERT = x509.ObjectIdentifier(f"{SENG_OID_ARC}.7")
OID_PCK_CHAIN = x509.ObjectIdentifier(f"{SENG_OID_ARC}.8")
OID_TCB_INFO = x509.ObjectIdentifier(f"{SENG_OID_ARC}.9")
OID_TCB_CHAIN = x509.ObjectIdentifier(f"{SENG_OID_ARC}.10")
OID_QE_IDENTITY = x509.ObjectIdentifier(f"{SENG_OID_ARC}.11")
OID_ROOT_CRL = x509.ObjectIdentifier(f"{SENG_OID_ARC}.12")
OID_PCK_CRL = x509.ObjectIdentifier(f"{SENG_OID_ARC}.13")
_NAMES = {
    OID_QUOTE: "quote (.6)",
    OID_PCK_CERT: "PCK certificate (.7)",
    OID_PCK_CHAIN: "PCK issuer chain (.8)",
    OID_TCB_INFO: "TCB info (.9)",
    OID_TCB_CHAIN: "TCB signing chain (.10)",
    OID_QE_IDENTITY: "QE identity (.11)",
    OID_ROOT_CRL: "Root CA CRL (.12)",
    OID_PCK_CRL: "PCK CRL (.13)",
}
_PARTNERS = {
    OID_PCK_CERT: OID_PCK_CHAIN,
    OID_TCB_INFO: OID_TCB_CHAIN,
    OID_QE_IDENTITY: OID_TCB_CHAIN,
    OID_PCK_CRL: OID_PCK_CHAIN,
}
_CRITICAL_OK = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, *DCAP_OIDS})


class CertForm(StrEnum):
    """Which DCAP RA-TLS certificate form a certificate has (decides the key binding)."""

    GRAMINE = "gramine"
    SGX_RA_TLS = "sgx-ra-tls"


@dataclass(frozen=True, slots=True)
class DcapPayload:
    """The quote and the embedded collateral of a DCAP RA-TLS certificate (unverified)."""

    form: CertForm
    quote: bytes
    embedded: RawCollateral


def has_dcap_evidence(cert: x509.Certificate) -> bool:
    """Whether the certificate carries a DCAP quote (.6) and no SENG EPID extension (.2-.5).

    Extensions that cannot be read make this False; the EPID path then names the problem.
    """
    try:
        oids = {ext.oid for ext in cert.extensions}
    except (ValueError, x509.DuplicateExtension):
        return False
    return OID_QUOTE in oids and not oids.intersection(SENG_EPID_OIDS)


def _plain_pem(value: bytes) -> bytes:
    """PEM text as the extension holds it, URL-decoded if it is URL-encoded."""
    try:
        return url_decode_pem(value)
    except PemError as exc:
        raise AttestationError(
            Reason.EXTENSION_MALFORMED, f"unreadable PEM chain ({exc})"
        ) from None


def extract_dcap_payload(cert: x509.Certificate) -> DcapPayload:
    """Find the DCAP extensions (each at most once, .6 required) and sort them by role.

    Raises `cert-critical-extension`, `extension-duplicated`, `extension-missing`,
    `extension-malformed` (a PEM chain that is not strictly URL-encoded) or `cert-malformed`.
    """
    found: dict[x509.ObjectIdentifier, bytes] = {}
    try:
        extensions = list(cert.extensions)
    except x509.DuplicateExtension as exc:
        name = _NAMES.get(exc.oid, exc.oid.dotted_string)
        raise AttestationError(
            Reason.EXTENSION_DUPLICATED, f"extension {name} appears more than once"
        ) from None
    except ValueError as exc:
        raise AttestationError(Reason.CERT_MALFORMED, f"unreadable extension ({exc})") from None
    for ext in extensions:
        if ext.critical and ext.oid not in _CRITICAL_OK:
            raise AttestationError(
                Reason.CERT_CRITICAL_EXTENSION,
                f"critical extension {ext.oid.dotted_string} is not understood",
            )
        if ext.oid in _NAMES and isinstance(ext.value, x509.UnrecognizedExtension):
            found[ext.oid] = ext.value.value
    if OID_QUOTE not in found:
        raise AttestationError(Reason.EXTENSION_MISSING, "missing the DCAP quote extension (.6)")
    for item, partner in _PARTNERS.items():
        if item in found and partner not in found:
            raise AttestationError(
                Reason.EXTENSION_MISSING,
                f"extension {_NAMES[item]} needs {_NAMES[partner]}, which is missing",
            )
    form = CertForm.GRAMINE if len(found) == 1 else CertForm.SGX_RA_TLS
    pck_chain = _plain_pem(found[OID_PCK_CHAIN]) if OID_PCK_CHAIN in found else None
    pck_cert = None
    if OID_PCK_CERT in found and pck_chain is not None:
        leaf = _plain_pem(found[OID_PCK_CERT])
        pck_cert = leaf if leaf.endswith(b"\n") else leaf + b"\n"
        pck_cert += pck_chain
    embedded = RawCollateral(
        tcb_info=found.get(OID_TCB_INFO),
        tcb_info_issuer_chain=found.get(OID_TCB_CHAIN) if OID_TCB_INFO in found else None,
        qe_identity=found.get(OID_QE_IDENTITY),
        qe_identity_issuer_chain=found.get(OID_TCB_CHAIN) if OID_QE_IDENTITY in found else None,
        root_ca_crl=found.get(OID_ROOT_CRL),
        pck_crl=found.get(OID_PCK_CRL),
        pck_crl_issuer_chain=pck_chain if OID_PCK_CRL in found else None,
        pck_cert_chain=pck_cert,
        source=f"certificate ({form.value} form)",
    )
    return DcapPayload(form, found[OID_QUOTE], embedded)


def check_dcap_key_binding(
    form: CertForm, spki_der: bytes, key_bits: bytes, report_data: bytes
) -> None:
    """report_data[0:32] must commit to the certificate key as the form defines it."""
    if form is CertForm.GRAMINE:
        digest, what = hashlib.sha256(spki_der).digest(), "SHA-256 of the DER SubjectPublicKeyInfo"
    else:
        digest, what = hashlib.sha256(key_bits).digest(), "SHA-256 of the SPKI BIT STRING contents"
    if not hmac.compare_digest(digest, report_data[:32]):
        raise AttestationError(
            Reason.KEY_BINDING_MISMATCH,
            f"report_data does not commit to the certificate's public key ({form.value} form: "
            f"{what}): the quote belongs to a different key",
        )
