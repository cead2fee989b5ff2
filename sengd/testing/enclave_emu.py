"""Enclave emulator: the SENG client sequence (PROTOCOL.md §1.3) on pyOpenSSL DTLS.

The real SENG clients use OpenSSL, the gateway uses mbedtls; tests that go through this
emulator therefore cross two TLS stacks exactly as a deployment does. Three layers:

* `DtlsClient`: a sans-IO DTLS 1.2 client on OpenSSL memory BIOs (feed datagrams, take
  datagrams, records and timeouts). The in-memory unit tests drive it against the listener
  without sockets.
* `EnclaveEmulator`: the blocking client over two connected UDP sockets (tunnel #1 to A:P,
  tunnel #2 to A:P+1): handshake #1, IpAssignment, IpAssignACK, handshake #2, then
  `send_packet()` on #1 and `recv_packet()` on #2. Every step is a separate method and there are
  switches to misbehave (skip or garble the ACK, another certificate on tunnel #2, garbage and
  raw records, stopping mid-handshake). Usable from a test thread or a subprocess.
* A command line (`python -m sengd.testing.enclave_emu --help`) that connects and, with
  `--tun`, creates a TUN device in the current network namespace, configures it with the
  assigned address and shuttles packets between it and the tunnels so that ping, curl and
  iperf3 run through the gateway. It prints one JSON line when the tunnel is up.

Client builds (PROTOCOL.md §1.2): the RSA build offers only ECDHE-RSA-AES256-GCM-SHA384, the
ECDSA build only ECDHE-ECDSA-AES128-GCM-SHA256. The build follows the client key type unless
given explicitly. The server certificate is pinned: the handshake fails unless the server
presents exactly the pinned certificate (the real clients trust only that certificate).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL, crypto

from sengd.tunnel import setup
from sengd.tunnel.records import CONTENT_APPLICATION_DATA, HEADER_LEN, RecordError, pack_datagrams

DTLS1_2_VERSION = 0xFEFD
DEFAULT_MTU = 1472
"""Link MTU 1500 minus IPv4 and UDP headers, as both real clients configure it."""

_OP_NO_EXTENDED_MASTER_SECRET = 0x1
"""SSL_OP_NO_EXTENDED_MASTER_SECRET (OpenSSL >= 3.0); pyOpenSSL does not export it."""


class Build(StrEnum):
    """Which SENG client build to imitate; decides the one cipher suite offered."""

    RSA = "rsa"
    ECDSA = "ecdsa"


CLIENT_CIPHERS: dict[Build, bytes] = {
    Build.RSA: b"ECDHE-RSA-AES256-GCM-SHA384",
    Build.ECDSA: b"ECDHE-ECDSA-AES128-GCM-SHA256",
}


class EmulatorError(Exception):
    """The gateway did something the real client would abort on (or a step timed out)."""


class TunnelClosed(EmulatorError):
    """The peer closed the tunnel (close_notify or fatal alert)."""


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ClientIdentity:
    """The enclave's certificate (DER) and private key (an RA-TLS certificate in production).

    The certificate is handled by OpenSSL only, like in the real clients: RA-TLS certificates
    have serial number 0, which `cryptography` warns about and will refuse to parse.
    """

    certificate_der: bytes
    private_key: PrivateKey = field(repr=False)

    @property
    def build(self) -> Build:
        """The client build matching the key type (RSA key -> RSA build)."""
        return Build.RSA if isinstance(self.private_key, rsa.RSAPrivateKey) else Build.ECDSA

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate, key: PrivateKey) -> ClientIdentity:
        return cls(certificate.public_bytes(serialization.Encoding.DER), key)

    @classmethod
    def from_bytes(cls, certificate: bytes, private_key: bytes) -> ClientIdentity:
        """Load a PEM or DER certificate and unencrypted PEM or DER private key bytes.

        Raises ValueError if either does not parse or the key type is not RSA or EC.
        """
        try:
            if private_key.lstrip().startswith(b"-----"):
                key = serialization.load_pem_private_key(private_key, None)
            else:
                key = serialization.load_der_private_key(private_key, None)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"client private key does not load: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"unsupported client key type {type(key).__name__}")
        return cls(load_certificate_der(certificate), key)

    @classmethod
    def load(cls, certificate_path: Path, private_key_path: Path) -> ClientIdentity:
        return cls.from_bytes(certificate_path.read_bytes(), private_key_path.read_bytes())


def load_certificate_der(data: bytes) -> bytes:
    """PEM or DER certificate bytes -> DER (parsed by OpenSSL). Raises ValueError."""
    filetype = crypto.FILETYPE_PEM if data.lstrip().startswith(b"-----") else crypto.FILETYPE_ASN1
    try:
        cert = crypto.load_certificate(filetype, data)
    except crypto.Error as exc:
        raise ValueError(f"certificate does not parse: {exc}") from exc
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)


def _use_certificate_der(ctx: SSL.Context, der: bytes) -> None:
    # Through a file: pyOpenSSL deprecates X509 objects and `cryptography` warns about (and
    # will refuse) the serial number 0 of RA-TLS certificates; OpenSSL itself takes it.
    with tempfile.NamedTemporaryFile(prefix="enclave-emu-", suffix=".der") as file:
        file.write(der)
        file.flush()
        ctx.use_certificate_file(file.name, crypto.FILETYPE_ASN1)


class DtlsClient:
    """Sans-IO DTLS 1.2 client on pyOpenSSL memory BIOs (one tunnel).

    Call `start()`, then alternately hand every received datagram to `datagram_received()`,
    send what `datagrams_to_send()` returns and, when `timeout()` seconds have passed without
    input, call `handle_timeout()`. `established` turns True after the handshake; then
    `send()` produces one record per call and `records()` returns the received plaintexts.
    `closed` turns True on the peer's close_notify or any fatal error (`close_reason` says
    which). Errors never propagate from `datagram_received()`.

    `cipher_list` overrides the build's single suite (OpenSSL syntax), for tests only.
    """

    def __init__(
        self,
        identity: ClientIdentity | None,
        *,
        pinned_server_cert: bytes | None = None,
        build: Build | None = None,
        mtu: int = DEFAULT_MTU,
        extended_master_secret: bool = True,
        cipher_list: bytes | None = None,
    ) -> None:
        self.build = build or (identity.build if identity is not None else Build.ECDSA)
        self.mtu = mtu
        self.pinned_server_cert = pinned_server_cert
        self.server_certificate: bytes | None = None
        self.pin_mismatch = False
        ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        ctx.set_cipher_list(cipher_list or CLIENT_CIPHERS[self.build])
        options = SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION
        if not extended_master_secret:
            options |= _OP_NO_EXTENDED_MASTER_SECRET
        ctx.set_options(options)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        if identity is not None:
            _use_certificate_der(ctx, identity.certificate_der)
            ctx.use_privatekey(identity.private_key)
        ctx.set_verify(SSL.VERIFY_PEER, self._verify)
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_connect_state()
        self._conn.set_ciphertext_mtu(mtu)
        self._out: list[bytes] = []
        self._records: list[bytes] = []
        self.established = False
        self.closed = False
        self.close_reason: str | None = None

    def _verify(
        self, _conn: SSL.Connection, cert: crypto.X509, _errno: int, depth: int, _ok: int
    ) -> bool:
        if depth != 0:
            return True
        der = cert.to_cryptography().public_bytes(serialization.Encoding.DER)
        self.server_certificate = der
        if self.pinned_server_cert is not None and der != self.pinned_server_cert:
            self.pin_mismatch = True
            return False
        return True

    # -- driving ---------------------------------------------------------------------------

    def start(self) -> None:
        """Produce the first ClientHello."""
        self._step()

    def datagram_received(self, data: bytes) -> None:
        """Feed exactly one datagram."""
        if self.closed:
            return
        self._conn.bio_write(data)
        if self.established or self._step():
            self._read()

    def timeout(self) -> float | None:
        """Seconds until `handle_timeout()` is due, or None (no retransmission pending)."""
        if self.closed or self.established:
            return None
        value = self._conn.DTLSv1_get_timeout()
        return None if value is None else float(value)

    def handle_timeout(self) -> bool:
        """Retransmit if OpenSSL's timer expired; True if it did."""
        if self.closed:
            return False
        try:
            fired = self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"timeout handling failed: {exc}")
            return False
        self._drain()
        return fired

    def datagrams_to_send(self) -> list[bytes]:
        """Return and forget the datagrams produced so far."""
        out, self._out = self._out, []
        return out

    def records(self) -> list[bytes]:
        """Return and forget the application-data plaintexts received so far."""
        records, self._records = self._records, []
        return records

    def next_record(self) -> bytes | None:
        """Return and forget the oldest received plaintext, or None."""
        return self._records.pop(0) if self._records else None

    def send(self, data: bytes) -> None:
        """Encrypt `data` as one application-data record (OpenSSL never fragments it)."""
        if not self.established or self.closed:
            raise EmulatorError("tunnel is not established")
        self._conn.send(data)
        self._drain()

    def close(self) -> None:
        """Send close_notify (once) and stop."""
        if self.closed:
            return
        if self.established:
            with contextlib.suppress(SSL.Error):
                self._conn.shutdown()
            self._drain()
        self.closed = True
        self.close_reason = self.close_reason or "closed-locally"

    @property
    def cipher_name(self) -> str | None:
        return self._conn.get_cipher_name()

    @property
    def extended_master_secret(self) -> bool:
        """Whether the session negotiated EMS (RFC 7627)."""
        from OpenSSL._util import lib

        return bool(lib.SSL_get_extms_support(self._conn._ssl))

    # -- internals -------------------------------------------------------------------------

    def _step(self) -> bool:
        """Advance the handshake; True once it is complete."""
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self._drain()
            reason = "server certificate does not match the pin" if self.pin_mismatch else ""
            self._fail(reason or f"handshake failed: {exc}")
            return False
        else:
            self.established = True
        self._drain()
        return self.established

    def _read(self) -> None:
        while True:
            try:
                data = self._conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._fail("close-notify")
                break
            except SSL.Error as exc:
                self._drain()
                self._fail(f"fatal: {exc}")
                break
            self._records.append(data)
        self._drain()

    def _drain(self) -> None:
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return
        data = b"".join(chunks)
        try:
            self._out.extend(pack_datagrams(data, self.mtu))
        except RecordError:
            self._out.append(data)

    def _fail(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason


# --------------------------------------------------------------------------------------------
# Blocking driver over UDP sockets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """What the gateway assigned (decoded from the IpAssignment record)."""

    ip: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    raw: bytes

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(f"0.0.0.0/{self.netmask}").prefixlen

    def as_dict(self) -> dict[str, str | int]:
        return {
            "ip": str(self.ip),
            "netmask": str(self.netmask),
            "prefixlen": self.prefixlen,
            "gateway": str(self.gateway),
            "raw": self.raw.hex(),
        }


class Tunnel:
    """One DTLS tunnel over its own connected UDP socket."""

    def __init__(
        self,
        server: tuple[str, int],
        client: DtlsClient,
        *,
        bind_address: str | None = None,
    ) -> None:
        self.server = server
        self.client = client
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind_address or "", 0))
        self.sock.connect(server)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def flush(self) -> None:
        for datagram in self.client.datagrams_to_send():
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                self.sock.send(datagram)

    def send_raw(self, datagram: bytes) -> None:
        """Put arbitrary bytes on the wire (misbehaviour)."""
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            self.sock.send(datagram)

    def receive_ready(self) -> None:
        """Read every queued datagram into the client."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            self.client.datagram_received(data)
        self.flush()

    def wait(self, deadline: float) -> None:
        """Block until input arrives, a DTLS timer fires or `deadline` passes; then process."""
        now = time.monotonic()
        timeout = max(0.0, deadline - now)
        dtls_timeout = self.client.timeout()
        if dtls_timeout is not None:
            timeout = min(timeout, dtls_timeout)
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if readable:
            self.receive_ready()
        elif self.client.timeout() == 0.0:
            self.client.handle_timeout()
            self.flush()

    def handshake(self, timeout: float, *, stop_after_datagrams: int | None = None) -> None:
        """Run the handshake to completion (or stop after `stop_after_datagrams` server
        datagrams, leaving it half-done). Raises EmulatorError on failure or timeout."""
        deadline = time.monotonic() + timeout
        self.client.start()
        self.flush()
        received = 0
        while not self.client.established:
            if self.client.closed:
                raise EmulatorError(
                    f"handshake with {self.server} failed: {self.client.close_reason}"
                )
            if stop_after_datagrams is not None and received >= stop_after_datagrams:
                return
            if time.monotonic() >= deadline:
                raise EmulatorError(f"handshake with {self.server} timed out")
            if stop_after_datagrams is not None:
                readable, _, _ = select.select([self.sock], [], [], 0.05)
                if readable:
                    try:
                        data = self.sock.recv(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        continue
                    received += 1
                    self.client.datagram_received(data)
                    self.flush()
                continue
            self.wait(deadline)

    def recv_record(self, timeout: float) -> bytes | None:
        """The next application-data record, or None on timeout. Raises TunnelClosed."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.client.next_record()
            if record is not None:
                return record
            if self.client.closed:
                raise TunnelClosed(self.client.close_reason or "closed")
            if time.monotonic() >= deadline:
                return None
            self.wait(deadline)

    def send_record(self, data: bytes) -> None:
        self.client.send(data)
        self.flush()

    def close(self) -> None:
        if not self.client.closed:
            self.client.close()
            self.flush()
        self.sock.close()


