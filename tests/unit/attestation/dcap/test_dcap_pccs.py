"""Collateral from a PCCS: a real HTTPS server on loopback (the kit's `PccsStandIn`) serves
Intel's recorded collateral or the kit's; the client, the fetcher thread, the cache directory,
TLS verification and outages are exercised for real."""

from __future__ import annotations

import gc
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sengd.attestation import (
    AttestationError,
    CollateralStore,
    RawCollateral,
    Reason,
    TrustConfig,
    builtin_sgx_roots,
    verify_certificate,
    verify_quote,
)
from sengd.attestation.collateral import PckRequest, read_collateral_dir
from sengd.attestation.dcap_quote import parse_dcap_quote
from sengd.attestation.pccs import CollateralFetcher, PccsClient, PccsError, PccsSettings
from sengd.testing.dcap_kit import DcapPlatform, DcapTestPki, PccsStandIn, mint_gramine_certificate
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.dcap.conftest import ISSUED
from tests.unit.attestation.dcap.realdcap import (
    QVL,
    QVL_AT,
    RATLS_2019,
    RATLS_2019_AT,
    qvl_collateral,
)


@pytest.fixture()
def recorded(tmp_path: Path) -> Iterator[PccsStandIn]:
    """A PCCS serving Intel's 2025 collateral (dcap-qvl), root CRL as hex like PCCS does."""
    with PccsStandIn.serving(qvl_collateral()) as server:
        (tmp_path / "pccs.pem").write_bytes(server.ca_pem)
        yield server


def settings(server: PccsStandIn, tmp_path: Path, **changes: object) -> PccsSettings:
    values: dict[str, object] = {
        "url": server.url,
        "cache_dir": tmp_path / "cache",
        "ca_file": tmp_path / "pccs.pem",
        "timeout": 5.0,
    }
    values.update(changes)
    return PccsSettings(**values)  # type: ignore[arg-type]


def intel_store() -> CollateralStore:
    return CollateralStore(builtin_sgx_roots())


def verify_qvl(store: CollateralStore) -> str:
    trust = TrustConfig.builtin(sgx_roots=store.anchors)
    quote = (QVL / "sgx_quote.bin").read_bytes()
    return verify_quote(quote, store.snapshot(), trust, QVL_AT).status


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_client_fetches_each_item_in_pcs_v4_shape(recorded: PccsStandIn, tmp_path: Path) -> None:
    client = PccsClient(settings(recorded, tmp_path))
    fmspc = bytes.fromhex("00a067110000")
    store = intel_store()
    for raw in (
        client.tcb_info(fmspc),
        client.qe_identity(),
        client.root_ca_crl(),
        client.pck_crl("processor"),
    ):
        assert store.load_raw(raw) == []
    assert verify_qvl(store) == "ConfigurationAndSWHardeningNeeded"
    assert recorded.requests == [
        "tcb?fmspc=00A067110000",
        "qe/identity",
        "rootcacrl",
        "pckcrl?ca=processor&encoding=der",
    ]
    with pytest.raises(PccsError, match="HTTP 404"):
        client.pck_crl("platform")  # the recording has only the Processor CA's CRL


def test_fetcher_round_fills_store_and_cache_and_a_restart_needs_no_pccs(
    recorded: PccsStandIn, tmp_path: Path
) -> None:
    store = intel_store()
    store.want_tcb_info(bytes.fromhex("00a067110000"))
    fetcher = CollateralFetcher(store, settings(recorded, tmp_path))
    delay = fetcher.refresh(store)
    assert verify_qvl(store) == "ConfigurationAndSWHardeningNeeded"
    assert fetcher.failures == 1 and "pck-platform" in (fetcher.last_error or "")
    assert delay == 60.0  # a failed item is retried within a minute
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [
        "fmspc-00A067110000",
        "pck-processor",
        "qe",
        "root",
    ]
    raw = read_collateral_dir(cache / "fmspc-00A067110000")
    assert raw.tcb_info == qvl_collateral().tcb_info
    # the chain arrived URL-encoded in a header and is cached as plain PEM, like PCS files
    assert raw.tcb_info_issuer_chain == qvl_collateral().tcb_info_issuer_chain
    # the Root CA CRL arrived as hex and is cached as DER
    assert read_collateral_dir(cache / "root").root_ca_crl == qvl_collateral().root_ca_crl
    # restart with the PCCS gone: the cache alone is enough
    recorded.available = False
    fresh = intel_store()
    assert fresh.load_tree(cache) == []
    assert verify_qvl(fresh) == "ConfigurationAndSWHardeningNeeded"
    fetcher2 = CollateralFetcher(fresh, settings(recorded, tmp_path))
    fetcher2.refresh(fresh)
    assert fetcher2.failures == 5 and "HTTP 503" in (fetcher2.last_error or "")
    assert verify_qvl(fresh) == "ConfigurationAndSWHardeningNeeded"


def test_tls_of_the_pccs_is_verified(recorded: PccsStandIn, tmp_path: Path) -> None:
    system_cas = PccsClient(settings(recorded, tmp_path, ca_file=None))
    with pytest.raises(PccsError, match="CERTIFICATE_VERIFY_FAILED"):
        system_cas.qe_identity()
    unverified = PccsClient(settings(recorded, tmp_path, ca_file=None, verify_tls=False))
    assert unverified.qe_identity().qe_identity == qvl_collateral().qe_identity


def test_unreachable_pccs_is_an_error_not_a_hang(tmp_path: Path) -> None:
    client = PccsClient(PccsSettings(url="https://127.0.0.1:1/sgx/certification/v4", timeout=2))
    started = time.monotonic()
    with pytest.raises(PccsError):
        client.qe_identity()
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="https"):
        PccsSettings(url="ftp://pccs.example/")


