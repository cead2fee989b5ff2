"""Short X.509 chains of Intel's SGX PKI, verified up to a root pinned by its key.

Every DCAP chain is at most three certificates: PCK certificate <- PCK Processor/Platform CA
<- Intel SGX Root CA, or TCB Signing <- Root CA, or (for CRLs) PCK CA <- Root CA. All keys are
EC P-256 and every signature is ECDSA with SHA-256. The checks, without the clock:

- each certificate is strict DER (no unused signature bits), its outer and inner signature
  algorithms are both ecdsa-with-SHA256, its key is P-256, and it has no critical extension but
  basicConstraints, keyUsage and the SGX extension;
- each certificate is issued by the next: names match and the signature verifies;
- the top certificate is issued by a pinned root (name and key). A root certificate at the end
  of the list is accepted only if it carries a pinned key and its self-signature verifies: any
  edition of Intel's root, never a different key (the DCAP *test* root is refused here);
- the leaf is not a CA (or is one, when the caller asks for a CA such as a CRL issuer); every
  certificate above it is a CA whose path length allows the certificates below it. The pinned
  root's own constraints are not applied: its key is what is trusted, and the original edition
  of Intel's root says pathlen:0, which its own PCK chains exceed.

The certificates may come in any order (some tools list the root first): the path is built
from the one certificate that issues no other upwards, by name; a certificate that does not
belong to that path is an error.

The validity periods are returned, not checked: callers compare them with their `now`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtensionOID

from sengd.attestation import der
from sengd.attestation.trust import SgxRootAnchor

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
ECDSA_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")
"""The DER AlgorithmIdentifier of ecdsa-with-SHA256 (no parameters), as Intel encodes it."""
MAX_CHAIN = 4
_CRITICAL_OK = frozenset(
    {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, SGX_EXTENSION_OID}
)
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class ChainError(ValueError):
    """The chain does not lead to a pinned root; the message says which certificate and why."""


@dataclass(frozen=True, slots=True)
class ChainCert:
    """One certificate of an SGX chain, decoded once, with its exact signed bytes."""

    der: bytes
    cert: x509.Certificate
    tbs: bytes
    signature: bytes
    public_key: ec.EllipticCurvePublicKey
    spki_der: bytes
    subject_der: bytes
    issuer_der: bytes
    serial: int
    not_before: datetime
    not_after: datetime
    is_ca: bool
    path_length: int | None
    key_usage: x509.KeyUsage | None
    sha256: bytes

    @property
    def name(self) -> str:
        """The subject's common name (for messages), or the whole subject."""
        try:
            cns = self.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            text = str(cns[0].value) if cns else self.cert.subject.rfc4514_string()
        except ValueError:
            return "<unreadable name>"
        text = "".join(c if c.isprintable() else "?" for c in text)
        return text[:80]


def _tbs_signature_algorithm(tbs: bytes) -> bytes:
    outer = der.expect(tbs, 0, der.TAG_SEQUENCE)
    fields = der.children(tbs, outer)
    index = 2 if fields and fields[0].tag == der.TAG_CONTEXT_0 else 1
    if len(fields) <= index:
        raise der.DerError("TBSCertificate is missing fields")
    begin = fields[index - 1].end
    return tbs[begin : fields[index].end]


def parse_chain_cert(data: bytes, what: str = "certificate") -> ChainCert:
    """Decode one certificate of an SGX chain and check what it says about itself."""
    raw = bytes(data)
    try:
        parts = der.split_certificate(raw)
        signature = der.signature_bytes(parts)
        inner_algorithm = _tbs_signature_algorithm(parts.tbs)
        cert = x509.load_der_x509_certificate(raw)
        key = cert.public_key()
        extensions = list(cert.extensions)
        subject, issuer = cert.subject.public_bytes(), cert.issuer.public_bytes()
        serial, not_before, not_after = (
            cert.serial_number,
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
        )
    except (
        der.DerError,
        ValueError,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        UnsupportedAlgorithm,
    ) as exc:
        raise ChainError(f"{what} is not a well-formed DER certificate ({exc})") from None
    if (
        parts.signature_algorithm != ECDSA_SHA256_ALGORITHM
        or inner_algorithm != parts.signature_algorithm
    ):
        raise ChainError(f"{what} is not signed with ecdsa-with-SHA256")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ChainError(f"{what} does not carry an EC P-256 key")
    is_ca, path_length, key_usage = False, None, None
    for ext in extensions:
        if ext.critical and ext.oid not in _CRITICAL_OK:
            raise ChainError(f"{what} has unknown critical extension {ext.oid.dotted_string}")
        if isinstance(ext.value, x509.BasicConstraints):
            is_ca, path_length = ext.value.ca, ext.value.path_length
        elif isinstance(ext.value, x509.KeyUsage):
            key_usage = ext.value
    return ChainCert(
        der=raw,
        cert=cert,
        tbs=parts.tbs,
        signature=signature,
        public_key=key,
        spki_der=key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        subject_der=subject,
        issuer_der=issuer,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        is_ca=is_ca,
        path_length=path_length,
        key_usage=key_usage,
        sha256=hashlib.sha256(raw).digest(),
    )


