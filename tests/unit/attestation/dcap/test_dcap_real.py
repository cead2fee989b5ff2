"""The real Intel-signed DCAP samples: they verify inside their windows with exactly the facts
of expected.json, and every way of spoiling them is rejected with a precise reason."""

from __future__ import annotations

import dataclasses
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sengd.attestation import (
    AttestationError,
    Collateral,
    RawCollateral,
    Reason,
    TrustConfig,
    verify_certificate,
    verify_quote,
    verify_raw,
)
from sengd.attestation.collateral import verify_pck_chain
from sengd.attestation.dcap import DcapVerdict, evaluate, quote_facts
from sengd.attestation.dcap_quote import parse_dcap_quote
from sengd.attestation.dcap_ratls import extract_dcap_payload
from sengd.attestation.evidence import dcap_evidence
from sengd.attestation.trust import builtin_sgx_roots, load_sgx_roots, sgx_roots_from_pem
from tests.unit.attestation.dcap.realdcap import (
    OASIS,
    OASIS_AT,
    QVL,
    QVL_AT,
    RATLS_2019,
    RATLS_2019_AT,
    ROOTS,
    SYNTHETIC,
    Sample,
    expected,
    oasis_collateral,
    qvl_collateral,
    samples,
)

SAMPLES = samples()
IDS = [s.name for s in SAMPLES]


def intel(**options: object) -> TrustConfig:
    """Intel's production SGX root (built in), with DCAP options."""
    return TrustConfig.builtin(sgx_roots=builtin_sgx_roots(), **options)  # type: ignore[arg-type]


def trust_for(sample: Sample) -> TrustConfig:
    return intel(
        dcap_require_crls=sample.require_crls, dcap_require_qe_identity=sample.require_qe_identity
    )


def verify(sample: Sample, at: datetime | None = None, **changes: object) -> DcapVerdict:
    sample = dataclasses.replace(sample, **changes)  # type: ignore[arg-type]
    trust = trust_for(sample)
    collateral = verify_raw(sample.collateral, trust.sgx_roots)
    return verify_quote(sample.quote, collateral, trust, at or sample.at)


