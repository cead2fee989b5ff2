"""Real Intel-signed reports: they verify under Intel's root as of their time, yield exactly the
values PROVENANCE.md lists, and any single changed byte is rejected with the right reason."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from sengd.attestation import (
    AttestationError,
    KeyBinding,
    Reason,
    TrustConfig,
    check_key_binding,
    verify_certificate,
    verify_report,
)
from sengd.attestation.ias import parse_timestamp
from tests.conftest import TESTDATA
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.realdata import RealReport, comment_payload, load_real_reports

REPORTS = load_real_reports(TESTDATA)
IDS = [r.id for r in REPORTS]
INTEGRITEE = TESTDATA / "integritee-teerex-epid-ra-certs"
BOUND_TO_TLS_KEY = {
    # PROVENANCE.md: report_data[0:64] == the leaf's P-256 X||Y
    "test_ra_cert_MRSIGNER1_MRENCLAVE1",
    "test_ra_cert_MRSIGNER2_MRENCLAVE2",
    "test_ra_cert_MRSIGNER3_MRENCLAVE2",
    "mesatee_2019_cert_from_comment",
    "tls_ra_cert_v3",
}


def _timestamp(report: RealReport) -> datetime:
    return parse_timestamp(report.expected["timestamp"])


def _check_against_expected(report: RealReport, trust: TrustConfig, now: datetime) -> None:
    got = verify_report(report.body, report.signature, report.signing_cert, trust, now)
    exp = report.expected
    q = exp["quote"]
    assert hashlib.sha256(report.body).hexdigest() == exp["report_body_sha256"]
    assert got.signing_cert_sha256.hex() == exp["signing_cert_sha256"]
    assert got.report_id == exp["id"]
    assert got.timestamp == _timestamp(report)
    assert got.timestamp.isoformat().removesuffix("+00:00") == exp["timestamp"]
    assert got.version == exp["version"]
    assert got.quote_status == exp["isvEnclaveQuoteStatus"]
    assert got.advisory_ids == tuple(exp["advisoryIDs"] or ())
    assert got.advisory_url == exp["advisoryURL"]
    assert got.nonce == exp["nonce"]
    assert (got.platform_info_blob is not None) == exp["platformInfoBlob_present"]
    assert (got.epid_pseudonym is not None) == exp["epidPseudonym_present"]
    quote = got.quote
    assert len(quote.raw) == exp["quote_body_len"] == 432
    assert quote.version == q["version"]
    assert quote.sign_type == q["sign_type"]
    assert quote.epid_group_id == int(q["epid_group_id (u32 LE value, hex)"], 16)
    assert quote.qe_svn == q["qe_svn"]
    assert quote.pce_svn == q["pce_svn"]
    assert quote.xeid == q["xeid"]
    assert quote.basename.hex() == q["basename"]
    assert quote.cpu_svn.hex() == q["cpu_svn"]
    assert quote.misc_select == int(q["misc_select"], 16)
    assert quote.flags == int(q["attributes.flags"], 16)
    assert quote.xfrm == int(q["attributes.xfrm"], 16)
    assert quote.debug is q["DEBUG"]
    assert quote.mr_enclave.hex() == q["mr_enclave"]
    assert quote.mr_signer.hex() == q["mr_signer"]
    assert quote.isv_prod_id == q["isv_prod_id"]
    assert quote.isv_svn == q["isv_svn"]
    assert quote.config_svn == q["config_svn"]
    assert quote.report_data[:32].hex() == q["report_data[0:32]"]
    assert quote.report_data[32:].hex() == q["report_data[32:64]"]


@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_verifies_with_chain_checked_at_report_time(
    report: RealReport, intel_trust_at_report: TrustConfig
) -> None:
    _check_against_expected(report, intel_trust_at_report, NOW)


@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_verifies_now_as_of_its_own_timestamp(report: RealReport) -> None:
    trust = TrustConfig.builtin()  # ias_chain_time="now"
    _check_against_expected(report, trust, _timestamp(report) + timedelta(seconds=1))


@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_rejected_after_intel_signing_cert_expired(report: RealReport) -> None:
    with pytest.raises(AttestationError) as err:
        verify_report(
            report.body, report.signature, report.signing_cert, TrustConfig.builtin(), NOW
        )
    assert err.value.reason is Reason.IAS_CHAIN_EXPIRED
    assert "2026-11-20T09:36:58" in err.value.message


def test_expiry_boundary_is_exact(real_reports: list[RealReport]) -> None:
    report = real_reports[0]
    trust = TrustConfig.builtin()
    expiry = datetime(2026, 11, 20, 9, 36, 58, tzinfo=UTC)
    verify_report(report.body, report.signature, report.signing_cert, trust, expiry)
    with pytest.raises(AttestationError) as err:
        verify_report(
            report.body,
            report.signature,
            report.signing_cert,
            trust,
            expiry + timedelta(microseconds=1),
        )
    assert err.value.reason is Reason.IAS_CHAIN_EXPIRED


def test_chain_checked_before_signing_cert_was_valid(real_reports: list[RealReport]) -> None:
    report = real_reports[0]
    with pytest.raises(AttestationError) as err:
        verify_report(
            report.body,
            report.signature,
            report.signing_cert,
            TrustConfig.builtin(),
            datetime(2016, 11, 21, tzinfo=UTC),
        )
    assert err.value.reason is Reason.IAS_CHAIN_NOT_YET_VALID


def _flips(data: bytes) -> list[bytes]:
    return [data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :] for i in range(len(data))]


@pytest.mark.parametrize("report", REPORTS, ids=IDS)
def test_every_single_byte_change_is_rejected(report: RealReport) -> None:
    trust = TrustConfig.builtin(ias_chain_time="report")
    body, sig, signing = report.body, report.signature, report.signing_cert
    reasons: dict[str, set[Reason]] = {"body": set(), "signature": set(), "signing-cert": set()}
    for changed in _flips(body):
        with pytest.raises(AttestationError) as err:
            verify_report(changed, sig, signing, trust, NOW)
        reasons["body"].add(err.value.reason)
    for changed in _flips(sig):
        with pytest.raises(AttestationError) as err:
            verify_report(body, changed, signing, trust, NOW)
        reasons["signature"].add(err.value.reason)
    for changed in _flips(signing):
        with pytest.raises(AttestationError) as err:
            verify_report(body, sig, changed, trust, NOW)
        reasons["signing-cert"].add(err.value.reason)
    assert reasons == {
        "body": {Reason.REPORT_SIGNATURE_INVALID},
        "signature": {Reason.REPORT_SIGNATURE_INVALID},
        "signing-cert": {Reason.IAS_CHAIN_UNTRUSTED},
    }
    # and the untouched triple still verifies with the same (cached) trust config
    verify_report(body, sig, signing, trust, NOW)


def test_truncated_and_extended_signatures_are_rejected(real_reports: list[RealReport]) -> None:
    report = real_reports[0]
    trust = TrustConfig.builtin(ias_chain_time="report")
    for sig in (b"", report.signature[:-1], report.signature + b"\x00", bytes(256)):
        with pytest.raises(AttestationError) as err:
            verify_report(report.body, sig, report.signing_cert, trust, NOW)
        assert err.value.reason is Reason.REPORT_SIGNATURE_INVALID


def test_body_with_trailing_newline_is_another_body(real_reports: list[RealReport]) -> None:
    report = real_reports[0]
    trust = TrustConfig.builtin(ias_chain_time="report")
    with pytest.raises(AttestationError) as err:
        verify_report(report.body + b"\n", report.signature, report.signing_cert, trust, NOW)
    assert err.value.reason is Reason.REPORT_SIGNATURE_INVALID


def test_real_reports_are_untrusted_under_a_test_root(
    real_reports: list[RealReport], trust: TrustConfig
) -> None:
    for report in real_reports:
        with pytest.raises(AttestationError) as err:
            verify_report(report.body, report.signature, report.signing_cert, trust, NOW)
        assert err.value.reason is Reason.IAS_CHAIN_UNTRUSTED


def test_the_ca_certificate_is_not_accepted_as_signing_certificate(
    real_reports: list[RealReport],
) -> None:
    trust = TrustConfig.builtin(ias_chain_time="report")
    root = trust.ias_anchors[0].der
    report = real_reports[0]
    with pytest.raises(AttestationError) as err:
        verify_report(report.body, report.signature, root, trust, NOW)
    assert err.value.reason is Reason.IAS_CHAIN_UNTRUSTED


def test_real_reports_cover_every_opt_in_status(real_reports: list[RealReport]) -> None:
    # GROUP_OUT_OF_DATE, CONFIGURATION_NEEDED, SW_HARDENING_NEEDED and
    # CONFIGURATION_AND_SW_HARDENING_NEEDED all occur; the policy decides about them.
    statuses = {r.expected["isvEnclaveQuoteStatus"] for r in real_reports}
    assert statuses == {
        "GROUP_OUT_OF_DATE",
        "CONFIGURATION_NEEDED",
        "SW_HARDENING_NEEDED",
        "CONFIGURATION_AND_SW_HARDENING_NEEDED",
    }


# -- the RA certificates the integritee and teaclave reports came in -------------------------

CERT_REPORTS = [r for r in REPORTS if r.cert_der is not None]


@pytest.mark.parametrize("report", CERT_REPORTS, ids=[r.id for r in CERT_REPORTS])
def test_embedded_report_is_the_staged_triple(report: RealReport) -> None:
    assert report.cert_der is not None
    payload = comment_payload(report.cert_der)
    assert (payload.body, payload.signature, payload.signing_cert) == (
        report.body,
        report.signature,
        report.signing_cert,
    )


@pytest.mark.parametrize("report", CERT_REPORTS, ids=[r.id for r in CERT_REPORTS])
def test_key_binding_of_real_certificates(report: RealReport) -> None:
    from sengd.attestation.ratls import certificate_key, parse_certificate

    assert report.cert_der is not None
    key = certificate_key(parse_certificate(report.cert_der))
    assert key.key_type == "ec-p256"
    quote = verify_report(
        report.body,
        report.signature,
        report.signing_cert,
        TrustConfig.builtin(ias_chain_time="report"),
        NOW,
    ).quote
    # None of them uses SENG's binding (SHA-256 of the key): the SENG check must refuse all.
    with pytest.raises(AttestationError) as err:
        check_key_binding(key.key_bits, quote.report_data)
    assert err.value.reason is Reason.KEY_BINDING_MISMATCH
    if report.name in BOUND_TO_TLS_KEY:
        check_key_binding(key.key_bits, quote.report_data, KeyBinding.RAW_EC_POINT)
        assert key.key_bits[1:].hex() == report.expected["leaf_pubkey_xy"]
        # a quote of one certificate does not bind another certificate's key
        other = next(
            r for r in CERT_REPORTS if r.name != report.name and r.name in BOUND_TO_TLS_KEY
        )
        assert other.cert_der is not None
        other_key = certificate_key(parse_certificate(other.cert_der))
        with pytest.raises(AttestationError) as err:
            check_key_binding(other_key.key_bits, quote.report_data, KeyBinding.RAW_EC_POINT)
        assert err.value.reason is Reason.KEY_BINDING_MISMATCH
    else:
        # TEST4..TEST8 bind an ed25519 enclave signing key instead (PROVENANCE.md)
        with pytest.raises(AttestationError):
            check_key_binding(key.key_bits, quote.report_data, KeyBinding.RAW_EC_POINT)
        suffix = report.name.removeprefix("ra_dump_cert_").replace("_", "-")
        signer_key = (INTEGRITEE / f"enclave-signing-pubkey-{suffix}.bin").read_bytes()
        assert quote.report_data[:32] == signer_key


@pytest.mark.parametrize("report", CERT_REPORTS, ids=[r.id for r in CERT_REPORTS])
def test_real_ra_certificates_are_not_seng_certificates(report: RealReport) -> None:
    assert report.cert_der is not None
    with pytest.raises(AttestationError) as err:
        verify_certificate(report.cert_der, TrustConfig.builtin(ias_chain_time="report"), NOW)
    assert err.value.reason is Reason.NO_SGX_EXTENSION


# -- the negative vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("NEGATIVE_CERT_FAKE_QUOTE_STATUS", Reason.CERT_MALFORMED),  # DER lengths not fixed
        ("NEGATIVE_CERT_TOO_SHORT1", Reason.CERT_MALFORMED),
        ("NEGATIVE_CERT_TOO_SHORT2", Reason.CERT_MALFORMED),
        ("NEGATIVE_CERT_WRONG_PLATFORM_BLOB", Reason.NO_SGX_EXTENSION),
        ("NEGATIVE_CERT_WRONG_SIG", Reason.NO_SGX_EXTENSION),
    ],
)
def test_negative_certificates(name: str, reason: Reason) -> None:
    data = (INTEGRITEE / f"{name}.der").read_bytes()
    with pytest.raises(AttestationError) as err:
        verify_certificate(data, TrustConfig.builtin(ias_chain_time="report"), NOW)
    assert err.value.reason is reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        # one platformInfoBlob byte changed, signature kept
        ("NEGATIVE_CERT_WRONG_PLATFORM_BLOB", Reason.REPORT_SIGNATURE_INVALID),
        # the same, plus one character of the embedded signing certificate: the chain fails first
        ("NEGATIVE_CERT_WRONG_SIG", Reason.IAS_CHAIN_UNTRUSTED),
    ],
)
def test_negative_certificates_report_path(name: str, reason: Reason) -> None:
    payload = comment_payload((INTEGRITEE / f"{name}.der").read_bytes())
    with pytest.raises(AttestationError) as err:
        verify_report(
            payload.body,
            payload.signature,
            payload.signing_cert,
            TrustConfig.builtin(ias_chain_time="report"),
            NOW,
        )
    assert err.value.reason is reason


def test_fake_quote_status_payload_fails_its_signature() -> None:
    # A lenient scanner (like upstream's) would find the payload despite the broken DER: the
    # report it finds claims status OK, but its signature is over GROUP_OUT_OF_DATE.
    data = (INTEGRITEE / "NEGATIVE_CERT_FAKE_QUOTE_STATUS.der").read_bytes()
    start = data.index(b'{"id":')
    body = data[start : data.index(b"|", start)]
    sig_start = start + len(body) + 1
    sig_b64 = data[sig_start : data.index(b"|", sig_start)]
    genuine = comment_payload((INTEGRITEE / "mesatee_2019_cert_from_comment.der").read_bytes())
    assert b'"isvEnclaveQuoteStatus":"OK"' in body
    import base64

    with pytest.raises(AttestationError) as err:
        verify_report(
            body,
            base64.b64decode(sig_b64),
            genuine.signing_cert,
            TrustConfig.builtin(ias_chain_time="report"),
            NOW,
        )
    assert err.value.reason is Reason.REPORT_SIGNATURE_INVALID


def test_synthetic_dcap_selfca_report_is_untrusted() -> None:
    folder = TESTDATA / "synthetic" / "teaclave-tls-ra-cert-v4-dcap-selfca"
    body = (folder / "tls_ra_cert_v4.report.json").read_bytes()
    signature = (folder / "tls_ra_cert_v4.sig.bin").read_bytes()
    signing = (folder / "tls_ra_cert_v4.signing-cert0.der").read_bytes()
    for trust in (TrustConfig.builtin(), TrustConfig.builtin(ias_chain_time="report")):
        with pytest.raises(AttestationError) as err:
            verify_report(body, signature, signing, trust, datetime(2022, 1, 18, tzinfo=UTC))
        assert err.value.reason is Reason.IAS_CHAIN_UNTRUSTED
    with pytest.raises(AttestationError) as err:
        verify_certificate((folder / "tls_ra_cert_v4.der").read_bytes(), TrustConfig.builtin(), NOW)
    assert err.value.reason is Reason.NO_SGX_EXTENSION


def test_synthetic_dcap_selfca_report_with_its_own_root_is_still_not_epid() -> None:
    # Trusting the self-made root gets past the chain; the quote inside is a DCAP quote
    # (version 3), which is not an EPID quote body.
    folder = TESTDATA / "synthetic" / "teaclave-tls-ra-cert-v4-dcap-selfca"
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    root = x509.load_der_x509_certificate((folder / "dcap_root_ca_cert.der").read_bytes())
    trust = TrustConfig.from_pem(root.public_bytes(Encoding.PEM))
    with pytest.raises(AttestationError) as err:
        verify_report(
            (folder / "tls_ra_cert_v4.report.json").read_bytes(),
            (folder / "tls_ra_cert_v4.sig.bin").read_bytes(),
            (folder / "tls_ra_cert_v4.signing-cert0.der").read_bytes(),
            trust,
            datetime(2022, 1, 18, tzinfo=UTC),
        )
    assert err.value.reason is Reason.QUOTE_MALFORMED


def test_synthetic_dcap_testroot_chain_is_untrusted() -> None:
    # The DCAP *test* PKI (a look-alike "Intel SGX Root CA"): its PCK certificate presented as
    # an IAS signing certificate chains to nothing we trust.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    folder = TESTDATA / "synthetic" / "sgx-ra-tls-ecdsa-testroot"
    pck = x509.load_pem_x509_certificate((folder / "pckCert.pem").read_bytes())
    report = REPORTS[0]
    with pytest.raises(AttestationError) as err:
        verify_report(
            report.body,
            report.signature,
            pck.public_bytes(Encoding.DER),
            TrustConfig.builtin(ias_chain_time="report"),
            NOW,
        )
    assert err.value.reason is Reason.IAS_CHAIN_UNTRUSTED
    # and the test root itself is refused as an IAS trust anchor (not RSA)
    from sengd.attestation import TrustConfigError

    with pytest.raises(TrustConfigError):
        TrustConfig.from_pem((folder / "trustedRootCaCert.pem").read_bytes())


def test_dcap_ra_tls_certificate_is_named_as_such() -> None:
    data = (TESTDATA / "sgx-ra-tls-ecdsa-ratls-2019" / "ecdsa-ratls.der").read_bytes()
    with pytest.raises(AttestationError) as err:
        verify_certificate(data, TrustConfig.builtin(), NOW)
    assert err.value.reason is Reason.NO_SGX_EXTENSION
    assert "DCAP" in err.value.message


def test_every_report_in_expected_json_is_staged_and_tested() -> None:
    import json

    from tests.unit.attestation.realdata import REAL_SETS

    listed = set()
    for set_name in REAL_SETS:
        expected = json.loads((TESTDATA / set_name / "expected.json").read_text())
        for name, facts in expected.items():
            if "report_body_sha256" in facts or "avr.report_body_sha256" in facts:
                listed.add(f"{set_name}/{name}")
    assert listed == set(IDS)
    assert all(r.expected["signature_check"].endswith("VALID") for r in REPORTS)
