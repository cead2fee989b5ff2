"""A minimal, strict DER walker: just enough to take the exact bytes of X.509 parts.

`cryptography` parses certificates, but it re-encodes public keys instead of handing out the
bytes the certificate carries. Key binding must hash exactly what the enclave put into its
certificate (PROTOCOL.md §6: the SubjectPublicKeyInfo BIT STRING contents), so this module
locates those bytes. It understands definite-length, low-tag-number DER only and raises
`DerError` for anything else; it never interprets values beyond what its callers need.
"""

from __future__ import annotations

from typing import NamedTuple

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_SEQUENCE = 0x30
TAG_CONTEXT_0 = 0xA0


class DerError(ValueError):
    """The bytes are not the DER structure the caller asked for."""


class Tlv(NamedTuple):
    """One element: its tag, where its contents lie in the buffer, and where it ends."""

    tag: int
    start: int  # first byte of the contents
    end: int  # one past the last byte of the contents (= the end of the element)


def read_tlv(data: bytes, offset: int = 0, limit: int | None = None) -> Tlv:
    """Read the element at `offset`, which must end at or before `limit` (default: the buffer).

    Strict DER: single-byte tags, definite minimal lengths.
    """
    end_limit = len(data) if limit is None else limit
    if offset + 2 > end_limit:
        raise DerError("truncated element header")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not supported")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length is not DER")
        if count > 4:
            raise DerError("length field too large")
        if pos + count > end_limit:
            raise DerError("truncated length field")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("non-minimal length encoding")
        pos += count
    if pos + length > end_limit:
        raise DerError("element extends past its container")
    return Tlv(tag, pos, pos + length)


def expect(data: bytes, offset: int, tag: int, limit: int | None = None) -> Tlv:
    """`read_tlv`, and require `tag`."""
    tlv = read_tlv(data, offset, limit)
    if tlv.tag != tag:
        raise DerError(f"expected tag 0x{tag:02x} at offset {offset}, found 0x{tlv.tag:02x}")
    return tlv


def children(data: bytes, parent: Tlv) -> list[Tlv]:
    """The elements directly inside a constructed element, in order."""
    out: list[Tlv] = []
    pos = parent.start
    while pos < parent.end:
        tlv = read_tlv(data, pos, parent.end)
        out.append(tlv)
        pos = tlv.end
    return out


def encode_length(length: int) -> bytes:
    """The DER encoding of a length."""
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode_tlv(tag: int, contents: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + encode_length(len(contents)) + contents


class CertificateParts(NamedTuple):
    """The three parts of a DER `Certificate`, each as its complete encoded element."""

    tbs: bytes
    signature_algorithm: bytes
    signature_value: bytes  # the BIT STRING element


def split_certificate(der: bytes) -> CertificateParts:
    """Split `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }`."""
    outer = expect(der, 0, TAG_SEQUENCE)
    if outer.end != len(der):
        raise DerError("trailing bytes after the certificate")
    parts = children(der, outer)
    if len(parts) != 3:
        raise DerError("a certificate has exactly three parts")
    tbs, alg, sig = parts
    if tbs.tag != TAG_SEQUENCE or alg.tag != TAG_SEQUENCE or sig.tag != TAG_BIT_STRING:
        raise DerError("certificate parts have the wrong types")

    def whole(tlv: Tlv, begin: int) -> bytes:
        return der[begin : tlv.end]

    return CertificateParts(whole(tbs, outer.start), whole(alg, tbs.end), whole(sig, alg.end))


def signature_bytes(parts: CertificateParts) -> bytes:
    """The signature value of a split certificate, which must be whole bytes.

    `cryptography` accepts a signature BIT STRING that declares unused bits and verifies the
    same signature bytes, so two different byte strings would carry one valid certificate.
    """
    sig = read_tlv(parts.signature_value)
    if sig.end - sig.start < 2 or parts.signature_value[sig.start] != 0:
        raise DerError("the signature BIT STRING must have no unused bits")
    return parts.signature_value[sig.start + 1 : sig.end]


def check_certificate_encoding(der: bytes) -> None:
    """Reject certificate encodings that X.509 libraries tolerate but DER forbids."""
    signature_bytes(split_certificate(der))


def tbs_spki(tbs: bytes) -> bytes:
    """The complete SubjectPublicKeyInfo element inside a DER `TBSCertificate`."""
    outer = expect(tbs, 0, TAG_SEQUENCE)
    fields = children(tbs, outer)
    index = 1 if fields and fields[0].tag == TAG_CONTEXT_0 else 0
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < index + 6:
        raise DerError("TBSCertificate is missing fields")
    expected = (TAG_INTEGER, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE, TAG_SEQUENCE)
    for tlv, tag in zip(fields[index : index + 6], expected, strict=True):
        if tlv.tag != tag:
            raise DerError("TBSCertificate fields have the wrong types")
    spki = fields[index + 5]
    begin = fields[index + 4].end
    return tbs[begin : spki.end]


def spki_key_bits(spki: bytes) -> bytes:
    """The contents of the subjectPublicKey BIT STRING (without its unused-bits byte).

    For RSA this is the DER `RSAPublicKey`, for EC the X9.62 point: the bytes the SENG
    attester hashes into report_data.
    """
    outer = expect(spki, 0, TAG_SEQUENCE)
    if outer.end != len(spki):
        raise DerError("trailing bytes after the SubjectPublicKeyInfo")
    fields = children(spki, outer)
    if len(fields) != 2 or fields[0].tag != TAG_SEQUENCE or fields[1].tag != TAG_BIT_STRING:
        raise DerError("SubjectPublicKeyInfo must be SEQUENCE { AlgorithmIdentifier, BIT STRING }")
    bits = fields[1]
    if bits.end - bits.start < 1 or spki[bits.start] != 0:
        raise DerError("subjectPublicKey must be a whole number of bytes")
    return spki[bits.start + 1 : bits.end]
