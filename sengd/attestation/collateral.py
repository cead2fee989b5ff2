"""DCAP collateral: verified items, bundles of them, where they come from, and the store.

Collateral is what Intel signs besides the quote: the TCB info of the platform's FMSPC, the
QE identity, the Root CA CRL and the PCK CA CRLs (and, for quotes of certification data type
1-3, the PCK certificate itself). Every item is verified when it enters the verifier, without
the clock: its issuer chain must lead to a pinned SGX root (`x509chain`) and its signature must
verify over the exact signed bytes. What stays to be checked per attestation (validity at
`now`, FMSPC, levels, revocation) is done by `dcap.py`.

Sources, all producing the same verified items:

- embedded in the RA-TLS certificate (sgx-ra-tls form, extensions .7-.13);
- a collateral directory, holding the PCS responses as files:
  `tcb_info.signed.json` + `tcb_info_issuer_chain.pem`, `qe_identity.signed.json` +
  `qe_identity_issuer_chain.pem`, `root_ca_crl.der`, `pck_crl.der` + `pck_crl_issuer_chain.pem`,
  and optionally `pck_cert_chain.pem` (PCK certificate and its chain, for quotes without one).
  Any file may be absent; CRLs may be DER or PEM. Immediate subdirectories are read the same
  way (one per FMSPC, or the PCCS cache);
- a PCCS (`pccs.py`), whose responses are verified, kept in a `CollateralStore` and written to
  a cache directory in the collateral-directory format.

The `CollateralStore` holds the newest verified item per key (TCB info per FMSPC, one QE
identity, CRLs per issuer) as an immutable `Collateral` snapshot that verification reads
without locks; it records what verification found missing so that a background fetcher can get
it (verification itself never waits for the network).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sengd.attestation.cache import LruCache
from sengd.attestation.crl import CrlError, VerifiedCrl, verify_crl
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.pck import PckExtensions, pck_extensions
from sengd.attestation.pem import CERTIFICATE, PemError, parse_pem_or_urlencoded
from sengd.attestation.qe_identity import BODY_NAMES as QE_BODY_NAMES
from sengd.attestation.qe_identity import QeIdentity, parse_qe_identity
from sengd.attestation.signed_json import CollateralFormatError, parse_signed_body
from sengd.attestation.tcb import TcbInfo, parse_tcb_info
from sengd.attestation.trust import SgxRootAnchor
from sengd.attestation.x509chain import ChainError, VerifiedChain, verify_chain

FILES = {
    "tcb_info": "tcb_info.signed.json",
    "tcb_info_issuer_chain": "tcb_info_issuer_chain.pem",
    "qe_identity": "qe_identity.signed.json",
    "qe_identity_issuer_chain": "qe_identity_issuer_chain.pem",
    "root_ca_crl": "root_ca_crl.der",
    "pck_crl": "pck_crl.der",
    "pck_crl_issuer_chain": "pck_crl_issuer_chain.pem",
    "pck_cert_chain": "pck_cert_chain.pem",
}
"""Collateral directory file names (PCS responses, exactly as PCS serves them)."""
MAX_FILE_BYTES = 256 * 1024
_PCK_DIR = re.compile(r"pck-([0-9a-f]{32})")
"""A PCCS cache directory of a PCK certificate, named after its encrypted PPID's key."""
MAX_PCK_CHAINS = 4096
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
T = TypeVar("T")


# -- verified items ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedCollateral:
    """Common part of a verified TCB info or QE identity: signer, validity, identity."""

    signer: VerifiedChain
    issue_date: datetime
    next_update: datetime
    evaluation_number: int
    sha256: bytes
    source: str

    def invalid_at(self, now: datetime, what: str) -> tuple[str, str] | None:
        """("expired" | "not-yet-valid", description) or None."""
        if now > self.next_update:
            return "expired", f"{what} expired {self.next_update.isoformat()} (nextUpdate)"
        if now < self.issue_date:
            return "not-yet-valid", f"{what} is valid only from {self.issue_date.isoformat()}"
        problem = self.signer.invalid_at(now)
        if problem is not None:
            return problem[0], f"the signer of {what}: {problem[1]}"
        return None

    def newer_than(self, other: SignedCollateral) -> bool:
        """Intel's ordering: higher TCB evaluation data number, then later issue date."""
        return (self.evaluation_number, self.issue_date) > (
            other.evaluation_number,
            other.issue_date,
        )