def signed_by(cert: ChainCert, key: ec.EllipticCurvePublicKey) -> bool:
    """Whether `key` signed `cert` (ECDSA P-256 / SHA-256 over the exact TBS bytes)."""
    try:
        key.verify(cert.signature, cert.tbs, _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """A chain that leads to `anchor`. `path` is leaf first and excludes any root certificate."""

    path: tuple[ChainCert, ...]
    anchor: SgxRootAnchor
    root_edition_sha256: bytes | None  # the root certificate the evidence carried, if any

    @property
    def leaf(self) -> ChainCert:
        """The certificate the chain vouches for."""
        return self.path[0]

    @property
    def issuer(self) -> ChainCert | None:
        """The leaf's issuing CA certificate, or None if the root issued the leaf directly."""
        return self.path[1] if len(self.path) > 1 else None

    def invalid_at(self, now: datetime) -> tuple[str, str] | None:
        """("expired" | "not-yet-valid", description) for the first period `now` is outside."""
        periods = [(c.name, c.not_before, c.not_after) for c in self.path]
        periods.append(("pinned root", self.anchor.not_before, self.anchor.not_after))
        for name, start, end in periods:
            if now > end:
                return "expired", f"{name} expired {end.isoformat()}"
            if now < start:
                return "not-yet-valid", f"{name} is valid only from {start.isoformat()}"
        return None


def _ordered(certs: list[ChainCert]) -> list[ChainCert]:
    """Leaf first, each certificate followed by its issuer (by name)."""
    issuers = {c.issuer_der for c in certs if c.subject_der != c.issuer_der}
    leaves = [c for c in certs if c.subject_der not in issuers]
    if len(leaves) != 1:
        raise ChainError("the chain does not have exactly one leaf certificate")
    path = leaves
    rest = [c for c in certs if c is not leaves[0]]
    while rest:
        current = path[-1]
        if current.subject_der == current.issuer_der:
            break
        nxt = next((c for c in rest if c.subject_der == current.issuer_der), None)
        if nxt is None:
            break
        path.append(nxt)
        rest.remove(nxt)
    if rest:
        raise ChainError(f"{rest[0].name!r} does not belong to the chain")
    return path


def _anchor_for(top: ChainCert, anchors: Sequence[SgxRootAnchor]) -> SgxRootAnchor | None:
    for anchor in anchors:
        if top.issuer_der == anchor.subject_der and signed_by(top, anchor.public_key):
            return anchor
    return None


def _split_root(
    certs: list[ChainCert], anchors: Sequence[SgxRootAnchor]
) -> tuple[list[ChainCert], bytes | None]:
    last = certs[-1]
    if last.subject_der != last.issuer_der:
        return certs, None
    pinned = next((a for a in anchors if a.spki_der == last.spki_der), None)
    if pinned is None:
        raise ChainError(
            f"the chain ends in root {last.name!r} with key sha256 "
            f"{hashlib.sha256(last.spki_der).hexdigest()}, which is not a pinned SGX root key"
        )
    if not signed_by(last, pinned.public_key):
        raise ChainError("the root certificate in the chain is not self-signed by the pinned key")
    if len(certs) == 1:
        raise ChainError("the chain holds only a root certificate")
    return certs[:-1], last.sha256


def verify_chain(
    ders: Sequence[bytes],
    anchors: Sequence[SgxRootAnchor],
    *,
    leaf_is_ca: bool = False,
    what: str = "chain",
) -> VerifiedChain:
    """Verify `ders` (leaf first, or root first; root optional) up to one of `anchors`."""
    if not anchors:
        raise ChainError("no SGX root is pinned")
    if not ders or len(ders) > MAX_CHAIN:
        raise ChainError(f"{what} has {len(ders)} certificates (1-{MAX_CHAIN} expected)")
    certs = _ordered([parse_chain_cert(d, f"{what} certificate {i}") for i, d in enumerate(ders)])
    path, edition = _split_root(certs, anchors)
    for lower, upper in itertools.pairwise(path):
        if lower.issuer_der != upper.subject_der or not signed_by(lower, upper.public_key):
            raise ChainError(f"{lower.name!r} is not issued by {upper.name!r} in the {what}")
    anchor = _anchor_for(path[-1], anchors)
    if anchor is None:
        raise ChainError(f"{path[-1].name!r} in the {what} is not issued by a pinned SGX root")
    leaf = path[0]
    if leaf.is_ca != leaf_is_ca:
        kind = "a CA" if leaf_is_ca else "an end-entity certificate"
        raise ChainError(f"{leaf.name!r} in the {what} must be {kind}")
    for depth, ca in enumerate(path[1:]):
        if not ca.is_ca:
            raise ChainError(f"{ca.name!r} in the {what} issues certificates but is not a CA")
        if ca.path_length is not None and ca.path_length < depth:
            raise ChainError(f"{ca.name!r} in the {what} does not allow a path this long")
        if ca.key_usage is not None and not ca.key_usage.key_cert_sign:
            raise ChainError(f"{ca.name!r} in the {what} may not sign certificates")
    return VerifiedChain(tuple(path), anchor, edition)
