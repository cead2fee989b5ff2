"""`sengadm attest inspect` and `sengadm attest verify-report`: output, verdicts, exit codes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from sengadm import exitcodes
from sengadm.cli import main
from sengadm.commands import attest
from sengd.testing.attestation_kit import (
    DEBUG_FLAGS,
    KeyType,
    PrivateKey,
    TestIas,
    mint_plain_certificate,
    mint_ratls_certificate,
)
from tests.unit.attestation.conftest import NOW

AT = NOW.isoformat()


@pytest.fixture()
def files(tmp_path: Path, ias: TestIas, keys: dict[KeyType, PrivateKey]) -> dict[str, Path]:
    minted = mint_ratls_certificate(
        ias, key=keys["ec-p384"], not_before=NOW - timedelta(hours=1), flags=DEBUG_FLAGS
    )
    paths = {
        "root": tmp_path / "root.pem",
        "der": tmp_path / "cert.der",
        "pem": tmp_path / "cert.pem",
        "chain": tmp_path / "chain.pem",
        "report": tmp_path / "report.json",
        "sig": tmp_path / "report.sig",
        "signing": tmp_path / "signing.pem",
        "garbage": tmp_path / "garbage.der",
    }
    paths["root"].write_bytes(ias.ca_pem)
    paths["der"].write_bytes(minted.cert_der)
    paths["pem"].write_bytes(minted.cert_pem)
    paths["chain"].write_bytes(mint_plain_certificate().cert_pem + minted.cert_pem)
    paths["report"].write_bytes(minted.report.body)
    paths["sig"].write_bytes(minted.report.signature_b64 + b"\n")
    paths["signing"].write_bytes(ias.signing_pem + ias.ca_pem)
    paths["garbage"].write_bytes(b"\x30\x03\x02\x01\x00")
    return paths


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_valid_der_and_pem(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("der", "pem"):
        code, out, _ = run(
            ["attest", "inspect", str(files[name]), "--ias-root", str(files["root"]), "--at", AT],
            capsys,
        )
        assert code == exitcodes.OK
        assert out.startswith("verdict: VALID")
        assert "key_type" in out and "ec-p384" in out
        assert "debug" in out and "True" in out


def test_inspect_json(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            "attest",
            "inspect",
            str(files["der"]),
            "--ias-root",
            str(files["root"]),
            "--at",
            AT,
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    assert code == 0
    assert doc["verdict"] == "valid" and doc["reason"] is None
    assert doc["evidence"]["key_type"] == "ec-p384"
    assert doc["evidence"]["attributes"]["debug"] is True
    assert doc["checked_at"] == AT


def test_inspect_rejections(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--ias-root", str(files["root"]), "--json"]
    cases = [
        (files["chain"], ["--at", AT], "chain-not-leaf"),
        (files["garbage"], ["--at", AT], "cert-malformed"),
        (files["der"], ["--at", (NOW + timedelta(days=400)).isoformat()], "cert-expired"),
        (files["der"], ["--at", AT, "--max-report-age", "60"], "report-too-old"),
        (files["der"], ["--at", AT, "--ias-root", "builtin"], "ias-chain-untrusted"),
    ]
    for path, extra, reason in cases:
        code, out, _ = run(["attest", "inspect", str(path), *root, *extra], capsys)
        doc = json.loads(out)
        assert (code, doc["verdict"], doc["reason"]) == (exitcodes.REFUSED, "rejected", reason)


def test_time_rejection_still_shows_the_verified_evidence(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    late = (NOW + timedelta(days=400)).isoformat()
    code, out, _ = run(
        ["attest", "inspect", str(files["der"]), "--ias-root", str(files["root"]), "--at", late],
        capsys,
    )
    assert code == 1
    assert "reason:  cert-expired" in out
    assert "every check passed except the time checks above" in out
    code, out, _ = run(
        ["attest", "inspect", str(files["chain"]), "--ias-root", str(files["root"]), "--json"],
        capsys,
    )
    doc = json.loads(out)
    assert doc["evidence"] is None and doc["verified_except_time"] is False


def test_verify_report(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "attest",
        "verify-report",
        "--report",
        str(files["report"]),
        "--signature",
        str(files["sig"]),
        "--signing-cert",
        str(files["signing"]),
        "--ias-root",
        str(files["root"]),
        "--at",
        AT,
        "--json",
    ]
    code, out, _ = run(argv, capsys)
    doc = json.loads(out)
    assert code == 0 and doc["verdict"] == "valid"
    assert doc["report"]["quote"]["debug"] is True
    files["report"].write_bytes(files["report"].read_bytes() + b" ")
    code, out, _ = run(argv, capsys)
    assert (code, json.loads(out)["reason"]) == (1, "report-signature-invalid")


@pytest.mark.parametrize("encoding", ["b64", "hex", "raw"])
def test_real_report_signature_encodings(
    testdata: Path, tmp_path: Path, encoding: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = testdata / "oasis-core-ias-avr"
    sig = base64.b64decode((folder / "avr_v4_body_sw_hardening_needed.sig.b64").read_bytes())
    sig_file = tmp_path / "sig"
    sig_file.write_bytes(
        {"b64": base64.b64encode(sig), "hex": sig.hex().encode(), "raw": sig}[encoding]
    )
    base = [
        "attest",
        "verify-report",
        "--report",
        str(folder / "avr_v4_body_sw_hardening_needed.report.json"),
        "--signature",
        str(sig_file),
        "--signing-cert",
        str(folder / "avr_certificates_urlencoded.pem"),  # URL-encoded header value
        "--ias-root",
        "builtin",
    ]
    code, out, _ = run([*base, "--ias-chain-time", "report"], capsys)
    assert code == 0, out
    assert "SW_HARDENING_NEEDED" in out and "INTEL-SA-00334" in out
    code, out, _ = run([*base, "--at", AT], capsys)
    assert code == 1
    assert "ias-chain-expired" in out
    assert "every check passed except the time checks above" in out


def test_usage_errors(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = ["--ias-root", str(files["root"])]
    assert run(["attest", "inspect", str(tmp_path / "missing"), *root], capsys)[0] == 2
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")
    assert run(["attest", "inspect", str(bad_pem), *root], capsys)[0] == 2
    assert run(["attest", "inspect", str(files["der"]), *root, "--at", "noon"], capsys)[0] == 2
    code, _, err = run(
        ["attest", "inspect", str(files["der"]), "--ias-root", str(files["der"])], capsys
    )
    assert code == 2 and "--ias-root" in err
    assert (
        run(["attest", "inspect", str(files["der"]), *root, "--max-report-age", "0"], capsys)[0]
        == 2
    )
    # no --ias-root and no default file: say so and exit 2
    monkeypatch.setattr(attest, "DEFAULT_IAS_ROOT", tmp_path / "absent.pem")
    code, _, err = run(["attest", "inspect", str(files["der"])], capsys)
    assert code == 2
    assert "--ias-root is required" in err and "absent.pem" in err
    assert run(["attest"], capsys)[0] == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["attest", "inspect"])
    assert exit_info.value.code == 2


def test_default_root_file_is_used(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attest, "DEFAULT_IAS_ROOT", files["root"])
    code, _, _ = run(["attest", "inspect", str(files["der"]), "--at", AT], capsys)
    assert code == 0


def test_subprocess_with_stdin(files: dict[str, Path]) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sengadm",
            "attest",
            "inspect",
            "-",
            "--ias-root",
            str(files["root"]),
            "--at",
            AT,
        ],
        input=files["der"].read_bytes(),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"verdict: VALID")
    help_text = subprocess.run(
        [sys.executable, "-m", "sengadm", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "attest" in help_text
