"""`sengadm enclave add --from-cert`: measurements from real RA-TLS certificates.

The certificates are minted by the attestation kit's test IAS (real RSA/ECDSA signatures), so
verification against that test root succeeds and against Intel's root fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sengd.testing.attestation_kit import DEBUG_FLAGS, TestIas, mint_ratls_certificate

from .conftest import Sengadm

# SENG certificates carry serial number 0 (the package silences that warning outside pytest).
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number:UserWarning")

MR_ENCLAVE = hashlib.sha256(b"from-cert enclave").digest()
MR_SIGNER = hashlib.sha256(b"from-cert signer").digest()


@pytest.fixture(scope="module")
def ias() -> Iterator[TestIas]:
    yield TestIas.create(ca_key_size=2048)


@pytest.fixture
def files(ias: TestIas, tmp_path: Path) -> dict[str, Path]:
    minted = mint_ratls_certificate(
        ias,
        key_type="ec-p256",
        mr_enclave=MR_ENCLAVE,
        mr_signer=MR_SIGNER,
        isv_prod_id=7,
        isv_svn=5,
    )
    debug = mint_ratls_certificate(ias, key_type="ec-p256", flags=DEBUG_FLAGS)
    paths = {
        "pem": tmp_path / "enclave.pem",
        "der": tmp_path / "enclave.der",
        "debug": tmp_path / "debug.pem",
        "root": tmp_path / "test-ias-root.pem",
        "junk": tmp_path / "junk.der",
        "two": tmp_path / "two.pem",
    }
    paths["pem"].write_bytes(minted.cert_pem)
    paths["der"].write_bytes(minted.cert_der)
    paths["debug"].write_bytes(debug.cert_pem)
    paths["root"].write_bytes(ias.ca_pem)
    paths["junk"].write_bytes(b"\x30\x03\x02\x01\x00")
    paths["two"].write_bytes(minted.cert_pem + debug.cert_pem)
    return paths


def entry(sengadm: Sengadm, name: str) -> dict[str, object]:
    run = sengadm("enclave", "show", name, "--json")
    assert run.code == 0, run.err
    result: dict[str, object] = json.loads(run.out)
    return result


def test_measurements_from_a_verified_certificate(sengadm: Sengadm, files: dict[str, Path]) -> None:
    run = sengadm(
        "enclave",
        "add",
        "app",
        "--from-cert",
        str(files["pem"]),
        "--ias-root",
        str(files["root"]),
        "--host-subnet",
        "0.0.0.0/0",
    )
    assert run.code == 0, run.err
    assert run.err == ""
    added = entry(sengadm, "app")
    assert added["match"] == "mr_enclave"
    assert added["mr_enclave"] == MR_ENCLAVE.hex()
    assert (added["mr_signer"], added["isv_prod_id"]) == (MR_SIGNER.hex(), 7)  # informational
    assert added["min_isv_svn"] == 0

    by_signer = sengadm(
        "enclave",
        "add",
        "family",
        "--from-cert",
        str(files["der"]),
        "--by-signer",
        "--ias-root",
        str(files["root"]),
        "--host-subnet",
        "10.0.0.0/8",
    )
    # Same signer and product as "app" but matched by signer: a different identity.
    assert by_signer.code == 0, by_signer.err
    family = entry(sengadm, "family")
    assert (family["match"], family["mr_enclave"], family["mr_signer"]) == (
        "signer",
        None,
        MR_SIGNER.hex(),
    )
    assert (family["isv_prod_id"], family["min_isv_svn"]) == (7, 5)  # the certificate's SVN
    lower = sengadm("enclave", "update", "family", "--min-svn", "2")
    assert lower.code == 0


def test_min_svn_overrides_the_certificates(sengadm: Sengadm, files: dict[str, Path]) -> None:
    run = sengadm(
        "enclave",
        "add",
        "family",
        "--from-cert",
        str(files["pem"]),
        "--by-signer",
        "--min-svn",
        "3",
        "--ias-root",
        str(files["root"]),
        "--host-subnet",
        "0.0.0.0/0",
    )
    assert run.code == 0, run.err
    assert entry(sengadm, "family")["min_isv_svn"] == 3


def test_a_certificate_that_does_not_verify_is_refused(
    sengadm: Sengadm, files: dict[str, Path]
) -> None:
    # Minted by the test IAS, so Intel's root does not vouch for it.
    run = sengadm(
        "enclave",
        "add",
        "app",
        "--from-cert",
        str(files["pem"]),
        "--ias-root",
        "builtin",
        "--host-subnet",
        "0.0.0.0/0",
    )
    assert run.code == 2
    assert str(files["pem"]) in run.err and "ias-" in run.err
    assert json.loads(sengadm("enclave", "list", "--json").out) == []
    # Unless verification is waived, which is said loudly.
    waived = sengadm(
        "enclave",
        "add",
        "app",
        "--from-cert",
        str(files["pem"]),
        "--no-verify",
        "--host-subnet",
        "0.0.0.0/0",
    )
    assert waived.code == 0
    assert "was not verified" in waived.err
    assert entry(sengadm, "app")["mr_enclave"] == MR_ENCLAVE.hex()


def test_unusable_certificate_files(
    sengadm: Sengadm, files: dict[str, Path], tmp_path: Path
) -> None:
    base = ["enclave", "add", "app", "--host-subnet", "0.0.0.0/0", "--ias-root", str(files["root"])]
    junk = sengadm(*base, "--from-cert", str(files["junk"]))
    assert junk.code == 2 and "cert-malformed" in junk.err
    two = sengadm(*base, "--from-cert", str(files["two"]))
    assert two.code == 2 and "holds 2 certificates" in two.err
    absent = sengadm(*base, "--from-cert", str(tmp_path / "absent.pem"))
    assert absent.code == 2 and "No such file" in absent.err
    bad_root = sengadm(
        "enclave",
        "add",
        "app",
        "--host-subnet",
        "0.0.0.0/0",
        "--from-cert",
        str(files["pem"]),
        "--ias-root",
        str(files["junk"]),
    )
    assert bad_root.code == 2 and "--ias-root" in bad_root.err
    both = sengadm(*base, "--from-cert", str(files["pem"]), "--mrenclave", "11" * 32)
    assert both.code == 2 and "--from-cert gives the identity" in both.err


def test_a_debug_build_is_pointed_out(sengadm: Sengadm, files: dict[str, Path]) -> None:
    run = sengadm(
        "enclave",
        "add",
        "dbg",
        "--from-cert",
        str(files["debug"]),
        "--ias-root",
        str(files["root"]),
        "--host-subnet",
        "0.0.0.0/0",
    )
    assert run.code == 0
    assert "debug build" in run.err
    quiet = sengadm(
        "enclave",
        "add",
        "dbg2",
        "--from-cert",
        str(files["debug"]),
        "--by-signer",
        "--ias-root",
        str(files["root"]),
        "--host-subnet",
        "0.0.0.0/0",
        "--allow-debug",
    )
    assert quiet.code == 0 and "debug build" not in quiet.err
