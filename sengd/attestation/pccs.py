"""Fetching DCAP collateral from a PCCS (Intel PCS v4 API) in the background.

This is the only module of `sengd.attestation` that talks to the network, and verification
never calls it: `CollateralFetcher` runs in its own thread, fetches, verifies each response
(signature and chain to the pinned root, exactly as any other collateral), and only then puts
it into the `CollateralStore` that verification reads, and into a cache directory on disk. The
data plane never waits for it. If the PCCS is unreachable, the store keeps what it has (and
what the cache directory held at start), so enclaves whose collateral is cached are admitted
for as long as that collateral is valid (its `nextUpdate`; Intel issues it for 30 days).

Requests, relative to the configured base URL (e.g. `https://pccs:8081/sgx/certification/v4`):

    GET tcb?fmspc=<FMSPC>          body: {"tcbInfo":...,"signature":...}
                                   header TCB-Info-Issuer-Chain (v3: SGX-TCB-Info-Issuer-Chain)
    GET qe/identity                body: {"enclaveIdentity":...}, SGX-Enclave-Identity-Issuer-Chain
    GET pckcrl?ca=processor|platform&encoding=der   body: CRL, SGX-PCK-CRL-Issuer-Chain
    GET rootcacrl                  body: the Root CA CRL (DER, PEM or hex of the DER)
    GET pckcert?encrypted_ppid=..&cpusvn=..&pcesvn=..&pceid=..
                                   body: PCK certificate (PEM), SGX-PCK-Certificate-Issuer-Chain

Issuer chains arrive URL-encoded in the headers. When it runs: at start, every `refresh`
seconds, earlier when an item's `nextUpdate` is closer than that, and at once when a
verification asks for something missing (a new FMSPC, a PCK certificate).

The cache directory holds one collateral directory per item (`qe/`, `root/`, `pck-processor/`,
`pck-platform/`, `fmspc-<FMSPC>/`, `pck-<id>/`), in the format `collateral.py` reads, written
atomically (temporary file + rename).
"""

from __future__ import annotations

import binascii
import contextlib
import logging
import os
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

from sengd.attestation.collateral import (
    FILES,
    CollateralStore,
    PckRequest,
    RawCollateral,
    ppid_key,
)
from sengd.attestation.pem import PemError, url_decode_pem
from sengd.eventlog import emit

log = logging.getLogger("sengd.pccs")

MAX_RESPONSE_BYTES = 256 * 1024
TCB_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_CHAIN_HEADER = "SGX-Enclave-Identity-Issuer-Chain"
CRL_CHAIN_HEADER = "SGX-PCK-CRL-Issuer-Chain"
PCK_CHAIN_HEADER = "SGX-PCK-Certificate-Issuer-Chain"
PCK_CAS = ("processor", "platform")
EARLY_REFRESH = 3600.0
"""Refresh an item this many seconds before its nextUpdate at the latest."""
RETRY_AFTER_FAILURE = 60.0


class PccsError(Exception):
    """A PCCS request failed (unreachable, HTTP error, missing header, oversize)."""


