"""Sans-IO DTLS 1.2 server endpoint over python-mbedtls, one `DtlsListener` per UDP port.

The listener never touches a socket or a clock. The I/O shell feeds it every datagram received
on its port with `datagram_received(data, addr, now)`, calls `handle_timers(now)` when
`next_timer()` is due, and after each call drains `datagrams_to_send()` (send each with
`sendto`) and `events()` (act on them). Application data goes out with `send(addr, plaintext)`.

How a client gets in:

1. Every datagram from an address without a connection must start with a ClientHello. It is
   parsed here (`clienthello.py`) to pick the server credential from the offered suites and is
   then run through one shared *lobby* buffer per credential: mbedtls answers a hello without a
   valid cookie with a HelloVerifyRequest and keeps nothing. A spoofed source therefore costs a
   few microseconds and no memory.
2. Once a cookie verifies, the lobby buffer becomes that client's connection (and a fresh lobby
   is made). Handshake messages are reassembled by mbedtls; outgoing flights are re-split into
   records and packed into datagrams of at most `mtu` bytes. Retransmissions run on our own
   schedule because mbedtls' timer only fires inside a call.
3. When the handshake is over the client certificate is copied at once (a later fatal error
   wipes it) and `HandshakeCompleted` is emitted. No certificate -> close, no event but a
   `ConnectionClosed(..., NO_CLIENT_CERTIFICATE, established=False)`.

4. Records of an established connection are taken over from mbedtls (`export_keys`): keys
   exported from mbedtls, AES-GCM through `cryptography`, our own anti-replay window, alerts
   and close_notify (`recordlayer.py`, `keyexport.py`). The switch happens when the handshake
   completes (the session's master secret, accepted only if the derived keys decrypt the
   Finished mbedtls encrypted) or, failing that, at the client's first record (mbedtls'
   saved context). mbedtls' ~100 KB
   of per-connection state is freed then. Should the client retransmit its last flight
   afterwards, our last flight is resent as mbedtls would.

A ClientHello with a new random from an address that already has a connection goes through the
lobby too; the old connection is replaced (`ConnectionClosed(..., REPLACED)`) only when the new
cookie verifies, so a spoofed hello cannot kill a session. Malformed input is dropped and
counted in `drops`; nothing raised by mbedtls leaves the listener, and one connection's failure
never touches another.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mbedtls import _random as mbedtls_random
from mbedtls import pk as mbedtls_pk
from mbedtls import tls as mbedtls_tls
from mbedtls import version as mbedtls_version
from mbedtls import x509 as mbedtls_x509
from mbedtls.exceptions import TLSError

from sengd.tunnel.clienthello import (
    ClientHello,
    ClientHelloError,
    is_client_hello,
    parse_client_hello,
)
from sengd.tunnel.endpoint import DropReason as DropReason  # noqa: PLC0414 - re-exported
from sengd.tunnel.endpoint import Endpoint
from sengd.tunnel.keyexport import SUITES as KEY_SUITES
from sengd.tunnel.keyexport import (
    ExportedSession,
    KeyExportError,
    derive_keys,
    parse_context,
    prefer_ecdhe_groups,
    session_reader,
)
from sengd.tunnel.recordlayer import (
    ALERT_CLOSE_NOTIFY,
    ALERT_FATAL,
    ALERT_WARNING,
    CONTENT_ALERT,
    RecordLayer,
    RecordRejected,
    RecordState,
    SequenceExhausted,
    verified_keys,
)
from sengd.tunnel.records import (
    CONTENT_APPLICATION_DATA,
    CONTENT_HANDSHAKE,
    HEADER_LEN,
    RecordError,
    first_epoch1_record,
    iter_records,
    looks_like_record,
    pack_datagrams,
)

_log = logging.getLogger(__name__)

Address = tuple[str, int]
"""A peer's (IPv4 address, UDP port) exactly as `socket.recvfrom` returns it."""

DEFAULT_MTU = 1472
"""Largest UDP payload we emit: a 1500-byte link minus IPv4 (20) and UDP (8) headers."""

RECORD_OVERHEAD = 37
"""Bytes an AES-GCM application-data record adds: header 13, explicit nonce 8, tag 16."""

MAX_DATAGRAM = 16384
"""Datagrams longer than this are dropped unread (no client flight comes near it)."""

_RETRANSMIT_MIN = 1.0
_RETRANSMIT_MAX = 16.0
_REPOLL = 0.05
_MAX_STEPS = 64
_MAX_RECORDS = 1024
_READ_CHUNK = 16384

# The stubs type the HandshakeStep members as int; at run time they are enum members.
_HANDSHAKE_OVER: Final = cast(mbedtls_tls.HandshakeStep, mbedtls_tls.HandshakeStep.HANDSHAKE_OVER)
_HELLO_REQUEST: Final = cast(mbedtls_tls.HandshakeStep, mbedtls_tls.HandshakeStep.HELLO_REQUEST)
_CLIENT_HELLO: Final = cast(mbedtls_tls.HandshakeStep, mbedtls_tls.HandshakeStep.CLIENT_HELLO)

_ERR_PEER_CLOSE_NOTIFY = 0x7880
_ERR_FATAL_ALERT_MESSAGE = 0x7780
_ERR_TIMEOUT = 0x6800

_CLOSE_NOTIFY_ALERT: Final = bytes((ALERT_WARNING, ALERT_CLOSE_NOTIFY))
_DECODE_ERROR_ALERT: Final = bytes((ALERT_FATAL, 50))