@dataclass(frozen=True, slots=True)
class VerifiedTcbInfo:
    """A TCB info whose signature verified."""

    info: TcbInfo
    meta: SignedCollateral


@dataclass(frozen=True, slots=True)
class VerifiedQeIdentity:
    """A QE identity whose signature verified."""

    identity: QeIdentity
    meta: SignedCollateral


@dataclass(frozen=True, slots=True)
class VerifiedPck:
    """A PCK certificate chain from collateral (quotes of certification data type 1-3).

    `ppid_key` names the encrypted PPID a PCCS returned it for (`ppid_key()`), so that a
    quote's PCK certificate is found without trying every certificate the store holds."""

    chain: VerifiedChain
    extensions: PckExtensions
    source: str
    ppid_key: bytes | None = None


def ppid_key(encrypted_ppid: bytes) -> bytes:
    """The index of a PCK certificate fetched for an encrypted PPID (16 bytes of SHA-256)."""
    return hashlib.sha256(encrypted_ppid).digest()[:16]


@dataclass(frozen=True, slots=True)
class RawCollateral:
    """Collateral as bytes, not yet verified (from a directory, a certificate or a PCCS)."""

    tcb_info: bytes | None = None
    tcb_info_issuer_chain: bytes | None = None
    qe_identity: bytes | None = None
    qe_identity_issuer_chain: bytes | None = None
    root_ca_crl: bytes | None = None
    pck_crl: bytes | None = None
    pck_crl_issuer_chain: bytes | None = None
    pck_cert_chain: bytes | None = None
    source: str = "<collateral>"
    pck_ppid_key: bytes | None = None  # the encrypted PPID the PCK chain was fetched for

    def is_empty(self) -> bool:
        """Whether no item is present."""
        return all(getattr(self, name) is None for name in FILES)


def _chain_ders(pem: bytes, what: str, reason: Reason) -> list[bytes]:
    try:
        return parse_pem_or_urlencoded(pem, CERTIFICATE)
    except PemError as exc:
        raise AttestationError(reason, f"{what} is not strict PEM ({exc})") from None


def _signer(pem: bytes, anchors: Sequence[SgxRootAnchor], what: str) -> VerifiedChain:
    ders = _chain_ders(pem, f"the issuer chain of the {what}", Reason.COLLATERAL_MALFORMED)
    try:
        return verify_chain(ders, anchors, what=f"{what} signing chain")
    except ChainError as exc:
        raise AttestationError(Reason.COLLATERAL_CHAIN_UNTRUSTED, str(exc)) from None


def _check_signature(signer: VerifiedChain, signature: bytes, data: bytes, what: str) -> None:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        signer.leaf.public_key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        raise AttestationError(
            Reason.COLLATERAL_SIGNATURE_INVALID,
            f"the {what} signature does not verify with {signer.leaf.name!r}",
        ) from None


def _meta(
    signer: VerifiedChain, item: TcbInfo | QeIdentity, body: bytes, source: str
) -> SignedCollateral:
    return SignedCollateral(
        signer=signer,
        issue_date=item.issue_date,
        next_update=item.next_update,
        evaluation_number=item.evaluation_number,
        sha256=hashlib.sha256(body).digest(),
        source=source,
    )


def verify_tcb_info(
    body: bytes, issuer_chain: bytes, anchors: Sequence[SgxRootAnchor], source: str = "-"
) -> VerifiedTcbInfo:
    """A PCS TCB info body (`{"tcbInfo":...,"signature":...}`) and its issuer chain."""
    try:
        signed = parse_signed_body(body, ("tcbInfo",))
        info = parse_tcb_info(signed.document)
    except CollateralFormatError as exc:
        raise AttestationError(Reason.COLLATERAL_MALFORMED, f"TCB info: {exc}") from None
    signer = _signer(issuer_chain, anchors, "TCB info")
    _check_signature(signer, signed.signature, signed.inner, "TCB info")
    return VerifiedTcbInfo(info, _meta(signer, info, body, source))


def verify_qe_identity(
    body: bytes, issuer_chain: bytes, anchors: Sequence[SgxRootAnchor], source: str = "-"
) -> VerifiedQeIdentity:
    """A PCS QE identity body (`{"enclaveIdentity":...,"signature":...}`) and its chain."""
    try:
        signed = parse_signed_body(body, QE_BODY_NAMES)
        identity = parse_qe_identity(signed.name, signed.document)
    except CollateralFormatError as exc:
        raise AttestationError(Reason.COLLATERAL_MALFORMED, f"QE identity: {exc}") from None
    signer = _signer(issuer_chain, anchors, "QE identity")
    _check_signature(signer, signed.signature, signed.inner, "QE identity")
    return VerifiedQeIdentity(identity, _meta(signer, identity, body, source))


