"""A strict, pure parser for the DTLS 1.2 ClientHello at the start of a datagram.

The listener reads the ClientHello itself, before mbedtls sees it, to choose the server
context (RSA or ECDSA certificate) from the offered cipher suites, to know whether a cookie is
present (pending-handshake limits apply only to cookie-bearing hellos) and to tell a client's
retransmission from a new handshake (same or different random). Input comes straight from the
network, so the parser accepts nothing it does not fully understand and raises nothing but
`ClientHelloError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sengd.tunnel.records import CONTENT_HANDSHAKE, HEADER_LEN

HANDSHAKE_HEADER_LEN = 12
"""msg_type (1), length (3), message_seq (2), fragment_offset (3), fragment_length (3)."""

HANDSHAKE_CLIENT_HELLO = 1
RANDOM_LEN = 32
MAX_SESSION_ID_LEN = 32


class ClientHelloError(ValueError):
    """The datagram does not start with a complete, well-formed DTLS ClientHello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The fields of a ClientHello that the gateway cares about."""

    record_version: int
    """Record-layer version (0xFEFF = DTLS 1.0, 0xFEFD = DTLS 1.2)."""
    message_seq: int
    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[int, ...]
    """Extension types in the order offered (empty if the hello carries no extension block)."""


def is_client_hello(datagram: bytes) -> bool:
    """Cheap test: does the first record claim to be an epoch-0 handshake record with a ClientHello?

    It looks at four bytes only; `parse_client_hello` does the real validation.
    """
    return (
        len(datagram) > HEADER_LEN
        and datagram[0] == CONTENT_HANDSHAKE
        and datagram[3] == 0
        and datagram[4] == 0
        and datagram[HEADER_LEN] == HANDSHAKE_CLIENT_HELLO
    )


class _Reader:
    """Bounds-checked big-endian reader over one message body."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self._pos = start
        self._end = end

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def take(self, n: int, what: str) -> bytes:
        if n > self._end - self._pos:
            raise ClientHelloError(f"truncated {what}: need {n} bytes, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, length_bytes: int, what: str) -> bytes:
        return self.take(self.uint(length_bytes, f"{what} length"), what)


def parse_client_hello(datagram: bytes) -> ClientHello:
    """Parse the ClientHello in the first record of `datagram`.

    The first record must be a DTLS handshake record of epoch 0 holding exactly one unfragmented
    ClientHello (fragment offset 0, fragment length == message length == record payload). Later
    records of the datagram are ignored. Raises ClientHelloError otherwise.
    """
    if not isinstance(datagram, bytes | bytearray | memoryview):
        raise ClientHelloError("datagram must be bytes")
    data = bytes(datagram)
    record_version, body, message_seq = _unwrap(data)
    client_version = body.uint(2, "client_version")
    if client_version >> 8 != 0xFE:
        raise ClientHelloError(f"client_version {client_version:#06x} is not DTLS")
    random = body.take(RANDOM_LEN, "random")
    session_id = body.vector(1, "session_id")
    if len(session_id) > MAX_SESSION_ID_LEN:
        raise ClientHelloError(f"session_id of {len(session_id)} bytes")
    cookie = body.vector(1, "cookie")
    suites_raw = body.vector(2, "cipher_suites")
    if not suites_raw or len(suites_raw) % 2:
        raise ClientHelloError(f"cipher_suites vector of {len(suites_raw)} bytes")
    cipher_suites = tuple(
        int.from_bytes(suites_raw[i : i + 2], "big") for i in range(0, len(suites_raw), 2)
    )
    compression_methods = body.vector(1, "compression_methods")
    if not compression_methods:
        raise ClientHelloError("empty compression_methods")
    return ClientHello(
        record_version=record_version,
        message_seq=message_seq,
        client_version=client_version,
        random=random,
        session_id=session_id,
        cookie=cookie,
        cipher_suites=cipher_suites,
        compression_methods=compression_methods,
        extensions=_extensions(body),
    )


def _unwrap(data: bytes) -> tuple[int, _Reader, int]:
    """Check the record and handshake headers -> (record version, body reader, message_seq)."""
    if len(data) < HEADER_LEN + HANDSHAKE_HEADER_LEN:
        raise ClientHelloError(f"datagram too short ({len(data)} bytes)")
    if data[0] != CONTENT_HANDSHAKE:
        raise ClientHelloError(f"first record has content type {data[0]}, not handshake")
    record_version = int.from_bytes(data[1:3], "big")
    if data[1] != 0xFE:
        raise ClientHelloError(f"record version {record_version:#06x} is not DTLS")
    if data[3:5] != b"\0\0":
        raise ClientHelloError("ClientHello record is not in epoch 0")
    record_len = int.from_bytes(data[11:13], "big")
    record_end = HEADER_LEN + record_len
    if record_end > len(data):
        raise ClientHelloError(f"record claims {record_len} bytes, datagram has fewer")
    hs = _Reader(data, HEADER_LEN, record_end)
    if hs.uint(1, "handshake type") != HANDSHAKE_CLIENT_HELLO:
        raise ClientHelloError("handshake message is not a ClientHello")
    length = hs.uint(3, "handshake length")
    message_seq = hs.uint(2, "message_seq")
    fragment_offset = hs.uint(3, "fragment offset")
    fragment_length = hs.uint(3, "fragment length")
    if fragment_offset != 0 or fragment_length != length:
        raise ClientHelloError("fragmented ClientHello")
    if length != hs.remaining:
        raise ClientHelloError(
            f"ClientHello length {length} does not match record payload {hs.remaining}"
        )
    return record_version, hs, message_seq


def _extensions(body: _Reader) -> tuple[int, ...]:
    """The extension types of the optional extension block that must end the body."""
    if not body.remaining:
        return ()
    block = body.vector(2, "extensions")
    if body.remaining:
        raise ClientHelloError(f"{body.remaining} bytes after the extensions")
    ext = _Reader(block, 0, len(block))
    types: list[int] = []
    while ext.remaining:
        types.append(ext.uint(2, "extension type"))
        ext.vector(2, "extension data")
    return tuple(types)
