"""The parsers one by one: report JSON, timestamps, quote bodies, base64, DER, trust anchors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sengd.attestation import AttestationError, Reason, TrustConfig, TrustConfigError, der
from sengd.attestation.b64 import strict_b64decode
from sengd.attestation.ias import MAX_REPORT_BYTES, parse_report, parse_timestamp
from sengd.attestation.quote import (
    QUOTE_BODY_SIZE,
    build_quote_body,
    parse_quote_body,
)
from sengd.attestation.trust import BUILTIN_IAS_ROOT_SHA256, builtin_anchors, load_anchors
from sengd.testing.attestation_kit import TestIas, make_quote_body

QUOTE = make_quote_body(mr_enclave=b"E" * 32, mr_signer=b"S" * 32, isv_prod_id=3, isv_svn=9)
QUOTE_B64 = base64.b64encode(QUOTE).decode()


def _doc(**overrides: object) -> bytes:
    doc: dict[str, object] = {
        "id": "1234",
        "timestamp": "2026-01-02T03:04:05.678901",
        "version": 4,
        "isvEnclaveQuoteStatus": "OK",
        "isvEnclaveQuoteBody": QUOTE_B64,
    }
    for key, value in overrides.items():
        if value is ...:
            doc.pop(key, None)
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def _malformed(body: bytes) -> Reason:
    with pytest.raises(AttestationError) as err:
        parse_report(body)
    return err.value.reason


def test_parse_report_fields() -> None:
    report = parse_report(_doc(advisoryIDs=["INTEL-SA-1"], nonce="n", advisoryURL="u"))
    assert report.report_id == "1234"
    assert report.timestamp == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert report.version == 4
    assert report.quote_status == "OK"
    assert report.quote.raw == QUOTE
    assert report.quote.mr_enclave == b"E" * 32
    assert report.advisory_ids == ("INTEL-SA-1",)
    assert (report.nonce, report.advisory_url) == ("n", "u")


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_known_versions(version: int) -> None:
    assert parse_report(_doc(version=version)).version == version


def test_api_v2_report_has_no_version() -> None:
    assert parse_report(_doc(version=...)).version is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"string"',
        b"\xef\xbb\xbf" + _doc(),  # BOM
        _doc().decode().encode("utf-16"),
        b"\xff" + _doc(),
        _doc(version=6),
        _doc(version=1),
        _doc(version="4"),
        _doc(version=True),
        _doc(version=4.0),
        _doc(version=None),
        _doc(id=...),
        _doc(id=""),
        _doc(id=12),
        _doc(timestamp=...),
        _doc(timestamp="yesterday"),
        _doc(isvEnclaveQuoteStatus=...),
        _doc(isvEnclaveQuoteStatus=None),
        _doc(isvEnclaveQuoteBody=...),
        _doc(advisoryIDs="INTEL-SA-1"),
        _doc(advisoryIDs=[1]),
        _doc(advisoryIDs=["x" * 65]),
        _doc(nonce=5),
        _doc(id="x" * 5000),
        b'{"id":"1","id":"2","timestamp":"2026-01-02T03:04:05","isvEnclaveQuoteStatus":"OK",'
        b'"isvEnclaveQuoteBody":"' + QUOTE_B64.encode() + b'"}',
        _doc().replace(b'"version": 4', b'"version": NaN'),
        _doc().replace(b'"version": 4', b'"version": Infinity'),
        _doc().replace(b'"version": 4', b'"version": ' + b"9" * 5000),
        b"[" * 100_000 + b"]" * 100_000,
        b" " * (MAX_REPORT_BYTES + 1),
    ],
)
def test_malformed_reports(body: bytes) -> None:
    assert _malformed(body) is Reason.REPORT_MALFORMED


@pytest.mark.parametrize(
    "quote_b64",
    [
        "",
        QUOTE_B64[:-4],
        QUOTE_B64 + "AAAA",
        QUOTE_B64[:-1] + "*",
        base64.b64encode(QUOTE + b"\x00").decode(),
        QUOTE_B64[:100] + "\n" + QUOTE_B64[100:],
        base64.b64encode(b"\x03\x00" + QUOTE[2:]).decode(),  # DCAP quote version 3
        base64.b64encode(QUOTE[:2] + b"\x02\x00" + QUOTE[4:]).decode(),  # sign type 2
    ],
)
def test_malformed_quotes(quote_b64: str) -> None:
    reason = _malformed(_doc(isvEnclaveQuoteBody=quote_b64))
    # "" is a missing required field; everything else is a bad quote
    assert reason is (Reason.REPORT_MALFORMED if not quote_b64 else Reason.QUOTE_MALFORMED)


def test_unknown_fields_and_empty_optional_strings_are_accepted() -> None:
    report = parse_report(_doc(revocationReason=1, tcbEvaluationDataNumber=16, nonce=""))
    assert report.nonce == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-03-30T22:02:25.579777", datetime(2018, 3, 30, 22, 2, 25, 579777, tzinfo=UTC)),
        ("2018-03-30T22:02:25", datetime(2018, 3, 30, 22, 2, 25, tzinfo=UTC)),
        ("2018-03-30T22:02:25.5", datetime(2018, 3, 30, 22, 2, 25, 500000, tzinfo=UTC)),
        ("2022-01-17T22:07:49.022259677", datetime(2022, 1, 17, 22, 7, 49, 22259, tzinfo=UTC)),
        ("2018-03-30T22:02:25Z", datetime(2018, 3, 30, 22, 2, 25, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2018-03-30 22:02:25",
        "2018-03-30T22:02:25+01:00",
        "2018-03-30T22:02:25.1234567890",
        "2018-02-30T22:02:25",
        "2018-03-30T24:00:00",
        "2018-03-30T22:02:25\n",
        "\uff12\uff10\uff11\uff18-03-30T22:02:25",  # fullwidth digits match \d, not [0-9]
        "",
    ],
)
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(AttestationError) as err:
        parse_timestamp(text)
    assert err.value.reason is Reason.REPORT_MALFORMED


def test_quote_roundtrip() -> None:
    raw = build_quote_body(
        mr_enclave=bytes(range(32)),
        mr_signer=bytes(range(32, 64)),
        report_data=bytes(range(64)),
        isv_prod_id=0x1234,
        isv_svn=0xBEEF,
        flags=0x7,
        xfrm=0x1F,
        cpu_svn=bytes(range(16)),
        misc_select=5,
        epid_group_id=0xB56,
        qe_svn=13,
        pce_svn=12,
        basename=bytes(range(100, 132)),
        config_svn=2,
        sign_type=0,
    )
    assert len(raw) == QUOTE_BODY_SIZE
    q = parse_quote_body(raw)
    assert q.raw == raw
    assert (q.version, q.sign_type, q.epid_group_id, q.qe_svn, q.pce_svn) == (2, 0, 0xB56, 13, 12)
    assert (q.mr_enclave, q.mr_signer) == (bytes(range(32)), bytes(range(32, 64)))
    assert (q.isv_prod_id, q.isv_svn, q.config_svn, q.misc_select) == (0x1234, 0xBEEF, 2, 5)
    assert (q.flags, q.xfrm, q.debug) == (0x7, 0x1F, True)
    assert q.report_data == bytes(range(64))
    assert q.basename == bytes(range(100, 132))
    assert q.cpu_svn == bytes(range(16))
    # byte offsets of PROTOCOL.md §5
    assert raw[112:144] == q.mr_enclave
    assert raw[176:208] == q.mr_signer
    assert raw[304:306] == (0x1234).to_bytes(2, "little")
    assert raw[368:432] == q.report_data
    assert raw[96:104] == (0x7).to_bytes(8, "little")


@pytest.mark.parametrize("size", [0, 431, 433, 436])
def test_quote_size(size: int) -> None:
    with pytest.raises(AttestationError) as err:
        parse_quote_body(bytes(size))
    assert err.value.reason is Reason.QUOTE_MALFORMED


def test_quote_builder_refuses_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="mr_enclave"):
        build_quote_body(mr_enclave=b"short", mr_signer=bytes(32))


@pytest.mark.parametrize(
    ("text", "decoded"),
    [(b"", b""), (b"QQ==", b"A"), (b"QUI=", b"AB"), (b"QUJD", b"ABC"), ("QUJD", b"ABC")],
)
def test_strict_base64(text: bytes | str, decoded: bytes) -> None:
    assert strict_b64decode(text) == decoded


@pytest.mark.parametrize(
    "text",
    [b"QQ", b"QR==", b"QQ==QQ==", b" QQ==", b"QQ==\n", b"QU\nJD", b"=QQ=", b"QU-_", "ÄBC", b"Q==="],
)
def test_strict_base64_rejects(text: bytes | str) -> None:
    with pytest.raises(ValueError):
        strict_b64decode(text)


def test_der_reader() -> None:
    assert der.read_tlv(b"\x04\x02ab") == der.Tlv(4, 2, 4)
    assert der.read_tlv(b"\x04\x81\x80" + bytes(128)) == der.Tlv(4, 3, 131)
    for bad in (
        b"",
        b"\x04",
        b"\x04\x03ab",  # too short
        b"\x04\x80",  # indefinite
        b"\x04\x81\x05abcde",  # non-minimal length
        b"\x04\x82\x00\x80" + bytes(128),  # leading zero length byte
        b"\x1f\x01\x00",  # multi-byte tag
        b"\x04\x85\x01\x00\x00\x00\x00",  # length field too large
    ):
        with pytest.raises(der.DerError):
            der.read_tlv(bad)
    assert der.encode_tlv(4, bytes(300))[:4] == b"\x04\x82\x01\x2c"
    assert der.encode_length(127) == b"\x7f"


def test_der_certificate_helpers(ias: TestIas) -> None:
    parts = der.split_certificate(ias.ca_der)
    assert parts.tbs + parts.signature_algorithm + parts.signature_value in ias.ca_der
    der.check_certificate_encoding(ias.ca_der)
    with pytest.raises(der.DerError):
        der.split_certificate(ias.ca_der + b"\x00")
    spki = der.tbs_spki(parts.tbs)
    bits = der.spki_key_bits(spki)
    from cryptography.hazmat.primitives import serialization

    assert bits == ias.ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    with pytest.raises(der.DerError):
        der.spki_key_bits(spki + b"\x00")


# -- trust configuration -------------------------------------------------------------------------


def test_builtin_anchor_is_intels_root(testdata: Path) -> None:
    (anchor,) = builtin_anchors()
    assert anchor.sha256.hex() == BUILTIN_IAS_ROOT_SHA256
    assert (
        anchor.der == (testdata / "intel-roots" / "Intel_SGX_Attestation_RootCA.der").read_bytes()
    )
    assert anchor.not_after == datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert TrustConfig.load(None).ias_anchors == TrustConfig.builtin().ias_anchors


def test_load_anchors_from_files(tmp_path: Path, ias: TestIas, other_ias: TestIas) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_bytes(ias.ca_pem + other_ias.ca_pem)
    der_file = tmp_path / "ca.der"
    der_file.write_bytes(ias.ca_der)
    anchors = load_anchors([pem, der_file])
    assert [a.der for a in anchors] == [ias.ca_der, other_ias.ca_der, ias.ca_der]
    assert TrustConfig.load(pem).ias_anchors == anchors[:2]
    assert str(pem) in anchors[0].source


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        (b"", "neither PEM nor DER"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM"),
    ],
)
def test_load_anchor_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "anchor.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TrustConfigError, match=message) as err:
        TrustConfig.load(path)
    assert err.value.source.startswith(str(path))


def test_anchor_must_be_an_rsa_ca(ias: TestIas, testdata: Path) -> None:
    with pytest.raises(TrustConfigError, match="not a CA"):
        TrustConfig.from_pem(ias.signing_pem)
    with pytest.raises(TrustConfigError, match="RSA"):
        TrustConfig.from_pem((testdata / "intel-roots" / "Intel_SGX_RootCA_2049.pem").read_bytes())


def test_trust_config_validation(ias: TestIas) -> None:
    from datetime import timedelta

    with pytest.raises(ValueError):
        TrustConfig(())
    with pytest.raises(ValueError):
        ias.trust(ias_chain_time="later")  # type: ignore[typeddict-item]
    with pytest.raises(ValueError):
        ias.trust(clock_skew=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        ias.trust(max_report_age=timedelta(0))
    trust = ias.trust()
    assert trust == ias.trust()  # equal configs compare equal; caches are not compared
