"""Strict standard base64, as the SENG attester writes it (PROTOCOL.md §3.2).

Standard alphabet, `=` padding, no whitespace or line breaks, canonical (zero) trailing bits:
exactly one encoding is accepted for any byte string, so two different extension values can
never decode to the same bytes.
"""

from __future__ import annotations

import binascii


def strict_b64decode(data: bytes | str) -> bytes:
    """Decode canonical padded base64; raise `ValueError` for anything else."""
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("base64 text must be ASCII") from None
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None
    if binascii.b2a_base64(decoded, newline=False) != data:
        raise ValueError("non-canonical base64")
    return decoded
