"""A handshake worker: a process that runs DTLS handshakes for the forwarding process.

Started by `handshakes.HandshakePool` as `python -m sengd.dataplane.hsworker CTRL UDP0 UDP1`
(spawned, never forked: a forked child would share mbedtls' random generator state with its
parent). CTRL is its end of a SOCK_SEQPACKET pair to the forwarding process; UDP0 and UDP1
are the gateway's sockets on ports P and P+1, on which the worker sends its flights directly.

It receives INIT, answers READY, then feeds every DATAGRAM to one of its two
handshake engine (`OpenSslHandshakes`, or `DtlsListener(handoff=True)` with engine
"mbedtls") and reports STARTED, HANDOFF and CLOSED for each handshake and
STATS (deltas of its drop counters) twice a second (`sengd.tunnel.handoff`). It exits when
the forwarding process closes its end or dies (PR_SET_PDEATHSIG), or on SIGTERM.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from sengd import eventlog
from sengd.dataplane.loop import EventLoop, TimerHandle
from sengd.eventlog import emit
from sengd.tunnel import handoff as wire
from sengd.tunnel.dtls import (
    Address,
    ConnectionClosed,
    DropReason,
    DtlsListener,
    Event,
    HandshakeHandoff,
    HandshakeStarted,
)
from sengd.tunnel.openssl_handshakes import OpenSslHandshakes

log = logging.getLogger("sengd.hsworker")

BATCH = 64
"""Messages read per wake-up before the listeners' output is flushed."""
STATS_INTERVAL = 0.5
NICENESS = 5
"""How much less CPU priority a worker takes than the forwarding process: in a reconnect
storm the handshakes wait a little, established enclaves' packets do not."""
_PR_SET_PDEATHSIG = 1


class HandshakeEngine(Protocol):
    """What the worker needs of `OpenSslHandshakes` and `DtlsListener(handoff=True)`."""

    drops: Counter[DropReason]
    hello_verify_requests: int
    export_failures: int

    def datagram_received(self, data: bytes, addr: Address, now: float) -> None: ...
    def handle_timers(self, now: float) -> None: ...
    def next_timer(self) -> float | None: ...
    def events(self) -> list[Event]: ...
    def datagrams_to_send(self) -> list[tuple[bytes, Address]]: ...


def make_engine(settings: wire.WorkerSettings) -> HandshakeEngine:
    """The handshake engine `settings` ask for, in handoff mode."""
    if settings.engine == "mbedtls":
        return DtlsListener(
            settings.credentials,
            mtu=settings.mtu,
            handshake_timeout=settings.handshake_timeout,
            max_pending=settings.max_pending,
            max_pending_per_host=settings.max_pending_per_host,
            handoff=True,
        )
    return OpenSslHandshakes(
        settings.credentials,
        mtu=settings.mtu,
        handshake_timeout=settings.handshake_timeout,
        max_pending=settings.max_pending,
        max_pending_per_host=settings.max_pending_per_host,
    )


