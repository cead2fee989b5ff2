"""The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1): the platform's TCB.

The extension value is DER: `SEQUENCE OF SEQUENCE { OBJECT IDENTIFIER, value }` with

    .1 PPID              OCTET STRING (16)
    .2 TCB               SEQUENCE OF SEQUENCE { .2.1-.2.16 INTEGER (CPUSVN components),
                                                .2.17 INTEGER (PCESVN), .2.18 OCTET STRING (16) }
    .3 PCE-ID            OCTET STRING (2)
    .4 FMSPC             OCTET STRING (6)
    .5 SGX Type          ENUMERATED (0 standard, 1 scalable, 2 scalable with integrity)
    .6 PlatformInstanceID OCTET STRING (16)      optional (multi-package platforms)
    .7 Configuration     SEQUENCE OF SEQUENCE { .7.1-.7.3 BOOLEAN }   optional

It is read with this package's strict DER walker: definite minimal lengths, minimal INTEGERs,
each field exactly once, every value of the expected type and size, no trailing bytes. Fields
under the arc that this verifier does not know are skipped (Intel adds them over time); no
decision depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from sengd.attestation import der
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.x509chain import SGX_EXTENSION_OID, ChainCert

TAG_BOOLEAN = 0x01
TAG_ENUMERATED = 0x0A
TAG_OID = 0x06
SGX_ARC = (1, 2, 840, 113741, 1, 13, 1)
TCB_COMPONENTS = 16


def encode_oid(arcs: tuple[int, ...]) -> bytes:
    """The DER contents of an OBJECT IDENTIFIER (without tag and length)."""
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        rest = arc
        chunk = [rest & 0x7F]
        rest >>= 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def _oid(*tail: int) -> bytes:
    return encode_oid(SGX_ARC + tail)


_PPID, _TCB, _PCEID, _FMSPC, _SGX_TYPE, _INSTANCE, _CONFIG = (_oid(n) for n in range(1, 8))
_TCB_COMP = {_oid(2, n): n for n in range(1, 19)}
_CONFIG_FLAGS = {_oid(7, n): n for n in range(1, 4)}


@dataclass(frozen=True, slots=True)
class PckExtensions:
    """The facts Intel certified about one platform at one TCB level."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 CPUSVN components, 0-255
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None


class _Bad(Exception):
    pass


def _integer(data: bytes, tlv: der.Tlv, low: int, high: int) -> int:
    if tlv.tag not in (der.TAG_INTEGER, TAG_ENUMERATED):
        raise _Bad("expected an INTEGER")
    value = data[tlv.start : tlv.end]
    if not value or (len(value) > 1 and value[0] == 0 and value[1] < 0x80) or value[0] >= 0x80:
        raise _Bad("INTEGER is empty, negative or not minimally encoded")
    number = int.from_bytes(value, "big")
    if not low <= number <= high:
        raise _Bad(f"value {number} out of range {low}..{high}")
    return number


def _octets(data: bytes, tlv: der.Tlv, size: int) -> bytes:
    if tlv.tag != der.TAG_OCTET_STRING or tlv.end - tlv.start != size:
        raise _Bad(f"expected an OCTET STRING of {size} bytes")
    return data[tlv.start : tlv.end]


def _boolean(data: bytes, tlv: der.Tlv) -> bool:
    if tlv.tag != TAG_BOOLEAN or tlv.end - tlv.start != 1 or data[tlv.start] not in (0, 0xFF):
        raise _Bad("expected a DER BOOLEAN")
    return data[tlv.start] == 0xFF


def _pairs(data: bytes, outer: der.Tlv) -> dict[bytes, der.Tlv]:
    """OID -> value element of a `SEQUENCE OF SEQUENCE { OID, value }`; duplicates refused."""
    if outer.tag != der.TAG_SEQUENCE:
        raise _Bad("expected a SEQUENCE")
    out: dict[bytes, der.Tlv] = {}
    for item in der.children(data, outer):
        if item.tag != der.TAG_SEQUENCE:
            raise _Bad("expected SEQUENCE { OID, value }")
        parts = der.children(data, item)
        if len(parts) != 2 or parts[0].tag != TAG_OID:
            raise _Bad("expected SEQUENCE { OID, value }")
        oid = data[parts[0].start : parts[0].end]
        if oid in out:
            raise _Bad("a field appears twice")
        out[oid] = parts[1]
    return out


def _require(fields: dict[bytes, der.Tlv], oid: bytes, name: str) -> der.Tlv:
    try:
        return fields[oid]
    except KeyError:
        raise _Bad(f"{name} is missing") from None


