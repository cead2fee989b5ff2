"""Certificate revocation lists of Intel's SGX PKI: the Root CA CRL and the PCK CA CRLs.

A CRL is accepted only if it is strict DER (or strict PEM of it), signed with ecdsa-with-SHA256
(outer and inner algorithm identical), and the signature over the exact `tbsCertList` bytes
verifies with the key of its issuer: the pinned root for the Root CA CRL, a PCK Processor or
Platform CA that itself chains to the pinned root for a PCK CRL. The revoked serial numbers are
kept as a set; `thisUpdate` / `nextUpdate` are returned for the caller's time check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sengd.attestation import der
from sengd.attestation.pem import X509_CRL, PemError, is_pem, parse_pem
from sengd.attestation.trust import SgxRootAnchor
from sengd.attestation.x509chain import ECDSA_SHA256_ALGORITHM, VerifiedChain

MAX_CRL_BYTES = 1024 * 1024


class CrlError(ValueError):
    """The CRL is unreadable or not signed by the expected issuer (the message says which)."""


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """A CRL whose signature verified. `issuer_spki` is the signing CA's key (DER SPKI)."""

    kind: str  # "root" or "pck"
    issuer_der: bytes
    issuer_spki: bytes
    issuer_name: str
    this_update: datetime
    next_update: datetime
    revoked: frozenset[int]
    sha256: bytes
    issuer_chain: VerifiedChain | None  # for PCK CRLs: the CA's chain to the root
    anchor: SgxRootAnchor

    def invalid_at(self, now: datetime) -> tuple[str, str] | None:
        """("expired" | "not-yet-valid", description), or None if usable at `now`."""
        label = f"the {self.kind} CRL of {self.issuer_name!r}"
        if now > self.next_update:
            return "expired", f"{label} expired {self.next_update.isoformat()} (nextUpdate)"
        if now < self.this_update:
            return "not-yet-valid", f"{label} is valid only from {self.this_update.isoformat()}"
        if self.issuer_chain is not None:
            problem = self.issuer_chain.invalid_at(now)
            if problem is not None:
                return problem[0], f"the issuer of {label}: {problem[1]}"
        return None


def crl_der(data: bytes) -> bytes:
    """DER of a CRL given as DER or strict PEM."""
    if is_pem(data, X509_CRL):
        try:
            blocks = parse_pem(data, X509_CRL, allow_nul=False)
        except PemError as exc:
            raise CrlError(f"unreadable PEM CRL ({exc})") from None
        if len(blocks) != 1:
            raise CrlError("a PEM CRL file must hold exactly one CRL")
        return blocks[0]
    return bytes(data)


def _parse(data: bytes) -> tuple[x509.CertificateRevocationList, bytes, bytes]:
    if len(data) > MAX_CRL_BYTES:
        raise CrlError(f"CRL is {len(data)} bytes (limit {MAX_CRL_BYTES})")
    raw = crl_der(data)
    try:
        # A CRL has the same three-part outer structure as a certificate.
        parts = der.split_certificate(raw)
        signature = der.signature_bytes(parts)
        crl = x509.load_der_x509_crl(raw)
        inner = crl.signature_algorithm_oid
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc)
    except (der.DerError, ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise CrlError(f"not a DER CRL ({exc})") from None
    if (
        parts.signature_algorithm != ECDSA_SHA256_ALGORITHM
        or inner != x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    ):
        raise CrlError("the CRL is not signed with ecdsa-with-SHA256")
    return crl, parts.tbs, signature


def _revoked(crl: x509.CertificateRevocationList) -> frozenset[int]:
    try:
        return frozenset(entry.serial_number for entry in crl)
    except ValueError as exc:
        raise CrlError(f"unreadable revoked-certificate entry ({exc})") from None


def _name(name: x509.Name) -> str:
    try:
        cns = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        text = str(cns[0].value) if cns else name.rfc4514_string()
    except ValueError:
        return "<unreadable name>"
    return "".join(c if c.isprintable() else "?" for c in text)[:80]


def verify_crl(
    data: bytes,
    anchors: Sequence[SgxRootAnchor],
    issuer_chain: VerifiedChain | None = None,
) -> VerifiedCrl:
    """Verify a Root CA CRL (`issuer_chain` None: signed by a pinned root) or a PCK CRL
    (signed by the leaf CA of `issuer_chain`, which the caller verified with `leaf_is_ca`)."""
    crl, tbs, signature = _parse(data)
    issuer_der = crl.issuer.public_bytes()
    if issuer_chain is None:
        candidates = [(a.subject_der, a.spki_der, a.public_key, a) for a in anchors]
        kind = "root"
    else:
        ca = issuer_chain.leaf
        if ca.key_usage is not None and not ca.key_usage.crl_sign:
            raise CrlError(f"{ca.name!r} may not sign CRLs")
        candidates = [(ca.subject_der, ca.spki_der, ca.public_key, issuer_chain.anchor)]
        kind = "pck"
    for subject, spki, key, anchor in candidates:
        if subject != issuer_der:
            continue
        if not _signed(key, signature, tbs):
            raise CrlError(f"the {kind} CRL's signature does not verify with its issuer's key")
        next_update = crl.next_update_utc
        if next_update is None:
            raise CrlError("the CRL has no nextUpdate")
        return VerifiedCrl(
            kind=kind,
            issuer_der=issuer_der,
            issuer_spki=spki,
            issuer_name=_name(crl.issuer),
            this_update=crl.last_update_utc,
            next_update=next_update,
            revoked=_revoked(crl),
            sha256=hashlib.sha256(crl_der(data)).digest(),
            issuer_chain=issuer_chain,
            anchor=anchor,
        )
    expected = "a pinned SGX root" if issuer_chain is None else repr(issuer_chain.leaf.name)
    raise CrlError(f"the {kind} CRL is issued by {_name(crl.issuer)!r}, not by {expected}")


def _signed(key: ec.EllipticCurvePublicKey, signature: bytes, tbs: bytes) -> bool:
    try:
        key.verify(signature, tbs, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = ["CrlError", "VerifiedCrl", "crl_der", "verify_crl"]