def test_a_tampered_response_is_neither_stored_nor_cached(
    recorded: PccsStandIn, tmp_path: Path
) -> None:
    body, chain = recorded.tcb[bytes.fromhex("00a067110000")]
    recorded.tcb[bytes.fromhex("00a067110000")] = (body.replace(b'"svn":11', b'"svn":12', 1), chain)
    store = intel_store()
    fetcher = CollateralFetcher(store, settings(recorded, tmp_path))
    store.want_tcb_info(bytes.fromhex("00a067110000"))
    fetcher.fetch_wanted(store)
    assert store.snapshot().tcb_infos == ()
    assert "collateral-signature-invalid" in (fetcher.last_error or "")
    assert not (tmp_path / "cache" / "fmspc-00A067110000").exists()


def test_pck_certificate_of_an_encrypted_ppid_quote(tmp_path: Path) -> None:
    # The real 2019 quote (certification data type 3): the PCCS returns its PCK certificate
    # (the one the sgx-ra-tls certificate carried in .7/.8) for the encrypted PPID.
    ext = RATLS_2019 / "ecdsa-ratls.ext"
    quote_bytes = (ext / "1.2.840.113741.1337.6_quote.bin").read_bytes()
    quote = parse_dcap_quote(quote_bytes)
    assert quote.ppid is not None and quote.ppid.pce_id is not None
    pck_chain = (ext / "1.2.840.113741.1337.7_pck_cert.pem").read_bytes() + b"\n"
    pck_chain += urllib.parse.unquote_to_bytes(
        (ext / "1.2.840.113741.1337.8_pck_sign_chain.urlencoded.pem").read_bytes()
    )
    tcb = RawCollateral(
        tcb_info=(ext / "1.2.840.113741.1337.9_tcb_info.signed.json").read_bytes(),
        tcb_info_issuer_chain=urllib.parse.unquote_to_bytes(
            (ext / "1.2.840.113741.1337.10_tcb_sign_chain.urlencoded.pem").read_bytes()
        ),
    )
    with PccsStandIn.serving(tcb, pck_certs={quote.ppid.ppid: pck_chain}) as server:
        (tmp_path / "pccs.pem").write_bytes(server.ca_pem)
        store = intel_store()
        fetcher = CollateralFetcher(store, settings(server, tmp_path))
        request = PckRequest(
            quote.ppid.ppid, quote.ppid.cpu_svn, quote.ppid.pce_svn, quote.ppid.pce_id
        )
        store.want_pck(request)
        store.want_tcb_info(bytes.fromhex("00706a100000"))
        fetcher.fetch_wanted(store)
        assert store.wanted() == (frozenset(), ())
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(server.requests[-1]).query)
        assert query["cpusvn"] == ["02020000000000000000000000000000"]
        assert query["pcesvn"] == ["0700"] and query["pceid"] == ["0000"]
        assert query["encrypted_ppid"] == [quote.ppid.ppid.hex()]
    trust = TrustConfig.builtin(
        sgx_roots=store.anchors, dcap_require_crls=False, dcap_require_qe_identity=False
    )
    (fetched,) = store.snapshot().pck_chains
    assert fetched.ppid_key is not None
    verdict = verify_quote(quote_bytes, store.snapshot(), trust, RATLS_2019_AT)
    assert verdict.status == "UpToDate" and verdict.facts.pck is fetched
    # cached under the PPID's key, and read back with it
    (folder,) = (tmp_path / "cache").glob("pck-*")
    assert folder.name == "pck-" + fetched.ppid_key.hex()
    again = intel_store()
    assert again.load_tree(tmp_path / "cache") == []
    assert again.snapshot().pck_chains[0].ppid_key == fetched.ppid_key


def test_background_fetch_never_blocks_verification(tmp_path: Path) -> None:
    pki = DcapTestPki.create()
    platform = DcapPlatform.create(pki, fmspc=bytes.fromhex("00906ed50000"))
    with PccsStandIn.serving(
        pki.collateral(at=ISSUED, fmspc=bytes.fromhex("00906ed50000")), delay=0.5
    ) as server:
        (tmp_path / "pccs.pem").write_bytes(server.ca_pem)
        store = CollateralStore(pki.trust().sgx_roots)
        trust = pki.trust(collateral=store)
        fetcher = CollateralFetcher(store, settings(server, tmp_path)).start()
        try:
            cert = mint_gramine_certificate(platform, not_before=NOW - timedelta(hours=1))
            started = time.monotonic()
            with pytest.raises(AttestationError) as err:
                verify_certificate(cert.cert_der, trust, NOW)
            assert time.monotonic() - started < 0.3  # the PCCS answers after 0.5 s
            assert err.value.reason is Reason.COLLATERAL_MISSING
            wait_for(lambda: bytes.fromhex("00906ed50000") in store.snapshot().fmspcs)
            assert verify_certificate(cert.cert_der, trust, NOW).tcb_status == "UpToDate"
            assert any(r.startswith("tcb?fmspc=00906ED50000") for r in server.requests)
        finally:
            fetcher.stop(timeout=10)


def test_the_fetcher_ends_when_its_store_is_dropped(recorded: PccsStandIn, tmp_path: Path) -> None:
    store = intel_store()
    fetcher = CollateralFetcher(store, settings(recorded, tmp_path)).start()
    wait_for(lambda: fetcher.rounds >= 1)
    thread = fetcher._thread
    assert thread is not None and thread.is_alive()
    del store
    gc.collect()
    fetcher.wake()
    thread.join(timeout=10)
    assert not thread.is_alive()
