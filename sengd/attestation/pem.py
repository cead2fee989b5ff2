"""Strict PEM: the text form Intel uses for PCK chains, signing chains and CRLs.

DCAP evidence carries certificates as PEM text (the PCK chain inside the quote, the issuer
chains of the collateral, the sgx-ra-tls extensions). None of that text is signed, so a lenient
parser would accept two byte strings for one certificate. This one accepts exactly: blocks of
`-----BEGIN <label>-----`, base64 lines of one width (up to 76 characters; the last line may
be shorter) that decode canonically, and
`-----END <label>-----`, separated by single newlines; after the last block nothing, one
newline, or (where `allow_nul`) one newline and one NUL byte, as the quote's certification data
ends. Anything else is a `PemError`: no two different texts that a single changed byte turns
into each other carry the same certificates.
"""

from __future__ import annotations

import re
import urllib.parse

from sengd.attestation.b64 import strict_b64decode

CERTIFICATE = "CERTIFICATE"
X509_CRL = "X509 CRL"
MAX_LINE = 76
MAX_BLOCKS = 8
_ESCAPES = re.compile(rb"(?:[^%]|%[0-9A-F]{2})*")


class PemError(ValueError):
    """The text is not strict PEM of the expected kind (the message says where)."""


def _block(lines: list[bytes], start: int, label: bytes) -> tuple[bytes, int]:
    begin = b"-----BEGIN " + label + b"-----"
    end = b"-----END " + label + b"-----"
    if lines[start] != begin:
        raise PemError(f"line {start + 1} is not {begin.decode()}")
    body: list[bytes] = []
    index = start + 1
    while index < len(lines) and lines[index] != end:
        line = lines[index]
        if not 0 < len(line) <= MAX_LINE:
            raise PemError(f"line {index + 1} has {len(line)} characters (1-{MAX_LINE} allowed)")
        body.append(line)
        index += 1
    if index == len(lines):
        raise PemError(f"{begin.decode()} without {end.decode()}")
    if not body:
        raise PemError(f"empty {label.decode()} block")
    width = len(body[0])
    if any(len(line) != width for line in body[:-1]) or len(body[-1]) > width:
        # Otherwise moving a line break would spell the same certificate another way.
        raise PemError(f"{label.decode()} block lines are not all {width} characters wide")
    try:
        return strict_b64decode(b"".join(body)), index + 1
    except ValueError as exc:
        raise PemError(f"{label.decode()} block is not canonical base64 ({exc})") from None


def parse_pem(data: bytes, label: str = CERTIFICATE, *, allow_nul: bool = True) -> list[bytes]:
    """The DER contents of every `label` block in `data`, in order (at least one)."""
    text = bytes(data)
    if allow_nul and text.endswith(b"\n\0"):
        text = text[:-1]
    if text.endswith(b"\n"):
        text = text[:-1]
    if not text:
        raise PemError("no PEM block")
    lines = text.split(b"\n")
    out: list[bytes] = []
    index = 0
    tag = label.encode("ascii")
    while index < len(lines):
        if len(out) == MAX_BLOCKS:
            raise PemError(f"more than {MAX_BLOCKS} PEM blocks")
        der, index = _block(lines, index, tag)
        out.append(der)
    return out


def parse_pem_or_urlencoded(data: bytes, label: str = CERTIFICATE) -> list[bytes]:
    """`parse_pem`, also accepting the URL-encoded form PCS puts into HTTP headers.

    URL-encoded text is recognised by its first bytes (`-----BEGIN%20`); it must decode to
    strict PEM, with no raw whitespace and upper-case hex in its escapes (`%0A`, as PCS writes
    them), so that no single changed byte (`%0a`) spells the same text another way.
    """
    return parse_pem(url_decode_pem(data), label)


def url_decode_pem(data: bytes) -> bytes:
    """URL-encoded PEM as plain text (strictly, see `parse_pem_or_urlencoded`); plain text as is."""
    text = bytes(data)
    if not text.startswith(b"-----BEGIN%20"):
        return text
    if any(c in text for c in b"\n\r \0"):
        raise PemError("URL-encoded PEM must not contain raw whitespace")
    if not _ESCAPES.fullmatch(text):
        raise PemError("URL-encoded PEM must escape with % and two upper-case hex digits")
    return urllib.parse.unquote_to_bytes(text)


def is_pem(data: bytes, label: str) -> bool:
    """Whether `data` starts like a PEM block of `label` (plain or URL-encoded)."""
    return data.startswith(f"-----BEGIN {label}-----".encode()) or data.startswith(
        f"-----BEGIN%20{label.replace(' ', '%20')}-----".encode()
    )