class HandshakeWorker:
    """The worker's I/O shell around two handoff-mode listeners."""

    def __init__(
        self,
        settings: wire.WorkerSettings,
        ctrl: socket.socket,
        sockets: Sequence[socket.socket],
        loop: EventLoop | None = None,
    ) -> None:
        self.settings = settings
        self.ctrl = ctrl
        self.sockets = list(sockets)
        self.loop = loop or EventLoop()
        self.listeners = [make_engine(settings) for _ in range(2)]
        self._timers: list[TimerHandle | None] = [None, None]
        self._reported: list[tuple[int, int, Counter[DropReason]]] = [
            (0, 0, Counter()),
            (0, 0, Counter()),
        ]

    def run(self) -> None:
        self.loop.add_reader(self.ctrl.fileno(), self._on_ctrl)
        self.loop.add_signal_handler(signal.SIGTERM, self.loop.stop)
        self.loop.call_later(STATS_INTERVAL, self._stats_tick)
        self.loop.run()

    def _on_ctrl(self) -> None:
        touched = [False, False]
        now = self.loop.time()
        for _ in range(BATCH):
            try:
                message = self.ctrl.recv(wire.MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                message = b""
            if not message:  # the forwarding process is gone
                self.loop.stop()
                return
            try:
                datagram = wire.decode_datagram(message)
            except wire.HandoffError as exc:
                emit(log, logging.ERROR, "worker-bad-message", reason=str(exc))
                continue
            self.listeners[datagram.listener].datagram_received(datagram.data, datagram.addr, now)
            touched[datagram.listener] = True
        for index in (0, 1):
            if touched[index]:
                self._after(index)

    def _after(self, index: int) -> None:
        """Report the listener's events, send its flights, re-arm its timer.

        Reports go first: the forwarding process must have a handoff before the client can
        have the flight that ends the handshake (and talk on its other tunnel).
        """
        listener = self.listeners[index]
        sock = self.sockets[index]
        for event in listener.events():
            if isinstance(event, HandshakeStarted):
                self._report(wire.encode_started(index, event.addr, event.client_random))
            elif isinstance(event, HandshakeHandoff):
                self._report(wire.encode_handoff(index, event))
            elif isinstance(event, ConnectionClosed):
                self._report(wire.encode_closed(index, event.addr, event.reason))
        for datagram, addr in listener.datagrams_to_send():
            try:
                sock.sendto(datagram, addr)
            except OSError:  # full or unreachable: the client retransmits
                listener.drops[DropReason.SEND_FAILED] += 1
        self._arm(index)

    def _report(self, message: bytes) -> None:
        try:
            self.ctrl.sendall(message)
        except OSError:
            self.loop.stop()

    def _arm(self, index: int) -> None:
        self._timers[index] = self.loop.call_no_later(
            self._timers[index], self.listeners[index].next_timer(), lambda: self._due(index)
        )

    def _due(self, index: int) -> None:
        self._timers[index] = None
        self.listeners[index].handle_timers(self.loop.time())
        self._after(index)

    def _stats_tick(self) -> None:
        for index, listener in enumerate(self.listeners):
            hvr, failures, drops = self._reported[index]
            delta = listener.drops.copy()
            delta.subtract(drops)
            positive = {reason: count for reason, count in delta.items() if count > 0}
            if (
                listener.hello_verify_requests != hvr
                or listener.export_failures != failures
                or (positive)
            ):
                self._report(
                    wire.encode_stats(
                        index,
                        listener.hello_verify_requests - hvr,
                        listener.export_failures - failures,
                        positive,
                    )
                )
                self._reported[index] = (
                    listener.hello_verify_requests,
                    listener.export_failures,
                    listener.drops.copy(),
                )
        self.loop.call_later(STATS_INTERVAL, self._stats_tick)


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the forwarding process dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the closed control socket still ends the worker


def _lower_priority() -> str | None:
    """Yield the CPU to the forwarding process; the reason if that is not allowed here."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not all(a.isdigit() for a in args):
        print("usage: python -m sengd.dataplane.hsworker CTRL_FD UDP0_FD UDP1_FD", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's ^C is for sengd, not us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    ctrl_fd, udp0, udp1 = (int(a) for a in args)
    ctrl = socket.socket(fileno=ctrl_fd)
    ctrl.setblocking(True)
    sockets = [socket.socket(fileno=udp0), socket.socket(fileno=udp1)]
    try:
        settings = wire.decode_init(ctrl.recv(wire.MAX_MESSAGE))
    except (wire.HandoffError, OSError) as exc:
        print(f"sengd handshake worker: {exc}", file=sys.stderr)
        return 1
    eventlog.setup(settings.log_level)
    refused = _lower_priority()
    if refused is not None:
        emit(log, logging.WARNING, "worker-priority-unchanged", reason=refused)
    worker = HandshakeWorker(settings, ctrl, sockets)
    ctrl.sendall(wire.encode_ready())
    emit(log, logging.DEBUG, "worker-started", index=settings.index)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