def verify_root_crl(data: bytes, anchors: Sequence[SgxRootAnchor]) -> VerifiedCrl:
    """The Root CA CRL, signed by a pinned root."""
    try:
        return verify_crl(data, anchors)
    except CrlError as exc:
        raise AttestationError(Reason.COLLATERAL_SIGNATURE_INVALID, f"Root CA CRL: {exc}") from None


def verify_pck_crl(
    data: bytes, issuer_chain: bytes, anchors: Sequence[SgxRootAnchor]
) -> VerifiedCrl:
    """A PCK Processor/Platform CA CRL and the CA's chain to the root."""
    ders = _chain_ders(issuer_chain, "the PCK CRL issuer chain", Reason.COLLATERAL_MALFORMED)
    try:
        chain = verify_chain(ders, anchors, leaf_is_ca=True, what="PCK CRL issuer chain")
    except ChainError as exc:
        raise AttestationError(Reason.COLLATERAL_CHAIN_UNTRUSTED, str(exc)) from None
    try:
        return verify_crl(data, anchors, chain)
    except CrlError as exc:
        raise AttestationError(Reason.COLLATERAL_SIGNATURE_INVALID, f"PCK CRL: {exc}") from None


def verify_pck_chain(
    pem: bytes,
    anchors: Sequence[SgxRootAnchor],
    source: str = "-",
    *,
    urlencoded_ok: bool = True,
    ppid: bytes | None = None,
) -> VerifiedPck:
    """A PCK certificate followed by its issuer chain (PEM), with its SGX extension."""
    if not urlencoded_ok and pem.startswith(b"-----BEGIN%20"):
        raise AttestationError(Reason.PCK_CHAIN_UNTRUSTED, "URL-encoded PCK chain")
    ders = _chain_ders(pem, "the PCK certificate chain", Reason.PCK_CHAIN_UNTRUSTED)
    try:
        chain = verify_chain(ders, anchors, what="PCK chain")
    except ChainError as exc:
        raise AttestationError(Reason.PCK_CHAIN_UNTRUSTED, str(exc)) from None
    return VerifiedPck(chain, pck_extensions(chain.leaf), source, ppid)


# -- bundles ----------------------------------------------------------------------------------


def _dedup(items: Iterable[T], key: Callable[[T], bytes]) -> tuple[T, ...]:
    seen: dict[bytes, T] = {}
    for item in items:
        seen.setdefault(key(item), item)
    return tuple(seen.values())


def _tcb_key(item: VerifiedTcbInfo) -> bytes:
    return item.meta.sha256


def _qe_key(item: VerifiedQeIdentity) -> bytes:
    return item.meta.sha256


def _crl_key(item: VerifiedCrl) -> bytes:
    return item.sha256


def _pck_key(item: VerifiedPck) -> bytes:
    return item.chain.leaf.sha256 + (item.ppid_key or b"")


@dataclass(frozen=True, slots=True)
class Collateral:
    """Verified collateral items (any number of each kind, no duplicates). Immutable."""

    tcb_infos: tuple[VerifiedTcbInfo, ...] = ()
    qe_identities: tuple[VerifiedQeIdentity, ...] = ()
    root_crls: tuple[VerifiedCrl, ...] = ()
    pck_crls: tuple[VerifiedCrl, ...] = ()
    pck_chains: tuple[VerifiedPck, ...] = ()

    def __add__(self, other: Collateral) -> Collateral:
        return Collateral(
            _dedup(self.tcb_infos + other.tcb_infos, _tcb_key),
            _dedup(self.qe_identities + other.qe_identities, _qe_key),
            _dedup(self.root_crls + other.root_crls, _crl_key),
            _dedup(self.pck_crls + other.pck_crls, _crl_key),
            _dedup(self.pck_chains + other.pck_chains, _pck_key),
        )

    def is_empty(self) -> bool:
        """Whether there is no item at all."""
        return not (
            self.tcb_infos
            or self.qe_identities
            or self.root_crls
            or self.pck_crls
            or self.pck_chains
        )

    def newest(self) -> Collateral:
        """Only the newest item per key: TCB info per FMSPC, one QE identity, CRLs per issuer."""
        tcb: dict[bytes, VerifiedTcbInfo] = {}
        for t in self.tcb_infos:
            best = tcb.get(t.info.fmspc)
            if best is None or t.meta.newer_than(best.meta):
                tcb[t.info.fmspc] = t
        qe: VerifiedQeIdentity | None = None
        for q in self.qe_identities:
            if qe is None or q.meta.newer_than(qe.meta):
                qe = q
        return Collateral(
            tuple(tcb.values()),
            () if qe is None else (qe,),
            _newest_crls(self.root_crls),
            _newest_crls(self.pck_crls),
            self.pck_chains[-MAX_PCK_CHAINS:],
        )

    @property
    def fmspcs(self) -> frozenset[bytes]:
        """The FMSPCs that have a TCB info here."""
        return frozenset(t.info.fmspc for t in self.tcb_infos)