def _tcb(data: bytes, tlv: der.Tlv) -> tuple[tuple[int, ...], int, bytes]:
    fields = _pairs(data, tlv)
    comps = tuple(
        _integer(data, _require(fields, _oid(2, n), f"TCB component {n}"), 0, 255)
        for n in range(1, TCB_COMPONENTS + 1)
    )
    pce_svn = _integer(data, _require(fields, _oid(2, 17), "PCESVN"), 0, 0xFFFF)
    cpu_svn = _octets(data, _require(fields, _oid(2, 18), "CPUSVN"), 16)
    return comps, pce_svn, cpu_svn


def _configuration(data: bytes, tlv: der.Tlv) -> dict[int, bool]:
    return {
        _CONFIG_FLAGS[o]: _boolean(data, v)
        for o, v in _pairs(data, tlv).items()
        if o in _CONFIG_FLAGS
    }


def parse_sgx_extension(value: bytes) -> PckExtensions:
    """Decode the extension value; raises `pck-cert-malformed` for anything irregular."""
    data = bytes(value)
    try:
        outer = der.read_tlv(data)
        if outer.end != len(data):
            raise _Bad("trailing bytes after the extension")
        fields = _pairs(data, outer)
        comps, pce_svn, cpu_svn = _tcb(data, _require(fields, _TCB, "TCB"))
        config = _configuration(data, fields[_CONFIG]) if _CONFIG in fields else {}
        instance = fields.get(_INSTANCE)
        return PckExtensions(
            ppid=_octets(data, _require(fields, _PPID, "PPID"), 16),
            tcb_components=comps,
            pce_svn=pce_svn,
            cpu_svn=cpu_svn,
            pce_id=_octets(data, _require(fields, _PCEID, "PCE-ID"), 2),
            fmspc=_octets(data, _require(fields, _FMSPC, "FMSPC"), 6),
            sgx_type=_integer(data, _require(fields, _SGX_TYPE, "SGX Type"), 0, 2),
            platform_instance_id=None if instance is None else _octets(data, instance, 16),
            dynamic_platform=config.get(1),
            cached_keys=config.get(2),
            smt_enabled=config.get(3),
        )
    except (_Bad, der.DerError) as exc:
        raise AttestationError(
            Reason.PCK_CERT_MALFORMED, f"the PCK certificate's SGX extension is invalid: {exc}"
        ) from None


def pck_extensions(cert: ChainCert) -> PckExtensions:
    """The SGX extension of a PCK certificate (exactly one), decoded."""
    try:
        ext = cert.cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID)
    except x509.ExtensionNotFound:
        raise AttestationError(
            Reason.PCK_CERT_MALFORMED, "the PCK certificate has no SGX extension"
        ) from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography
        raise AttestationError(Reason.PCK_CERT_MALFORMED, "unexpected SGX extension type")
    return parse_sgx_extension(value.value)


def encode_sgx_extension(ext: PckExtensions) -> bytes:
    """DER of the extension value (the inverse of `parse_sgx_extension`; for the test kit)."""

    def pair(oid: bytes, value: bytes) -> bytes:
        return der.encode_tlv(der.TAG_SEQUENCE, der.encode_tlv(TAG_OID, oid) + value)

    def integer(tag: int, number: int) -> bytes:
        raw = number.to_bytes(max(1, (number.bit_length() + 8) // 8), "big")
        return der.encode_tlv(tag, raw)

    tcb = b"".join(
        pair(_oid(2, n), integer(der.TAG_INTEGER, c))
        for n, c in enumerate(ext.tcb_components, start=1)
    )
    tcb += pair(_oid(2, 17), integer(der.TAG_INTEGER, ext.pce_svn))
    tcb += pair(_oid(2, 18), der.encode_tlv(der.TAG_OCTET_STRING, ext.cpu_svn))
    body = pair(_PPID, der.encode_tlv(der.TAG_OCTET_STRING, ext.ppid))
    body += pair(_TCB, der.encode_tlv(der.TAG_SEQUENCE, tcb))
    body += pair(_PCEID, der.encode_tlv(der.TAG_OCTET_STRING, ext.pce_id))
    body += pair(_FMSPC, der.encode_tlv(der.TAG_OCTET_STRING, ext.fmspc))
    body += pair(_SGX_TYPE, integer(TAG_ENUMERATED, ext.sgx_type))
    if ext.platform_instance_id is not None:
        body += pair(_INSTANCE, der.encode_tlv(der.TAG_OCTET_STRING, ext.platform_instance_id))
    return der.encode_tlv(der.TAG_SEQUENCE, body)