def reason_of(call: object) -> Reason:
    with pytest.raises(AttestationError) as err:
        assert callable(call)
        call()
    return err.value.reason


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_real_quotes_verify_with_exactly_the_expected_facts(sample: Sample) -> None:
    verdict = verify(sample)
    facts = sample.facts
    assert verdict.platform_status == facts["platform_tcb_status"]
    assert verdict.qe_status == facts.get("qe_tcb_status")
    assert verdict.status == facts["platform_tcb_status"]  # the QE is UpToDate in all three
    assert list(verdict.advisory_ids) == facts.get("platform_tcb_advisories", [])
    evidence = dcap_evidence(verdict, "quote").to_json()
    body = facts["report_body"]
    for key in ("mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "config_svn", "report_data"):
        assert evidence[key] == body[key], key
    assert evidence["cpu_svn"] == body["cpu_svn"]
    assert evidence["attributes"]["flags"] == body["attributes.flags"]
    assert evidence["attributes"]["xfrm"] == body["attributes.xfrm"]
    assert evidence["attributes"]["debug"] is body["DEBUG"]
    assert evidence["tcb_status"] == facts["platform_tcb_status"]
    assert evidence["report_id"] == facts["quote_sha256"]
    ext = facts["pck_ext"]
    dcap = evidence["dcap"]
    assert dcap["fmspc"] == ext["FMSPC"] and dcap["pce_id"] == ext["PCE-ID"]
    assert dcap["tcb_components"] == [ext["TCB"][str(n)] for n in range(1, 17)]
    assert dcap["pce_svn"] == ext["TCB"]["17"]
    assert dcap["cert_data_type"] == facts["cert_data_type"]
    quote = verdict.facts.quote
    assert quote.qe_report.mr_signer.hex() == facts["qe_report"]["mr_signer"]
    assert quote.qe_report.isv_svn == facts["qe_report"]["isv_svn"]
    assert quote.qe_svn == facts["header"]["qe_svn"] and quote.pce_svn == facts["header"]["pce_svn"]


def test_oasis_quote_chains_through_the_platform_ca() -> None:
    verdict = verify(SAMPLES[1])
    assert verdict.facts.pck.chain.issuer is not None
    assert verdict.facts.pck.chain.issuer.name == "Intel SGX PCK Platform CA"
    assert verdict.facts.pck.extensions.sgx_type == 1
    assert verdict.facts.pck.extensions.dynamic_platform is True


@pytest.mark.parametrize(
    ("sample", "at", "reason"),
    [
        # dcap-qvl: the common window is 2025-06-19T10:56:11 .. 2025-07-19T10:01:18
        (SAMPLES[0], datetime(2025, 7, 19, 10, 1, 19, tzinfo=UTC), Reason.COLLATERAL_EXPIRED),
        (
            SAMPLES[0],
            datetime(2025, 6, 19, 10, 56, 10, tzinfo=UTC),
            Reason.COLLATERAL_NOT_YET_VALID,
        ),
        (SAMPLES[0], datetime(2031, 1, 1, tzinfo=UTC), Reason.PCK_CHAIN_EXPIRED),
        # oasis-core's own negative times
        (SAMPLES[1], datetime.fromtimestamp(1891163522, UTC), Reason.PCK_CHAIN_EXPIRED),
        (SAMPLES[1], datetime.fromtimestamp(1670238720, UTC), Reason.PCK_CHAIN_NOT_YET_VALID),
        (SAMPLES[1], datetime.fromtimestamp(1671194735, UTC), Reason.COLLATERAL_NOT_YET_VALID),
        (SAMPLES[1], datetime.fromtimestamp(1673786737, UTC), Reason.COLLATERAL_EXPIRED),
        # sgx-ra-tls: TCB info 2019-03-12T23:15:28 .. 2019-04-11T23:15:28
        (SAMPLES[2], datetime(2019, 4, 11, 23, 15, 29, tzinfo=UTC), Reason.COLLATERAL_EXPIRED),
        (
            SAMPLES[2],
            datetime(2019, 3, 12, 23, 15, 27, tzinfo=UTC),
            Reason.COLLATERAL_NOT_YET_VALID,
        ),
        (SAMPLES[2], datetime(2019, 3, 12, 23, 0, 27, tzinfo=UTC), Reason.PCK_CHAIN_NOT_YET_VALID),
    ],
    ids=[
        "qvl-after",
        "qvl-before",
        "qvl-2031",
        "oasis-pck-expired",
        "oasis-pck-early",
        "oasis-qe-early",
        "oasis-qe-expired",
        "ratls-after",
        "ratls-before",
        "ratls-pck-early",
    ],
)
def test_outside_the_window_is_rejected(sample: Sample, at: datetime, reason: Reason) -> None:
    assert reason_of(lambda: verify(sample, at)) is reason


def test_window_edges_are_inclusive() -> None:
    # nextUpdate itself is still valid; one second later is not (as dcap-qvl and Intel's QVL)
    verify(SAMPLES[0], datetime(2025, 7, 19, 10, 1, 18, tzinfo=UTC))
    verify(SAMPLES[0], datetime(2025, 6, 19, 10, 56, 11, tzinfo=UTC))


def test_oasis_messages_name_the_qe_identity() -> None:
    with pytest.raises(AttestationError) as err:
        verify(SAMPLES[1], datetime.fromtimestamp(1671194735, UTC))
    assert "QE identity" in err.value.message and "2022-12-16T12:45:36" in err.value.message


def test_missing_collateral_is_refused_by_default() -> None:
    # oasis-core has no CRLs; sgx-ra-tls 2019 has no QE identity (it predates them)
    assert reason_of(lambda: verify(SAMPLES[1], require_crls=True)) is Reason.COLLATERAL_MISSING
    assert reason_of(lambda: verify(SAMPLES[2], require_qe_identity=True)) is (
        Reason.COLLATERAL_MISSING
    )
    no_tcb = dataclasses.replace(SAMPLES[0].collateral, tcb_info=None, tcb_info_issuer_chain=None)
    assert reason_of(lambda: verify(SAMPLES[0], collateral=no_tcb)) is Reason.COLLATERAL_MISSING


def test_bad_chain_negative_is_rejected() -> None:
    raw = oasis_collateral("NEGATIVE_tcb_info_v3_fmspc_00606A000000_certs_bad.pem")
    with pytest.raises(AttestationError) as err:
        verify_raw(raw, builtin_sgx_roots())
    assert err.value.reason is Reason.COLLATERAL_CHAIN_UNTRUSTED
    assert "PCK Platform CA" in err.value.message


def test_tcb_info_of_another_platform_is_a_mismatch() -> None:
    other = dataclasses.replace(
        SAMPLES[0].collateral,
        tcb_info=oasis_collateral().tcb_info,
        tcb_info_issuer_chain=oasis_collateral().tcb_info_issuer_chain,
    )
    with pytest.raises(AttestationError) as err:
        verify(SAMPLES[0], collateral=other, at=datetime(2025, 7, 1, tzinfo=UTC))
    # the QE identity of 2025 is checked first and fits; then the 2022 TCB info for 00606a...
    assert err.value.reason is Reason.TCB_INFO_MISMATCH
    assert "00606a000000" in err.value.message and "00a067110000" in err.value.message


def test_every_edition_of_intels_root_pins_the_same_key() -> None:
    editions = [
        ROOTS / "Intel_SGX_RootCA_2049.pem",
        ROOTS / "Intel_SGX_RootCA_2033.pem",
        ROOTS / "Intel_SGX_RootCA_2033_pathlen0.der",
        ROOTS / "verbatim_fortanix_root_SGX_CA_der.cert",
    ]
    keys = {load_sgx_roots(path)[0].key_sha256 for path in editions}
    assert len(keys) == 1
    for path in editions:
        trust = TrustConfig.builtin(sgx_roots=load_sgx_roots(path))
        collateral = verify_raw(qvl_collateral(), trust.sgx_roots)
        quote = (QVL / "sgx_quote.bin").read_bytes()
        assert verify_quote(quote, collateral, trust, QVL_AT).status == (
            "ConfigurationAndSWHardeningNeeded"
        )


def test_the_2019_chain_embeds_the_pathlen0_root_and_still_verifies() -> None:
    # OpenSSL refuses the chain anchored on the embedded pathlen:0 edition; pinning the key
    # (and ignoring what the evidence says about the root) accepts it.
    pck = verify(SAMPLES[2]).facts.pck
    embedded = (ROOTS / "Intel_SGX_RootCA_2033_pathlen0.der").read_bytes()
    import hashlib

    assert pck.chain.root_edition_sha256 == hashlib.sha256(embedded).digest()


def test_synthetic_test_root_sets_are_untrusted() -> None:
    roots = builtin_sgx_roots()
    folder = SYNTHETIC
    pck_chain = (folder / "pckCert.pem").read_bytes() + (folder / "pckSignChain.pem").read_bytes()
    with pytest.raises(AttestationError) as err:
        verify_pck_chain(pck_chain, roots)
    assert err.value.reason is Reason.PCK_CHAIN_UNTRUSTED
    assert "not a pinned SGX root key" in err.value.message
    items = {
        "tcb": RawCollateral(
            tcb_info=(folder / "tcbInfo.json").read_bytes(),
            tcb_info_issuer_chain=(folder / "tcbSignChain.pem").read_bytes(),
        ),
        "qe": RawCollateral(
            qe_identity=(folder / "qeIdentity.json").read_bytes(),
            qe_identity_issuer_chain=(folder / "tcbSignChain.pem").read_bytes(),
        ),
        "root-crl": RawCollateral(root_ca_crl=(folder / "rootCaCrl.pem").read_bytes()),
        "pck-crl": RawCollateral(
            pck_crl=(folder / "intermediateCaCrl.pem").read_bytes(),
            pck_crl_issuer_chain=(folder / "pckSignChain.pem").read_bytes(),
        ),
    }
    reasons = {}
    for name, raw in items.items():
        with pytest.raises(AttestationError) as err:
            verify_raw(raw, roots)
        reasons[name] = err.value.reason
    assert reasons == {
        "tcb": Reason.COLLATERAL_CHAIN_UNTRUSTED,
        "qe": Reason.COLLATERAL_CHAIN_UNTRUSTED,
        # same name as Intel's root, another key: the signature is what fails
        "root-crl": Reason.COLLATERAL_SIGNATURE_INVALID,
        "pck-crl": Reason.COLLATERAL_CHAIN_UNTRUSTED,
    }
    # The whole quote: its PCK certificate comes from the same untrusted set.
    quote = (folder / "quote-ppid-clear.dat").read_bytes()
    with pytest.raises(AttestationError) as err:
        verify_quote(quote, Collateral(), intel(), datetime(2018, 5, 1, tzinfo=UTC))
    assert err.value.reason is Reason.COLLATERAL_MISSING  # no trusted PCK certificate at all


def test_the_synthetic_set_verifies_only_when_its_own_root_is_pinned() -> None:
    # Positive control: the same files pass under the test root, so the rejection above is the
    # pin and nothing else.
    test_root = sgx_roots_from_pem((SYNTHETIC / "trustedRootCaCert.pem").read_bytes())
    pck_chain = (SYNTHETIC / "pckCert.pem").read_bytes() + (
        SYNTHETIC / "pckSignChain.pem"
    ).read_bytes()
    pck = verify_pck_chain(pck_chain, test_root)
    quote = parse_dcap_quote((SYNTHETIC / "quote-ppid-clear.dat").read_bytes())
    assert quote_facts(quote, test_root, [pck]).pck is pck
    assert (
        verify_raw(RawCollateral(root_ca_crl=(SYNTHETIC / "rootCaCrl.pem").read_bytes()), test_root)
        .root_crls[0]
        .revoked
    )


def test_the_synthetic_teaclave_certificate_carries_no_dcap_evidence() -> None:
    folder = SYNTHETIC.parent / "teaclave-tls-ra-cert-v4-dcap-selfca"
    with pytest.raises(AttestationError) as err:
        verify_certificate((folder / "tls_ra_cert_v4.der").read_bytes(), intel(), QVL_AT)
    assert err.value.reason is Reason.NO_SGX_EXTENSION


def test_eppid_quote_without_its_pck_certificate_is_missing_collateral() -> None:
    quote = (OASIS / "quote_v3_ecdsa_p256_eppid.bin").read_bytes()
    facts = expected(OASIS, "quote_v3_ecdsa_p256_eppid.bin")
    parsed = parse_dcap_quote(quote)
    assert parsed.cert_data_type == facts["cert_data_type"] == 3
    assert parsed.report.mr_enclave.hex() == facts["report_body"]["mr_enclave"]
    assert (
        reason_of(
            lambda: verify_quote(
                quote, verify_raw(oasis_collateral(), builtin_sgx_roots()), intel(), OASIS_AT
            )
        )
        is Reason.COLLATERAL_MISSING
    )


def _forged_crl(serial: int, issuer_name: x509.Name, at: datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name)
        .last_update(at - timedelta(days=1))
        .next_update(at + timedelta(days=20))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build()
        )
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_a_crl_listing_the_real_pck_certificate_must_be_intels() -> None:
    # We cannot make Intel sign a CRL revoking a real PCK certificate (the kit tests show that a
    # properly signed one revokes it); a forged one naming Intel's Platform CA is refused as
    # such, not taken for a revocation and not ignored. (oasis-core: its PCK serial fits the
    # 159 bits `cryptography` can put into a CRL; dcap-qvl's needs 160.)
    verdict = verify(SAMPLES[1])
    chain = verdict.facts.pck.chain
    assert chain.issuer is not None
    forged = _forged_crl(chain.leaf.serial, chain.issuer.cert.subject, OASIS_AT)
    issuer_chain = (
        chain.issuer.cert.public_bytes(serialization.Encoding.PEM)
        + (ROOTS / "Intel_SGX_RootCA_2049.pem").read_bytes()
    )
    raw = dataclasses.replace(
        SAMPLES[1].collateral, pck_crl=forged, pck_crl_issuer_chain=issuer_chain
    )
    assert reason_of(lambda: verify(SAMPLES[1], collateral=raw)) is (
        Reason.COLLATERAL_SIGNATURE_INVALID
    )


