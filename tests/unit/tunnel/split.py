"""`SplitListener`: a forwarding listener and a handshake worker's listener, in one process.

The test double of the gateway's `HandshakePool` set-up (`sengd/dataplane/handshakes.py` and
`hsworker.py`) without processes or sockets: a main `DtlsListener` in offload mode keeps the
established connections and passes every other datagram to a worker `DtlsListener(handoff=
True)`, and the worker's events are applied to the main listener as `HandshakePool._apply`
does. Every message crosses the real codec (`sengd.tunnel.handoff`) both ways: datagrams to the
worker as DATAGRAM, its reports as STARTED / HANDOFF / CLOSED and its counters as STATS deltas,
each encoded and decoded, so every test that runs on a `SplitListener` exercises the codec.

It offers the surface of `DtlsListener` the listener tests and `harness.Link` use, with the
same meaning: `drops`, `hello_verify_requests` and `export_failures` are the main listener's,
which hold the worker's too (merged through STATS after every call), as in the gateway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sengd.tunnel import handoff as wire
from sengd.tunnel.dtls import (
    DEFAULT_MTU,
    Address,
    CloseReason,
    ConnectionClosed,
    DropReason,
    DtlsError,
    DtlsListener,
    Event,
    HandshakeHandoff,
    HandshakeStarted,
    KeyType,
    ServerCredential,
)


class SplitListener:
    """A main listener in offload mode plus one handshake worker listener, wired in memory.

    Parameters are those of `DtlsListener`; the worker gets the same mtu, handshake timeout
    and pending limits (one worker: no division), `max_connections` is the main listener's
    only, as in `HandshakePool`. `index` is the listener index put in every message.
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
        index: int = 0,
    ) -> None:
        self.main = DtlsListener(
            credentials,
            mtu=mtu,
            handshake_timeout=handshake_timeout,
            max_pending=max_pending,
            max_pending_per_host=max_pending_per_host,
            max_connections=max_connections,
        )
        self.worker = DtlsListener(
            credentials,
            mtu=mtu,
            handshake_timeout=handshake_timeout,
            max_pending=max_pending,
            max_pending_per_host=max_pending_per_host,
            handoff=True,
        )
        self.index = index
        self.forwarded: list[tuple[bytes, Address]] = []
        """Every datagram the main listener passed to the worker, in order."""
        self.handoffs: list[HandshakeHandoff] = []
        """Every HandshakeHandoff the worker emitted (before encoding)."""
        self.messages: list[wire.WorkerMessage] = []
        """Every decoded worker report (STATS included) applied to the main listener."""
        self.refused: list[Exception] = []
        """Errors `adopt` raised for a handoff (each turned into EXPORT_FAILED)."""
        self._now = 0.0
        self._out: list[tuple[bytes, Address]] = []
        self._reported: tuple[int, int, Counter[DropReason]] = (0, 0, Counter())
        self.main.offload(self._forward)

    # -- the DtlsListener surface ----------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None:
        self._now = now
        self.main.datagram_received(data, addr, now)
        self.sync()

    def handle_timers(self, now: float) -> None:
        self._now = now
        self.worker.handle_timers(now)
        self.main.handle_timers(now)
        self.sync()

    def next_timer(self) -> float | None:
        timers = [t for t in (self.worker.next_timer(), self.main.next_timer()) if t is not None]
        return min(timers) if timers else None

    def events(self) -> list[Event]:
        return self.main.events()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out + self.main.datagrams_to_send()

    def send(self, addr: Address, plaintext: bytes) -> None:
        self.main.send(addr, plaintext)

    def close(self, addr: Address) -> bool:
        return self.main.close(addr)

    def abort(self, addr: Address) -> bool:
        return self.main.abort(addr)

    def is_established(self, addr: Address) -> bool:
        return self.main.is_established(addr)

    @property
    def pending_count(self) -> int:
        return self.main.pending_count

    @property
    def connection_count(self) -> int:
        return self.main.connection_count

    @property
    def offloaded_addresses(self) -> list[Address]:
        return self.main.offloaded_addresses

    @property
    def drops(self) -> Counter[DropReason]:
        return self.main.drops

    @property
    def hello_verify_requests(self) -> int:
        return self.main.hello_verify_requests

    @property
    def exported(self) -> int:
        return self.main.exported

    @property
    def export_failures(self) -> int:
        return self.main.export_failures

    @property
    def key_types(self) -> tuple[KeyType, ...]:
        return self.main.key_types

    @property
    def max_plaintext(self) -> int:
        return self.main.max_plaintext

    @property
    def mtu(self) -> int:
        return self.main.mtu

    @property
    def handshake_timeout(self) -> float:
        return self.main.handshake_timeout

    @property
    def max_connections(self) -> int | None:
        return self.main.max_connections

    # -- the wiring ------------------------------------------------------------------------

    def _forward(self, data: bytes, addr: Address) -> None:
        """The main listener's forward(): DATAGRAM through the codec into the worker."""
        self.forwarded.append((data, addr))
        message = wire.decode_datagram(wire.encode_datagram(self.index, addr, data))
        assert message.listener == self.index
        self.worker.datagram_received(message.data, message.addr, self._now)

    def sync(self) -> None:
        """Report the worker's events and counters to the main listener (as hsworker does:
        reports first, then its flights go out)."""
        for event in self.worker.events():
            if isinstance(event, HandshakeStarted):
                encoded = wire.encode_started(self.index, event.addr, event.client_random)
            elif isinstance(event, HandshakeHandoff):
                self.handoffs.append(event)
                encoded = wire.encode_handoff(self.index, event)
            elif isinstance(event, ConnectionClosed):
                encoded = wire.encode_closed(self.index, event.addr, event.reason)
            else:
                raise AssertionError(f"a handoff-mode listener emitted {event!r}")
            self.apply(wire.decode_worker_message(encoded))
        self._out.extend(self.worker.datagrams_to_send())
        self._report_stats()

    def _report_stats(self) -> None:
        """STATS as `HandshakeWorker._stats_tick` computes them (positive deltas only)."""
        worker = self.worker
        hvr, failures, drops = self._reported
        delta = worker.drops.copy()
        delta.subtract(drops)
        positive = {reason: count for reason, count in delta.items() if count > 0}
        if (
            worker.hello_verify_requests == hvr
            and worker.export_failures == failures
            and (not positive)
        ):
            return
        self.apply(
            wire.decode_worker_message(
                wire.encode_stats(
                    self.index,
                    worker.hello_verify_requests - hvr,
                    worker.export_failures - failures,
                    positive,
                )
            )
        )
        self._reported = (worker.hello_verify_requests, worker.export_failures, worker.drops.copy())

    def apply(self, message: wire.WorkerMessage) -> None:
        """Apply one decoded worker report to the main listener, as `HandshakePool._apply`."""
        assert message.listener == self.index
        self.messages.append(message)
        listener = self.main
        if isinstance(message, wire.Started):
            listener.handshake_started(message.addr, message.client_random)
        elif isinstance(message, wire.Handoff):
            try:
                listener.adopt(message.handoff)
            except (ValueError, DtlsError) as exc:
                self.refused.append(exc)
                listener.handshake_failed(message.handoff.addr, CloseReason.EXPORT_FAILED)
        elif isinstance(message, wire.Closed):
            listener.handshake_failed(message.addr, message.reason)
        else:
            listener.hello_verify_requests += message.hello_verify_requests
            listener.export_failures += message.export_failures
            listener.drops.update(message.drops)
