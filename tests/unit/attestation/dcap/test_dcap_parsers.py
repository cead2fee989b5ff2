"""The DCAP parsers one by one (quote, PEM, SGX extension, signed JSON envelope, TCB info, QE
identity, CRL), their strictness, and property-based fuzzing: whatever the bytes, only the
documented error type comes out."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sengd.attestation import (
    AttestationError,
    RawCollateral,
    Reason,
    TrustConfig,
    builtin_sgx_roots,
    verify_certificate,
    verify_quote,
    verify_raw,
)
from sengd.attestation.collateral import verify_pck_chain
from sengd.attestation.crl import CrlError, verify_crl
from sengd.attestation.dcap_quote import (
    SIGNED_SIZE,
    build_dcap_quote,
    build_report_body,
    parse_dcap_quote,
)
from sengd.attestation.pck import PckExtensions, encode_sgx_extension, parse_sgx_extension
from sengd.attestation.pem import PemError, parse_pem, parse_pem_or_urlencoded
from sengd.attestation.qe_identity import parse_qe_identity
from sengd.attestation.signed_json import CollateralFormatError, parse_signed_body
from sengd.attestation.tcb import converge, parse_tcb_info
from sengd.testing.dcap_kit import DcapPlatform, DcapTestPki, mint_gramine_certificate
from tests.unit.attestation.conftest import NOW
from tests.unit.attestation.dcap.realdcap import QVL, QVL_AT, qvl_collateral

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REAL_QUOTE = (QVL / "sgx_quote.bin").read_bytes()
REAL_CHAIN = (QVL / "sgx_quote.pck_chain.pem").read_bytes()


def only(kind: type[Exception], call: Callable[[], object]) -> None:
    with contextlib.suppress(kind):
        call()


def reason(call: Callable[[], object]) -> Reason:
    with pytest.raises(AttestationError) as err:
        call()
    return err.value.reason


# -- the quote --------------------------------------------------------------------------------


def test_real_quote_layout() -> None:
    quote = parse_dcap_quote(REAL_QUOTE)
    assert (quote.version, quote.att_key_type, quote.tee_type) == (3, 2, 0)
    assert quote.cert_data_type == 5 and quote.cert_data.endswith(b"-----\n\0")
    assert len(quote.qe_auth_data) == 32 and quote.body == REAL_QUOTE[:432]
    assert quote.user_data.hex() == "3987622ee6968a54977c8626ef47123500000000"


def test_every_truncation_and_extension_is_malformed() -> None:
    for cut in range(len(REAL_QUOTE)):
        assert reason(lambda c=cut: parse_dcap_quote(REAL_QUOTE[:c])) is Reason.DCAP_QUOTE_MALFORMED
    assert reason(lambda: parse_dcap_quote(REAL_QUOTE + b"\0")) is Reason.DCAP_QUOTE_MALFORMED
    assert reason(lambda: parse_dcap_quote(bytes(20_000))) is Reason.DCAP_QUOTE_MALFORMED


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, 2), (0, 4), (2, 3), (4, 0x81), (12, 0x00)],
    ids=["epid-v2", "v4", "p384-key", "tdx", "vendor"],
)
def test_unsupported_headers(offset: int, value: int) -> None:
    quote = bytearray(REAL_QUOTE)
    quote[offset] = value
    assert reason(lambda: parse_dcap_quote(bytes(quote))) is Reason.DCAP_QUOTE_UNSUPPORTED


@pytest.mark.parametrize("cert_type", [0, 4, 6, 7, 0xFFFF])
def test_unsupported_certification_data(cert_type: int) -> None:
    quote = build_dcap_quote(
        report_body=build_report_body(),
        isv_signature=bytes(64),
        attestation_key=bytes(64),
        qe_report_body=build_report_body(),
        qe_report_signature=bytes(64),
        qe_auth_data=b"",
        cert_data_type=cert_type,
        cert_data=b"x",
    )
    assert reason(lambda: parse_dcap_quote(quote)) is Reason.DCAP_QUOTE_UNSUPPORTED


@pytest.mark.parametrize(("cert_type", "size"), [(1, 34), (2, 274), (3, 404)])
def test_ppid_certification_data_sizes(cert_type: int, size: int) -> None:
    def quote(length: int) -> bytes:
        return build_dcap_quote(
            report_body=build_report_body(),
            isv_signature=bytes(64),
            attestation_key=bytes(64),
            qe_report_body=build_report_body(),
            qe_report_signature=bytes(64),
            qe_auth_data=bytes(32),
            cert_data_type=cert_type,
            cert_data=bytes(length),
        )

    parsed = parse_dcap_quote(quote(size))
    assert parsed.ppid is not None and (parsed.ppid.pce_id is None) == (cert_type != 3)
    for wrong in (size - 1, size + 1):
        assert reason(lambda w=wrong: parse_dcap_quote(quote(w))) is Reason.DCAP_QUOTE_MALFORMED


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_quote_parser(data: bytes) -> None:
    only(AttestationError, lambda: parse_dcap_quote(data))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(REAL_QUOTE) - 1), st.integers(0, 255)), max_size=6))
def test_fuzz_mutated_real_quote_is_never_accepted(changes: list[tuple[int, int]]) -> None:
    quote = bytearray(REAL_QUOTE)
    for index, value in changes:
        quote[index] = value
    trust = TrustConfig.builtin(sgx_roots=builtin_sgx_roots())
    collateral = _QVL_COLLATERAL
    if bytes(quote) == REAL_QUOTE:
        assert verify_quote(bytes(quote), collateral, trust, QVL_AT).status
        return
    assert reason(lambda: verify_quote(bytes(quote), collateral, trust, QVL_AT))


_QVL_COLLATERAL = verify_raw(qvl_collateral(), builtin_sgx_roots())


# -- PEM ---------------------------------------------------------------------------------------


def test_pem_accepts_what_intel_writes() -> None:
    assert len(parse_pem(REAL_CHAIN)) == 3
    assert len(parse_pem(REAL_CHAIN.rstrip(b"\n"))) == 3
    assert len(parse_pem(REAL_CHAIN + b"\0")) == 3


def _moved_break(text: bytes) -> bytes:
    """The same base64, one character moved from the second line to the end of the first."""
    lines = text.split(b"\n")
    lines[1], lines[2] = lines[1] + lines[2][:1], lines[2][1:]
    return b"\n".join(lines)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace(b"\n", b"\r\n"),
        lambda t: t + b"\n",
        lambda t: t + b"\0\0",
        lambda t: t[:-1] + b"\0",
        _moved_break,
        lambda t: t.replace(b"-----\n-----", b"-----\n\n-----", 1),
        lambda t: t.replace(b"CERTIFICATE", b"X509 CRL", 1),
        lambda t: b" " + t,
        lambda t: t.replace(b"=\n", b"\n", 1),
        lambda t: t.replace(b"\n-----END", b"\n\n-----END", 1),
        lambda t: t[: t.index(b"-----END")],
        lambda t: t * 3,
    ],
    ids=[
        "crlf",
        "two-newlines",
        "two-nuls",
        "nul-without-newline",
        "moved-line-break",
        "blank-line",
        "label",
        "leading-space",
        "padding",
        "empty-line-before-end",
        "no-end",
        "nine-blocks",
    ],
)
def test_pem_refuses_anything_else(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(PemError):
        parse_pem(mutate(REAL_CHAIN))


def test_pem_base64_must_be_canonical() -> None:
    lines = REAL_CHAIN.split(b"\n")
    index = next(i for i, line in enumerate(lines) if line.endswith(b"="))
    last = lines[index]
    # flip a trailing bit the decoder would ignore: a lenient parser reads the same certificate
    char = last[-2:-1]
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines[index] = last[:-2] + bytes([alphabet[alphabet.index(char) ^ 1]]) + b"="
    with pytest.raises(PemError, match="canonical"):
        parse_pem(b"\n".join(lines))


def test_url_encoded_pem() -> None:
    import urllib.parse

    encoded = urllib.parse.quote_from_bytes(REAL_CHAIN, safe="").encode()
    assert parse_pem_or_urlencoded(encoded) == parse_pem(REAL_CHAIN)
    with pytest.raises(PemError):
        parse_pem_or_urlencoded(encoded + b"\n")
    # %0a means %0A: one changed byte would spell the same chain another way
    with pytest.raises(PemError, match="upper-case"):
        parse_pem_or_urlencoded(encoded.replace(b"%0A", b"%0a", 1))
    with pytest.raises(PemError, match="upper-case"):
        parse_pem_or_urlencoded(encoded + b"%4")


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_pem(data: bytes) -> None:
    only(PemError, lambda: parse_pem_or_urlencoded(data))


# -- the SGX extension of PCK certificates -----------------------------------------------------

EXT = PckExtensions(
    ppid=bytes(range(16)),
    tcb_components=(11, 11, 2, 2, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    pce_svn=13,
    cpu_svn=bytes([11, 11, 2, 2, 255, 1] + [0] * 10),
    pce_id=bytes(2),
    fmspc=bytes.fromhex("00a067110000"),
    sgx_type=0,
)


@FUZZ
@given(
    st.lists(st.integers(0, 255), min_size=16, max_size=16),
    st.integers(0, 0xFFFF),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2),
    st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
)
def test_sgx_extension_roundtrip(
    comps: list[int], pce_svn: int, fmspc: bytes, sgx_type: int, instance: bytes | None
) -> None:
    ext = dataclasses.replace(
        EXT,
        tcb_components=tuple(comps),
        pce_svn=pce_svn,
        fmspc=fmspc,
        sgx_type=sgx_type,
        platform_instance_id=instance,
    )
    assert parse_sgx_extension(encode_sgx_extension(ext)) == ext


def _malformed(data: bytes) -> None:
    assert reason(lambda: parse_sgx_extension(data)) is Reason.PCK_CERT_MALFORMED


def test_sgx_extension_strictness() -> None:
    good = encode_sgx_extension(EXT)
    _malformed(good + b"\0")
    _malformed(good[:-1])
    fmspc = bytes.fromhex("0406") + EXT.fmspc
    _malformed(good.replace(fmspc, bytes.fromhex("0405") + EXT.fmspc[:5]))  # wrong size
    assert parse_sgx_extension(_reencode(EXT)) == EXT  # the helper below is faithful
    _malformed(_reencode(EXT, pce_svn_bytes=b"\x02\x02\x00\x0d"))  # non-minimal INTEGER
    _malformed(_reencode(EXT, pce_svn_bytes=b"\x02\x01\xf3"))  # negative
    _malformed(_reencode(EXT, pce_svn_bytes=b"\x04\x01\x0d"))  # not an INTEGER
    _malformed(_reencode(EXT, drop_fmspc=True))
    _malformed(_reencode(EXT, duplicate_fmspc=True))


def _reencode(
    ext: PckExtensions,
    *,
    pce_svn_bytes: bytes | None = None,
    drop_fmspc: bool = False,
    duplicate_fmspc: bool = False,
) -> bytes:
    from sengd.attestation import der
    from sengd.attestation.pck import _oid

    def pair(oid: bytes, value: bytes) -> bytes:
        return der.encode_tlv(der.TAG_SEQUENCE, der.encode_tlv(0x06, oid) + value)

    def integer(value: int) -> bytes:
        return bytes([2, 1, value]) if value < 0x80 else bytes([2, 2, 0, value])

    tcb = b"".join(pair(_oid(2, n), integer(c)) for n, c in enumerate(ext.tcb_components, 1))
    tcb += pair(_oid(2, 17), pce_svn_bytes or struct.pack(">BBB", 2, 1, ext.pce_svn))
    tcb += pair(_oid(2, 18), der.encode_tlv(4, ext.cpu_svn))
    fmspc = pair(_oid(4), der.encode_tlv(4, ext.fmspc))
    body = pair(_oid(1), der.encode_tlv(4, ext.ppid)) + pair(_oid(2), der.encode_tlv(0x30, tcb))
    body += pair(_oid(3), der.encode_tlv(4, ext.pce_id))
    body += b"" if drop_fmspc else fmspc * (2 if duplicate_fmspc else 1)
    body += pair(_oid(5), bytes([0x0A, 1, 0]))
    return der.encode_tlv(der.TAG_SEQUENCE, body)


def test_sgx_extension_unknown_fields_are_skipped() -> None:
    from sengd.attestation import der
    from sengd.attestation.pck import _oid

    good = encode_sgx_extension(EXT)
    outer = der.read_tlv(good)
    extra = der.encode_tlv(der.TAG_SEQUENCE, der.encode_tlv(0x06, _oid(99)) + b"\x05\x00")
    data = der.encode_tlv(der.TAG_SEQUENCE, good[outer.start :] + extra)
    assert parse_sgx_extension(data) == EXT


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_sgx_extension(data: bytes) -> None:
    only(AttestationError, lambda: parse_sgx_extension(data))


# -- the signed JSON envelope ------------------------------------------------------------------

BODY = qvl_collateral().tcb_info or b""


def test_envelope_accepts_either_member_order_and_one_newline() -> None:
    signed = parse_signed_body(BODY, ("tcbInfo",))
    inner, sig = signed.inner, signed.signature.hex().encode()
    swapped = b'{"signature":"' + sig + b'","tcbInfo":' + inner + b"}"
    assert parse_signed_body(swapped, ("tcbInfo",)).inner == inner
    assert parse_signed_body(BODY + b"\n", ("tcbInfo",)).inner == inner


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b'{"tcbInfo":', b'{ "tcbInfo":', 1),
        lambda b: b.replace(b',"signature"', b', "signature"', 1),
        lambda b: b + b"\n\n",
        lambda b: b[:-2] + b'","extra":{}}'[:0] + b[-2:].replace(b"}", b',"x":{}}'),
        lambda b: b.replace(b'"signature":"', b'"signature":"A', 1)[:-3] + b'"}',
        lambda b: b[:-10] + b[-10:].upper(),
        lambda b: b.replace(b'"tcbInfo"', b'"qeIdentity"', 1),
        lambda b: b"\xff" + b,
        lambda b: b"[" + b + b"]",
    ],
    ids=[
        "space-before-member",
        "space-before-signature",
        "two-newlines",
        "extra-member",
        "odd-hex",
        "uppercase-hex",
        "wrong-member",
        "not-utf8",
        "not-object",
    ],
)
def test_envelope_strictness(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(CollateralFormatError):
        parse_signed_body(mutate(BODY), ("tcbInfo",))


def test_inner_json_strictness() -> None:
    doc = json.loads(BODY)["tcbInfo"]

    def body(inner: bytes) -> bytes:
        return b'{"tcbInfo":' + inner + b',"signature":"' + b"ab" * 64 + b'"}'

    with pytest.raises(CollateralFormatError, match="duplicate"):
        parse_signed_body(body(b'{"a":1,"a":2}'), ("tcbInfo",))
    with pytest.raises(CollateralFormatError):
        parse_signed_body(body(b'{"a":NaN}'), ("tcbInfo",))
    for change, match in [
        ({"id": "TDX"}, "SGX"),
        ({"version": 4}, "version"),
        ({"version": True}, "version"),
        ({"issueDate": "2025-06-19 10:56:11"}, "issueDate"),
        ({"fmspc": "00A0671100"}, "fmspc"),
        ({"tcbLevels": []}, "tcbLevels"),
    ]:
        with pytest.raises(CollateralFormatError, match=match):
            parse_tcb_info({**doc, **change})
    level = dict(doc["tcbLevels"][0])
    level["tcbStatus"] = "Excellent"
    with pytest.raises(CollateralFormatError, match="unknown TCB status"):
        parse_tcb_info({**doc, "tcbLevels": [level]})
    level = {**doc["tcbLevels"][0], "tcb": {**doc["tcbLevels"][0]["tcb"]}}
    level["tcb"]["sgxtcbcomponents"] = level["tcb"]["sgxtcbcomponents"][:15]
    with pytest.raises(CollateralFormatError, match="16"):
        parse_tcb_info({**doc, "tcbLevels": [level]})


def test_qe_identity_kinds() -> None:
    doc = json.loads(qvl_collateral().qe_identity or b"")["enclaveIdentity"]
    assert parse_qe_identity("enclaveIdentity", doc).isv_prod_id == 1
    with pytest.raises(CollateralFormatError, match="QE"):
        parse_qe_identity("enclaveIdentity", {**doc, "id": "QVE"})
    with pytest.raises(CollateralFormatError, match="version"):
        parse_qe_identity("qeIdentity", doc)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_envelope(data: bytes) -> None:
    only(CollateralFormatError, lambda: parse_signed_body(data, ("tcbInfo",)))


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    )
)
def test_fuzz_tcb_info_fields(value: object) -> None:
    doc = json.loads(BODY)["tcbInfo"]
    for key in ("version", "tcbLevels", "fmspc", "issueDate", "tcbType"):
        only(CollateralFormatError, lambda k=key: parse_tcb_info({**doc, k: value}))
    only(CollateralFormatError, lambda: parse_qe_identity("enclaveIdentity", {"tcbLevels": value}))


def test_converge_table() -> None:
    statuses = [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ]
    for status in statuses:
        assert converge(status, None) == status
        assert converge(status, "UpToDate") == status
        assert converge(status, "Revoked") == "Revoked"
        assert converge("Revoked", status) == "Revoked"
    assert [converge(s, "OutOfDate") for s in statuses] == [
        "OutOfDate",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "OutOfDateConfigurationNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ]


# -- collateral items and chains ---------------------------------------------------------------


@FUZZ
@given(
    st.sampled_from(["tcb_info", "qe_identity", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain"]),
    st.binary(max_size=700),
)
def test_fuzz_collateral_items(item: str, data: bytes) -> None:
    raw = dataclasses.replace(qvl_collateral(), **{item: data})
    only(AttestationError, lambda: verify_raw(raw, builtin_sgx_roots()))


@FUZZ
@given(st.binary(max_size=700))
def test_fuzz_crl(data: bytes) -> None:
    only(CrlError, lambda: verify_crl(data, builtin_sgx_roots()))


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(REAL_CHAIN) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
)
def test_fuzz_pck_chain_text(changes: list[tuple[int, int]]) -> None:
    chain = bytearray(REAL_CHAIN)
    for index, value in changes:
        chain[index] = value
    if bytes(chain) != REAL_CHAIN:
        assert reason(lambda: verify_pck_chain(bytes(chain), builtin_sgx_roots()))


def test_a_pck_chain_must_not_carry_strangers() -> None:
    certs = REAL_CHAIN.split(b"-----END CERTIFICATE-----\n")
    tcb_chain = qvl_collateral().tcb_info_issuer_chain or b""
    stranger = tcb_chain.split(b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n"
    mixed = REAL_CHAIN + stranger
    err = reason(lambda: verify_pck_chain(mixed, builtin_sgx_roots()))
    assert err is Reason.PCK_CHAIN_UNTRUSTED
    # listed root first, it is still the same chain
    blocks = [c + b"-----END CERTIFICATE-----\n" for c in certs if c]
    reordered = b"".join(reversed(blocks))
    assert verify_pck_chain(reordered, builtin_sgx_roots()).extensions.fmspc.hex() == "00a067110000"


# -- certificates with arbitrary DCAP extension values ------------------------------------------


@pytest.fixture(scope="module")
def kit_platform() -> DcapPlatform:
    return DcapPlatform.create(DcapTestPki.create())


@FUZZ
@given(st.binary(max_size=1500), st.sampled_from([6, 7, 8, 9, 10, 11, 12, 13]))
def test_fuzz_dcap_extension_values(kit_platform: DcapPlatform, value: bytes, number: int) -> None:
    from cryptography import x509

    oid = x509.ObjectIdentifier(f"1.2.840.113741.1337.{number}")
    trust = kit_platform.pki.trust()
    extra = [] if number == 6 else [(oid, value)]
    quote = value if number == 6 else None
    cert = mint_gramine_certificate(
        kit_platform,
        key_type="ec-p256",
        not_before=NOW - timedelta(hours=1),
        quote=quote,
        extra_extensions=extra,
    )
    only(AttestationError, lambda: verify_certificate(cert.cert_der, trust, NOW))


def test_raw_collateral_without_partner_is_malformed() -> None:
    raw = RawCollateral(tcb_info=qvl_collateral().tcb_info)
    assert reason(lambda: verify_raw(raw, builtin_sgx_roots())) is Reason.COLLATERAL_MALFORMED


def test_signed_size_constant() -> None:
    assert SIGNED_SIZE == 432