KEY_EXPORT_SUPPORTED: Final = tuple(mbedtls_version.version_info[:2]) == (2, 28)
"""Whether this Mbed TLS writes the saved-context layout `keyexport.parse_context` reads."""


def _reseed_after_fork() -> None:
    # fork() copies mbedtls' process-global CTR-DRBG: without a reseed parent and child would
    # produce the same randoms and ephemeral keys.
    mbedtls_random.default_rng()._reseed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed_after_fork)


class KeyType(StrEnum):
    """Server key type; it decides the one cipher suite that key serves."""

    RSA = "rsa"
    ECDSA = "ecdsa"


SUITES: dict[KeyType, tuple[str, int]] = {
    KeyType.RSA: ("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", 0xC030),
    KeyType.ECDSA: ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", 0xC02B),
}
"""The suite (mbedtls name, IANA id) served with each key type (PROTOCOL.md §1.2)."""

_EC_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


class DtlsError(Exception):
    """The caller used the listener wrongly (unknown address, oversized plaintext, ...)."""


class CredentialError(ValueError):
    """A server certificate or key cannot be used."""


class CloseReason(StrEnum):
    """Why a connection ended (the value appears in logs; never rename one)."""

    CLOSE_NOTIFY = "close-notify"
    FATAL_ALERT = "fatal-alert"
    PROTOCOL_ERROR = "protocol-error"
    HANDSHAKE_TIMEOUT = "handshake-timeout"
    HANDSHAKE_FAILED = "handshake-failed"
    NO_CLIENT_CERTIFICATE = "no-client-certificate"
    REPLACED = "replaced"
    EXPORT_FAILED = "export-failed"
    """(handoff mode) The keys could not be exported: the connection cannot leave its worker."""
    WORKER_LOST = "worker-lost"
    """The handshake worker that ran this handshake exited."""


@dataclass(frozen=True)
class ServerCredential:
    """A server certificate with its private key, both as DER, and the key type they serve."""

    certificate_der: bytes
    private_key_der: bytes = field(repr=False)
    key_type: KeyType

    @classmethod
    def from_bytes(
        cls, certificate: bytes, private_key: bytes, password: bytes | None = None
    ) -> ServerCredential:
        """Build from PEM or DER bytes; checks that key and certificate belong together.

        Accepts RSA keys (>= 2048 bits) and EC keys on P-256, P-384 or P-521.
        Raises CredentialError naming the problem.
        """
        cert = _load_certificate(certificate)
        key = _load_private_key(private_key, password)
        key_type: KeyType
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise CredentialError(f"RSA key of {key.key_size} bits is too small")
            key_type = KeyType.RSA
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name not in _EC_CURVES:
                raise CredentialError(f"EC curve {key.curve.name} is not supported")
            key_type = KeyType.ECDSA
        else:
            raise CredentialError(f"unsupported key type {type(key).__name__}")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        try:
            cert_spki = cert.public_key().public_bytes(*spki)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CredentialError(f"certificate's public key does not load: {exc}") from exc
        if cert_spki != key.public_key().public_bytes(*spki):
            raise CredentialError("private key does not match the certificate")
        return cls(
            certificate_der=cert.public_bytes(serialization.Encoding.DER),
            private_key_der=key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            key_type=key_type,
        )

    @classmethod
    def load(cls, certificate_path: Path, private_key_path: Path) -> ServerCredential:
        """Read a certificate and key file (PEM or DER). Raises CredentialError or OSError."""
        try:
            return cls.from_bytes(certificate_path.read_bytes(), private_key_path.read_bytes())
        except CredentialError as exc:
            raise CredentialError(f"{certificate_path} / {private_key_path}: {exc}") from exc


