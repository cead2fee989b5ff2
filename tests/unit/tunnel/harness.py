"""In-memory wiring of a real pyOpenSSL client to a real DtlsListener (no sockets).

`Link` carries datagrams between one `DtlsClient` and a listener, with hooks to drop or
duplicate datagrams in either direction, and collects the listener's events.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sengd.testing.enclave_emu import DtlsClient
from sengd.tunnel.dtls import Address, DtlsListener, Event

Filter = Callable[[int, bytes], bool]
"""(index of the datagram in that direction, datagram) -> deliver it?"""


def deliver_all(_index: int, _datagram: bytes) -> bool:
    return True


class Link:
    def __init__(
        self,
        listener: DtlsListener,
        client: DtlsClient,
        addr: Address = ("10.1.2.3", 40001),
        *,
        to_server: Filter = deliver_all,
        to_client: Filter = deliver_all,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listener = listener
        self.client = client
        self.addr = addr
        self.to_server = to_server
        self.to_client = to_client
        self.clock = clock
        self.sent_to_server = 0
        self.sent_to_client = 0
        self.client_datagrams: list[bytes] = []
        """Every datagram the client sent (delivered or not)."""
        self.events: list[Event] = []
        self.other: list[tuple[bytes, Address]] = []
        """Datagrams the listener addressed to somebody else."""
        self.server_datagrams: list[bytes] = []
        """Every datagram the listener sent to this client (delivered or not)."""

    def pump(self) -> bool:
        """Move everything once in both directions; True if anything moved."""
        moved = False
        for datagram in self.client.datagrams_to_send():
            moved = True
            index = self.sent_to_server
            self.sent_to_server += 1
            self.client_datagrams.append(datagram)
            if self.to_server(index, datagram):
                self.listener.datagram_received(datagram, self.addr, self.clock())
        self.collect()
        for datagram, addr in self.listener.datagrams_to_send():
            if addr != self.addr:
                self.other.append((datagram, addr))
                continue
            moved = True
            self.server_datagrams.append(datagram)
            index = self.sent_to_client
            self.sent_to_client += 1
            if self.to_client(index, datagram):
                self.client.datagram_received(datagram)
        return moved

    def collect(self) -> None:
        self.events.extend(self.listener.events())

    def run(self, *, until: Callable[[], bool], timeout: float = 10.0) -> None:
        """Pump, honouring both sides' retransmission timers, until `until()` or timeout."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the condition")
            if self.pump():
                continue
            waits = [0.2]
            client_timeout = self.client.timeout()
            if client_timeout is not None:
                waits.append(client_timeout)
            server_timer = self.listener.next_timer()
            if server_timer is not None:
                waits.append(server_timer - self.clock())
            time.sleep(max(0.0, min(waits)))
            if self.client.timeout() == 0.0:
                self.client.handle_timeout()
            self.listener.handle_timers(self.clock())
            self.collect()

    def handshake(self, timeout: float = 10.0) -> None:
        self.client.start()
        self.run(
            until=lambda: (
                (self.client.established and self.listener.is_established(self.addr))
                or self.client.closed
            ),
            timeout=timeout,
        )
        self.pump()
