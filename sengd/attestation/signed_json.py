"""Intel's signed JSON collateral as PCS serves it: `{"<name>":{...},"signature":"<hex>"}`.

The signature (ECDSA P-256 / SHA-256, raw r||s as 128 lowercase hex digits) covers the exact
bytes of the inner object as they appear in the body, so the inner object is located, not
re-serialised. The envelope itself is not signed, so it is parsed strictly: exactly the two
members, no whitespace between its tokens, at most one trailing newline, lowercase hex. The
inner object is parsed as strict JSON (UTF-8, no duplicate keys, no NaN) for its fields.

Field readers here raise `CollateralFormatError`; callers turn it into `collateral-malformed`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_BODY_BYTES = 256 * 1024
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{128}")
_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?Z"
)


class CollateralFormatError(ValueError):
    """Collateral bytes are not what their format requires (the message says what)."""


@dataclass(frozen=True, slots=True)
class SignedBody:
    """The parts of a PCS body: which member, its exact bytes, the raw signature (r||s)."""

    name: str
    inner: bytes
    signature: bytes
    document: dict[str, Any]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CollateralFormatError(f"duplicate JSON key {key[:40]!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise CollateralFormatError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def strict_object(text: str, pos: int = 0) -> tuple[dict[str, Any], int]:
    """Decode one JSON object starting at `pos`; return it and where it ends."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except RecursionError:
        raise CollateralFormatError("JSON nests too deeply") from None
    except ValueError as exc:
        if isinstance(exc, CollateralFormatError):
            raise
        raise CollateralFormatError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CollateralFormatError("expected a JSON object")
    return value, end


def _key(text: str, pos: int) -> tuple[str, int]:
    if not text.startswith('"', pos):
        raise CollateralFormatError(f"expected a member name at offset {pos}")
    end = text.find('"', pos + 1)
    if end < 0 or text[end + 1 : end + 2] != ":":
        raise CollateralFormatError(f"expected a member name at offset {pos}")
    return text[pos + 1 : end], end + 2


def parse_signed_body(body: bytes, names: tuple[str, ...]) -> SignedBody:
    """Split a PCS body whose signed member is one of `names`."""
    if len(body) > MAX_BODY_BYTES:
        raise CollateralFormatError(f"body is {len(body)} bytes (limit {MAX_BODY_BYTES})")
    raw = bytes(body[:-1]) if body.endswith(b"\n") else bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralFormatError("body is not UTF-8") from None
    if not text.startswith("{") or not text.endswith("}"):
        raise CollateralFormatError("body is not a JSON object")
    members: dict[str, tuple[int, int]] = {}
    pos = 1
    while True:
        key, pos = _key(text, pos)
        if key in members:
            raise CollateralFormatError(f"member {key[:40]!r} appears twice")
        if key == "signature":
            end = text.find('"', pos + 1)
            if not text.startswith('"', pos) or end < 0:
                raise CollateralFormatError("signature must be a string")
            members[key] = (pos + 1, end)
            pos = end + 1
        else:
            _, end = strict_object(text, pos)
            members[key] = (pos, end)
            pos = end
        if text[pos : pos + 1] == ",":
            pos += 1
            continue
        if pos != len(text) - 1:
            raise CollateralFormatError(f"unexpected bytes at offset {pos} of the body")
        break
    name = next((n for n in names if n in members), None)
    if name is None or set(members) != {name, "signature"}:
        raise CollateralFormatError(
            f"body must hold exactly {' or '.join(names)} and signature, not {sorted(members)}"
        )
    start, end = members[name]
    sig_start, sig_end = members["signature"]
    sig_hex = text[sig_start:sig_end]
    if not _HEX_SIGNATURE.fullmatch(sig_hex):
        raise CollateralFormatError("signature must be 128 lowercase hex digits (r||s)")
    inner_text = text[start:end]
    document, _ = strict_object(inner_text)
    return SignedBody(name, inner_text.encode("utf-8"), bytes.fromhex(sig_hex), document)


def field(doc: dict[str, Any], key: str, kind: type[Any], where: str) -> Any:
    """`doc[key]`, which must exist and be of `kind` (bool is never an int here)."""
    if key not in doc:
        raise CollateralFormatError(f"{where}: {key} is missing")
    value = doc[key]
    if isinstance(value, bool) and kind is not bool:
        raise CollateralFormatError(f"{where}: {key} must be {kind.__name__}")
    if not isinstance(value, kind):
        raise CollateralFormatError(f"{where}: {key} must be {kind.__name__}")
    return value


def integer(doc: dict[str, Any], key: str, where: str, low: int = 0, high: int = 2**32 - 1) -> int:
    """A bounded non-negative integer field."""
    value: int = field(doc, key, int, where)
    if not low <= value <= high:
        raise CollateralFormatError(f"{where}: {key} = {value} is out of range {low}..{high}")
    return value


def hex_field(doc: dict[str, Any], key: str, size: int, where: str) -> bytes:
    """A hex string field of exactly `size` bytes (either case)."""
    text: str = field(doc, key, str, where)
    if len(text) != 2 * size or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise CollateralFormatError(f"{where}: {key} must be {2 * size} hex digits")
    return bytes.fromhex(text)


def date_field(doc: dict[str, Any], key: str, where: str) -> datetime:
    """An ISO 8601 UTC time field (`YYYY-MM-DDThh:mm:ss[.fraction]Z`)."""
    text: str = field(doc, key, str, where)
    match = _DATE.fullmatch(text)
    if match is None:
        raise CollateralFormatError(f"{where}: {key} {text[:40]!r} is not YYYY-MM-DDThh:mm:ssZ")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise CollateralFormatError(f"{where}: {key} is not a valid date ({exc})") from None


def advisory_ids(doc: dict[str, Any], where: str) -> tuple[str, ...]:
    """The optional `advisoryIDs` list (short strings)."""
    if "advisoryIDs" not in doc:
        return ()
    raw = doc["advisoryIDs"]
    if not isinstance(raw, list) or not all(isinstance(a, str) and 0 < len(a) <= 64 for a in raw):
        raise CollateralFormatError(f"{where}: advisoryIDs must be a list of short strings")
    return tuple(raw)