class EnclaveEmulator:
    """The SENG client sequence, step by step, over real UDP sockets.

    `connect()` runs the whole normal sequence; the individual steps (`handshake1`,
    `read_assignment`, `send_ack`, `handshake2`) are public so tests can misbehave between them.
    """

    def __init__(
        self,
        server: tuple[str, int],
        identity: ClientIdentity,
        *,
        pinned_server_cert: bytes | None,
        build: Build | None = None,
        bind_address: str | None = None,
        mtu: int = DEFAULT_MTU,
        extended_master_secret: bool = True,
        tunnel2_identity: ClientIdentity | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.identity = identity
        self.tunnel2_identity = tunnel2_identity or identity
        self.pinned_server_cert = pinned_server_cert
        self.build = build
        self.bind_address = bind_address
        self.mtu = mtu
        self.extended_master_secret = extended_master_secret
        self.timeout = timeout
        self.tunnel1 = Tunnel(server, self._client(identity), bind_address=bind_address)
        self.tunnel2: Tunnel | None = None
        self.assignment: Assignment | None = None

    def _client(self, identity: ClientIdentity) -> DtlsClient:
        return DtlsClient(
            identity,
            pinned_server_cert=self.pinned_server_cert,
            build=self.build,
            mtu=self.mtu,
            extended_master_secret=self.extended_master_secret,
        )

    # -- the normal sequence -----------------------------------------------------------------

    def connect(self) -> Assignment:
        """Handshake #1, IpAssignment, IpAssignACK, handshake #2. Returns the assignment."""
        self.handshake1()
        assignment = self.read_assignment()
        self.send_ack()
        self.handshake2()
        return assignment

    def handshake1(self, *, stop_after_datagrams: int | None = None) -> None:
        """DTLS handshake on tunnel #1 (A:P)."""
        self.tunnel1.handshake(self.timeout, stop_after_datagrams=stop_after_datagrams)

    def read_assignment(self, timeout: float | None = None) -> Assignment:
        """Wait for the IpAssignment record on tunnel #1 and decode it."""
        record = self.tunnel1.recv_record(self.timeout if timeout is None else timeout)
        if record is None:
            raise EmulatorError("no IpAssignment received")
        ip, netmask, gateway = setup.decode_ip_assignment(record)
        self.assignment = Assignment(ip, netmask, gateway, record)
        return self.assignment

    def send_ack(self, ip: ipaddress.IPv4Address | None = None) -> None:
        """Send IpAssignACK echoing the assigned address (or `ip`)."""
        if ip is None:
            if self.assignment is None:
                raise EmulatorError("no assignment to acknowledge")
            ip = self.assignment.ip
        self.tunnel1.send_record(setup.encode_ip_assign_ack(ip))

    def send_malformed_ack(self, payload: bytes = b"\x08") -> None:
        """Send a record on tunnel #1 that is not a valid IpAssignACK (misbehaviour)."""
        self.tunnel1.send_record(payload)

    def handshake2(self, *, stop_after_datagrams: int | None = None) -> None:
        """Open tunnel #2 (A:P+1) from a second socket and handshake (with `tunnel2_identity`)."""
        server2 = (self.server[0], self.server[1] + 1)
        self.tunnel2 = Tunnel(
            server2, self._client(self.tunnel2_identity), bind_address=self.bind_address
        )
        self.tunnel2.handshake(self.timeout, stop_after_datagrams=stop_after_datagrams)

    # -- data phase ----------------------------------------------------------------------------

    def send_packet(self, packet: bytes) -> None:
        """One IPv4 packet as one record on tunnel #1."""
        self.tunnel1.send_record(packet)

    def recv_packet(self, timeout: float) -> bytes | None:
        """The next record from tunnel #2, or None after `timeout` seconds."""
        if self.tunnel2 is None:
            raise EmulatorError("tunnel #2 is not open")
        return self.tunnel2.recv_record(timeout)

    # -- misbehaviour --------------------------------------------------------------------------

    def send_garbage(self, data: bytes, *, tunnel: int = 1) -> None:
        """Send `data` as a raw datagram on tunnel 1 or 2."""
        self._tunnel(tunnel).send_raw(data)

    def send_raw_record(
        self,
        payload: bytes,
        *,
        content_type: int = CONTENT_APPLICATION_DATA,
        epoch: int = 1,
        sequence: int = 1 << 40,
        tunnel: int = 1,
    ) -> None:
        """Send a hand-made DTLS record (not encrypted: the gateway must discard it)."""
        header = (
            bytes([content_type, 0xFE, 0xFD])
            + epoch.to_bytes(2, "big")
            + sequence.to_bytes(6, "big")
            + len(payload).to_bytes(2, "big")
        )
        assert len(header) == HEADER_LEN
        self._tunnel(tunnel).send_raw(header + payload)

    def wait_closed(self, timeout: float) -> bool:
        """Process input on the open tunnels until the gateway has closed all of them.

        True if it did within `timeout` seconds (records arriving meanwhile are discarded).
        """
        deadline = time.monotonic() + timeout
        tunnels = [t for t in (self.tunnel1, self.tunnel2) if t is not None]
        while True:
            open_tunnels = [t for t in tunnels if not t.client.closed]
            if not open_tunnels:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select(open_tunnels, [], [], min(remaining, 0.2))
            for tunnel in readable:
                tunnel.receive_ready()
                tunnel.client.records()

    @property
    def close_reasons(self) -> tuple[str | None, str | None]:
        """Why tunnel #1 and #2 closed (None while open or never opened)."""
        second = self.tunnel2.client.close_reason if self.tunnel2 is not None else None
        return self.tunnel1.client.close_reason, second

    def _tunnel(self, number: int) -> Tunnel:
        if number == 1:
            return self.tunnel1
        if number == 2 and self.tunnel2 is not None:
            return self.tunnel2
        raise EmulatorError(f"tunnel #{number} is not open")

    def close(self) -> None:
        """close_notify on tunnel #1, then tunnel #2 (the clients' order), close the sockets."""
        self.tunnel1.close()
        if self.tunnel2 is not None:
            self.tunnel2.close()

    def __enter__(self) -> EnclaveEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Command line: connect, optionally attach a TUN and forward
# --------------------------------------------------------------------------------------------


def _parse_server(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        address = str(ipaddress.IPv4Address(host))
        number = int(port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected IPV4:PORT, got {text!r}") from exc
    if not 1 <= number <= 65534:
        raise argparse.ArgumentTypeError(f"port {number} out of range")
    return address, number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sengd.testing.enclave_emu",
        description=(
            "Emulate a SENG enclave client: DTLS tunnels #1/#2 to the gateway, IpAssignment, "
            "optional TUN device in the current network namespace forwarding packets through "
            "the tunnels. Prints one JSON line {'event': 'up', ...} once connected."
        ),
    )
    parser.add_argument("--server", required=True, type=_parse_server, help="gateway A:P")
    parser.add_argument("--cert", required=True, type=Path, help="client certificate (PEM/DER)")
    parser.add_argument("--key", required=True, type=Path, help="client private key (PEM/DER)")
    parser.add_argument("--pin", type=Path, help="the server certificate the client pins (PEM/DER)")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="accept any server certificate (testing the emulator itself only)",
    )
    parser.add_argument("--build", choices=[b.value for b in Build], help="default: key type")
    parser.add_argument("--bind", help="local source address for both sockets")
    parser.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="DTLS datagram MTU")
    parser.add_argument(
        "--no-ems",
        action="store_true",
        help="do not offer Extended Master Secret (like the Runtime's OpenSSL 1.0.2)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per step, seconds")
    parser.add_argument("--tun", metavar="NAME", help="create TUN NAME and forward through it")
    parser.add_argument(
        "--tun-mtu", type=int, default=1420, help="TUN MTU (Runtime lwIP: 1420, SDK: 1432)"
    )
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PREFIX",
        help="route PREFIX (or 'default') via the assigned gateway; repeatable",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="without --tun: stay connected until SIGTERM/SIGINT, then close",
    )
    parser.add_argument("--skip-ack", action="store_true", help="misbehave: never send the ACK")
    parser.add_argument(
        "--fast-records",
        action="store_true",
        help="with --tun: protect the forwarded packets with keys exported from OpenSSL and "
        "`cryptography`'s AES-GCM instead of pyOpenSSL's memory BIOs (a faster load generator)",
    )
    return parser