@dataclass(frozen=True, slots=True)
class PccsSettings:
    """Where the PCCS is and how to talk to it.

    `verify_tls`: check the PCCS's TLS certificate (against `ca_file`, or the system CAs).
    Collateral is signed by Intel and verified whatever the transport, so TLS protects the
    availability and privacy of the requests, not the trust decision.
    """

    url: str
    cache_dir: Path | None = None
    refresh: float = 3600.0
    timeout: float = 10.0
    verify_tls: bool = True
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("https", "http"):
            raise ValueError(f"PCCS URL {self.url!r} must be https:// (or http://)")


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response: status, headers, body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class PccsClient:
    """Blocking HTTP(S) requests to one PCCS. Used only by the fetcher thread."""

    def __init__(self, settings: PccsSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/") + "/"
        context: ssl.SSLContext | None = None
        if settings.url.startswith("https:"):
            if settings.verify_tls:
                cafile = None if settings.ca_file is None else str(settings.ca_file)
                context = ssl.create_default_context(cafile=cafile)
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Response:
        """GET `path` (relative to the base URL); raise PccsError unless the answer is 200."""
        url = urllib.parse.urljoin(self.base, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Accept": "*/*"})  # noqa: S310 - scheme checked
        try:
            with self._opener.open(request, timeout=self.settings.timeout) as answer:
                body = answer.read(MAX_RESPONSE_BYTES + 1)
                headers: Message = answer.headers
                status = answer.status
        except urllib.error.HTTPError as exc:
            raise PccsError(f"GET {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PccsError(f"GET {path}: {getattr(exc, 'reason', exc)}") from None
        if status != 200:
            raise PccsError(f"GET {path}: HTTP {status}")
        if len(body) > MAX_RESPONSE_BYTES:
            raise PccsError(f"GET {path}: response larger than {MAX_RESPONSE_BYTES} bytes")
        return Response(status, {k.lower(): v for k, v in headers.items()}, body)

    @staticmethod
    def _header(response: Response, names: tuple[str, ...], what: str) -> bytes:
        """An issuer chain header, URL-decoded: the cache keeps plain PEM, like PCS files."""
        for name in names:
            value = response.headers.get(name.lower())
            if value:
                try:
                    return url_decode_pem(value.encode("latin-1"))
                except (PemError, UnicodeEncodeError) as exc:
                    raise PccsError(f"{what}: unreadable {name} header ({exc})") from None
        raise PccsError(f"{what}: no {names[0]} header")

    def tcb_info(self, fmspc: bytes) -> RawCollateral:
        """The TCB info of one FMSPC."""
        answer = self.get("tcb", {"fmspc": fmspc.hex().upper()})
        chain = self._header(answer, TCB_CHAIN_HEADERS, "tcb")
        return RawCollateral(
            tcb_info=answer.body, tcb_info_issuer_chain=chain, source=f"PCCS tcb {fmspc.hex()}"
        )

    def qe_identity(self) -> RawCollateral:
        """The QE identity."""
        answer = self.get("qe/identity")
        chain = self._header(answer, (QE_CHAIN_HEADER,), "qe/identity")
        return RawCollateral(
            qe_identity=answer.body, qe_identity_issuer_chain=chain, source="PCCS qe/identity"
        )

    def pck_crl(self, ca: str) -> RawCollateral:
        """The CRL of the PCK Processor or Platform CA."""
        answer = self.get("pckcrl", {"ca": ca, "encoding": "der"})
        chain = self._header(answer, (CRL_CHAIN_HEADER,), "pckcrl")
        return RawCollateral(
            pck_crl=_crl_bytes(answer.body), pck_crl_issuer_chain=chain, source=f"PCCS pckcrl {ca}"
        )

    def root_ca_crl(self) -> RawCollateral:
        """The Root CA CRL."""
        answer = self.get("rootcacrl")
        return RawCollateral(root_ca_crl=_crl_bytes(answer.body), source="PCCS rootcacrl")

    def pck_cert(self, request: PckRequest) -> RawCollateral:
        """The PCK certificate of a platform (for quotes with an encrypted PPID)."""
        answer = self.get(
            "pckcert",
            {
                "encrypted_ppid": request.encrypted_ppid.hex(),
                "cpusvn": request.cpu_svn.hex(),
                "pcesvn": request.pce_svn.to_bytes(2, "little").hex(),
                "pceid": request.pce_id.hex(),
            },
        )
        chain = self._header(answer, (PCK_CHAIN_HEADER,), "pckcert")
        leaf = answer.body if answer.body.endswith(b"\n") else answer.body + b"\n"
        return RawCollateral(
            pck_cert_chain=leaf + chain,
            source="PCCS pckcert",
            pck_ppid_key=ppid_key(request.encrypted_ppid),
        )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A PCCS answers directly; a redirect could lead anywhere, so it is an error."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _crl_bytes(body: bytes) -> bytes:
    """CRL bodies come as DER, PEM or (from PCCS) hex of the DER."""
    text = body.strip()
    if text and len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return binascii.unhexlify(text)
    return body


# -- the cache directory ----------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_cache(cache_dir: Path, name: str, raw: RawCollateral) -> None:
    """Write the items of `raw` into `cache_dir/name/` in the collateral-directory format."""
    folder = cache_dir / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    for attr, filename in FILES.items():
        value = getattr(raw, attr)
        if value is not None:
            _write_atomic(folder / filename, value)


# -- the background fetcher -------------------------------------------------------------------


@dataclass
class _Job:
    name: str  # cache subdirectory, and what the log calls it
    fetch: Callable[[], RawCollateral]


class CollateralFetcher:
    """A thread that keeps a `CollateralStore` supplied from a PCCS (module docstring).

    It holds the store weakly: when the store (and the trust config that owns it) is dropped,
    for instance on a configuration reload, the thread ends by itself.
    """

    def __init__(
        self,
        store: CollateralStore,
        settings: PccsSettings,
        *,
        client: PccsClient | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.client = client or PccsClient(settings)
        self.clock = clock
        self._wake = threading.Event()
        # When the store goes away (its trust config was replaced), wake up to end at once.
        self._store = weakref.ref(store, lambda _ref: self._wake.set())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.failures = 0
        self.last_error: str | None = None
        store.on_want = self.wake

    def start(self) -> CollateralFetcher:
        """Start the thread (it fetches everything at once, then on schedule)."""
        self._thread = threading.Thread(target=self._run, name="sengd-pccs", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Fetch what verification is missing now (called from any thread; never blocks)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (a request in flight finishes first, bounded by the timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        full_due = 0.0
        while not self._stop.is_set():
            store = self._store()
            if store is None:
                return
            now = time.monotonic()
            if now >= full_due:
                delay = self.refresh(store)
                full_due = time.monotonic() + delay
            else:
                self.fetch_wanted(store)
            del store
            self._wake.wait(timeout=max(1.0, min(full_due - time.monotonic(), 60.0)))
            self._wake.clear()

    def _jobs(self, store: CollateralStore) -> list[_Job]:
        client = self.client
        jobs = [
            _Job("qe", client.qe_identity),
            _Job("root", client.root_ca_crl),
            *(_Job(f"pck-{ca}", _bind_crl(client, ca)) for ca in PCK_CAS),
        ]
        wanted, _ = store.wanted()
        for fmspc in sorted(store.snapshot().fmspcs | wanted):
            jobs.append(_Job(f"fmspc-{fmspc.hex().upper()}", _bind_tcb(client, fmspc)))
        return jobs

    def _run_job(self, store: CollateralStore, job: _Job) -> bool:
        try:
            raw = job.fetch()
        except PccsError as exc:
            self._failed(job.name, str(exc))
            return False
        problems = store.load_raw(raw)
        if problems:
            self._failed(job.name, "; ".join(problems))
            return False
        if self.settings.cache_dir is not None:
            try:
                write_cache(self.settings.cache_dir, job.name, raw)
            except OSError as exc:
                emit(
                    log,
                    logging.WARNING,
                    "collateral-cache-write-failed",
                    item=job.name,
                    error=str(exc),
                )
        return True

    def _failed(self, name: str, error: str) -> None:
        self.failures += 1
        self.last_error = f"{name}: {error}"
        emit(log, logging.WARNING, "pccs-fetch-failed", item=name, error=error)

    def fetch_wanted(self, store: CollateralStore) -> None:
        """Fetch only what verification found missing (new FMSPCs, PCK certificates)."""
        wanted, pcks = store.wanted()
        for fmspc in sorted(wanted):
            self._run_job(
                store, _Job(f"fmspc-{fmspc.hex().upper()}", _bind_tcb(self.client, fmspc))
            )
        for request in pcks:
            name = "pck-" + ppid_key(request.encrypted_ppid).hex()
            if self._run_job(store, _Job(name, _bind_pck(self.client, request))):
                store.forget_pck_request(request)

    def refresh(self, store: CollateralStore) -> float:
        """Fetch everything once; return the seconds until the next full refresh is due."""
        ok = all([self._run_job(store, job) for job in self._jobs(store)])
        self.fetch_wanted(store)
        self.rounds += 1
        if ok:
            emit(log, logging.INFO, "pccs-refreshed", fmspcs=len(store.snapshot().fmspcs))
        delay = self.settings.refresh if ok else min(self.settings.refresh, RETRY_AFTER_FAILURE)
        return min(delay, self._until_next_update(store))

    def _until_next_update(self, store: CollateralStore) -> float:
        snapshot = store.snapshot()
        updates = [t.meta.next_update for t in snapshot.tcb_infos]
        updates += [q.meta.next_update for q in snapshot.qe_identities]
        updates += [c.next_update for c in (*snapshot.root_crls, *snapshot.pck_crls)]
        if not updates:
            return self.settings.refresh
        seconds = (min(updates) - self.clock()).total_seconds() - EARLY_REFRESH
        return max(RETRY_AFTER_FAILURE, seconds)


def _bind_tcb(client: PccsClient, fmspc: bytes) -> Callable[[], RawCollateral]:
    return lambda: client.tcb_info(fmspc)


def _bind_crl(client: PccsClient, ca: str) -> Callable[[], RawCollateral]:
    return lambda: client.pck_crl(ca)


def _bind_pck(client: PccsClient, request: PckRequest) -> Callable[[], RawCollateral]:
    return lambda: client.pck_cert(request)