def _load_certificate(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CredentialError(f"certificate does not parse: {exc}") from exc


def _load_private_key(data: bytes, password: bytes | None) -> Any:
    try:
        if data.lstrip().startswith(b"-----"):
            return serialization.load_pem_private_key(data, password)
        return serialization.load_der_private_key(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CredentialError(f"private key does not load: {exc}") from exc


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A client finished the handshake and presented a certificate (not yet verified!)."""

    addr: Address
    peer_cert_der: bytes = field(repr=False)
    cipher_suite: str
    key_type: KeyType


@dataclass(slots=True)
class ApplicationData:
    """One decrypted application-data record (read-only by convention: not frozen, because a
    frozen dataclass costs 0.2 us more to build, and one is built per forwarded packet)."""

    addr: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """A connection is gone. `established` tells whether HandshakeCompleted was emitted for it.

    Not emitted for connections the owner ended with `close()` or `abort()`.
    """

    addr: Address
    reason: CloseReason
    established: bool


@dataclass(frozen=True, slots=True)
class HandshakeStarted:
    """(handoff mode) A cookie verified: `addr` now has a handshake with this client random."""

    addr: Address
    client_random: bytes


@dataclass(frozen=True, slots=True)
class HandshakeHandoff:
    """(handoff mode) A finished handshake whose records were taken over, ready for `adopt()`.

    The connection is forgotten by the listener that emitted it. `final_flight` is resent
    should the client retransmit its last flight; `peer_spoke` says the client already sent a
    record after the handshake; `early_data` is application data that came with its Finished.
    """

    addr: Address
    peer_cert_der: bytes = field(repr=False)
    cipher_suite: str
    key_type: KeyType
    client_random: bytes
    records: RecordState
    final_flight: tuple[bytes, ...] = field(repr=False)
    peer_spoke: bool = False
    early_data: tuple[bytes, ...] = field(default=(), repr=False)


Event = (
    HandshakeCompleted | ApplicationData | ConnectionClosed | HandshakeStarted | HandshakeHandoff
)


def handoff_supported() -> bool:
    """Whether handshakes can run in another process: the keys must be exportable at the end
    of the handshake (this Mbed TLS and its session layout, see `keyexport.py`)."""
    return KEY_EXPORT_SUPPORTED and session_reader() is not None


class _Slot:
    """One server context (one credential) with its cookie lobby."""

    __slots__ = ("context", "groups", "key_type", "lobby", "suite_id")

    def __init__(self, credential: ServerCredential, handshake_timeout: float) -> None:
        name, self.suite_id = SUITES[credential.key_type]
        self.key_type = credential.key_type
        key: mbedtls_pk.RSA | mbedtls_pk.ECC
        if credential.key_type is KeyType.RSA:
            key = mbedtls_pk.RSA.from_DER(credential.private_key_der)
        else:
            key = mbedtls_pk.ECC.from_DER(credential.private_key_der)
        cert = mbedtls_x509.CRT.from_DER(credential.certificate_der)
        config = mbedtls_tls.DTLSConfiguration(
            validate_certificates=False,
            certificate_chain=((cert,), key),
            ciphers=(name,),
            lowest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2,
            highest_supported_version=mbedtls_tls.DTLSVersion.DTLSv1_2,
            handshake_timeout_min=_RETRANSMIT_MIN,
            handshake_timeout_max=max(_RETRANSMIT_MIN, min(_RETRANSMIT_MAX, handshake_timeout)),
        )
        self.context = mbedtls_tls.ServerContext(config)
        self.lobby = self.context.wrap_buffers()
        # Kept alive here: mbedtls reads it at every handshake.
        self.groups = prefer_ecdhe_groups(self.context, self.lobby)


class _Connection:
    """Per-client state once its cookie verified."""

    __slots__ = (
        "__weakref__",
        "addr",
        "buf",
        "client_random",
        "deadline",
        "established",
        "final_flight",
        "host",
        "peer_spoke",
        "records",
        "rto",
        "server_random",
        "slot",
        "wake_at",
    )

    def __init__(
        self,
        addr: Address,
        buf: mbedtls_tls.TLSWrappedBuffer | None,
        slot: _Slot,
        client_random: bytes,
        deadline: float,
    ) -> None:
        self.addr = addr
        self.host = addr[0]
        self.buf: mbedtls_tls.TLSWrappedBuffer | None = buf
        """mbedtls' state until the records are taken over; None afterwards."""
        self.records: RecordLayer | None = None
        """Our own record protection once the keys were exported."""
        self.server_random = b""
        self.final_flight: tuple[bytes, ...] = ()
        """The datagrams that completed our side of the handshake (resent on a retransmitted
        client flight once mbedtls' state is gone)."""
        self.peer_spoke = False
        """The client sent a record after the handshake (so it has our Finished)."""
        self.slot = slot
        self.client_random = client_random
        self.deadline = deadline
        self.established = False
        self.rto = _RETRANSMIT_MIN
        self.wake_at = -1.0


class DtlsListener(Endpoint[_Connection]):
    """All DTLS connections of one UDP port (see the module docstring for the protocol).

    Parameters:
        credentials: one or two credentials of different key types. With both, the suite a
            ClientHello offers first among ours decides which certificate is presented.
        mtu: largest datagram produced (UDP payload bytes); `send()` accepts at most
            `mtu - RECORD_OVERHEAD` bytes of plaintext.
        handshake_timeout: seconds from cookie verification to the end of the handshake.
        max_pending: handshakes in progress, in total; further cookie-bearing hellos are dropped.
        max_pending_per_host: the same per client IPv4 address.
        max_connections: pending plus established connections (None: no limit).
        export_keys: take the records of an established connection over from mbedtls
            (`recordlayer.py`) after the client's first application-data record. Ignored,
            i.e. mbedtls keeps the records, if this Mbed TLS is not a version whose saved
            context we can read (`KEY_EXPORT_SUPPORTED`) or the suite is not AES-GCM.
        handoff: run only handshakes (in a handshake worker): a cookie that verifies emits
            `HandshakeStarted`, a finished handshake whose keys were exported emits
            `HandshakeHandoff` (instead of `HandshakeCompleted`) and leaves this listener;
            one whose keys cannot be exported is closed with EXPORT_FAILED.

    Handshakes can also run elsewhere (`offload()`): this listener then keeps only
    established connections and passes every other datagram to the handshake runner, which
    reports back through `handshake_started`, `adopt` and `handshake_failed`.
    """

    def __init__(
        self,
        credentials: Sequence[ServerCredential],
        *,
        mtu: int = DEFAULT_MTU,
        handshake_timeout: float = 30.0,
        max_pending: int = 1024,
        max_pending_per_host: int = 256,
        max_connections: int | None = None,
        export_keys: bool = True,
        handoff: bool = False,
    ) -> None:
        super().__init__(
            [c.key_type for c in credentials],
            mtu,
            handshake_timeout,
            max_pending,
            max_pending_per_host,
        )
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_plaintext = mtu - RECORD_OVERHEAD
        self.max_connections = max_connections
        self.export_keys = export_keys and KEY_EXPORT_SUPPORTED
        self.handoff = handoff
        if handoff and not self.export_keys:
            raise ValueError("handoff mode needs key export")
        self._forward: Callable[[bytes, Address], None] | None = None
        self._offloaded: dict[Address, bytes] = {}
        """Addresses whose handshake runs elsewhere, with their client random."""
        self.exported = 0
        """Connections whose records were taken over from mbedtls (monotonic)."""
        self.export_failures = 0
        """Connections that stayed with mbedtls because the export failed (monotonic)."""
        self._slots = [_Slot(c, handshake_timeout) for c in credentials]
        for slot in self._slots:
            slot.lobby.setmtu(mtu)
        self._slot_by_suite = {slot.suite_id: slot for slot in self._slots}
        self._pending = 0
        self._rbuf = bytearray(_READ_CHUNK)
        self._rview = memoryview(self._rbuf)
        self._rarg = cast(bytes, self._rbuf)  # the stub says bytes; readinto needs it writable
        self.hello_verify_requests = 0
        """HelloVerifyRequests sent (monotonic)."""

    # -- queries ---------------------------------------------------------------------------

    @property
    def key_types(self) -> tuple[KeyType, ...]:
        """The key types this listener serves, in configuration order."""
        return tuple(slot.key_type for slot in self._slots)

    @property
    def pending_count(self) -> int:
        """Connections past the cookie exchange whose handshake is not finished."""
        return self._pending + len(self._offloaded)

    @property
    def connection_count(self) -> int:
        """All connections, pending (here or offloaded) and established."""
        return len(self._conns) + len(self._offloaded)

    @property
    def offloaded_addresses(self) -> list[Address]:
        """Addresses whose handshake runs elsewhere (see `offload`)."""
        return list(self._offloaded)

    def is_established(self, addr: Address) -> bool:
        """True if `addr` has a connection for which HandshakeCompleted was emitted."""
        conn = self._conns.get(addr)
        return conn is not None and conn.established

    def records_of(self, addr: Address) -> RecordLayer | None:
        """The record layer of the established connection of `addr`, if its records are ours
        (not mbedtls'): the forwarding fast path seals with it directly. None otherwise; then
        use `send()`."""
        conn = self._conns.get(addr)
        return conn.records if conn is not None and conn.established else None

    def _timer_live(self, conn: _Connection, when: float) -> bool:
        return conn.wake_at == when and not conn.established

    # -- inputs ----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        """Process one received UDP datagram from `addr` at time `now` (seconds, monotonic)."""
        conn = self._conns.get(addr)
        try:
            if (
                conn is not None
                and conn.established
                and data
                and data[0] == CONTENT_APPLICATION_DATA
                and len(data) <= MAX_DATAGRAM
            ):
                records = conn.records
                # The hot path: one application-data record in one datagram, our own keys.
                if records is not None and len(data) == HEADER_LEN + (data[11] << 8 | data[12]):
                    try:
                        kind, plaintext = records.open(data)
                    except RecordRejected:
                        self.drops[DropReason.DISCARDED] += 1
                        return
                    if kind == CONTENT_APPLICATION_DATA and plaintext:
                        self._events.append(ApplicationData(addr, plaintext))
                    return
                self._read(conn, data)
            else:
                self._slow_path(conn, data, addr, now)
        except Exception:
            # A bug must cost at most this one peer, never the whole listener.
            _log.exception("internal error on a datagram from %s:%s", *addr)
            self.drops[DropReason.INTERNAL_ERROR] += 1
            conn = self._conns.get(addr)
            if conn is not None:
                self._remove(conn)
                self._events.append(
                    ConnectionClosed(addr, CloseReason.PROTOCOL_ERROR, conn.established)
                )

    def handle_timers(self, now: float) -> None:
        """Run retransmissions and handshake timeouts that are due at `now`."""
        for conn in self._due(now):
            if now >= conn.deadline:
                self._fail(conn, CloseReason.HANDSHAKE_TIMEOUT)
                continue
            produced = self._handshake(conn, now)
            if conn.established or self._conns.get(conn.addr) is not conn:
                continue
            if produced:
                conn.rto = min(conn.rto * 2, _RETRANSMIT_MAX)
                self._schedule(conn, now + conn.rto)
            else:
                self._schedule(conn, now + _REPOLL)

    def send(self, addr: Address, plaintext: bytes) -> None:
        """Encrypt `plaintext` as one application-data record to the established peer `addr`.

        Raises DtlsError if `addr` has no established connection or the plaintext is empty or
        longer than `max_plaintext` (mbedtls would destroy the session instead of fragmenting).
        If the connection turns out to be broken it is closed with a ConnectionClosed event.
        """
        conn = self._conns.get(addr)
        if conn is None or not conn.established:
            raise DtlsError(f"no established DTLS connection with {addr[0]}:{addr[1]}")
        size = len(plaintext)
        if size > self.max_plaintext or size == 0:
            raise DtlsError(
                f"plaintext of {size} bytes; a record carries 1..{self.max_plaintext} bytes"
            )
        records = conn.records
        if records is not None:
            try:
                self._out.append((records.seal(CONTENT_APPLICATION_DATA, plaintext), addr))
            except SequenceExhausted:
                self._fail(conn, CloseReason.PROTOCOL_ERROR)
            return
        buf = conn.buf
        assert buf is not None
        try:
            pending = buf.write(plaintext)
        except mbedtls_tls.WantReadError:
            # Output ring full: cannot happen while we flush after every call.
            self._flush(conn)
            try:
                pending = buf.write(plaintext)
            except TLSError:
                self._fail(conn, CloseReason.PROTOCOL_ERROR)
                return
        except TLSError:
            self._fail(conn, CloseReason.PROTOCOL_ERROR)
            return
        if pending <= self.mtu:
            record = buf.peek_outgoing(pending)
            buf.consume_outgoing(pending)
            self._out.append((record, addr))
        else:
            self._flush(conn)

    def close(self, addr: Address) -> bool:
        """Send close_notify (if established) and forget `addr`. No event. False if unknown."""
        conn = self._conns.get(addr)
        if conn is None:
            return False
        if conn.established:
            self._close_notify(conn)
        self._remove(conn)
        return True

    def abort(self, addr: Address) -> bool:
        """Forget `addr` without sending anything. No event. False if unknown."""
        conn = self._conns.get(addr)
        if conn is None:
            return False
        self._remove(conn)
        return True

    # -- handshakes run elsewhere -----------------------------------------------------------

    def offload(self, forward: Callable[[bytes, Address], None] | None) -> None:
        """Run no handshakes here from now on: pass each datagram that is not for an
        established connection to `forward(data, addr)` (None: run them here again).

        Routing: a ClientHello (other than a copy of an established connection's) and every
        datagram from an address without an established connection or with an offloaded
        handshake is forwarded; the rest stays here. The runner must report back with
        `handshake_started`, `adopt` and `handshake_failed`.
        """
        if forward is not None and self._pending:
            raise DtlsError("handshakes are in progress here")
        self._forward = forward

    def handshake_started(self, addr: Address, client_random: bytes) -> None:
        """The runner verified a cookie from `addr`: an established connection of the same
        address is replaced (ConnectionClosed REPLACED), as when the lobby is here."""
        old = self._conns.get(addr)
        if old is not None:
            self._remove(old)
            self._events.append(ConnectionClosed(addr, CloseReason.REPLACED, old.established))
        self._offloaded[addr] = client_random

    def handshake_failed(self, addr: Address, reason: CloseReason) -> None:
        """The runner's handshake with `addr` ended without a handoff (ConnectionClosed)."""
        if self._offloaded.pop(addr, None) is not None:
            self._events.append(ConnectionClosed(addr, reason, False))

    def adopt(self, handoff: HandshakeHandoff) -> None:
        """Take an established connection over from a runner; emits HandshakeCompleted (and
        ApplicationData for its early data). Raises ValueError for an unusable record state,
        DtlsError for a key type this listener does not serve."""
        slot = next((s for s in self._slots if s.key_type is handoff.key_type), None)
        if slot is None:
            raise DtlsError(f"no {handoff.key_type} credential here")
        records = RecordLayer.from_state(handoff.records)
        addr = handoff.addr
        self._offloaded.pop(addr, None)
        old = self._conns.get(addr)
        if old is not None:
            self._remove(old)
            self._events.append(ConnectionClosed(addr, CloseReason.REPLACED, old.established))
        conn = _Connection(addr, None, slot, handoff.client_random, 0.0)
        conn.records = records
        conn.established = True
        conn.final_flight = handoff.final_flight
        conn.peer_spoke = handoff.peer_spoke
        self._conns[addr] = conn
        self.exported += 1
        self._events.append(
            HandshakeCompleted(addr, handoff.peer_cert_der, handoff.cipher_suite, slot.key_type)
        )
        self._events.extend(ApplicationData(addr, data) for data in handoff.early_data)

    def _route(self, conn: _Connection | None, data: bytes, addr: Address) -> bool:
        """(offload mode) Forward `data` to the handshake runner; False if it stays here."""
        forward = self._forward
        assert forward is not None
        hello = is_client_hello(data)
        if conn is not None:
            if hello:
                if data[27:59] == conn.client_random:
                    self.drops[DropReason.DUPLICATE_CLIENT_HELLO] += 1
                    return True
            elif addr not in self._offloaded:
                return False
        elif (
            hello
            and self.max_connections is not None
            and addr not in self._offloaded
            and len(self._conns) + len(self._offloaded) >= self.max_connections
        ):
            self.drops[DropReason.CONNECTION_LIMIT] += 1
            return True
        forward(data, addr)
        return True

    # -- internals -------------------------------------------------------------------------

    def _unreadable(self, data: bytes) -> bool:
        """Count and say so if `data` is too long or no DTLS record at all."""
        if len(data) > MAX_DATAGRAM:
            self.drops[DropReason.OVERSIZED] += 1
            return True
        if not looks_like_record(data):
            self.drops[DropReason.GARBAGE] += 1
            return True
        return False

    def _slow_path(self, conn: _Connection | None, data: bytes, addr: Address, now: float) -> None:
        if self._unreadable(data) or (self._forward is not None and self._route(conn, data, addr)):
            return
        if is_client_hello(data):
            try:
                hello = parse_client_hello(data)
            except ClientHelloError:
                self.drops[DropReason.BAD_CLIENT_HELLO] += 1
                return
            if conn is not None and hello.random == conn.client_random:
                if conn.established:
                    self.drops[DropReason.DUPLICATE_CLIENT_HELLO] += 1
                    return
                self._feed_handshake(conn, data, now)  # a retransmitted hello
                return
            self._lobby(hello, data, addr, now)
            return
        if conn is None:
            self.drops[DropReason.UNKNOWN_ADDRESS] += 1
        elif conn.established:
            self._read(conn, data)
        else:
            self._feed_handshake(conn, data, now)

    def _lobby(self, hello: ClientHello, data: bytes, addr: Address, now: float) -> None:
        slot = None
        for suite in hello.cipher_suites:
            slot = self._slot_by_suite.get(suite)
            if slot is not None:
                break
        if slot is None:
            self.drops[DropReason.NO_SHARED_CIPHER] += 1
            return
        old = self._conns.get(addr)
        client_id = self._admit_hello(bool(hello.cookie), addr, old)
        if client_id is None:
            return
        buf = slot.lobby
        buf.setcookieparam(client_id)
        buf.receive_from_network(data)
        try:
            self._steps(buf)
        except mbedtls_tls.HelloVerifyRequest:
            self.hello_verify_requests += 1
            if hello.cookie:
                self.drops[DropReason.BAD_COOKIE] += 1
            self._flush_buffer(buf, addr)
            self._clear(buf)
            return
        except TLSError:
            self.drops[DropReason.HELLO_REJECTED] += 1
            self._clear(buf)
            return
        state = buf._handshake_state
        if state is _HELLO_REQUEST or state is _CLIENT_HELLO:
            self.drops[DropReason.HELLO_REJECTED] += 1
            self._clear(buf)
            try:
                cast(Any, buf)._reset()  # mbedtls_ssl_session_reset; not in the stub
            except TLSError:
                slot.lobby = self._new_lobby(slot)
            return
        # The cookie verified: this buffer is now the client's connection.
        slot.lobby = self._new_lobby(slot)
        self._open(slot, buf, hello, addr, old, now)

    def _open(
        self,
        slot: _Slot,
        buf: mbedtls_tls.TLSWrappedBuffer,
        hello: ClientHello,
        addr: Address,
        old: _Connection | None,
        now: float,
    ) -> None:
        """Make `buf`, whose cookie just verified, the connection of `addr`."""
        if old is not None:
            self._remove(old)
            self._events.append(ConnectionClosed(addr, CloseReason.REPLACED, old.established))
        conn = _Connection(addr, buf, slot, hello.random, now + self.handshake_timeout)
        self._conns[addr] = conn
        self._pending += 1
        self._hold_host(conn.host)
        if self.handoff:
            self._events.append(HandshakeStarted(addr, hello.random))
        self._flush_server_hello(conn)
        self._schedule(conn, now + conn.rto)

    def _flush_server_hello(self, conn: _Connection) -> None:
        """Flush the flight that starts with the ServerHello and remember the server random."""
        first = len(self._out)
        self._flush(conn)
        if first < len(self._out):
            conn.server_random = _server_random(self._out[first][0])

    def _limit_reached(self, host: str, old: _Connection | None) -> DropReason | None:
        replaced_pending = old is not None and not old.established
        pending = self._pending - replaced_pending
        if pending >= self.max_pending:
            return DropReason.PENDING_LIMIT
        if self._host_pending(host) - replaced_pending >= self.max_pending_per_host:
            return DropReason.HOST_PENDING_LIMIT
        if (
            self.max_connections is not None
            and len(self._conns) - (old is not None) >= self.max_connections
        ):
            return DropReason.CONNECTION_LIMIT
        return None

    def _new_lobby(self, slot: _Slot) -> mbedtls_tls.TLSWrappedBuffer:
        lobby = slot.context.wrap_buffers()
        lobby.setmtu(self.mtu)
        return lobby

    @staticmethod
    def _clear(buf: mbedtls_tls.TLSWrappedBuffer) -> None:
        buf._input_buffer.clear()  # type: ignore[attr-defined]
        buf._output_buffer.clear()  # type: ignore[attr-defined]

    @staticmethod
    def _steps(buf: mbedtls_tls.TLSWrappedBuffer) -> None:
        """Step the handshake until it needs input or is over. Output stays in the ring."""
        for _ in range(_MAX_STEPS):
            if buf._handshake_state is _HANDSHAKE_OVER:
                return
            try:
                buf.do_handshake()
            except mbedtls_tls.WantReadError:
                return
            except mbedtls_tls.WantWriteError:
                continue

    def _feed_handshake(self, conn: _Connection, data: bytes, now: float) -> None:
        buf = conn.buf
        assert buf is not None  # pending connections always have mbedtls state
        try:
            buf.receive_from_network(data)
        except BufferError:
            self._clear(buf)
            self.drops[DropReason.OVERSIZED] += 1
            return
        produced = self._handshake(conn, now)
        if produced and not conn.established and self._conns.get(conn.addr) is conn:
            # mbedtls restarts its retransmission timer with every new flight.
            conn.rto = _RETRANSMIT_MIN
            self._schedule(conn, now + conn.rto)

    def _handshake(self, conn: _Connection, now: float) -> bool:
        """Advance a pending handshake; True if it produced output. Completes or fails it."""
        buf = conn.buf
        assert buf is not None
        try:
            self._steps(buf)
        except TLSError as exc:
            produced = self._flush(conn)
            reason = (
                CloseReason.HANDSHAKE_TIMEOUT
                if _err(exc) == _ERR_TIMEOUT
                else CloseReason.HANDSHAKE_FAILED
            )
            self._fail(conn, reason)
            return produced
        first = len(self._out)
        produced = self._flush(conn)
        if buf._handshake_state is _HANDSHAKE_OVER:
            conn.final_flight = tuple(datagram for datagram, _ in self._out[first:])
            self._complete(conn)
        return produced

    def _complete(self, conn: _Connection) -> None:
        buf = conn.buf
        assert buf is not None
        der = buf.getpeercert(binary_form=True)
        if not der:
            with contextlib.suppress(TLSError):
                buf.shutdown()
            self._flush(conn)
            self._fail(conn, CloseReason.NO_CLIENT_CERTIFICATE)
            return
        conn.established = True
        self._pending -= 1
        self._release_host(conn.host)
        if self.handoff:
            self._hand_off(conn, buf, bytes(der))
            return
        self._events.append(
            HandshakeCompleted(conn.addr, bytes(der), _suite_name(buf), conn.slot.key_type)
        )
        # The datagram that finished the handshake may carry application data as well.
        if buf._input_buffer:
            self._read(conn, b"")
        # Take the records over now rather than at the first record sent or received: on
        # tunnel #2 the client never sends, and sending may be a long way off.
        if (
            self.export_keys
            and conn.records is None
            and conn.buf is buf
            and self._conns.get(conn.addr) is conn
        ):
            self._take_over_from_session(conn, buf)

    def _hand_off(self, conn: _Connection, buf: mbedtls_tls.TLSWrappedBuffer, der: bytes) -> None:
        """(handoff mode) Export the records of the just-finished `conn` and let it go."""
        addr = conn.addr
        mark = len(self._events)
        if buf._input_buffer:
            self._read(conn, b"")  # application data in the datagram that finished it
            if self._conns.get(addr) is not conn:
                return  # it failed; its ConnectionClosed is queued
        early = tuple(e.data for e in self._events[mark:] if isinstance(e, ApplicationData))
        del self._events[mark:]
        if conn.records is None and conn.buf is buf:
            self._take_over_from_session(conn, buf)
        if conn.records is None:
            self._fail(conn, CloseReason.EXPORT_FAILED)
            return
        self._remove(conn)
        self._events.append(
            HandshakeHandoff(
                addr=addr,
                peer_cert_der=der,
                cipher_suite=_suite_name(buf),
                key_type=conn.slot.key_type,
                client_random=conn.client_random,
                records=conn.records.state(),
                final_flight=conn.final_flight,
                peer_spoke=conn.peer_spoke,
                early_data=early,
            )
        )

    def _read(self, conn: _Connection, data: bytes) -> None:
        """Decrypt every record of one datagram on an established connection."""
        if conn.records is not None:
            self._read_records(conn, conn.records, data)
            return
        buf = conn.buf
        assert buf is not None
        if data:
            try:
                buf.receive_from_network(data)
            except BufferError:
                self._clear(buf)
                self.drops[DropReason.OVERSIZED] += 1
                return
        # The usual datagram is exactly one record: then one readinto() empties it and the
        # WantReadError of a second call (an exception per packet) can be skipped.
        single = len(data) >= HEADER_LEN and len(data) == HEADER_LEN + (data[11] << 8 | data[12])
        view = self._rview
        addr = conn.addr
        got = False
        for _ in range(_MAX_RECORDS):
            try:
                n = buf.readinto(self._rarg, _READ_CHUNK)
            except mbedtls_tls.WantReadError:
                break
            except mbedtls_tls.RaggedEOF:
                continue
            except TLSError as exc:
                self._flush(conn)
                self._fail(conn, _close_reason(exc))
                return
            got = True
            self._events.append(ApplicationData(addr, bytes(view[:n])))
            if single:
                break
        if buf._output_buffer:
            self._flush(conn)
        elif not got and data and data[0] == CONTENT_APPLICATION_DATA:
            self.drops[DropReason.DISCARDED] += 1
        if buf._input_buffer:
            buf._input_buffer.clear()  # type: ignore[attr-defined]
        if got:
            self._peer_spoke(conn, buf)

    def _peer_spoke(self, conn: _Connection, buf: mbedtls_tls.TLSWrappedBuffer) -> None:
        conn.peer_spoke = True
        if self.export_keys and not self.handoff and self._conns.get(conn.addr) is conn:
            self._take_over(conn, buf)

    def _take_over(self, conn: _Connection, buf: mbedtls_tls.TLSWrappedBuffer) -> None:
        """Move the records of `conn` from mbedtls to a RecordLayer and free mbedtls' state.

        Called after the client's first application-data record: the client then has our
        Finished, so mbedtls will never have to resend its last flight. If the saved context
        cannot be read, it is loaded back and mbedtls keeps the records.
        """
        if buf._output_buffer or buf._input_buffer:
            return  # never happens after _read; try again with the next record
        try:
            # mbedtls_ssl_context_save(): on success it also resets `buf`.
            state = cast(Any, buf).__getstate__()
        except (TypeError, TLSError) as exc:
            self.export_failures += 1
            _log.warning("records stay with mbedtls for %s:%s: %s", *conn.addr, exc)
            return
        try:
            session = parse_context(state["connection"])
            records = RecordLayer.server(session, derive_keys(session))
        except (KeyExportError, KeyError, TypeError, ValueError) as exc:
            cast(Any, buf).__setstate__(state)
            self.export_failures += 1
            _log.warning("records stay with mbedtls for %s:%s: %s", *conn.addr, exc)
            return
        conn.records = records
        conn.buf = None
        self.exported += 1

    def _take_over_from_session(self, conn: _Connection, buf: mbedtls_tls.TLSWrappedBuffer) -> None:
        """Take the records of `conn` over from mbedtls at the end of the handshake.

        mbedtls cannot save such a context (it keeps its handshake state until the client's
        first record, which on tunnel #2 never comes), so the master secret is read through
        `SessionReader`, and the keys derived from it are accepted only if they decrypt our
        Finished as mbedtls encrypted it (the epoch-1 record of `final_flight`). Should the
        client not have received it, `final_flight` is resent when the client retransmits its
        own last flight.
        """
        finished = first_epoch1_record(conn.final_flight)
        reader = session_reader()
        if finished is None or reader is None or not conn.server_random:
            return
        try:
            suite_id, master = reader.master_secret(buf, conn.slot.context)
            suite = KEY_SUITES.get(suite_id)
            if suite is None:
                raise KeyExportError(f"cipher suite 0x{suite_id:04x} not handled")
            session = ExportedSession(
                suite=suite,
                master_secret=master,
                server_random=conn.server_random,
                client_random=conn.client_random,
                epoch=1,
                out_seq=int.from_bytes(finished[5:11], "big") + 1,
                in_top=0,  # the client's Finished, its only record so far
                in_window=1,
            )
            keys = verified_keys(session, finished)
        except KeyExportError as exc:
            self.export_failures += 1
            _log.warning("records stay with mbedtls for %s:%s: %s", *conn.addr, exc)
            return
        conn.records = RecordLayer.server(session, keys)
        conn.buf = None
        self.exported += 1

    def _read_records(self, conn: _Connection, records: RecordLayer, data: bytes) -> None:
        """Every record of one datagram on a connection whose records we protect ourselves."""
        if data[0] == CONTENT_HANDSHAKE and data[3:5] == b"\x00\x00" and not conn.peer_spoke:
            # The client retransmits its last flight: our Finished was lost. mbedtls would
            # resend its last flight; its state is gone, so we resend the same bytes.
            self._out.extend((datagram, conn.addr) for datagram in conn.final_flight)
            return
        try:
            views = list(iter_records(data))
        except RecordError:
            self.drops[DropReason.DISCARDED] += 1
            return
        got = False
        for view in views:
            try:
                kind, plaintext = records.open(bytes(view))
            except RecordRejected:
                continue  # dropped silently, like mbedtls (RFC 6347 §4.1.2.7)
            got = True
            conn.peer_spoke = True
            if kind == CONTENT_APPLICATION_DATA:
                if plaintext:
                    self._events.append(ApplicationData(conn.addr, plaintext))
            elif kind == CONTENT_ALERT and not self._on_alert(conn, records, plaintext):
                return
            # Handshake records in epoch 1 (a late copy of the client's Finished or a
            # renegotiation attempt, which we never accept) are ignored.
        if not got:
            self.drops[DropReason.DISCARDED] += 1

    def _on_alert(self, conn: _Connection, records: RecordLayer, alert: bytes) -> bool:
        """Act on a decrypted alert; False if the connection is gone."""
        if len(alert) != 2:
            self._out.append((records.seal(CONTENT_ALERT, _DECODE_ERROR_ALERT), conn.addr))
            self._fail(conn, CloseReason.PROTOCOL_ERROR)
            return False
        if alert[1] == ALERT_CLOSE_NOTIFY:
            # RFC 5246 §7.2.1: answer with a close_notify of our own.
            self._out.append((records.seal(CONTENT_ALERT, _CLOSE_NOTIFY_ALERT), conn.addr))
            self._fail(conn, CloseReason.CLOSE_NOTIFY)
            return False
        if alert[0] == ALERT_WARNING:
            return True
        self._fail(conn, CloseReason.FATAL_ALERT)
        return False

    def _close_notify(self, conn: _Connection) -> None:
        """Queue a close_notify alert to the established `conn`."""
        if conn.records is not None:
            with contextlib.suppress(SequenceExhausted):
                self._out.append((conn.records.seal(CONTENT_ALERT, _CLOSE_NOTIFY_ALERT), conn.addr))
            return
        if conn.buf is not None:
            with contextlib.suppress(TLSError):
                conn.buf.shutdown()
            self._flush(conn)

    def _flush(self, conn: _Connection) -> bool:
        if conn.buf is None:
            return False
        return self._flush_buffer(conn.buf, conn.addr)

    def _flush_buffer(self, buf: mbedtls_tls.TLSWrappedBuffer, addr: Address) -> bool:
        """Move everything in the output ring to the send queue; True if there was any."""
        pending = len(buf._output_buffer)
        if not pending:
            return False
        data = buf.peek_outgoing(pending)
        buf.consume_outgoing(pending)
        if pending <= self.mtu:
            self._out.append((data, addr))
            return True
        try:
            datagrams = pack_datagrams(data, self.mtu)
        except RecordError:
            datagrams = [data]
        self._out.extend((datagram, addr) for datagram in datagrams)
        return True

    def _schedule(self, conn: _Connection, when: float) -> None:
        self._set_timer(conn, min(when, conn.deadline))

    def _fail(self, conn: _Connection, reason: CloseReason) -> None:
        established = conn.established
        self._remove(conn)
        self._events.append(ConnectionClosed(conn.addr, reason, established))

    def _remove(self, conn: _Connection) -> None:
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]
            if not conn.established:
                self._pending -= 1
                self._release_host(conn.host)
        conn.wake_at = -1.0


def _server_random(datagram: bytes) -> bytes:
    """The random of the ServerHello that starts `datagram`, or b"" if it does not."""
    # record header (13), handshake header (12), server_version (2), random (32)
    if len(datagram) >= 59 and datagram[0] == CONTENT_HANDSHAKE and datagram[13] == 2:
        return datagram[27:59]
    return b""


def _suite_name(buf: mbedtls_tls.TLSWrappedBuffer) -> str:
    name = cast(object, buf.cipher())  # a str at run time, whatever the stub says
    if isinstance(name, bytes):
        return name.decode("ascii", "replace")
    return str(name or "")


def _close_reason(exc: TLSError) -> CloseReason:
    """Map an error of an established connection to the reason reported."""
    err = _err(exc)
    if err == _ERR_PEER_CLOSE_NOTIFY:
        return CloseReason.CLOSE_NOTIFY
    if err == _ERR_FATAL_ALERT_MESSAGE:
        return CloseReason.FATAL_ALERT
    return CloseReason.PROTOCOL_ERROR


def _err(exc: TLSError) -> int:
    """The positive mbedtls error code of a TLSError (0 if it has none)."""
    code = getattr(exc, "err", None)
    return abs(code) if isinstance(code, int) else 0
