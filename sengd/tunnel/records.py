"""DTLS record framing (RFC 6347 §4.1): split a flight into records, pack them into datagrams.

Both TLS stacks we use hand out a whole flight as one concatenated byte string (mbedtls' output
ring, OpenSSL's memory BIO). A datagram may carry several records but never a partial one, so
the flight has to be cut at record boundaries and regrouped into datagrams of at most the path
MTU. Everything here is pure and never raises anything but `RecordError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

HEADER_LEN = 13
"""DTLS record header: type (1), version (2), epoch (2), sequence number (6), length (2)."""

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23

_CONTENT_TYPES = frozenset(
    {CONTENT_CHANGE_CIPHER_SPEC, CONTENT_ALERT, CONTENT_HANDSHAKE, CONTENT_APPLICATION_DATA}
)


class RecordError(ValueError):
    """The bytes are not a sequence of complete DTLS records."""


def looks_like_record(datagram: bytes) -> bool:
    """Cheap plausibility check of the first record header (content type, DTLS major version).

    True does not mean the datagram is valid, only that it is worth giving to a TLS stack.
    """
    return len(datagram) >= HEADER_LEN and datagram[0] in _CONTENT_TYPES and datagram[1] == 0xFE


def iter_records(data: bytes) -> Iterator[memoryview]:
    """Yield each complete record (header included) of `data` as a memoryview into it.

    Raises RecordError if a header is truncated or a record's length runs past the end.
    """
    view = memoryview(data)
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < HEADER_LEN:
            raise RecordError(f"truncated record header at offset {pos}")
        length = (data[pos + 11] << 8) | data[pos + 12]
        stop = pos + HEADER_LEN + length
        if stop > end:
            raise RecordError(f"record at offset {pos} claims {length} bytes, {end - pos} left")
        yield view[pos:stop]
        pos = stop


def pack_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Cut a concatenation of records into datagrams of at most `mtu` bytes each.

    Records keep their order and are never split; consecutive records share a datagram while
    they fit. A single record larger than `mtu` travels alone (the TLS stack promised it would
    not produce one). Raises RecordError if `data` is not a sequence of complete records.
    """
    if len(data) <= mtu:
        # Validate anyway: a caller must not put a torn record on the wire.
        for _ in iter_records(data):
            pass
        return [bytes(data)] if data else []
    datagrams: list[bytes] = []
    current = bytearray()
    for record in iter_records(data):
        if current and len(current) + len(record) > mtu:
            datagrams.append(bytes(current))
            current.clear()
        current += record
    if current:
        datagrams.append(bytes(current))
    return datagrams


def first_epoch1_record(datagrams: Sequence[bytes]) -> bytes | None:
    """The first record of epoch 1 in `datagrams` (in a server's last flight: its encrypted
    Finished), or None."""
    for datagram in datagrams:
        try:
            for record in iter_records(datagram):
                if record[3] == 0 and record[4] == 1:
                    return bytes(record)
        except RecordError:
            return None
    return None
