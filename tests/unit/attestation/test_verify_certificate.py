"""`verify_certificate` on SENG RA-TLS certificates minted by the test kit: the full path for
every key type, every reason code, the impersonation hole of the Go server, time and caching."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sengd.attestation import AttestationError, Reason, TrustConfig, verify_certificate
from sengd.attestation.quote import QUOTE_BODY_SIZE
from sengd.testing.attestation_kit import (
    DEBUG_FLAGS,
    KEY_TYPES,
    KeyType,
    MintedCertificate,
    PrivateKey,
    SignedReport,
    TestIas,
    make_quote_body,
    mint_plain_certificate,
    mint_ratls_certificate,
    seng_report_data,
)
from tests.unit.attestation.conftest import NOW

MR_ENCLAVE = bytes(range(32))
MR_SIGNER = bytes(range(32, 64))
START = NOW - timedelta(hours=1)


def _mint(ias: TestIas, keys: dict[KeyType, PrivateKey], **kw: object) -> MintedCertificate:
    kw.setdefault("key", keys["ec-p256"])
    kw.setdefault("not_before", START)
    return mint_ratls_certificate(ias, **kw)  # type: ignore[arg-type]


def _reason(cert: bytes | list[bytes], trust: TrustConfig, now: datetime = NOW) -> Reason:
    with pytest.raises(AttestationError) as err:
        verify_certificate(cert, trust, now)
    return err.value.reason


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_full_path_for_every_key_type(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig, key_type: KeyType
) -> None:
    minted = mint_ratls_certificate(
        ias,
        key=keys[key_type],
        mr_enclave=MR_ENCLAVE,
        mr_signer=MR_SIGNER,
        isv_prod_id=7,
        isv_svn=3,
        cpu_svn=bytes(range(16)),
        status="GROUP_OUT_OF_DATE",
        advisory_ids=["INTEL-SA-00334"],
        not_before=START,
    )
    ev = verify_certificate(minted.cert_der, trust, NOW)
    assert ev.scheme == "epid-ias"
    assert ev.key_type == key_type
    assert ev.mr_enclave == MR_ENCLAVE
    assert ev.mr_signer == MR_SIGNER
    assert (ev.isv_prod_id, ev.isv_svn) == (7, 3)
    assert ev.cpu_svn == bytes(range(16))
    assert ev.attributes.flags == 0x5
    assert ev.attributes.debug is False
    assert ev.report_data == seng_report_data(keys[key_type])
    assert ev.report_data[:32] == hashlib.sha256(minted_key_bits(minted)).digest()
    assert ev.quote_body == minted.quote_body
    assert len(ev.quote_body) == QUOTE_BODY_SIZE
    assert ev.quote_status == "GROUP_OUT_OF_DATE"
    assert ev.tcb_status is None
    assert ev.advisory_ids == ("INTEL-SA-00334",)
    assert ev.report_timestamp == START
    assert ev.report_version == 4
    assert ev.spki_sha256 == minted.spki_sha256
    assert ev.ias_signing_cert_sha256 == hashlib.sha256(ias.signing_der).digest()
    assert ev.cert_not_before == START
    assert ev.cert_not_after == START + timedelta(days=365)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.mr_enclave = b""  # type: ignore[misc]


def minted_key_bits(minted: MintedCertificate) -> bytes:
    from sengd.testing.attestation_kit import public_key_bits

    return public_key_bits(minted.private_key)


def test_evidence_json_view(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    ev = verify_certificate(_mint(ias, keys, flags=DEBUG_FLAGS).cert_der, trust, NOW)
    doc = ev.to_json()
    assert doc["mr_enclave"] == ev.mr_enclave.hex()
    assert doc["attributes"] == {"flags": "0x7", "xfrm": "0x3", "debug": True}
    assert doc["report_timestamp"] == START.isoformat()
    import json

    json.dumps(doc)


def test_accepts_bytes_like_and_single_element_chain(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    der = _mint(ias, keys).cert_der
    first = verify_certificate(der, trust, NOW)
    assert verify_certificate(bytearray(der), trust, NOW) == first
    assert verify_certificate(memoryview(der), trust, NOW) == first
    assert verify_certificate([der], trust, NOW) == first
    assert verify_certificate((der,), trust, NOW) == first


# -- the Go server's impersonation hole (PROTOCOL.md §3.4 step 1, §13) -------------------------


def test_chain_of_two_with_genuine_second_certificate_is_refused(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    genuine = _mint(ias, keys).cert_der
    impostor = mint_plain_certificate().cert_der
    assert _reason([impostor, genuine], trust) is Reason.CHAIN_NOT_LEAF
    assert _reason([genuine, impostor], trust) is Reason.CHAIN_NOT_LEAF
    assert _reason([genuine, genuine], trust) is Reason.CHAIN_NOT_LEAF
    # the leaf alone (what a TLS stack authenticates) carries no evidence
    assert _reason(impostor, trust) is Reason.NO_SGX_EXTENSION
    assert _reason([], trust) is Reason.CERT_MALFORMED


def test_copied_extensions_do_not_transfer_to_another_key(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    # An impostor copies a genuine certificate's report, signature and chain into its own
    # certificate: everything verifies except that the quote binds the genuine key.
    genuine = _mint(ias, keys, key=keys["ec-p256"])
    stolen = _mint(ias, keys, key=keys["ec-p384"], report=genuine.report)
    assert _reason(stolen.cert_der, trust) is Reason.KEY_BINDING_MISMATCH


# -- every reason code ---------------------------------------------------------------------------

Scenario = Callable[[TestIas, TestIas, dict[KeyType, PrivateKey]], tuple[object, TrustConfig]]


def _tamper_body(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> bytes:
    genuine = _mint(ias, keys)
    body = genuine.report.body.replace(b'"OK"', b'"ok"')
    forged = SignedReport(body, genuine.report.signature, genuine.report.signing_cert_der)
    return _mint(ias, keys, report=forged).cert_der


def _signed_body(ias: TestIas, keys: dict[KeyType, PrivateKey], body: bytes) -> bytes:
    return _mint(ias, keys, report=ias.sign(body)).cert_der


def _short_quote(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> bytes:
    quote = make_quote_body(report_data=seng_report_data(keys["ec-p256"]))
    return _signed_body(ias, keys, ias.report_body(quote[:-1], timestamp=START))


SCENARIOS: dict[Reason, Scenario] = {
    Reason.CERT_MALFORMED: lambda ias, o, k: (b"\x30\x03\x02\x01\x00", ias.trust()),
    Reason.CHAIN_NOT_LEAF: lambda ias, o, k: (
        [_mint(ias, k).cert_der, ias.ca_der],
        ias.trust(),
    ),
    Reason.NO_SGX_EXTENSION: lambda ias, o, k: (
        _mint(ias, k, omit=[2, 3, 4, 5]).cert_der,
        ias.trust(),
    ),
    Reason.EXTENSION_MISSING: lambda ias, o, k: (_mint(ias, k, omit=[5]).cert_der, ias.trust()),
    Reason.EXTENSION_DUPLICATED: lambda ias, o, k: (
        _mint(ias, k, duplicate=[2]).cert_der,
        ias.trust(),
    ),
    Reason.EXTENSION_MALFORMED: lambda ias, o, k: (
        _mint(ias, k, extension_values={2: b"not base64!"}).cert_der,
        ias.trust(),
    ),
    Reason.CERT_NOT_YET_VALID: lambda ias, o, k: (
        _mint(ias, k, not_before=NOW + timedelta(hours=1), report_timestamp=START).cert_der,
        ias.trust(),
    ),
    Reason.CERT_EXPIRED: lambda ias, o, k: (
        _mint(ias, k, not_before=NOW - timedelta(days=400)).cert_der,
        ias.trust(),
    ),
    Reason.CERT_SIGNATURE_INVALID: lambda ias, o, k: (
        _mint(ias, k, wrong_self_signature=True).cert_der,
        ias.trust(),
    ),
    Reason.KEY_UNSUPPORTED: lambda ias, o, k: (
        _mint(ias, k, key=ec.generate_private_key(ec.SECP521R1())).cert_der,
        ias.trust(),
    ),
    Reason.CERT_CRITICAL_EXTENSION: lambda ias, o, k: (
        _mint(
            ias, k, extra_extensions=[(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"x", True)]
        ).cert_der,
        ias.trust(),
    ),
    Reason.IAS_CHAIN_UNTRUSTED: lambda ias, o, k: (_mint(o, k).cert_der, ias.trust()),
    Reason.IAS_CHAIN_EXPIRED: lambda ias, o, k: (
        _mint(
            ias.with_signing_validity(START - timedelta(days=30), NOW - timedelta(minutes=1)), k
        ).cert_der,
        ias.trust(),
    ),
    Reason.IAS_CHAIN_NOT_YET_VALID: lambda ias, o, k: (
        _mint(
            ias.with_signing_validity(NOW + timedelta(days=1), NOW + timedelta(days=30)), k
        ).cert_der,
        ias.trust(),
    ),
    Reason.REPORT_SIGNATURE_INVALID: lambda ias, o, k: (_tamper_body(ias, k), ias.trust()),
    Reason.REPORT_MALFORMED: lambda ias, o, k: (_signed_body(ias, k, b"not json"), ias.trust()),
    Reason.REPORT_TOO_OLD: lambda ias, o, k: (
        _mint(ias, k, report_timestamp=NOW - timedelta(hours=2)).cert_der,
        ias.trust(max_report_age=timedelta(hours=1)),
    ),
    Reason.REPORT_FROM_FUTURE: lambda ias, o, k: (
        _mint(ias, k, report_timestamp=NOW + timedelta(hours=1)).cert_der,
        ias.trust(),
    ),
    Reason.QUOTE_MALFORMED: lambda ias, o, k: (_short_quote(ias, k), ias.trust()),
    Reason.QUOTE_STATUS_REJECTED: lambda ias, o, k: (
        _mint(ias, k, status="GROUP_REVOKED").cert_der,
        ias.trust(),
    ),
    Reason.KEY_BINDING_MISMATCH: lambda ias, o, k: (
        _mint(ias, k, binding="wrong").cert_der,
        ias.trust(),
    ),
    Reason.DEBUG_ENCLAVE: lambda ias, o, k: (
        _mint(ias, k, flags=DEBUG_FLAGS).cert_der,
        ias.trust(reject_debug=True),
    ),
}


def test_every_reason_has_a_scenario() -> None:
    # The DCAP reasons have their scenarios with DCAP certificates (tests/unit/attestation/dcap).
    from tests.unit.attestation.dcap.test_dcap_certificates import DCAP_REASONS, DCAP_SCENARIOS

    assert set(SCENARIOS) == set(Reason) - DCAP_REASONS
    assert set(SCENARIOS) | set(DCAP_SCENARIOS) == set(Reason)


@pytest.mark.parametrize("reason", list(SCENARIOS), ids=[r.value for r in SCENARIOS])
def test_reason(
    reason: Reason, ias: TestIas, other_ias: TestIas, keys: dict[KeyType, PrivateKey]
) -> None:
    cert, trust = SCENARIOS[reason](ias, other_ias, keys)
    with pytest.raises(AttestationError) as err:
        verify_certificate(cert, trust, NOW)  # type: ignore[arg-type]
    assert err.value.reason is reason
    assert err.value.message
    assert str(err.value).startswith(f"{reason.value}: ")


# -- details of the checks ----------------------------------------------------------------------


def test_rsa_1024_key_is_unsupported(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert _reason(_mint(ias, keys, key=weak).cert_der, ias.trust()) is Reason.KEY_UNSUPPORTED


def test_debug_enclaves_pass_the_verifier_by_default(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    ev = verify_certificate(_mint(ias, keys, flags=DEBUG_FLAGS).cert_der, trust, NOW)
    assert ev.attributes.debug is True  # the policy refuses it unless an entry allows debug


@pytest.mark.parametrize(
    "status",
    [
        "OK",
        "GROUP_OUT_OF_DATE",
        "CONFIGURATION_NEEDED",
        "SW_HARDENING_NEEDED",
        "CONFIGURATION_AND_SW_HARDENING_NEEDED",
    ],
)
def test_statuses_a_policy_may_accept_pass_the_verifier(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig, status: str
) -> None:
    assert (
        verify_certificate(_mint(ias, keys, status=status).cert_der, trust, NOW).quote_status
        == status
    )


@pytest.mark.parametrize(
    "status",
    [
        "SIGNATURE_INVALID",
        "GROUP_REVOKED",
        "SIGNATURE_REVOKED",
        "KEY_REVOKED",
        "SIGRL_VERSION_MISMATCH",
        "ok",
        "UNKNOWN",
    ],
)
def test_statuses_never_acceptable(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig, status: str
) -> None:
    assert _reason(_mint(ias, keys, status=status).cert_der, trust) is Reason.QUOTE_STATUS_REJECTED


def test_signing_chain_under_the_ca_in_extension_3_is_not_trusted(
    ias: TestIas, other_ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    # other_ias's certificate carries other_ias's CA in .3 and a signing cert it issued in .4:
    # a verifier trusting .3 (like the Go server) would accept it.
    minted = _mint(other_ias, keys)
    assert _reason(minted.cert_der, trust) is Reason.IAS_CHAIN_UNTRUSTED
    # the other way round: .3 names a foreign CA, but .4 chains to our anchor: fine, .3 is
    # informational only
    values = {3: base64.b64encode(other_ias.ca_der)}
    verify_certificate(_mint(ias, keys, extension_values=values).cert_der, trust, NOW)


def test_signing_certificate_restrictions(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    def with_signing(cert: x509.Certificate) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        report = ias.sign_report(
            make_quote_body(report_data=seng_report_data(keys["ec-p256"])), timestamp=START
        )
        report = SignedReport(report.body, report.signature, cert.public_bytes(Encoding.DER))
        return _mint(ias, keys, report=report).cert_der

    window = (START - timedelta(days=1), NOW + timedelta(days=1))
    ca_flag = ias.issue_signing_certificate(*window, ca=True)
    assert _reason(with_signing(ca_flag), trust) is Reason.IAS_CHAIN_UNTRUSTED
    no_signing_usage = ias.issue_signing_certificate(*window, digital_signature=False)
    assert _reason(with_signing(no_signing_usage), trust) is Reason.IAS_CHAIN_UNTRUSTED
    fine = ias.issue_signing_certificate(*window)
    verify_certificate(with_signing(fine), trust, NOW)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({2: base64.b64encode(b"x") + b"\n"}, Reason.EXTENSION_MALFORMED),  # line break
        ({2: b"QR=="}, Reason.EXTENSION_MALFORMED),  # non-canonical trailing bits
        ({2: b"QQ"}, Reason.EXTENSION_MALFORMED),  # missing padding
        ({3: base64.b64encode(b"not a certificate")}, Reason.EXTENSION_MALFORMED),
        (
            {3: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"},
            Reason.EXTENSION_MALFORMED,
        ),
        ({4: base64.b64encode(b"not a certificate")}, Reason.IAS_CHAIN_UNTRUSTED),
        ({5: b"%%%"}, Reason.EXTENSION_MALFORMED),
        ({5: b"{" + base64.b64encode(b"x")}, Reason.EXTENSION_MALFORMED),
        ({5: base64.b64encode(bytes(256))}, Reason.REPORT_SIGNATURE_INVALID),
        ({2: base64.b64encode(b"")}, Reason.REPORT_SIGNATURE_INVALID),
    ],
)
def test_extension_values(
    ias: TestIas,
    keys: dict[KeyType, PrivateKey],
    trust: TrustConfig,
    values: dict[int, bytes],
    reason: Reason,
) -> None:
    assert _reason(_mint(ias, keys, extension_values=values).cert_der, trust) is reason


@pytest.mark.parametrize("number", [2, 3, 4, 5])
def test_each_extension_missing_or_duplicated(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig, number: int
) -> None:
    assert _reason(_mint(ias, keys, omit=[number]).cert_der, trust) is Reason.EXTENSION_MISSING
    dup = _mint(ias, keys, duplicate=[number]).cert_der
    assert _reason(dup, trust) is Reason.EXTENSION_DUPLICATED


def test_upstream_encoding(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    base = _mint(ias, keys, report_timestamp=START)
    upstream = _mint(ias, keys, encoding="upstream", report=base.report)
    assert b"-----BEGIN CERTIFICATE-----" in upstream.cert_der
    ev_base = verify_certificate(base.cert_der, trust, NOW)
    ev_upstream = verify_certificate(upstream.cert_der, trust, NOW)
    assert dataclasses.replace(ev_upstream, cert_not_before=None, cert_not_after=None) == (
        dataclasses.replace(ev_base, cert_not_before=None, cert_not_after=None)
    )
    strict = ias.trust(accept_upstream_encoding=False)
    assert _reason(upstream.cert_der, strict) is Reason.EXTENSION_MALFORMED
    verify_certificate(base.cert_der, strict, NOW)


def test_critical_sgx_extensions_are_processed(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    verify_certificate(_mint(ias, keys, critical=[2, 3, 4, 5]).cert_der, trust, NOW)


def test_non_critical_unknown_extension_is_ignored(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    extra = [(x509.ObjectIdentifier("1.3.6.1.4.1.99999.2"), b"hello", False)]
    verify_certificate(_mint(ias, keys, extra_extensions=extra).cert_der, trust, NOW)


def test_serial_zero_certificates_verify(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    # SENG clients never set a serial (OpenSSL encodes 0). If a cryptography upgrade starts
    # refusing such certificates, this test fails and genuine clients would be locked out.
    minted = _mint(ias, keys)
    assert minted.certificate.serial_number == 0
    verify_certificate(minted.cert_der, trust, NOW)
    assert verify_certificate(_mint(ias, keys, serial_zero=False).cert_der, trust, NOW)


def test_check_order_static_before_time(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    # expired AND a forged report: the time-independent failure is reported
    genuine = _mint(ias, keys)
    forged = SignedReport(
        genuine.report.body + b" ", genuine.report.signature, genuine.report.signing_cert_der
    )
    cert = _mint(ias, keys, report=forged, not_before=NOW - timedelta(days=800)).cert_der
    assert _reason(cert, trust) is Reason.REPORT_SIGNATURE_INVALID


# -- time ----------------------------------------------------------------------------------


def test_clock_skew_on_certificate_validity(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    early = _mint(ias, keys, not_before=NOW + timedelta(minutes=4), report_timestamp=START).cert_der
    verify_certificate(early, ias.trust(), NOW)  # within the default 5 minutes
    assert _reason(early, ias.trust(clock_skew=timedelta(0))) is Reason.CERT_NOT_YET_VALID
    start = NOW - timedelta(days=365, minutes=2)
    late = _mint(ias, keys, not_before=start, report_timestamp=NOW - timedelta(hours=1)).cert_der
    verify_certificate(late, ias.trust(), NOW)  # expired 2 minutes ago, tolerated
    assert _reason(late, ias.trust(clock_skew=timedelta(minutes=1))) is Reason.CERT_EXPIRED


def test_report_freshness(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    cert = _mint(ias, keys, report_timestamp=NOW - timedelta(minutes=50)).cert_der
    verify_certificate(cert, ias.trust(max_report_age=timedelta(hours=1)), NOW)
    trust = ias.trust(max_report_age=timedelta(hours=1))
    assert _reason(cert, trust, NOW + timedelta(minutes=11)) is Reason.REPORT_TOO_OLD
    future = _mint(ias, keys, report_timestamp=NOW + timedelta(minutes=4)).cert_der
    verify_certificate(future, ias.trust(), NOW)  # within the skew
    assert _reason(future, ias.trust(clock_skew=timedelta(0))) is Reason.REPORT_FROM_FUTURE


def test_ias_chain_time_report_vs_now(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    # a signing certificate that expired yesterday signed a report two days ago
    expired = ias.with_signing_validity(NOW - timedelta(days=10), NOW - timedelta(days=1))
    cert = _mint(expired, keys, report_timestamp=NOW - timedelta(days=2)).cert_der
    assert _reason(cert, ias.trust()) is Reason.IAS_CHAIN_EXPIRED
    ev = verify_certificate(cert, ias.trust(ias_chain_time="report"), NOW)
    assert ev.report_timestamp == NOW - timedelta(days=2)
    # a report timestamped after the signing certificate expired is refused in both modes
    late = _mint(expired, keys, report_timestamp=NOW - timedelta(hours=1)).cert_der
    assert _reason(late, ias.trust(ias_chain_time="report")) is Reason.IAS_CHAIN_EXPIRED


def test_naive_now_is_utc(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    cert = _mint(ias, keys).cert_der
    naive = NOW.replace(tzinfo=None)
    assert verify_certificate(cert, trust, naive) == verify_certificate(cert, trust, NOW)
    with pytest.raises(AttestationError):
        verify_certificate(cert, trust, naive + timedelta(days=400))


# -- caching ---------------------------------------------------------------------------------


def test_cache_hit_rechecks_time(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    cert = _mint(ias, keys).cert_der
    first = verify_certificate(cert, trust, NOW)
    assert (trust.cert_cache.hits, trust.cert_cache.misses) == (0, 1)
    assert verify_certificate(cert, trust, NOW) is first
    assert trust.cert_cache.hits == 1
    assert _reason(cert, trust, NOW + timedelta(days=400)) is Reason.CERT_EXPIRED
    assert _reason(cert, trust, START - timedelta(days=1)) is Reason.CERT_NOT_YET_VALID
    assert trust.cert_cache.hits == 3


def test_failures_are_not_cached(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    cert = _mint(ias, keys, binding="wrong").cert_der
    for _ in range(2):
        assert _reason(cert, trust) is Reason.KEY_BINDING_MISMATCH
    assert len(trust.cert_cache) == 0


def test_chain_cache_is_shared_by_enclaves(
    ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    for key_type in KEY_TYPES:
        verify_certificate(_mint(ias, keys, key=keys[key_type]).cert_der, trust, NOW)
    assert len(trust.chain_cache) == 1
    assert trust.chain_cache.hits == len(KEY_TYPES) - 1
    trust.clear_caches()
    assert len(trust.chain_cache) == len(trust.cert_cache) == 0


def test_caches_are_bounded(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    trust = ias.trust(cert_cache_size=2)
    certs = [_mint(ias, keys).cert_der for _ in range(3)]
    for cert in certs:
        verify_certificate(cert, trust, NOW)
    assert len(trust.cert_cache) == 2
    disabled = ias.trust(cert_cache_size=0, chain_cache_size=0)
    verify_certificate(certs[0], disabled, NOW)
    assert len(disabled.cert_cache) == len(disabled.chain_cache) == 0


def test_negative_chain_results_are_cached_and_reraised_fresh(
    ias: TestIas, other_ias: TestIas, keys: dict[KeyType, PrivateKey], trust: TrustConfig
) -> None:
    cert = _mint(other_ias, keys).cert_der
    errors = []
    for _ in range(2):
        with pytest.raises(AttestationError) as err:
            verify_certificate(cert, trust, NOW)
        errors.append(err.value)
    assert errors[0] is not errors[1]
    assert trust.chain_cache.hits == 1


def test_a_cached_result_belongs_to_its_trust_config(
    ias: TestIas, other_ias: TestIas, keys: dict[KeyType, PrivateKey]
) -> None:
    cert = _mint(ias, keys).cert_der
    verify_certificate(cert, ias.trust(), NOW)
    assert _reason(cert, other_ias.trust()) is Reason.IAS_CHAIN_UNTRUSTED
