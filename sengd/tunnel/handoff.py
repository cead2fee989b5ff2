"""Messages between the forwarding process and its handshake workers (sans-IO codec).

The forwarding process keeps established connections; handshake workers run the cookie lobby
and the handshakes (`DtlsListener(handoff=True)`), so elliptic-curve work never stalls
forwarding. They talk over one SOCK_SEQPACKET socket pair per worker, one message per packet:

    forwarding -> worker   INIT (once), DATAGRAM
    worker -> forwarding   READY (once), STARTED, HANDOFF, CLOSED, STATS

Every message starts with its kind (one byte) and, except INIT and READY, the index of the
listener it concerns (0: port P, 1: port P+1). Peer addresses are 4 bytes of IPv4 address and
2 bytes of port; variable fields are length-prefixed. Both ends are our own code, but the
decoder still checks every length, kind and enumerated value and raises `HandoffError`: a
worker that sends something else is broken and is restarted, never believed.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sengd.tunnel.dtls import (
    Address,
    CloseReason,
    CredentialError,
    DropReason,
    HandshakeHandoff,
    KeyType,
    ServerCredential,
)
from sengd.tunnel.recordlayer import RecordState

INIT = ord("i")
READY = ord("r")
DATAGRAM = ord("d")
STARTED = ord("s")
HANDOFF = ord("h")
CLOSED = ord("c")
STATS = ord("t")

MAX_MESSAGE = 1 << 20
"""Largest message either side sends or accepts (a handoff carries a certificate and a flight
of at most a few tens of kilobytes)."""

_HEAD = struct.Struct("!BB4sH")  # kind, listener, IPv4, port
_HANDOFF = struct.Struct("!BBHQQQ")  # key type, peer spoke, epoch, out_seq, in_top, in_window
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_STATS = struct.Struct("!BBII")  # kind, listener, hello-verify-requests, export failures

_KEY_TYPES = (KeyType.RSA, KeyType.ECDSA)
_CLOSE_REASONS = {reason.value: reason for reason in CloseReason}
_DROP_REASONS = {reason.value: reason for reason in DropReason}


class HandoffError(ValueError):
    """A message that is not what the protocol above allows."""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a handshake worker needs to run its listeners (sent in INIT)."""

    credentials: tuple[ServerCredential, ...]
    mtu: int
    handshake_timeout: float
    max_pending: int
    max_pending_per_host: int
    index: int
    log_level: str = "info"
    engine: str = "openssl"
    """"openssl" (`OpenSslHandshakes`) or "mbedtls" (`DtlsListener(handoff=True)`)."""


@dataclass(frozen=True, slots=True)
class Started:
    listener: int
    addr: Address
    client_random: bytes


@dataclass(frozen=True, slots=True)
class Handoff:
    listener: int
    handoff: HandshakeHandoff


