"""Property-based fuzzing of every attestation parser: whatever the bytes, only
`AttestationError` (or the documented parser-level error type) may come out.

Random bytes alone rarely get past the first check, so the deeper layers are fuzzed with
structure: mutated genuine certificates, minted certificates with arbitrary extension values
(correctly self-signed), and arbitrary report bodies correctly signed by the test IAS.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sengd.attestation import (
    AttestationError,
    TrustConfig,
    TrustConfigError,
    der,
    parse_quote_body,
    verify_certificate,
    verify_report,
)
from sengd.attestation.b64 import strict_b64decode
from sengd.attestation.ias import parse_report, parse_timestamp
from sengd.attestation.ratls import extract_payload, parse_certificate
from sengd.testing.attestation_kit import (
    TestIas,
    make_quote_body,
    mint_ratls_certificate,
    seng_report_data,
)
from tests.unit.attestation.conftest import NOW

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def only_attestation_errors(call: Callable[[], object]) -> None:
    try:
        call()
    except AttestationError as exc:
        assert exc.reason.value and exc.message


@pytest.fixture(scope="module")
def genuine(ias: TestIas, keys: dict[str, Any]) -> list[bytes]:
    start = NOW - timedelta(hours=1)
    certs = [
        mint_ratls_certificate(ias, key=key, not_before=start).cert_der for key in keys.values()
    ]
    certs.append(mint_ratls_certificate(ias, encoding="upstream", not_before=start).cert_der)
    return certs


@pytest.fixture(scope="module")
def fuzz_trust(ias: TestIas) -> TrustConfig:
    return ias.trust(cert_cache_size=0, max_report_age=timedelta(days=1))


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:  # noqa: PLR0911
    if not data:
        return draw(st.binary(min_size=1, max_size=64))
    kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "splice"]))
    index = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return (
            data[:index] + bytes([data[index] ^ (1 << draw(st.integers(0, 7)))]) + data[index + 1 :]
        )
    if kind == "set":
        return data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
    if kind == "delete":
        return data[:index] + data[index + draw(st.integers(1, 64)) :]
    if kind == "insert":
        return data[:index] + draw(st.binary(min_size=1, max_size=64)) + data[index:]
    if kind == "truncate":
        return data[:index]
    other = draw(st.integers(0, len(data) - 1))
    return data[:index] + data[other:]


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_as_certificate(data: bytes, fuzz_trust: TrustConfig) -> None:
    only_attestation_errors(lambda: verify_certificate(data, fuzz_trust, NOW))
    only_attestation_errors(lambda: verify_certificate([data, data], fuzz_trust, NOW))


@FUZZ
@given(draw=st.data())
def test_mutated_genuine_certificates(
    draw: st.DataObject, genuine: list[bytes], fuzz_trust: TrustConfig
) -> None:
    cert = genuine[draw.draw(st.integers(0, len(genuine) - 1))]
    mutated = cert
    for _ in range(draw.draw(st.integers(1, 3))):
        mutated = _mutate(mutated, draw.draw)
    assume(mutated != cert)
    with pytest.raises(AttestationError):
        verify_certificate(mutated, fuzz_trust, NOW)


extension_value = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    st.binary(max_size=400).map(base64.b64encode),
    st.binary(max_size=400).map(lambda b: b"-----BEGIN CERTIFICATE-----\n" + base64.b64encode(b)),
    st.just(b"{"),
)


@settings(FUZZ, max_examples=150)
@given(
    values=st.dictionaries(st.sampled_from([2, 3, 4, 5]), extension_value, min_size=1),
    omit=st.sets(st.sampled_from([2, 3, 4, 5]), max_size=2),
    duplicate=st.sets(st.sampled_from([2, 3, 4, 5]), max_size=1),
)
def test_arbitrary_extension_values(
    values: dict[int, bytes],
    omit: set[int],
    duplicate: set[int],
    ias: TestIas,
    keys: dict[str, Any],
    fuzz_trust: TrustConfig,
) -> None:
    minted = mint_ratls_certificate(
        ias,
        key=keys["ec-p256"],
        not_before=NOW - timedelta(hours=1),
        extension_values=values,
        omit=omit,
        duplicate=duplicate - omit,
    )
    only_attestation_errors(lambda: verify_certificate(minted.cert_der, fuzz_trust, NOW))
    cert = parse_certificate(minted.cert_der).cert
    only_attestation_errors(lambda: extract_payload(cert, accept_upstream=False))


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
report_field = st.sampled_from(
    [
        "id",
        "timestamp",
        "version",
        "isvEnclaveQuoteStatus",
        "isvEnclaveQuoteBody",
        "advisoryIDs",
        "advisoryURL",
        "nonce",
        "epidPseudonym",
        "platformInfoBlob",
    ]
)


meaningful = st.sampled_from(
    [
        "OK",
        "GROUP_OUT_OF_DATE",
        "GROUP_REVOKED",
        "SW_HARDENING_NEEDED",
        "2026-11-27T05:59:59.999999",
        "2026-11-27T07:00:00",
        "2020-01-01T00:00:00",
        2,
        3,
        5,
        6,
        ["INTEL-SA-00334"],
        [],
        "",
    ]
)


@st.composite
def report_documents(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = {
        "id": "1",
        "timestamp": "2026-11-27T05:00:00.000000",
        "version": 4,
        "isvEnclaveQuoteStatus": "OK",
        "isvEnclaveQuoteBody": base64.b64encode(make_quote_body()).decode(),
    }
    values = st.one_of(meaningful, json_value)
    for key, value in draw(st.dictionaries(report_field, values, max_size=2)).items():
        doc[key] = value
    for key in draw(st.sets(report_field, max_size=1)):
        doc.pop(key, None)
    if draw(st.integers(0, 3)) == 0:
        doc["isvEnclaveQuoteBody"] = base64.b64encode(draw(st.binary(max_size=500))).decode()
    if draw(st.integers(0, 3)) == 0:
        doc["timestamp"] = draw(st.text(max_size=40))
    return json.dumps(doc).encode()


@FUZZ
@given(body=report_documents() | st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_report_parser(body: bytes) -> None:
    only_attestation_errors(lambda: parse_report(body))


@settings(FUZZ, max_examples=150)
@given(body=report_documents() | st.binary(max_size=1500))
def test_signed_arbitrary_reports(body: bytes, ias: TestIas, fuzz_trust: TrustConfig) -> None:
    # correctly signed, so every byte reaches the JSON and quote parsers
    report = ias.sign(body)
    only_attestation_errors(
        lambda: verify_report(
            report.body, report.signature, report.signing_cert_der, fuzz_trust, NOW
        )
    )


@settings(FUZZ, max_examples=100)
@given(body=report_documents())
def test_signed_arbitrary_reports_in_certificates(
    body: bytes, ias: TestIas, keys: dict[str, Any], fuzz_trust: TrustConfig
) -> None:
    key = keys["ec-p256"]
    doc = json.loads(body)
    if isinstance(doc.get("isvEnclaveQuoteBody"), str) and len(doc) % 2:
        # some documents carry a quote bound to the key, to get past the binding check
        doc["isvEnclaveQuoteBody"] = base64.b64encode(
            make_quote_body(report_data=seng_report_data(key))
        ).decode()
    minted = mint_ratls_certificate(
        ias, key=key, not_before=NOW - timedelta(hours=1), report=ias.sign(json.dumps(doc).encode())
    )
    only_attestation_errors(lambda: verify_certificate(minted.cert_der, fuzz_trust, NOW))


@FUZZ
@given(
    body=st.binary(max_size=1200),
    signature=st.binary(max_size=300),
    signing_cert=st.binary(max_size=1500),
)
def test_report_triple_random(
    body: bytes, signature: bytes, signing_cert: bytes, fuzz_trust: TrustConfig
) -> None:
    only_attestation_errors(lambda: verify_report(body, signature, signing_cert, fuzz_trust, NOW))


@FUZZ
@given(draw=st.data())
def test_mutated_signing_certificate(
    draw: st.DataObject, ias: TestIas, fuzz_trust: TrustConfig
) -> None:
    report = ias.sign_report(make_quote_body(), timestamp=NOW - timedelta(minutes=1))
    signing = _mutate(report.signing_cert_der, draw.draw)
    assume(signing != report.signing_cert_der)
    with pytest.raises(AttestationError):
        verify_report(report.body, report.signature, signing, fuzz_trust, NOW)


@FUZZ
@given(data=st.binary(min_size=0, max_size=900))
def test_quote_parser(data: bytes) -> None:
    only_attestation_errors(lambda: parse_quote_body(data))


@FUZZ
@given(data=st.binary(min_size=432, max_size=432))
def test_quote_parser_exact_size(data: bytes) -> None:
    only_attestation_errors(lambda: parse_quote_body(data))


@FUZZ
@given(text=st.text(max_size=60) | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,20}Z?"))
def test_timestamp_parser(text: str) -> None:
    only_attestation_errors(lambda: parse_timestamp(text))


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=100))
def test_base64_decoder(data: bytes | str) -> None:
    try:
        decoded = strict_b64decode(data)
    except ValueError:
        return
    raw = data.encode() if isinstance(data, str) else data
    assert base64.b64encode(decoded) == raw  # exactly one accepted encoding per value


@FUZZ
@given(data=st.binary(max_size=300))
def test_der_walker(data: bytes) -> None:
    for call in (
        lambda: der.read_tlv(data),
        lambda: der.split_certificate(data),
        lambda: der.check_certificate_encoding(data),
        lambda: der.tbs_spki(data),
        lambda: der.spki_key_bits(data),
    ):
        with contextlib.suppress(der.DerError):
            call()


@FUZZ
@given(data=st.binary(max_size=2000) | st.text(max_size=400).map(str.encode))
def test_trust_anchor_loader(data: bytes) -> None:
    pem = (
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(data) + b"-----END CERTIFICATE-----\n"
    )
    for blob in (data, pem):
        with contextlib.suppress(TrustConfigError):
            TrustConfig.from_pem(blob)
