"""The real Intel-signed samples in ../shared/testdata, as report triples with expectations.

Some of them arrive inside third-party RA certificates that carry the report in a Netscape
Comment extension (2.16.840.1.113730.1.13), not in the SENG extensions; `comment_payload`
extracts it the way those projects wrote it (tests only: the verifier accepts SENG format only).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

NETSCAPE_COMMENT = x509.ObjectIdentifier("2.16.840.1.113730.1.13")
REAL_SETS = (
    "oasis-core-ias-avr",
    "phala-blockchain-ias-avr",
    "integritee-teerex-epid-ra-certs",
    "teaclave-epid-ra-cert-v3",
)


@dataclass(frozen=True)
class RealReport:
    """One real report: its exact bytes and the facts PROVENANCE.md lists for it."""

    set: str
    name: str
    body: bytes
    signature: bytes
    signing_cert: bytes
    expected: dict[str, Any]
    cert_der: bytes | None  # the RA certificate it came in, if any

    @property
    def id(self) -> str:
        return f"{self.set}/{self.name}"


def _expected(raw: dict[str, Any]) -> dict[str, Any]:
    # integritee/teaclave prefix the report facts with "avr."
    return {k.removeprefix("avr."): v for k, v in raw.items()}


def load_real_reports(testdata: Path) -> list[RealReport]:
    """Every report with a body, signature and signing certificate (15 in all)."""
    out: list[RealReport] = []
    for set_name in REAL_SETS:
        folder = testdata / set_name
        expected = json.loads((folder / "expected.json").read_text())
        oasis_chain = None
        if set_name == "oasis-core-ias-avr":
            pem = (folder / "ias_signing_chain.decoded.pem").read_bytes()
            oasis_chain = x509.load_pem_x509_certificates(pem)[0].public_bytes(Encoding.DER)
        for body_file in sorted(folder.glob("*.report.json")):
            name = body_file.name.removesuffix(".report.json")
            signing = folder / f"{name}.signing-cert.der"
            cert = folder / f"{name}.der"
            out.append(
                RealReport(
                    set=set_name,
                    name=name,
                    body=body_file.read_bytes(),
                    signature=base64.b64decode((folder / f"{name}.sig.b64").read_bytes()),
                    signing_cert=signing.read_bytes() if signing.exists() else oasis_chain or b"",
                    expected=_expected(expected[name]),
                    cert_der=cert.read_bytes() if cert.exists() else None,
                )
            )
    return out


@dataclass(frozen=True)
class CommentPayload:
    body: bytes
    signature: bytes
    signing_cert: bytes


def comment_payload(cert_der: bytes) -> CommentPayload:
    """The report triple of an integritee (pipe-separated) or Teaclave (JSON) RA certificate."""
    cert = x509.load_der_x509_certificate(cert_der)
    ext = cert.extensions.get_extension_for_oid(NETSCAPE_COMMENT).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    raw = ext.value
    if raw.startswith(b'{"report":'):
        doc = json.loads(raw)
        return CommentPayload(
            bytes(doc["report"]), bytes(doc["signature"]), bytes(doc["signing_cert"])
        )
    body, sig, signing = raw.split(b"|")
    return CommentPayload(body, base64.b64decode(sig), base64.b64decode(signing))
