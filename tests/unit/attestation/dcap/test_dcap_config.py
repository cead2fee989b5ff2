"""The `[attestation]` DCAP keys and the daemon's `trust_from_config`: collateral directory,
PCCS cache read at start, the background fetcher, bad files skipped with a warning."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from sengd import config
from sengd.attestation import AttestationError, Reason, verify_certificate
from sengd.daemon import trust_from_config
from sengd.testing.dcap_kit import (
    DcapPlatform,
    DcapTestPki,
    PccsStandIn,
    mint_gramine_certificate,
    write_collateral_dir,
)
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.dcap.conftest import ISSUED


def load(tmp_path: Path, body: str) -> config.Config:
    path = tmp_path / "seng.toml"
    path.write_text(body)
    return config.load(path)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('pccs_url = "ftp://pccs/"', "attestation.pccs_url"),
        ('pccs_url = "https://pccs/v4?x=1"', "attestation.pccs_url"),
        ('pccs_cache_dir = "relative"', "attestation.pccs_cache_dir"),
        ("pccs_refresh = 5", "attestation.pccs_refresh"),
        ("pccs_timeout = 0", "attestation.pccs_timeout"),
        ('pccs_verify_tls = "yes"', "attestation.pccs_verify_tls"),
    ],
)
def test_bad_dcap_keys(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, f"[attestation]\n{line}\n")
    assert err.value.key == key


def test_dcap_keys_are_read(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "[attestation]\n"
        f'collateral_dir = "{tmp_path}"\n'
        'pccs_url = "https://pccs.example:8081/sgx/certification/v4"\n'
        'pccs_cache_dir = "/var/cache/seng"\n'
        "pccs_refresh = 600\n"
        "pccs_verify_tls = false\n",
    )
    a = cfg.attestation
    assert a.collateral_dir == tmp_path and a.pccs_refresh == 600.0
    assert a.pccs_cache_dir == Path("/var/cache/seng") and a.pccs_verify_tls is False
    assert config.load(None).attestation.pccs_url == ""


@pytest.fixture(scope="module")
def kit() -> tuple[DcapTestPki, DcapPlatform]:
    pki = DcapTestPki.create()
    return pki, DcapPlatform.create(pki)


def test_collateral_dir_and_sgx_root_from_config(
    tmp_path: Path, kit: tuple[DcapTestPki, DcapPlatform], caplog: pytest.LogCaptureFixture
) -> None:
    pki, platform = kit
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    write_collateral_dir(tmp_path / "dir" / "00A067110000", pki.collateral(at=ISSUED))
    (tmp_path / "dir" / "junk").mkdir()
    (tmp_path / "dir" / "junk" / "root_ca_crl.der").write_bytes(b"not a crl")
    cfg = load(
        tmp_path,
        f'[attestation]\nsgx_root_ca = "{tmp_path}/root.pem"\ncollateral_dir = "{tmp_path}/dir"\n',
    )
    with caplog.at_level(logging.WARNING):
        trust = trust_from_config(cfg)
    assert "event=collateral-skipped" in caplog.text and "junk" in caplog.text
    cert = mint_gramine_certificate(platform, not_before=NOW - timedelta(hours=1))
    assert verify_certificate(cert.cert_der, trust, NOW).tcb_status == "UpToDate"


def test_default_trust_pins_intels_root_and_has_no_collateral(tmp_path: Path) -> None:
    trust = trust_from_config(config.load(None))
    assert trust.dcap_enabled and trust.collateral is None
    assert trust.sgx_roots[0].key_sha256.hex().startswith("a0af0312")


def test_the_pccs_cache_serves_while_the_pccs_is_down(
    tmp_path: Path, kit: tuple[DcapTestPki, DcapPlatform]
) -> None:
    pki, platform = kit
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    cache = tmp_path / "cache"
    body = (
        f'[attestation]\nsgx_root_ca = "{tmp_path}/root.pem"\n'
        f'pccs_cache_dir = "{cache}"\npccs_ca_file = "{tmp_path}/pccs.pem"\n'
    )
    cert = mint_gramine_certificate(platform, not_before=NOW - timedelta(hours=1))
    before = set(threading.enumerate())
    with PccsStandIn.serving(pki.collateral(at=ISSUED)) as server:
        (tmp_path / "pccs.pem").write_bytes(server.ca_pem)
        cfg = load(tmp_path, body + f'pccs_url = "{server.url}"\n')
        trust = trust_from_config(cfg)
        store = trust.collateral
        assert store is not None
        deadline = time.monotonic() + 15
        while not (cache / "fmspc-00A067110000").is_dir() and time.monotonic() < deadline:
            try:  # the first verification asks for the platform's TCB info
                verify_certificate(cert.cert_der, trust, NOW)
            except AttestationError as exc:
                assert exc.reason is Reason.COLLATERAL_MISSING
            time.sleep(0.1)
        assert verify_certificate(cert.cert_der, trust, NOW).tcb_status == "UpToDate"
    # the PCCS is gone: a restart (new trust config) still admits the enclave from the cache
    del trust, store
    cfg = load(tmp_path, body + 'pccs_url = "https://127.0.0.1:1/sgx/certification/v4"\n')
    restarted = trust_from_config(cfg)
    assert verify_certificate(cert.cert_der, restarted, NOW).tcb_status == "UpToDate"
    # fetcher threads of dropped trust configs end by themselves
    del restarted
    import gc

    gc.collect()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.name == "sengd-pccs"]
        if not extra:
            break
        time.sleep(0.5)
    assert not extra
