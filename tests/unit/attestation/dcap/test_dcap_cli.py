"""`sengadm attest inspect` for DCAP: raw quotes with a collateral directory, and DCAP RA-TLS
certificates; output, verdicts and exit codes (0 accepted, 1 rejected, 2 usage / I/O)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sengadm import exitcodes
from sengadm.cli import main
from sengadm.commands import attest
from sengd.testing.dcap_kit import (
    DcapPlatform,
    DcapTestPki,
    mint_gramine_certificate,
    write_collateral_dir,
)
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.dcap.realdcap import (
    OASIS,
    OASIS_AT,
    QVL,
    QVL_AT,
    RATLS_2019,
    expected,
    oasis_collateral,
)

QUOTE = QVL / "sgx_quote.bin"
COLLATERAL = QVL / "collateral"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_default_ias_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # DCAP inspection must not need the IAS root file.
    monkeypatch.setattr(attest, "DEFAULT_IAS_ROOT", tmp_path / "absent.pem")


def quote_args(*extra: str, at: str = QVL_AT.isoformat()) -> list[str]:
    return [
        "attest",
        "inspect",
        "--quote",
        str(QUOTE),
        "--collateral",
        str(COLLATERAL),
        "--at",
        at,
        *extra,
    ]


def test_real_quote_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(quote_args(), capsys)
    assert code == exitcodes.OK
    assert out.startswith("verdict: VALID")
    facts = expected(QVL, "sgx_quote.bin")
    assert facts["report_body"]["mr_enclave"] in out and facts["report_body"]["mr_signer"] in out
    assert "tcb_status               ConfigurationAndSWHardeningNeeded" in out
    assert "INTEL-SA-00289, INTEL-SA-00615" in out
    assert "sgx root: C=US,ST=CA,L=Santa Clara,O=Intel Corporation,CN=Intel SGX Root CA" in out


def test_real_quote_json_matches_expected(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(quote_args("--json"), capsys)
    doc = json.loads(out)
    facts = expected(QVL, "sgx_quote.bin")
    assert code == 0 and doc["verdict"] == "valid" and doc["reason"] is None
    evidence = doc["evidence"]
    assert evidence["tcb_status"] == facts["platform_tcb_status"]
    assert evidence["advisory_ids"] == facts["platform_tcb_advisories"]
    assert evidence["mr_enclave"] == facts["report_body"]["mr_enclave"]
    assert evidence["report_data"] == facts["report_body"]["report_data"]
    assert evidence["dcap"]["qe_status"] == facts["qe_tcb_status"]
    assert evidence["dcap"]["fmspc"] == facts["pck_ext"]["FMSPC"]
    assert doc["quote"]["sha256"] == facts["quote_sha256"]


def test_outside_the_window_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    late = (QVL_AT + timedelta(seconds=2)).isoformat()
    code, out, _ = run(quote_args(at=late), capsys)
    assert code == exitcodes.REFUSED
    assert "reason:  collateral-expired" in out
    assert "quote (as presented, NOT verified):" in out


def test_a_flipped_collateral_byte_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "collateral"
    shutil.copytree(COLLATERAL, folder)
    data = bytearray((folder / "qe_identity.signed.json").read_bytes())
    data[100] ^= 0x01
    (folder / "qe_identity.signed.json").write_bytes(bytes(data))
    argv = ["attest", "inspect", "--quote", str(QUOTE), "--collateral", str(folder)]
    code, out, _ = run([*argv, "--at", QVL_AT.isoformat(), "--json"], capsys)
    doc = json.loads(out)
    assert code == 1 and doc["reason"] == "collateral-signature-invalid"


def test_hex_quote_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hexed = tmp_path / "quote.hex"
    hexed.write_text(QUOTE.read_bytes().hex() + "\n")
    argv = ["attest", "inspect", "--quote", str(hexed), "--collateral", str(COLLATERAL)]
    assert run([*argv, "--at", QVL_AT.isoformat()], capsys)[0] == 0


def test_collateral_without_crls_needs_an_explicit_switch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_collateral_dir(tmp_path / "oasis", oasis_collateral())
    quote = OASIS / "quote_v3_ecdsa_p256_pck_chain.bin"
    argv = ["attest", "inspect", "--quote", str(quote), "--collateral", str(folder), "--json"]
    code, out, _ = run([*argv, "--at", OASIS_AT.isoformat()], capsys)
    assert (code, json.loads(out)["reason"]) == (1, "collateral-missing")
    code, out, _ = run([*argv, "--at", OASIS_AT.isoformat(), "--allow-missing-crls"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["evidence"]["tcb_status"] == "SWHardeningNeeded"
    assert doc["evidence"]["advisory_ids"] == ["INTEL-SA-00615", "INTEL-SA-00657"]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["attest", "inspect", "--quote", str(QUOTE)], capsys)
    assert code == exitcodes.USAGE and "--collateral" in err
    code, _, err = run([*quote_args()[:5], str(tmp_path / "nope")], capsys)
    assert code == exitcodes.USAGE
    code, _, _ = run(
        ["attest", "inspect", "--quote", str(tmp_path / "nope"), "--collateral", str(COLLATERAL)],
        capsys,
    )
    assert code == exitcodes.USAGE
    code, _, err = run([*quote_args(), "--sgx-root", str(QUOTE)], capsys)
    assert code == exitcodes.USAGE and "--sgx-root" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["attest", "inspect", str(QUOTE), "--quote", str(QUOTE)])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["attest", "inspect"])
    assert exit_info.value.code == 2


def test_garbage_quote_is_a_rejection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x03\x00\x02\x00" + bytes(100))
    argv = ["attest", "inspect", "--quote", str(junk), "--collateral", str(COLLATERAL), "--json"]
    code, out, _ = run(argv, capsys)
    doc = json.loads(out)
    assert code == 1 and doc["reason"] == "dcap-quote-malformed" and doc["quote"] is None


def test_kit_certificate_with_collateral_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = DcapTestPki.create()
    platform = DcapPlatform.create(pki)
    cert = mint_gramine_certificate(platform, not_before=NOW - timedelta(hours=1))
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem)
    (tmp_path / "root.pem").write_bytes(pki.root_pem)
    folder = write_collateral_dir(tmp_path / "dir", pki.collateral(at=NOW - timedelta(days=1)))
    base = [
        "attest",
        "inspect",
        str(tmp_path / "cert.pem"),
        "--sgx-root",
        str(tmp_path / "root.pem"),
    ]
    code, out, _ = run([*base, "--at", NOW.isoformat(), "--json"], capsys)
    assert (code, json.loads(out)["reason"]) == (1, "collateral-missing")
    code, out, _ = run(
        [*base, "--collateral", str(folder), "--at", NOW.isoformat(), "--json"], capsys
    )
    doc = json.loads(out)
    assert code == 0 and doc["evidence"]["scheme"] == "dcap"
    assert doc["evidence"]["dcap"]["form"] == "gramine"
    assert doc["evidence"]["key_type"] == "ec-p384"
    # Intel's root does not vouch for the kit
    code, out, _ = run(
        [*base[:3], "--collateral", str(folder), "--at", NOW.isoformat(), "--json"], capsys
    )
    assert (code, json.loads(out)["reason"]) == (1, "collateral-chain-untrusted")
    # an empty collateral directory is no error, just no collateral
    (tmp_path / "empty").mkdir()
    code, out, _ = run([*base, "--collateral", str(tmp_path / "empty"), "--json"], capsys)
    assert json.loads(out)["reason"] in ("collateral-missing",)
    assert code == 1


def test_the_2019_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    der = RATLS_2019 / "ecdsa-ratls.der"
    code, out, _ = run(["attest", "inspect", str(der), "--at", "2019-03-20T00:00:00Z"], capsys)
    assert code == 1
    assert "reason:  cert-signature-invalid" in out
    assert "ba955817182da60e188849038328f8088156eb7dbcd4f966428089be6d3fd411" in out


def test_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sengadm", *quote_args("--ias-root", "builtin")],
        capture_output=True,
        check=False,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ConfigurationAndSWHardeningNeeded" in proc.stdout
