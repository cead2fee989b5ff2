"""A minimal gateway for the emulator tests: two DtlsListeners on real UDP sockets (P, P+1).

It performs the setup exchange (IpAssignment, ACK), pairs tunnel #2 by host address and
certificate, answers ICMP echo requests arriving on tunnel #1 via tunnel #2 and mirrors any
other packet back. It records what it saw so tests can assert on it. Not the product's
session layer (that is sengd.tunnel.session); just enough gateway to exercise the client.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from sengd.tunnel import setup
from sengd.tunnel.dtls import (
    ApplicationData,
    ConnectionClosed,
    DtlsListener,
    HandshakeCompleted,
    ServerCredential,
)

Address = tuple[str, int]


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def reply_to(packet: bytes) -> bytes:
    """An ICMP echo reply for an echo request, else the packet itself."""
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) > ihl + 8 and packet[9] == 1 and packet[ihl] == 8:
        icmp = bytearray(packet[ihl:])
        icmp[0] = 0
        icmp[2:4] = b"\0\0"
        icmp[2:4] = checksum(bytes(icmp)).to_bytes(2, "big")
        header = bytearray(packet[:ihl])
        header[12:16], header[16:20] = packet[16:20], packet[12:16]
        return bytes(header) + bytes(icmp)
    return packet


@dataclass
class Seen:
    """What the mini gateway observed (appended from its thread)."""

    handshakes: list[tuple[int, Address, bytes]] = field(default_factory=list)
    acks: list[IPv4Address] = field(default_factory=list)
    bad_acks: list[str] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)
    closed: list[tuple[int, ConnectionClosed]] = field(default_factory=list)
    pairing_refused: list[Address] = field(default_factory=list)


class MiniGateway:
    def __init__(
        self,
        credentials: list[ServerCredential],
        *,
        address: str = "127.0.0.1",
        assignment: tuple[str, str, str] = ("192.168.28.2", "255.255.255.0", "192.168.28.1"),
        handshake_timeout: float = 30.0,
        deny: bool = False,
    ) -> None:
        self.deny = deny
        self.listeners = [
            DtlsListener(credentials, handshake_timeout=handshake_timeout) for _ in range(2)
        ]
        self.sockets = self._bind_pair(address)
        self.port = self.sockets[0].getsockname()[1]
        self.address = address
        ip, mask, gw = (IPv4Address(a) for a in assignment)
        self.assignment = setup.encode_ip_assignment(ip, mask, gw)
        self.seen = Seen()
        self._tunnel1_cert: dict[Address, bytes] = {}
        self._acked: set[Address] = set()
        self._pairs: dict[Address, Address] = {}  # tunnel #1 addr -> tunnel #2 addr
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread = threading.Thread(target=self._run, name="minigw", daemon=True)

    @staticmethod
    def _bind_pair(address: str) -> list[socket.socket]:
        for _ in range(50):
            first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            first.bind((address, 0))
            port = first.getsockname()[1]
            second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                second.bind((address, port + 1))
            except OSError:
                first.close()
                second.close()
                continue
            for sock in (first, second):
                sock.setblocking(False)
            return [first, second]
        raise RuntimeError("no two consecutive free UDP ports")

    def __enter__(self) -> MiniGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return
            time.sleep(0.01)
        raise AssertionError("mini gateway: condition not reached")

    def drops(self, tunnel: int) -> dict[str, int]:
        with self._lock:
            return {k.value: v for k, v in self.listeners[tunnel - 1].drops.items()}

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            timers = [t for t in (lst.next_timer() for lst in self.listeners) if t is not None]
            wait = min([0.05, *(t - now for t in timers)])
            readable, _, _ = select.select(self.sockets, [], [], max(0.0, wait))
            with self._lock:
                for sock in readable:
                    index = self.sockets.index(sock)
                    while True:
                        try:
                            data, addr = sock.recvfrom(65536)
                        except BlockingIOError:
                            break
                        self.listeners[index].datagram_received(data, addr, time.monotonic())
                        self._process(index)
                for index, listener in enumerate(self.listeners):
                    listener.handle_timers(time.monotonic())
                    self._process(index)

    def _process(self, index: int) -> None:
        listener = self.listeners[index]
        for event in listener.events():
            tunnel = index + 1
            if isinstance(event, HandshakeCompleted):
                self.seen.handshakes.append((tunnel, event.addr, event.peer_cert_der))
                if tunnel == 1 and self.deny:
                    listener.close(event.addr)  # what a gateway does on a policy denial
                elif tunnel == 1:
                    self._tunnel1_cert[event.addr] = event.peer_cert_der
                    listener.send(event.addr, self.assignment)
                else:
                    self._pair(event)
            elif isinstance(event, ApplicationData) and tunnel == 1:
                self._tunnel1_data(event)
            elif isinstance(event, ConnectionClosed):
                self.seen.closed.append((tunnel, event))
        self._flush()

    def _pair(self, event: HandshakeCompleted) -> None:
        for addr1, cert in self._tunnel1_cert.items():
            if (
                addr1[0] == event.addr[0]
                and cert == event.peer_cert_der
                and addr1 not in self._pairs
            ):
                self._pairs[addr1] = event.addr
                return
        self.seen.pairing_refused.append(event.addr)
        self.listeners[1].close(event.addr)

    def _tunnel1_data(self, event: ApplicationData) -> None:
        if event.addr not in self._acked:
            try:
                self.seen.acks.append(setup.decode_ip_assign_ack(event.data))
                self._acked.add(event.addr)
            except setup.SetupMessageError as exc:
                self.seen.bad_acks.append(str(exc))
            return
        self.seen.packets.append(event.data)
        peer = self._pairs.get(event.addr)
        if peer is not None:
            self.listeners[1].send(peer, reply_to(event.data))

    def _flush(self) -> None:
        for sock, listener in zip(self.sockets, self.listeners, strict=True):
            for datagram, addr in listener.datagrams_to_send():
                with contextlib.suppress(OSError):
                    sock.sendto(datagram, addr)
