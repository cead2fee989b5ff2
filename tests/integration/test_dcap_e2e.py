"""DCAP enclaves through the real tunnel: sengd in a namespace, real DTLS on both ends, kit
certificates in the Gramine and sgx-ra-tls forms, collateral from a directory or fetched from a
PCCS stand-in serving HTTPS inside the gateway's namespace (a real server, not a mock).

What issue 6 must show here: both certificate forms pass end to end; DCAP denials (TCB status,
advisory, key binding, revocation) cost nothing and harm no one; the PCCS fetch path never
blocks the data plane, and enclaves whose collateral is cached keep being admitted while the
PCCS is unreachable, across a restart too.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sengd.attestation import RawCollateral
from sengd.testing.attestation_kit import TestIas
from sengd.testing.dcap_kit import (
    DcapCertificate,
    DcapPlatform,
    DcapTestPki,
    Level,
    PccsStandIn,
    mint_gramine_certificate,
    mint_sgx_ra_tls_certificate,
    write_collateral_dir,
)
from sengd.testing.enclave_emu import EmulatorError
from tests.integration.netns import in_netns, topology
from tests.integration.site import Site

pytestmark = pytest.mark.integration

MR_G = bytes.fromhex("6a" * 32)
MR_R = bytes.fromhex("7b" * 32)
FMSPC_OK = bytes.fromhex("00a067110000")
FMSPC_CONFIG = bytes.fromhex("00906ed50000")
FMSPC_UNKNOWN = bytes.fromhex("00606a000000")


@pytest.fixture(scope="module")
def ias() -> TestIas:
    return TestIas.create(ca_key_size=2048)


@pytest.fixture(scope="module")
def pki() -> DcapTestPki:
    return DcapTestPki.create()


@pytest.fixture(scope="module")
def issued() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


@pytest.fixture
def site(ias: TestIas, tmp_path: Path) -> Iterator[Site]:
    with topology() as topo:
        s = Site(topo, tmp_path, ias)
        try:
            yield s
        finally:
            if s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGKILL)
                s.process.wait(10)


def configure(site: Site, pki: DcapTestPki, **keys: object) -> None:
    """Add DCAP keys to the site's [attestation] section (the kit's root pinned)."""
    (site.workdir / "sgx-root.pem").write_bytes(pki.root_pem)
    lines = [f'sgx_root_ca = "{site.workdir}/sgx-root.pem"']
    for key, value in keys.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str | Path) else f"{key} = {value}")
    text = site.config_path.read_text()
    assert text.count("[attestation]\n") == 1
    site.config_path.write_text(
        text.replace("[attestation]\n", "[attestation]\n" + "\n".join(lines) + "\n")
    )


def start(site: Site) -> None:
    site.start()


def gramine(platform: DcapPlatform, mr: bytes = MR_G, **kwargs: object) -> DcapCertificate:
    return mint_gramine_certificate(platform, mr_enclave=mr, **kwargs)  # type: ignore[arg-type]


def refused(site: Site, minted: DcapCertificate, reason: str) -> None:
    offset = len(site.log_text())
    emu = site.emulator(minted, timeout=3)
    with pytest.raises(EmulatorError):
        site.connect(emu)
        raise AssertionError(f"admitted although it should be refused with {reason}")
    text = site.wait_log(f"reason={reason}", offset=offset)
    assert "event=denied" in text


def test_both_dcap_forms_through_the_tunnel(site: Site, pki: DcapTestPki, issued: datetime) -> None:
    platform = DcapPlatform.create(pki, fmspc=FMSPC_OK)
    raw = pki.collateral(at=issued, fmspc=FMSPC_OK)
    write_collateral_dir(site.workdir / "collateral" / FMSPC_OK.hex(), raw)
    configure(site, pki, collateral_dir=site.workdir / "collateral")
    site.allow("gramine-app", MR_G)
    site.allow("ratls-app", MR_R)
    start(site)
    certs = [
        gramine(platform, key_type="ec-p384"),
        # sgx-ra-tls attesters (wolfSSL) use RSA-3072 and embed the collateral themselves
        mint_sgx_ra_tls_certificate(platform, raw, mr_enclave=MR_R, key_type="rsa-3072"),
    ]
    emus = []
    for minted in certs:
        emu = site.emulator(minted)
        assignment = site.connect(emu)
        emus.append(emu)
        assert str(assignment.ip).startswith("192.168.28.")
    for index, emu in enumerate(emus, start=1):
        assert site.ping_upstream(emu, ident=index)
    text = site.wait_log("app=ratls-app")
    assert text.count("event=session-up") == 2
    assert text.count("scheme=dcap quote_status=UpToDate") == 2
    assert site.stop() == 0


def test_dcap_denials_cost_nothing(site: Site, pki: DcapTestPki, issued: datetime) -> None:
    good_platform = DcapPlatform.create(pki, fmspc=FMSPC_OK)
    config_platform = DcapPlatform.create(pki, fmspc=FMSPC_CONFIG)
    revoked_platform = DcapPlatform.create(pki, fmspc=FMSPC_OK)
    base = pki.collateral(
        at=issued, fmspc=FMSPC_OK, revoked_pcks=[revoked_platform.pck_cert.serial_number]
    )
    write_collateral_dir(site.workdir / "collateral" / "ok", base)
    other = pki.collateral(
        at=issued,
        fmspc=FMSPC_CONFIG,
        levels=[Level(status="ConfigurationNeeded", advisory_ids=("INTEL-SA-00289",))],
    )
    write_collateral_dir(
        site.workdir / "collateral" / "config",
        RawCollateral(tcb_info=other.tcb_info, tcb_info_issuer_chain=other.tcb_info_issuer_chain),
    )
    configure(site, pki, collateral_dir=site.workdir / "collateral")
    site.allow("gramine-app", MR_G)
    start(site)
    good = site.emulator(gramine(good_platform))
    address = site.connect(good).ip
    refused(site, gramine(config_platform), "tcb-status-rejected")
    refused(site, gramine(good_platform, binding="wrong"), "key-binding-mismatch")
    refused(site, gramine(revoked_platform), "pck-revoked")
    refused(site, gramine(DcapPlatform.create(pki, fmspc=FMSPC_UNKNOWN)), "collateral-missing")
    refused(site, gramine(good_platform, mr=bytes(32)), "not-allowlisted")
    assert site.ping_upstream(good)
    assert [a for a, _ in site.open_leases()] == [str(address)]
    # advisories denied by configuration: reload with denied_advisories, and the platform whose
    # level lists one (accepted status otherwise) is refused from then on
    configure_text = site.config_path.read_text().replace(
        "[attestation]\n",
        '[attestation]\ntcb_statuses = ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded"]\n'
        'denied_advisories = ["INTEL-SA-00289"]\n',
    )
    site.config_path.write_text(configure_text)
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded", offset=offset)
    refused(site, gramine(config_platform), "advisory-denied")
    assert site.ping_upstream(good, ident=2)


def test_collateral_from_a_pccs_and_through_its_outage(
    site: Site, pki: DcapTestPki, issued: datetime
) -> None:
    platform = DcapPlatform.create(pki, fmspc=FMSPC_OK)
    cache = site.workdir / "pccs-cache"
    server = PccsStandIn.serving(pki.collateral(at=issued, fmspc=FMSPC_OK), delay=0.2)
    with in_netns(site.gw):  # its listening socket lives in the gateway's namespace
        server.__enter__()
    try:
        (site.workdir / "pccs.pem").write_bytes(server.ca_pem)
        configure(
            site,
            pki,
            pccs_url=server.url,
            pccs_cache_dir=cache,
            pccs_ca_file=site.workdir / "pccs.pem",
        )
        site.allow("gramine-app", MR_G)
        start(site)
        # The first enclave of a platform family is refused at once (the TCB info of its FMSPC
        # is fetched in the background, the handshake does not wait for it) ...
        first = gramine(platform)
        refused(site, first, "collateral-missing")
        deadline = time.monotonic() + 20
        while not (cache / "fmspc-00A067110000" / "tcb_info.signed.json").exists():
            assert time.monotonic() < deadline, site.log_text()[-3000:]
            time.sleep(0.1)
        # ... and admitted when it tries again.
        emu = site.emulator(first)
        site.connect(emu)
        assert site.ping_upstream(emu)
        assert any(r.startswith("tcb?fmspc=00A067110000") for r in server.requests)
    finally:
        server.__exit__(None, None, None)
    # The PCCS is gone: another enclave of the same family is still admitted from the cache,
    second = site.emulator(gramine(platform, key_type="rsa-2048"))
    site.connect(second)
    assert site.ping_upstream(second, ident=3)
    # an enclave of an unknown family is refused without delaying anyone,
    offset = len(site.log_text())
    refused(site, gramine(DcapPlatform.create(pki, fmspc=FMSPC_UNKNOWN)), "collateral-missing")
    site.wait_log("event=pccs-fetch-failed", offset=offset, timeout=20)
    assert site.ping_upstream(emu, ident=4)
    # and after a restart the disk cache alone admits the family.
    assert site.stop() == 0
    start(site)
    third = site.emulator(gramine(platform))
    site.connect(third)
    assert site.ping_upstream(third, ident=5)