def _newest_crls(crls: tuple[VerifiedCrl, ...]) -> tuple[VerifiedCrl, ...]:
    best: dict[bytes, VerifiedCrl] = {}
    for crl in crls:
        current = best.get(crl.issuer_spki)
        if current is None or crl.this_update > current.this_update:
            best[crl.issuer_spki] = crl
    return tuple(best.values())


EMPTY = Collateral()


def cached_verification(
    cache: LruCache[bytes, object] | None, parts: Sequence[bytes], verify: Callable[[], T]
) -> T:
    """Run `verify` once per distinct input bytes (results and rejections are both kept).

    `parts` must start with a tag naming the kind of result, so that equal bytes verified as
    two different kinds of item never share an entry."""
    if cache is None:
        return verify()
    digest = hashlib.sha256(b"\0".join(hashlib.sha256(p).digest() for p in parts)).digest()
    hit = cache.get(digest)
    if isinstance(hit, AttestationError):
        raise AttestationError(hit.reason, hit.message)
    if hit is not None:
        return hit  # type: ignore[return-value]
    try:
        result = verify()
    except AttestationError as exc:
        cache.put(digest, exc)
        raise
    cache.put(digest, result)
    return result


def _pair(raw: RawCollateral, body: str, chain: str) -> tuple[bytes, bytes] | None:
    first, second = getattr(raw, body), getattr(raw, chain)
    if first is None and second is None:
        return None
    if first is None or second is None:
        missing = FILES[body] if first is None else FILES[chain]
        raise AttestationError(Reason.COLLATERAL_MALFORMED, f"{raw.source}: {missing} is missing")
    return first, second


def verify_raw_items(
    raw: RawCollateral,
    anchors: Sequence[SgxRootAnchor],
    cache: LruCache[bytes, object] | None = None,
) -> Iterable[Collateral | AttestationError]:
    """Verify each item of `raw`; yield a one-item `Collateral` or the rejection, per item."""
    checks: list[tuple[tuple[bytes, ...], Callable[[], Collateral]]] = []
    try:
        tcb = _pair(raw, "tcb_info", "tcb_info_issuer_chain")
        qe = _pair(raw, "qe_identity", "qe_identity_issuer_chain")
        pck = _pair(raw, "pck_crl", "pck_crl_issuer_chain")
    except AttestationError as exc:
        yield exc
        return
    src = raw.source
    if tcb is not None:
        t = tcb
        checks.append(
            ((b"tcb", *t), lambda: Collateral(tcb_infos=(verify_tcb_info(*t, anchors, src),)))
        )
    if qe is not None:
        q = qe
        checks.append(
            ((b"qe", *q), lambda: Collateral(qe_identities=(verify_qe_identity(*q, anchors, src),)))
        )
    if raw.root_ca_crl is not None:
        r = raw.root_ca_crl
        checks.append(
            ((b"root-crl", r), lambda: Collateral(root_crls=(verify_root_crl(r, anchors),)))
        )
    if pck is not None:
        p = pck
        checks.append(
            ((b"pck-crl", *p), lambda: Collateral(pck_crls=(verify_pck_crl(*p, anchors),)))
        )
    if raw.pck_cert_chain is not None:
        c, key = raw.pck_cert_chain, raw.pck_ppid_key
        checks.append(
            (
                (b"pck", c, key or b""),
                lambda: Collateral(pck_chains=(verify_pck_chain(c, anchors, src, ppid=key),)),
            )
        )
    for parts, check in checks:
        try:
            yield cached_verification(cache, parts, check)
        except AttestationError as exc:
            yield exc