@dataclass(frozen=True, slots=True)
class Closed:
    listener: int
    addr: Address
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the previous STATS of the same listener (deltas, not totals)."""

    listener: int
    hello_verify_requests: int
    export_failures: int
    drops: Mapping[DropReason, int]


@dataclass(frozen=True, slots=True)
class Datagram:
    listener: int
    addr: Address
    data: bytes


WorkerMessage = Started | Handoff | Closed | Stats


# -- encoding --------------------------------------------------------------------------------


def _head(kind: int, listener: int, addr: Address) -> bytes:
    return _HEAD.pack(kind, listener, socket.inet_aton(addr[0]), addr[1])


def _blob(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _blobs(items: tuple[bytes, ...]) -> bytes:
    return _U16.pack(len(items)) + b"".join(_blob(item) for item in items)


def encode_datagram(listener: int, addr: Address, data: bytes) -> bytes:
    """DATAGRAM: one UDP payload received from `addr` on `listener`."""
    return _head(DATAGRAM, listener, addr) + data


def encode_started(listener: int, addr: Address, client_random: bytes) -> bytes:
    return _head(STARTED, listener, addr) + client_random


def encode_closed(listener: int, addr: Address, reason: CloseReason) -> bytes:
    return _head(CLOSED, listener, addr) + reason.value.encode("ascii")


def encode_handoff(listener: int, handoff: HandshakeHandoff) -> bytes:
    r = handoff.records
    return b"".join(
        (
            _head(HANDOFF, listener, handoff.addr),
            _HANDOFF.pack(
                _KEY_TYPES.index(handoff.key_type),
                handoff.peer_spoke,
                r.epoch,
                r.out_seq,
                r.in_top,
                r.in_window,
            ),
            _blob(handoff.peer_cert_der),
            _blob(handoff.cipher_suite.encode("ascii")),
            _blob(handoff.client_random),
            _blob(r.read_key),
            _blob(r.read_salt),
            _blob(r.write_key),
            _blob(r.write_salt),
            _blobs(handoff.final_flight),
            _blobs(handoff.early_data),
        )
    )


def encode_stats(
    listener: int,
    hello_verify_requests: int,
    export_failures: int,
    drops: Mapping[DropReason, int],
) -> bytes:
    body = b"".join(
        _blob(reason.value.encode("ascii")) + _U32.pack(count)
        for reason, count in drops.items()
        if count
    )
    return (
        _STATS.pack(STATS, listener, hello_verify_requests, export_failures)
        + _U16.pack(sum(1 for c in drops.values() if c))
        + body
    )


def encode_init(settings: WorkerSettings) -> bytes:
    header = json.dumps(
        {
            "mtu": settings.mtu,
            "handshake_timeout": settings.handshake_timeout,
            "max_pending": settings.max_pending,
            "max_pending_per_host": settings.max_pending_per_host,
            "index": settings.index,
            "log_level": settings.log_level,
            "engine": settings.engine,
        }
    ).encode()
    creds = tuple(
        part for c in settings.credentials for part in (c.certificate_der, c.private_key_der)
    )
    return bytes((INIT,)) + _blob(header) + _blobs(creds)


def encode_ready() -> bytes:
    return bytes((READY,))


# -- decoding --------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise HandoffError("message truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def blob(self) -> bytes:
        (size,) = self.unpack(_U32)
        return self.take(size)

    def blobs(self) -> tuple[bytes, ...]:
        (count,) = self.unpack(_U16)
        return tuple(self.blob() for _ in range(count))

    def text(self) -> str:
        try:
            return self.blob().decode("ascii")
        except UnicodeDecodeError:
            raise HandoffError("text field is not ASCII") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise HandoffError(f"{len(self.data) - self.pos} bytes after the message")


def _decode_head(data: bytes) -> tuple[int, int, Address, _Reader]:
    if len(data) < _HEAD.size:
        raise HandoffError("message shorter than its header")
    kind, listener, ip, port = _HEAD.unpack_from(data)
    if listener not in (0, 1):
        raise HandoffError(f"listener index {listener}")
    return kind, listener, (socket.inet_ntoa(ip), port), _Reader(data, _HEAD.size)


def decode_datagram(data: bytes) -> Datagram:
    """Decode a message to a worker (DATAGRAM). Raises HandoffError."""
    kind, listener, addr, reader = _decode_head(data)
    if kind != DATAGRAM:
        raise HandoffError(f"unexpected message kind {kind} for a worker")
    return Datagram(listener, addr, data[reader.pos :])


def decode_worker_message(data: bytes) -> WorkerMessage:
    """Decode a message from a worker (STARTED, HANDOFF, CLOSED, STATS). Raises HandoffError."""
    if data[:1] == bytes((STATS,)):
        return _decode_stats(data)
    kind, listener, addr, reader = _decode_head(data)
    if kind == STARTED:
        random = reader.take(32)
        reader.end()
        return Started(listener, addr, random)
    if kind == CLOSED:
        text = data[reader.pos :].decode("ascii", "replace")
        reason = _CLOSE_REASONS.get(text)
        if reason is None:
            raise HandoffError(f"unknown close reason {text!r}")
        return Closed(listener, addr, reason)
    if kind == HANDOFF:
        return Handoff(listener, _decode_handoff(addr, reader))
    raise HandoffError(f"unexpected message kind {kind} from a worker")


def _decode_handoff(addr: Address, reader: _Reader) -> HandshakeHandoff:
    key_type, spoke, epoch, out_seq, in_top, in_window = reader.unpack(_HANDOFF)
    if key_type >= len(_KEY_TYPES) or spoke > 1:
        raise HandoffError("bad key type or flag")
    cert = reader.blob()
    suite = reader.text()
    random = reader.blob()
    keys = [reader.blob() for _ in range(4)]
    final_flight = reader.blobs()
    early_data = reader.blobs()
    reader.end()
    if len(random) != 32 or not cert:
        raise HandoffError("bad client random or empty certificate")
    if len(keys[0]) not in (16, 32) or len(keys[2]) != len(keys[0]):
        raise HandoffError("bad key length")
    if len(keys[1]) != 4 or len(keys[3]) != 4:
        raise HandoffError("bad salt length")
    return HandshakeHandoff(
        addr=addr,
        peer_cert_der=cert,
        cipher_suite=suite,
        key_type=_KEY_TYPES[key_type],
        client_random=random,
        records=RecordState(
            read_key=keys[0],
            read_salt=keys[1],
            write_key=keys[2],
            write_salt=keys[3],
            epoch=epoch,
            out_seq=out_seq,
            in_top=in_top,
            in_window=in_window,
        ),
        final_flight=final_flight,
        peer_spoke=bool(spoke),
        early_data=early_data,
    )


def _decode_stats(data: bytes) -> Stats:
    reader = _Reader(data, 0)
    _, listener, hvr, failures = reader.unpack(_STATS)
    if listener not in (0, 1):
        raise HandoffError(f"listener index {listener}")
    drops: dict[DropReason, int] = {}
    (count,) = reader.unpack(_U16)
    for _ in range(count):
        name = reader.text()
        (value,) = reader.unpack(_U32)
        reason = _DROP_REASONS.get(name)
        if reason is None:
            raise HandoffError(f"unknown drop reason {name!r}")
        drops[reason] = drops.get(reason, 0) + value
    reader.end()
    return Stats(listener, hvr, failures, drops)


ENGINES = ("openssl", "mbedtls")


def _engine(value: object) -> str:
    if value not in ENGINES:
        raise ValueError(f"unknown handshake engine {value!r}")
    return str(value)


def decode_init(data: bytes) -> WorkerSettings:
    """Decode INIT. Raises HandoffError (credentials that do not load included)."""
    if data[:1] != bytes((INIT,)):
        raise HandoffError("expected INIT")
    reader = _Reader(data, 1)
    try:
        header = json.loads(reader.blob())
    except (ValueError, RecursionError) as exc:
        raise HandoffError(f"INIT header: {exc}") from None
    parts = reader.blobs()
    reader.end()
    if not isinstance(header, dict) or len(parts) % 2 or not parts:
        raise HandoffError("INIT: bad header or credential list")
    try:
        creds = tuple(
            ServerCredential.from_bytes(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)
        )
        return WorkerSettings(
            credentials=creds,
            mtu=int(header["mtu"]),
            handshake_timeout=float(header["handshake_timeout"]),
            max_pending=int(header["max_pending"]),
            max_pending_per_host=int(header["max_pending_per_host"]),
            index=int(header["index"]),
            log_level=str(header.get("log_level", "info")),
            engine=_engine(header.get("engine", "openssl")),
        )
    except (KeyError, TypeError, ValueError, OverflowError, CredentialError) as exc:
        raise HandoffError(f"INIT: {exc}") from None
