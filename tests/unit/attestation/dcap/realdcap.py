"""The real DCAP samples in ../shared/testdata: files, expectations and the "as of" times."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sengd.attestation import RawCollateral, read_collateral_dir
from tests.conftest import TESTDATA

QVL = TESTDATA / "dcap-qvl-sgx-quote-2025"
OASIS = TESTDATA / "oasis-core-dcap-quote-2022"
RATLS_2019 = TESTDATA / "sgx-ra-tls-ecdsa-ratls-2019"
SYNTHETIC = TESTDATA / "synthetic" / "sgx-ra-tls-ecdsa-testroot"
ROOTS = TESTDATA / "intel-roots"

QVL_AT = datetime(2025, 7, 19, 10, 1, 17, tzinfo=UTC)
"""PROVENANCE: suggested as-of (min nextUpdate - 1 s), inside every validity window."""
OASIS_AT = datetime.fromtimestamp(1671497404, UTC)
"""oasis-core's own test time, 2022-12-20T00:50:04Z."""
RATLS_2019_AT = datetime(2019, 3, 20, tzinfo=UTC)


def expected(folder: Path, name: str) -> dict[str, Any]:
    """One entry of a folder's expected.json."""
    doc: dict[str, Any] = json.loads((folder / "expected.json").read_text())[name]
    return doc


def qvl_collateral() -> RawCollateral:
    """The dcap-qvl collateral directory, as files."""
    return read_collateral_dir(QVL / "collateral")


def oasis_collateral(chain: str = "tcb_info_v3_fmspc_00606A000000_certs.pem") -> RawCollateral:
    """oasis-core's TCB info and QE identity (no CRLs upstream), both signed by TCB Signing."""
    signing = (OASIS / chain).read_bytes()
    return RawCollateral(
        tcb_info=(OASIS / "tcb_info_v3_fmspc_00606A000000.json").read_bytes(),
        tcb_info_issuer_chain=signing,
        qe_identity=(OASIS / "qe_identity_v2.json").read_bytes(),
        qe_identity_issuer_chain=(OASIS / "tcb_info_v3_fmspc_00606A000000_certs.pem").read_bytes(),
        source="oasis-core",
    )


@dataclass(frozen=True)
class Sample:
    """A real quote, its collateral, its as-of time and what expected.json says about it."""

    name: str
    quote: bytes
    collateral: RawCollateral
    at: datetime
    facts: dict[str, Any]
    require_crls: bool = True
    require_qe_identity: bool = True


def samples() -> list[Sample]:
    """The real quotes that verify completely (quote + collateral) inside their windows."""
    ext = RATLS_2019 / "ecdsa-ratls.ext"
    ratls_pck = (ext / "1.2.840.113741.1337.7_pck_cert.pem").read_bytes()
    return [
        Sample(
            "dcap-qvl-2025",
            (QVL / "sgx_quote.bin").read_bytes(),
            qvl_collateral(),
            QVL_AT,
            expected(QVL, "sgx_quote.bin"),
        ),
        Sample(
            "oasis-2022",
            (OASIS / "quote_v3_ecdsa_p256_pck_chain.bin").read_bytes(),
            oasis_collateral(),
            OASIS_AT,
            expected(OASIS, "quote_v3_ecdsa_p256_pck_chain.bin"),
            require_crls=False,
        ),
        Sample(
            "sgx-ra-tls-2019",
            (ext / "1.2.840.113741.1337.6_quote.bin").read_bytes(),
            RawCollateral(
                tcb_info=(ext / "1.2.840.113741.1337.9_tcb_info.signed.json").read_bytes(),
                tcb_info_issuer_chain=(
                    ext / "1.2.840.113741.1337.10_tcb_sign_chain.urlencoded.pem"
                ).read_bytes(),
                pck_cert_chain=ratls_pck
                + b"\n"
                + urllib.parse.unquote_to_bytes(
                    (ext / "1.2.840.113741.1337.8_pck_sign_chain.urlencoded.pem").read_bytes()
                ),
                source="ecdsa-ratls extensions",
            ),
            RATLS_2019_AT,
            expected(RATLS_2019, "ecdsa-ratls.der + quote-ppid-rsa3072.dat"),
            require_crls=False,
            require_qe_identity=False,
        ),
    ]