def verify_raw(
    raw: RawCollateral,
    anchors: Sequence[SgxRootAnchor],
    cache: LruCache[bytes, object] | None = None,
) -> Collateral:
    """Verify every item of `raw`; the first bad item raises its `AttestationError`."""
    out = EMPTY
    for item in verify_raw_items(raw, anchors, cache):
        if isinstance(item, AttestationError):
            raise item
        out = out + item
    return out


# -- directories ------------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def read_collateral_dir(path: Path | str) -> RawCollateral:
    """The collateral files in one directory (absent files are None). Raises OSError."""
    folder = Path(path)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    values = {name: _read(folder / filename) for name, filename in FILES.items()}
    match = _PCK_DIR.fullmatch(folder.name)
    key = bytes.fromhex(match.group(1)) if match else None
    return RawCollateral(**values, source=str(folder), pck_ppid_key=key)


def collateral_dirs(path: Path | str) -> list[Path]:
    """`path` and its immediate subdirectories (sorted): every place collateral may be."""
    root = Path(path)
    return [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]


# -- the store --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PckRequest:
    """What a PCCS needs to return the PCK certificate of a type-3 (encrypted PPID) quote."""

    encrypted_ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes


@dataclass
class CollateralStore:
    """The verifier's own collateral (directory, PCCS cache), newest item per key.

    Readers call `snapshot()` (an immutable `Collateral`, no lock). Writers (`add`, directory
    loading, the PCCS fetcher) replace the snapshot under a lock. `want_*` records what a
    verification found missing and wakes the fetcher through `on_want`; it never blocks.
    """

    anchors: tuple[SgxRootAnchor, ...]
    item_cache: LruCache[bytes, object] = field(default_factory=lambda: LruCache(256))
    on_want: Callable[[], None] | None = None
    _current: Collateral = field(default=EMPTY, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _wanted_fmspcs: set[bytes] = field(default_factory=set, init=False)
    _wanted_pcks: dict[bytes, PckRequest] = field(default_factory=dict, init=False)
    generation: int = field(default=0, init=False)

    def snapshot(self) -> Collateral:
        """The current collateral (never changes once returned)."""
        return self._current

    def add(self, collateral: Collateral) -> None:
        """Merge verified items, keeping the newest per key."""
        if collateral.is_empty():
            return
        with self._lock:
            self._current = (self._current + collateral).newest()
            self.generation += 1
            self._wanted_fmspcs -= self._current.fmspcs

    def load_raw(self, raw: RawCollateral) -> list[str]:
        """Verify and add every good item of `raw`; return a description of each bad one."""
        problems = []
        for item in verify_raw_items(raw, self.anchors, self.item_cache):
            if isinstance(item, AttestationError):
                problems.append(f"{raw.source}: {item.reason.value}: {item.message}")
            else:
                self.add(item)
        return problems

    def load_tree(self, path: Path | str) -> list[str]:
        """`load_raw` for a collateral directory and each of its subdirectories."""
        problems = []
        for folder in collateral_dirs(path):
            try:
                raw = read_collateral_dir(folder)
            except OSError as exc:
                problems.append(f"{folder}: {exc}")
                continue
            problems.extend(self.load_raw(raw))
        return problems

    def want_tcb_info(self, fmspc: bytes) -> None:
        """Verification needs the TCB info of `fmspc` (non-blocking)."""
        with self._lock:
            fresh = fmspc not in self._wanted_fmspcs
            self._wanted_fmspcs.add(fmspc)
        if fresh and self.on_want is not None:
            self.on_want()

    def want_pck(self, request: PckRequest) -> None:
        """Verification needs the PCK certificate of a type-3 quote (non-blocking)."""
        key = hashlib.sha256(request.encrypted_ppid + request.cpu_svn).digest()
        with self._lock:
            fresh = key not in self._wanted_pcks
            self._wanted_pcks[key] = request
        if fresh and self.on_want is not None:
            self.on_want()

    def wanted(self) -> tuple[frozenset[bytes], tuple[PckRequest, ...]]:
        """What verification asked for and has not arrived yet."""
        with self._lock:
            return frozenset(self._wanted_fmspcs), tuple(self._wanted_pcks.values())

    def forget_pck_request(self, request: PckRequest) -> None:
        """Stop asking for a PCK certificate (fetched, or refused by the PCCS)."""
        key = hashlib.sha256(request.encrypted_ppid + request.cpu_svn).digest()
        with self._lock:
            self._wanted_pcks.pop(key, None)