class _Stop:
    """Set by SIGTERM/SIGINT."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True


def _run_ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def _open_tun(name: str, assignment: Assignment, mtu: int, routes: Sequence[str]) -> Any:
    import pytun

    tun = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    _run_ip("addr", "add", f"{assignment.ip}/{assignment.prefixlen}", "dev", name)
    _run_ip("link", "set", "dev", name, "mtu", str(mtu), "up")
    for prefix in routes:
        _run_ip("route", "replace", prefix, "via", str(assignment.gateway), "dev", name)
    return tun


def forward(emulator: EnclaveEmulator, tun_fd: int, should_stop: Callable[[], bool]) -> str:
    """Shuttle packets TUN -> tunnel #1 and tunnel #2 -> TUN until stopped or a tunnel closes.

    `tun_fd` is a non-blocking TUN descriptor without packet-info header. Returns why it
    stopped ("stopped" or the closed tunnel's reason).
    """
    tunnel1 = emulator.tunnel1
    tunnel2 = emulator.tunnel2
    if tunnel2 is None:
        raise EmulatorError("tunnel #2 is not open")
    poller = select.epoll()
    poller.register(tun_fd, select.EPOLLIN)
    poller.register(tunnel1.fileno(), select.EPOLLIN)
    poller.register(tunnel2.fileno(), select.EPOLLIN)
    try:
        while not should_stop():
            for fd, _ in poller.poll(0.5):
                if fd == tun_fd:
                    _tun_to_tunnel(tun_fd, tunnel1, emulator.mtu - 37)
                elif fd == tunnel2.fileno():
                    tunnel2.receive_ready()
                    for record in tunnel2.client.records():
                        with contextlib.suppress(OSError):
                            os.write(tun_fd, record)
                else:
                    tunnel1.receive_ready()
                    tunnel1.client.records()  # the gateway sends nothing after the ACK
            for tunnel in (tunnel1, tunnel2):
                if tunnel.client.closed:
                    return f"tunnel closed: {tunnel.client.close_reason}"
        return "stopped"
    finally:
        poller.close()


_OPENSSL_SUITE_IDS = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
}
_FAST_FIRST_SEQ = 1 << 20
"""Where the fast path starts numbering its records: beyond anything OpenSSL sent, so the
gateway's replay window takes them (its window only moves forward)."""


def client_records(client: DtlsClient) -> Any:
    """A `RecordLayer` for the client side of an established tunnel, keys from OpenSSL."""
    from sengd.tunnel.keyexport import SUITES, ExportedSession, derive_keys
    from sengd.tunnel.recordlayer import RecordLayer

    conn: Any = client._conn
    session = ExportedSession(
        suite=SUITES[_OPENSSL_SUITE_IDS[conn.get_cipher_name()]],
        master_secret=conn.master_key(),
        server_random=conn.server_random(),
        client_random=conn.client_random(),
        epoch=1,
        out_seq=0,
        in_top=0,
        in_window=0,
    )
    keys = derive_keys(session)
    return RecordLayer(
        read_key=keys.server_key,
        read_salt=keys.server_salt,
        write_key=keys.client_key,
        write_salt=keys.client_salt,
        epoch=1,
        out_seq=_FAST_FIRST_SEQ,
    )


def forward_fast(emulator: EnclaveEmulator, tun_fd: int, should_stop: Callable[[], bool]) -> str:
    """`forward()` with the records protected here (`client_records`): the same wire, several
    times less CPU per packet, so the emulator can outrun the gateway in benchmarks."""
    from sengd.tunnel.recordlayer import CONTENT_ALERT, RecordRejected

    tunnel1, tunnel2 = emulator.tunnel1, emulator.tunnel2
    if tunnel2 is None:
        raise EmulatorError("tunnel #2 is not open")
    out, into = client_records(tunnel1.client), client_records(tunnel2.client)
    send1, recv2 = tunnel1.sock.send, tunnel2.sock.recv
    limit = emulator.mtu - 37
    poller = select.epoll()
    poller.register(tun_fd, select.EPOLLIN)
    poller.register(tunnel2.fileno(), select.EPOLLIN)
    try:
        while not should_stop():
            for fd, _ in poller.poll(0.5):
                for _ in range(64):
                    try:
                        data = os.read(tun_fd, 65535) if fd == tun_fd else recv2(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:
                        continue
                    if fd == tun_fd:
                        if data and len(data) <= limit:
                            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                                send1(out.seal(CONTENT_APPLICATION_DATA, data))
                        continue
                    try:
                        kind, plaintext = into.open(data)
                    except RecordRejected:
                        continue
                    if kind == CONTENT_ALERT:
                        return "tunnel closed: alert from the gateway"
                    if kind == CONTENT_APPLICATION_DATA:
                        with contextlib.suppress(OSError):
                            os.write(tun_fd, plaintext)
        return "stopped"
    finally:
        poller.close()


def _tun_to_tunnel(tun_fd: int, tunnel: Tunnel, max_plaintext: int) -> None:
    for _ in range(64):
        try:
            packet = os.read(tun_fd, 65535)
        except BlockingIOError:
            return
        # OpenSSL would put a larger record on the wire unfragmented; the TUN MTU prevents it.
        if packet and len(packet) <= max_plaintext:
            tunnel.send_record(packet)


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry. Exit codes: 0 closed on request, 1 gateway refused/closed, 2 usage/I/O."""
    args = build_parser().parse_args(argv)
    if args.pin is None and not args.no_pin:
        print("error: --pin is required (or --no-pin)", file=sys.stderr)
        return 2
    try:
        identity = ClientIdentity.load(args.cert, args.key)
        pinned = None if args.no_pin else load_certificate_der(args.pin.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    emulator = EnclaveEmulator(
        args.server,
        identity,
        pinned_server_cert=pinned,
        build=Build(args.build) if args.build else None,
        bind_address=args.bind,
        mtu=args.mtu,
        extended_master_secret=not args.no_ems,
        timeout=args.timeout,
    )
    tun: Any = None
    try:
        emulator.handshake1()
        assignment = emulator.read_assignment()
        if not args.skip_ack:
            emulator.send_ack()
        emulator.handshake2()
        if args.tun:
            tun = _open_tun(args.tun, assignment, args.tun_mtu, args.route)
            os.set_blocking(tun.fileno(), False)
        _emit("up", tun=args.tun, **assignment.as_dict())
        if tun is not None and args.fast_records:
            why = forward_fast(emulator, tun.fileno(), lambda: stop.requested)
        elif tun is not None:
            why = forward(emulator, tun.fileno(), lambda: stop.requested)
        elif args.hold:
            why = _hold(emulator, lambda: stop.requested)
        else:
            why = "stopped"
    except EmulatorError as exc:
        _emit("failed", reason=str(exc))
        emulator.close()
        return 1
    except (OSError, subprocess.CalledProcessError) as exc:
        _emit("failed", reason=f"I/O: {exc}")
        emulator.close()
        return 2
    finally:
        if tun is not None:
            tun.close()
    emulator.close()
    _emit("down", reason=why)
    return 0 if why == "stopped" else 1


def _hold(emulator: EnclaveEmulator, should_stop: Callable[[], bool]) -> str:
    tunnels = [t for t in (emulator.tunnel1, emulator.tunnel2) if t is not None]
    while not should_stop():
        readable, _, _ = select.select(tunnels, [], [], 0.5)
        for tunnel in readable:
            tunnel.receive_ready()
            tunnel.client.records()
        for tunnel in tunnels:
            if tunnel.client.closed:
                return f"tunnel closed: {tunnel.client.close_reason}"
    return "stopped"


if __name__ == "__main__":
    sys.exit(main())
