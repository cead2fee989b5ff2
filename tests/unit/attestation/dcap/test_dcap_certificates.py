"""`verify_certificate` on DCAP RA-TLS certificates minted by the kit, in both forms: the full
path, one scenario per reason code, TCB statuses, collateral sources and their precedence, the
cache, and the policy's verdict on DCAP evidence."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sengd.attestation import (
    AttestationError,
    CollateralStore,
    Evidence,
    RawCollateral,
    Reason,
    TrustConfig,
    verify_certificate,
)
from sengd.attestation.dcap_quote import CERT_DATA_PPID_RSA3072
from sengd.attestation.signed_json import parse_signed_body
from sengd.policy import (
    Allowlist,
    AllowlistEntry,
    Decision,
    Denial,
    HostRoute,
    PolicyDefaults,
    decide,
)
from sengd.testing.attestation_kit import DEBUG_FLAGS, DEFAULT_MR_ENCLAVE, KeyType
from sengd.testing.dcap_kit import (
    DcapCertificate,
    DcapPlatform,
    DcapTestPki,
    Level,
    mint_gramine_certificate,
    mint_sgx_ra_tls_certificate,
    qe_identity_document,
    tcb_info_document,
)
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.dcap.conftest import ISSUED, TrustFactory

START = NOW - timedelta(hours=1)


def gramine(platform: DcapPlatform, **kwargs: object) -> DcapCertificate:
    kwargs.setdefault("not_before", START)
    return mint_gramine_certificate(platform, **kwargs)  # type: ignore[arg-type]


def ratls(platform: DcapPlatform, raw: RawCollateral, **kwargs: object) -> DcapCertificate:
    kwargs.setdefault("not_before", START)
    return mint_sgx_ra_tls_certificate(platform, raw, **kwargs)  # type: ignore[arg-type]


def rejected(cert: bytes, trust: TrustConfig) -> AttestationError:
    with pytest.raises(AttestationError) as err:
        verify_certificate(cert, trust, NOW)
    return err.value


# -- both forms, end to end -------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p384", "ec-p256", "rsa-3072", "rsa-2048"])
def test_gramine_form_with_the_verifiers_collateral(
    platform: DcapPlatform, make_trust: TrustFactory, key_type: KeyType
) -> None:
    cert = gramine(platform, key_type=key_type, isv_svn=3, isv_prod_id=7)
    evidence = verify_certificate(cert.cert_der, make_trust(), NOW)
    assert evidence.scheme == "dcap" and evidence.tcb_status == "UpToDate"
    assert evidence.quote_status == "UpToDate" and evidence.advisory_ids == ()
    assert evidence.mr_enclave == DEFAULT_MR_ENCLAVE
    assert (evidence.isv_svn, evidence.isv_prod_id) == (3, 7)
    assert evidence.key_type == key_type and evidence.spki_sha256 == cert.spki_sha256
    assert evidence.quote_body == cert.quote[:432]
    assert evidence.dcap is not None and evidence.dcap.form == "gramine"
    assert evidence.dcap.collateral_sources == ("verifier",)
    assert evidence.report_timestamp == ISSUED.replace(microsecond=0)
    json.dumps(evidence.to_json())


@pytest.mark.parametrize("cert_data_type", [CERT_DATA_PPID_RSA3072, 5])
def test_sgx_ra_tls_form_with_embedded_collateral_only(
    pki: DcapTestPki,
    platform: DcapPlatform,
    collateral: RawCollateral,
    cert_data_type: int,
) -> None:
    cert = ratls(platform, collateral, cert_data_type=cert_data_type)
    evidence = verify_certificate(cert.cert_der, pki.trust(), NOW)
    assert evidence.tcb_status == "UpToDate" and evidence.key_type == "rsa-3072"
    assert evidence.dcap is not None and evidence.dcap.form == "sgx-ra-tls"
    assert evidence.dcap.cert_data_type == cert_data_type
    assert evidence.dcap.collateral_sources == ("certificate",)


def test_sgx_ra_tls_form_with_plain_pem_chains(
    pki: DcapTestPki, platform: DcapPlatform, collateral: RawCollateral
) -> None:
    cert = ratls(platform, collateral, url_encode_chains=False, key_type="ec-p384")
    assert verify_certificate(cert.cert_der, pki.trust(), NOW).tcb_status == "UpToDate"


def test_a_platform_ca_platform(pki: DcapTestPki, make_trust: TrustFactory) -> None:
    platform = DcapPlatform.create(pki, ca="platform")
    raw = pki.collateral(at=ISSUED, ca="platform")
    evidence = verify_certificate(gramine(platform).cert_der, make_trust(raw), NOW)
    assert evidence.tcb_status == "UpToDate"
    # the Processor CA's CRL does not cover a Platform CA certificate
    other = make_trust(pki.collateral(at=ISSUED, ca="processor"))
    assert rejected(gramine(platform).cert_der, other).reason is Reason.COLLATERAL_MISSING


def test_the_same_quote_in_another_certificate_is_not_bound(
    platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    genuine = gramine(platform)
    thief = gramine(platform, quote=genuine.quote)
    assert rejected(thief.cert_der, make_trust()).reason is Reason.KEY_BINDING_MISMATCH


def test_each_form_binds_the_key_its_own_way(
    pki: DcapTestPki, platform: DcapPlatform, collateral: RawCollateral, make_trust: TrustFactory
) -> None:
    # A Gramine certificate whose report_data uses the sgx-ra-tls binding, and vice versa.
    key = gramine(platform).private_key
    from sengd.testing.dcap_kit import report_data_for

    swapped = platform.quote(report_data=report_data_for("sgx-ra-tls", key))
    cert = gramine(platform, key=key, quote=swapped)
    assert rejected(cert.cert_der, make_trust()).reason is Reason.KEY_BINDING_MISMATCH
    key2 = ratls(platform, collateral).private_key
    swapped2 = platform.quote(report_data=report_data_for("gramine", key2), cert_data_type=3)
    cert2 = ratls(platform, collateral, key=key2, quote=swapped2)
    assert rejected(cert2.cert_der, pki.trust()).reason is Reason.KEY_BINDING_MISMATCH


def test_without_an_sgx_root_dcap_certificates_are_refused_as_before(
    platform: DcapPlatform,
) -> None:
    err = rejected(gramine(platform).cert_der, TrustConfig.builtin())
    assert err.reason is Reason.NO_SGX_EXTENSION and "DCAP" in err.message


def test_intels_root_does_not_trust_the_kit(
    platform: DcapPlatform, collateral: RawCollateral
) -> None:
    from sengd.attestation import builtin_sgx_roots

    trust = TrustConfig.builtin(sgx_roots=builtin_sgx_roots())
    cert = ratls(platform, collateral, cert_data_type=5)
    # the embedded collateral is checked first, and its chain leads to the kit's root
    assert rejected(cert.cert_der, trust).reason is Reason.COLLATERAL_CHAIN_UNTRUSTED
    assert rejected(gramine(platform).cert_der, trust).reason is Reason.PCK_CHAIN_UNTRUSTED


# -- one scenario per reason ------------------------------------------------------------------


@dataclasses.dataclass
class Kit:
    pki: DcapTestPki
    other: DcapTestPki
    platform: DcapPlatform
    collateral: RawCollateral
    make_trust: TrustFactory


Scenario = Callable[[Kit], tuple[bytes, TrustConfig]]


def _quote_version_4(k: Kit) -> tuple[bytes, TrustConfig]:
    key = gramine(k.platform).private_key
    from sengd.testing.dcap_kit import report_data_for

    quote = bytearray(k.platform.quote(report_data=report_data_for("gramine", key)))
    quote[0] = 4
    return gramine(k.platform, key=key, quote=bytes(quote)).cert_der, k.make_trust()


def _with_levels(k: Kit, *levels: Level) -> tuple[bytes, TrustConfig]:
    raw = k.pki.collateral(at=ISSUED, levels=levels)
    return gramine(k.platform).cert_der, k.make_trust(raw)


def _signed_elsewhere(k: Kit) -> tuple[bytes, TrustConfig]:
    doc = parse_signed_body(k.collateral.tcb_info or b"", ("tcbInfo",)).document
    forged = k.pki.sign_body("tcbInfo", doc, key=ec.generate_private_key(ec.SECP256R1()))
    raw = dataclasses.replace(k.collateral, tcb_info=forged)
    return ratls(k.platform, raw).cert_der, k.pki.trust()


def _other_fmspc(k: Kit) -> tuple[bytes, TrustConfig]:
    raw = k.pki.collateral(at=ISSUED, fmspc=bytes.fromhex("00906ed50000"))
    return ratls(k.platform, raw).cert_der, k.pki.trust()


def _foreign_tcb_info(k: Kit) -> tuple[bytes, TrustConfig]:
    raw = dataclasses.replace(
        k.collateral,
        tcb_info=k.other.collateral(at=ISSUED).tcb_info,
        tcb_info_issuer_chain=k.other.tcb_chain_pem,
    )
    return ratls(k.platform, raw).cert_der, k.pki.trust()


DCAP_SCENARIOS: dict[Reason, Scenario] = {
    Reason.DCAP_QUOTE_MALFORMED: lambda k: (
        gramine(k.platform, quote=k.platform.quote()[:-1]).cert_der,
        k.make_trust(),
    ),
    Reason.DCAP_QUOTE_UNSUPPORTED: _quote_version_4,
    Reason.PCK_CHAIN_UNTRUSTED: lambda k: (
        gramine(DcapPlatform.create(k.other)).cert_der,
        k.make_trust(),
    ),
    Reason.PCK_CHAIN_EXPIRED: lambda k: (
        gramine(DcapPlatform.create(k.pki, not_after=NOW - timedelta(days=1))).cert_der,
        k.make_trust(),
    ),
    Reason.PCK_CHAIN_NOT_YET_VALID: lambda k: (
        gramine(DcapPlatform.create(k.pki, not_before=NOW + timedelta(days=1))).cert_der,
        k.make_trust(),
    ),
    Reason.PCK_CERT_MALFORMED: lambda k: (
        gramine(DcapPlatform.create(k.pki, sgx_extension=b"\x30\x03\x02\x01\x00")).cert_der,
        k.make_trust(),
    ),
    Reason.PCK_REVOKED: lambda k: (
        gramine(k.platform).cert_der,
        k.make_trust(k.pki.collateral(at=ISSUED, revoked_pcks=[k.platform.pck_cert.serial_number])),
    ),
    Reason.QE_REPORT_SIGNATURE_INVALID: lambda k: (
        gramine(k.platform, qe_sign_with=ec.generate_private_key(ec.SECP256R1())).cert_der,
        k.make_trust(),
    ),
    Reason.QE_REPORT_DATA_MISMATCH: lambda k: (
        gramine(k.platform, bind_attestation_key=False).cert_der,
        k.make_trust(),
    ),
    Reason.QUOTE_SIGNATURE_INVALID: lambda k: (
        gramine(k.platform, sign_with=ec.generate_private_key(ec.SECP256R1())).cert_der,
        k.make_trust(),
    ),
    Reason.QE_IDENTITY_MISMATCH: lambda k: (
        gramine(k.platform).cert_der,
        k.make_trust(
            k.pki.collateral(
                at=ISSUED,
                qe_identity=qe_identity_document(
                    issue_date=ISSUED,
                    next_update=ISSUED + timedelta(days=30),
                    mr_signer=bytes(32),
                ),
            )
        ),
    ),
    Reason.COLLATERAL_MISSING: lambda k: (gramine(k.platform).cert_der, k.make_trust(None)),
    Reason.COLLATERAL_MALFORMED: lambda k: (
        ratls(k.platform, dataclasses.replace(k.collateral, tcb_info=b'{"tcbInfo":{}}')).cert_der,
        k.pki.trust(),
    ),
    Reason.COLLATERAL_CHAIN_UNTRUSTED: _foreign_tcb_info,
    Reason.COLLATERAL_SIGNATURE_INVALID: _signed_elsewhere,
    Reason.COLLATERAL_EXPIRED: lambda k: (
        gramine(k.platform).cert_der,
        k.make_trust(k.pki.collateral(at=NOW - timedelta(days=40))),
    ),
    Reason.COLLATERAL_NOT_YET_VALID: lambda k: (
        gramine(k.platform).cert_der,
        k.make_trust(k.pki.collateral(at=NOW + timedelta(hours=1))),
    ),
    Reason.TCB_INFO_MISMATCH: _other_fmspc,
    Reason.TCB_LEVEL_NOT_FOUND: lambda k: _with_levels(
        k, Level(components=(12, *k.platform.extensions.tcb_components[1:]))
    ),
    Reason.TCB_REVOKED: lambda k: _with_levels(k, Level(status="Revoked")),
    # reasons shared with EPID, on DCAP certificates
    Reason.KEY_BINDING_MISMATCH: lambda k: (
        gramine(k.platform, binding="wrong").cert_der,
        k.make_trust(),
    ),
    Reason.DEBUG_ENCLAVE: lambda k: (
        gramine(k.platform, flags=DEBUG_FLAGS).cert_der,
        k.make_trust(reject_debug=True),
    ),
    Reason.CERT_EXPIRED: lambda k: (
        gramine(k.platform, not_before=NOW - timedelta(days=400)).cert_der,
        k.make_trust(),
    ),
    Reason.EXTENSION_MISSING: lambda k: (
        ratls(k.platform, k.collateral, omit=[10]).cert_der,
        k.pki.trust(),
    ),
    Reason.CERT_CRITICAL_EXTENSION: lambda k: (
        gramine(
            k.platform,
            extra_extensions=[(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"x")],
            critical=[x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")],
        ).cert_der,
        k.make_trust(),
    ),
    Reason.KEY_UNSUPPORTED: lambda k: (
        gramine(k.platform, key=ec.generate_private_key(ec.SECP521R1())).cert_der,
        k.make_trust(),
    ),
}
DCAP_REASONS = {
    r
    for r in Reason
    if r.name.startswith(("DCAP_", "PCK_", "QE_", "QUOTE_SIG", "COLLATERAL_", "TCB_"))
}


@pytest.fixture(scope="module")
def other_pki() -> DcapTestPki:
    return DcapTestPki.create(root_name="Another SGX Root CA")


@pytest.fixture()
def kit(
    pki: DcapTestPki,
    other_pki: DcapTestPki,
    platform: DcapPlatform,
    collateral: RawCollateral,
    make_trust: TrustFactory,
) -> Kit:
    return Kit(pki, other_pki, platform, collateral, make_trust)


def test_every_dcap_reason_has_a_scenario() -> None:
    assert len(DCAP_REASONS) == 20
    assert set(DCAP_SCENARIOS) >= DCAP_REASONS


@pytest.mark.parametrize("reason", list(DCAP_SCENARIOS), ids=[r.value for r in DCAP_SCENARIOS])
def test_dcap_reason(reason: Reason, kit: Kit) -> None:
    cert, trust = DCAP_SCENARIOS[reason](kit)
    err = rejected(cert, trust)
    assert err.reason is reason, err
    assert err.message


# -- TCB statuses and advisories ----------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ],
)
def test_each_tcb_status_comes_through(kit: Kit, status: str) -> None:
    cert, trust = _with_levels(kit, Level(status=status, advisory_ids=("INTEL-SA-00615",)))
    evidence = verify_certificate(cert, trust, NOW)
    assert evidence.tcb_status == status and evidence.advisory_ids == ("INTEL-SA-00615",)
    assert evidence.dcap is not None and evidence.dcap.platform_status == status


def test_the_first_level_the_platform_reaches_wins(kit: Kit) -> None:
    comps = kit.platform.extensions.tcb_components
    higher = (comps[0] + 1, *comps[1:])
    cert, trust = _with_levels(
        kit,
        Level(status="UpToDate", components=higher),
        Level(status="SWHardeningNeeded", components=comps, advisory_ids=("INTEL-SA-00615",)),
        Level(status="OutOfDate", components=(0,) * 16, pce_svn=0, advisory_ids=("INTEL-SA-1",)),
    )
    evidence = verify_certificate(cert, trust, NOW)
    assert evidence.tcb_status == "SWHardeningNeeded"
    assert evidence.advisory_ids == ("INTEL-SA-00615",)
    # the PCESVN counts as well
    cert, trust = _with_levels(
        kit,
        Level(status="UpToDate", pce_svn=kit.platform.extensions.pce_svn + 1),
        Level(status="OutOfDate", pce_svn=0),
    )
    assert verify_certificate(cert, trust, NOW).tcb_status == "OutOfDate"


@pytest.mark.parametrize(
    ("platform_status", "converged"),
    [
        ("UpToDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate"),
    ],
)
def test_an_out_of_date_quoting_enclave_lowers_the_status(
    pki: DcapTestPki, make_trust: TrustFactory, platform_status: str, converged: str
) -> None:
    old_qe = DcapPlatform.create(pki, qe_isv_svn=6)
    raw = pki.collateral(
        at=ISSUED,
        levels=[Level(status=platform_status, advisory_ids=("INTEL-SA-00289",))],
        qe_levels=[
            Level(isv_svn=8),
            Level(status="OutOfDate", isv_svn=6, advisory_ids=("INTEL-SA-00615", "INTEL-SA-00289")),
        ],
    )
    evidence = verify_certificate(gramine(old_qe).cert_der, make_trust(raw), NOW)
    assert evidence.tcb_status == converged
    assert evidence.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert evidence.dcap is not None and evidence.dcap.qe_status == "OutOfDate"


def test_a_revoked_quoting_enclave_is_refused(pki: DcapTestPki, make_trust: TrustFactory) -> None:
    old_qe = DcapPlatform.create(pki, qe_isv_svn=6)
    raw = pki.collateral(
        at=ISSUED, qe_levels=[Level(isv_svn=8), Level(status="Revoked", isv_svn=0)]
    )
    assert rejected(gramine(old_qe).cert_der, make_trust(raw)).reason is Reason.TCB_REVOKED


def test_qe_identity_masks(
    pki: DcapTestPki, make_trust: TrustFactory, platform: DcapPlatform
) -> None:
    # attributes differ only in a bit the mask ignores: accepted; in a bit it checks: refused
    loose = qe_identity_document(
        issue_date=ISSUED, next_update=ISSUED + timedelta(days=30), attributes="15" + "0" * 30
    )
    raw = pki.collateral(at=ISSUED, qe_identity=loose)
    assert verify_certificate(gramine(platform).cert_der, make_trust(raw), NOW)
    strict = qe_identity_document(
        issue_date=ISSUED,
        next_update=ISSUED + timedelta(days=30),
        attributes="11" + "0" * 30,
        attributes_mask="FF" + "F" * 30,
    )
    raw = pki.collateral(at=ISSUED, qe_identity=strict)
    err = rejected(gramine(platform).cert_der, make_trust(raw))
    assert err.reason is Reason.QE_IDENTITY_MISMATCH and "ATTRIBUTES" in err.message


def test_tcb_info_version_2(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    raw = pki.collateral(at=ISSUED, tcb_info_version=2)
    assert verify_certificate(gramine(platform).cert_der, make_trust(raw), NOW).tcb_status == (
        "UpToDate"
    )


# -- collateral sources -----------------------------------------------------------------------


def test_the_newest_tcb_info_wins(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    # The certificate embeds an older evaluation (UpToDate); the verifier has a newer one.
    old = dataclasses.replace(
        pki.collateral(at=ISSUED - timedelta(days=2)),
        tcb_info=pki.sign_body(
            "tcbInfo",
            tcb_info_document(
                issue_date=ISSUED - timedelta(days=2),
                next_update=ISSUED + timedelta(days=28),
                evaluation_number=16,
            ),
        ),
    )
    newer = pki.collateral(at=ISSUED, levels=[Level(status="OutOfDate")])
    cert = ratls(platform, old)
    assert verify_certificate(cert.cert_der, pki.trust(), NOW).tcb_status == "UpToDate"
    evidence = verify_certificate(cert.cert_der, make_trust(newer), NOW)
    assert evidence.tcb_status == "OutOfDate"
    assert evidence.dcap is not None
    assert evidence.dcap.collateral_sources == ("certificate", "verifier")
    assert evidence.dcap.tcb_evaluation_number == 17


def test_a_crl_from_either_source_revokes(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    clean = pki.collateral(at=ISSUED)
    revoking = pki.collateral(at=ISSUED, revoked_pcks=[platform.pck_cert.serial_number])
    cert = ratls(platform, clean)
    assert rejected(cert.cert_der, make_trust(revoking)).reason is Reason.PCK_REVOKED
    revoked_cert = ratls(platform, revoking)
    assert rejected(revoked_cert.cert_der, make_trust(clean)).reason is Reason.PCK_REVOKED


def test_a_revoked_pck_ca_or_tcb_signer(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    raw = pki.collateral(at=ISSUED, revoked_cas=[pki.processor_cert.serial_number])
    assert rejected(gramine(platform).cert_der, make_trust(raw)).reason is Reason.PCK_REVOKED
    raw = pki.collateral(at=ISSUED, revoked_cas=[pki.tcb_cert.serial_number])
    err = rejected(gramine(platform).cert_der, make_trust(raw))
    assert err.reason is Reason.COLLATERAL_CHAIN_UNTRUSTED and "revoked" in err.message


def test_missing_collateral_is_asked_for_without_waiting(
    pki: DcapTestPki, platform: DcapPlatform, collateral: RawCollateral
) -> None:
    trust = pki.trust(collateral=CollateralStore(pki.trust().sgx_roots))
    store = trust.collateral
    assert store is not None
    calls: list[int] = []
    store.on_want = lambda: calls.append(1)
    cert = gramine(platform).cert_der
    for _ in range(3):
        assert rejected(cert, trust).reason is Reason.COLLATERAL_MISSING
    assert store.wanted()[0] == {platform.extensions.fmspc}
    assert calls == [1]  # asked once, not per attempt
    # the fetcher delivers: the same (cached) certificate is admitted now
    assert store.load_raw(collateral) == []
    assert store.wanted()[0] == frozenset()
    assert verify_certificate(cert, trust, NOW).tcb_status == "UpToDate"


def test_a_type3_quote_takes_its_pck_certificate_from_the_store(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    trust = make_trust()
    store = trust.collateral
    assert store is not None
    cert = gramine(platform, cert_data_type=CERT_DATA_PPID_RSA3072).cert_der
    err = rejected(cert, trust)
    assert err.reason is Reason.COLLATERAL_MISSING and "PCK certificate" in err.message
    (request,) = store.wanted()[1]
    assert request.encrypted_ppid == platform.encrypted_ppid
    assert request.cpu_svn == platform.extensions.cpu_svn
    # another platform's PCK certificate does not do: the QE report names its signer
    assert store.load_raw(DcapPlatform.create(pki).pck_collateral()) == []
    assert rejected(cert, trust).reason is Reason.COLLATERAL_MISSING
    assert store.load_raw(platform.pck_collateral()) == []
    assert verify_certificate(cert, trust, NOW).dcap is not None


def test_finding_the_pck_certificate_costs_a_bounded_number_of_checks(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    from sengd.attestation.dcap import MAX_PCK_TRIES

    trust = make_trust()
    store = trust.collateral
    assert store is not None
    strangers = [DcapPlatform.create(pki) for _ in range(MAX_PCK_TRIES)]
    for stranger in strangers:
        assert store.load_raw(stranger.pck_collateral()) == []
    assert store.load_raw(platform.pck_collateral()) == []
    cert3 = gramine(platform, cert_data_type=CERT_DATA_PPID_RSA3072).cert_der
    # eight certificates of unknown origin come first: the ninth is never tried
    assert rejected(cert3, trust).reason is Reason.COLLATERAL_MISSING
    # the one a PCCS returned for this encrypted PPID is tried first
    assert store.load_raw(platform.pck_collateral(fetched=True)) == []
    assert verify_certificate(cert3, trust, NOW).tcb_status == "UpToDate"
    # a clear-text PPID (type 1) names its certificate exactly
    cert1 = gramine(platform, cert_data_type=1).cert_der
    assert verify_certificate(cert1, trust, NOW).dcap is not None
    cert1_stranger = gramine(strangers[0], cert_data_type=1).cert_der
    assert verify_certificate(cert1_stranger, trust, NOW).tcb_status == "UpToDate"


def test_the_cache_rechecks_time_and_collateral(
    pki: DcapTestPki, platform: DcapPlatform, make_trust: TrustFactory
) -> None:
    trust = make_trust()
    cert = gramine(platform).cert_der
    assert verify_certificate(cert, trust, NOW).tcb_status == "UpToDate"
    assert len(trust.cert_cache) == 1
    later = NOW + timedelta(days=40)
    with pytest.raises(AttestationError) as err:
        verify_certificate(cert, trust, later)
    assert err.value.reason is Reason.COLLATERAL_EXPIRED
    store = trust.collateral
    assert store is not None
    store.add(
        __import__("sengd.attestation", fromlist=["verify_raw"]).verify_raw(
            pki.collateral(at=later - timedelta(days=1), levels=[Level(status="OutOfDate")]),
            store.anchors,
        )
    )
    assert verify_certificate(cert, trust, later).tcb_status == "OutOfDate"
    assert trust.cert_cache.hits >= 2


# -- sizes (python-mbedtls accepts a client certificate up to ~16 KB) -------------------------


def test_certificate_sizes_against_the_mbedtls_limit(platform: DcapPlatform) -> None:
    """Measured with Intel's real 2025 quote and collateral (the TCB info alone is 4.7 KB);
    the numbers are in docs/attestation.md. python-mbedtls drops a client certificate beyond
    its 16384-byte input buffer (about 16.37 KB of DER) and the handshake stalls."""
    from tests.unit.attestation.dcap.realdcap import QVL, qvl_collateral

    real = qvl_collateral()
    quote5 = (QVL / "sgx_quote.bin").read_bytes()
    sizes = {
        "gramine-p384": len(gramine(platform, quote=quote5).cert_der),
        "gramine-rsa3072": len(gramine(platform, key_type="rsa-3072", quote=quote5).cert_der),
        "ratls-rsa3072-type3": len(ratls(platform, real, cert_data_type=3).cert_der),
        "ratls-p384-type3": len(
            ratls(platform, real, cert_data_type=3, key_type="ec-p384").cert_der
        ),
        "ratls-rsa3072-type5": len(ratls(platform, real, cert_data_type=5).cert_der),
    }
    limit = 16384 - 6  # Certificate message: two 3-byte length prefixes before the DER
    assert 4800 < sizes["gramine-p384"] < sizes["gramine-rsa3072"] < 6000
    assert 13_000 < sizes["ratls-p384-type3"] < sizes["ratls-rsa3072-type3"] < 15_000 < limit
    assert sizes["ratls-rsa3072-type5"] > limit


# -- the policy's verdict on DCAP evidence --------------------------------------------------------


def _entry(**overrides: object) -> AllowlistEntry:
    from ipaddress import IPv4Network

    return AllowlistEntry(
        id=1,
        name="dcap-app",
        host_routes=(HostRoute(IPv4Network("10.0.0.0/8"), 1),),
        mr_enclave=DEFAULT_MR_ENCLAVE,
        **overrides,  # type: ignore[arg-type]
    )


def _evidence(
    kit: Kit, status: str, advisories: tuple[str, ...] = (), **enclave: object
) -> Evidence:
    raw = kit.pki.collateral(at=ISSUED, levels=[Level(status=status, advisory_ids=advisories)])
    return verify_certificate(gramine(kit.platform, **enclave).cert_der, kit.make_trust(raw), NOW)


def test_policy_default_tcb_statuses(kit: Kit) -> None:
    allowlist = Allowlist([_entry()])
    for status, admitted in [
        ("UpToDate", True),
        ("SWHardeningNeeded", True),
        ("ConfigurationNeeded", False),
        ("ConfigurationAndSWHardeningNeeded", False),
        ("OutOfDate", False),
        ("OutOfDateConfigurationNeeded", False),
    ]:
        result = decide(_evidence(kit, status), "10.1.2.3", allowlist)
        assert isinstance(result, Decision) is admitted, status
        if not admitted:
            assert isinstance(result, Denial) and result.reason == "tcb-status-rejected"


def test_policy_tcb_statuses_per_entry_and_globally(kit: Kit) -> None:
    evidence = _evidence(kit, "ConfigurationAndSWHardeningNeeded")
    opt_in = frozenset({"UpToDate", "ConfigurationAndSWHardeningNeeded"})
    assert isinstance(
        decide(evidence, "10.1.2.3", Allowlist([_entry(tcb_statuses=opt_in)])), Decision
    )
    defaults = PolicyDefaults(tcb_statuses=opt_in)
    assert isinstance(decide(evidence, "10.1.2.3", Allowlist([_entry()]), defaults), Decision)
    # an entry can be stricter than the defaults
    strict = _entry(tcb_statuses=frozenset({"UpToDate"}))
    result = decide(evidence, "10.1.2.3", Allowlist([strict]), defaults)
    assert isinstance(result, Denial) and result.reason == "tcb-status-rejected"
    # the IAS quote statuses play no part for DCAP evidence
    assert isinstance(
        decide(
            evidence,
            "10.1.2.3",
            Allowlist([_entry(tcb_statuses=opt_in, quote_statuses=frozenset({"OK"}))]),
        ),
        Decision,
    )


def test_policy_denies_advisories(kit: Kit) -> None:
    evidence = _evidence(kit, "SWHardeningNeeded", ("INTEL-SA-00615", "INTEL-SA-00657"))
    allowlist = Allowlist([_entry()])
    assert isinstance(decide(evidence, "10.1.2.3", allowlist), Decision)
    defaults = PolicyDefaults(denied_advisories=frozenset({"INTEL-SA-00657"}))
    result = decide(evidence, "10.1.2.3", allowlist, defaults)
    assert isinstance(result, Denial) and result.reason == "advisory-denied"
    assert "INTEL-SA-00657" in result.message
    per_entry = Allowlist([_entry(denied_advisories=frozenset({"INTEL-SA-00615"}))])
    result = decide(evidence, "10.1.2.3", per_entry)
    assert isinstance(result, Denial) and result.reason == "advisory-denied"


def test_policy_debug_dcap_enclave(kit: Kit) -> None:
    evidence = _evidence(kit, "UpToDate", flags=DEBUG_FLAGS)
    result = decide(evidence, "10.1.2.3", Allowlist([_entry()]))
    assert isinstance(result, Denial) and result.reason == "debug-enclave"
    assert isinstance(decide(evidence, "10.1.2.3", Allowlist([_entry(allow_debug=True)])), Decision)