# -- every flipped byte -----------------------------------------------------------------------


def _flips(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    for index in range(len(data)):
        for mask in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[index] ^= mask
            out.append((index, bytes(flipped)))
    return out


def test_any_flipped_byte_of_the_quote_is_rejected() -> None:
    trust = intel()
    collateral = verify_raw(qvl_collateral(), trust.sgx_roots)
    quote = (QVL / "sgx_quote.bin").read_bytes()
    accepted = []
    for index, flipped in _flips(quote):
        try:
            verify_quote(flipped, collateral, trust, QVL_AT)
        except AttestationError:
            continue
        accepted.append(index)
    assert accepted == []


@pytest.mark.parametrize(
    "item",
    [
        "tcb_info",
        "tcb_info_issuer_chain",
        "qe_identity",
        "qe_identity_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "pck_crl_issuer_chain",
    ],
)
def test_any_flipped_byte_of_the_collateral_is_rejected(item: str) -> None:
    trust = intel()
    raw = qvl_collateral()
    facts = quote_facts(parse_dcap_quote((QVL / "sgx_quote.bin").read_bytes()), trust.sgx_roots)
    original = getattr(raw, item)
    assert original is not None
    accepted = []
    for index, flipped in _flips(original):
        try:
            collateral = verify_raw(dataclasses.replace(raw, **{item: flipped}), trust.sgx_roots)
            evaluate(facts, collateral, QVL_AT, mismatch_is_error=True)
        except AttestationError:
            continue
        accepted.append(index)
    assert accepted == []


# -- the 2019 RA-TLS certificate ----------------------------------------------------------------


def test_the_2019_certificate_is_refused_and_its_quote_verifies() -> None:
    data = (RATLS_2019 / "ecdsa-ratls.der").read_bytes()
    trust = intel(dcap_require_crls=False, dcap_require_qe_identity=False)
    # the leaf is self-signed with sha1WithRSA: refused before anything else
    assert reason_of(lambda: verify_certificate(data, trust, RATLS_2019_AT)) is (
        Reason.CERT_SIGNATURE_INVALID
    )
    # what it carries is genuine: quote .6 + embedded collateral .7-.10 verify
    payload = extract_dcap_payload(x509.load_der_x509_certificate(data))
    assert payload.form.value == "sgx-ra-tls"
    embedded = verify_raw(payload.embedded, trust.sgx_roots)
    verdict = verify_quote(payload.quote, embedded, trust, RATLS_2019_AT)
    assert verdict.status == "UpToDate" and verdict.advisory_ids == ()
    assert verdict.facts.quote.report.debug


def _reminted_2019(ext: Path) -> bytes:
    """The real 2019 quote and collateral in an sgx-ra-tls certificate of our own (SHA-256)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SGX rocks!")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2019, 3, 1, tzinfo=UTC))
        .not_valid_after(datetime(2019, 12, 1, tzinfo=UTC))
    )
    for path in sorted(ext.iterdir(), key=lambda p: int(p.name.split("_")[0].split(".")[-1])):
        oid = x509.ObjectIdentifier(path.name.split("_")[0])
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, path.read_bytes()), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_the_real_2019_quote_does_not_bind_another_key() -> None:
    der = _reminted_2019(RATLS_2019 / "ecdsa-ratls.ext")
    trust = intel(dcap_require_crls=False, dcap_require_qe_identity=False)
    with pytest.raises(AttestationError) as err:
        verify_certificate(der, trust, RATLS_2019_AT)
    assert err.value.reason is Reason.KEY_BINDING_MISMATCH
    assert "sgx-ra-tls" in err.value.message


def test_url_encoded_chains_decode_to_the_same_certificates() -> None:
    ext = RATLS_2019 / "ecdsa-ratls.ext"
    encoded = (ext / "1.2.840.113741.1337.10_tcb_sign_chain.urlencoded.pem").read_bytes()
    raw = RawCollateral(
        tcb_info=(ext / "1.2.840.113741.1337.9_tcb_info.signed.json").read_bytes(),
        tcb_info_issuer_chain=urllib.parse.unquote_to_bytes(encoded),
    )
    a = verify_raw(raw, builtin_sgx_roots()).tcb_infos[0]
    b = verify_raw(dataclasses.replace(raw, tcb_info_issuer_chain=encoded), builtin_sgx_roots())
    assert a.meta.signer.leaf.sha256 == b.tcb_infos[0].meta.signer.leaf.sha256
