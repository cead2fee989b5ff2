"""Handshake workers: DTLS handshakes run in other processes so forwarding never waits.

A handshake costs milliseconds of elliptic-curve arithmetic in mbedtls; on the forwarding
loop, a reconnect storm would delay every established enclave's packets by the handshakes
queued ahead of them. With a `HandshakePool` the gateway's listeners keep only established
connections (`DtlsListener.offload`): every other datagram is passed, as one SOCK_SEQPACKET
message, to the worker that owns its peer address (a hash of address and port, so one
handshake always meets the same worker). The worker (`hsworker.py`) runs the cookie lobby and
the handshake, sends its flights itself on the shared UDP sockets, and hands the finished
connection back: keys, sequence numbers, replay window, last flight and client certificate
(`sengd.tunnel.handoff`). The forwarding process adopts it and carries on as if the handshake
had run there: attestation, policy and the lease happen in the gateway as before.

Limits: each worker enforces `max_pending` and `max_pending_per_host` divided by the number
of workers (rounded up); `max_connections` is checked here when a ClientHello arrives.

A worker that exits or says something malformed is killed; its handshakes in progress end
with `worker-lost` (the clients retry) and a new worker is spawned a second later. While it is
missing its datagrams are dropped and counted (`worker-unavailable`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sengd.dataplane.loop import EventLoop
from sengd.eventlog import emit
from sengd.tunnel import handoff as wire
from sengd.tunnel.dtls import (
    Address,
    CloseReason,
    DropReason,
    DtlsError,
    DtlsListener,
    ServerCredential,
)

log = logging.getLogger("sengd.handshakes")

BATCH = 1
"""Worker messages handled per wake-up. Each handoff costs the forwarding loop an attestation,
a lease and a log line (~1 ms): a small batch lets established enclaves' packets in between."""
DRAIN_LIMIT = 4096
"""Reports applied per worker by `drain()`: all there are, within a bound."""
SOCKET_BUFFER = 1 << 21
RESPAWN_DELAY = 1.0
START_TIMEOUT = 20.0


class HandshakePoolError(Exception):
    """The workers could not be started."""


def auto_workers() -> int:
    """Workers for "auto": one per CPU this process may use, minus one for forwarding."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    ctrl: socket.socket | None = None
    ready: bool = False
    restarts: int = 0
    handoffs: int = 0


class HandshakePool:
    """Spawns the workers, routes handshake datagrams to them, and applies their reports.

    `after(index)` is called after reports changed listener `index` (the gateway drains its
    events then, exactly as after a datagram).
    """

    def __init__(
        self,
        loop: EventLoop,
        listeners: Sequence[DtlsListener],
        sockets: Sequence[socket.socket],
        credentials: Sequence[ServerCredential],
        count: int,
        after: Callable[[int], None],
        log_level: str = "info",
        engine: str = "openssl",
    ) -> None:
        if count < 1:
            raise ValueError("a pool needs at least one worker")
        if len(listeners) != 2 or len(sockets) != 2:
            raise ValueError("two listeners and their two sockets")
        self.loop = loop
        self.listeners = list(listeners)
        self.sockets = list(sockets)
        self.credentials = tuple(credentials)
        self.after = after
        self.log_level = log_level
        self.engine = engine
        self.workers = [_Worker(i) for i in range(count)]
        self._stopping = False

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker, wait until each is READY, then route handshakes to them.

        Raises HandshakePoolError (after stopping what was started) if one does not come up.
        """
        try:
            for worker in self.workers:
                self._spawn(worker)
            deadline = time.monotonic() + START_TIMEOUT
            for worker in self.workers:
                self._await_ready(worker, deadline)
        except (OSError, HandshakePoolError) as exc:
            self.stop()
            raise HandshakePoolError(f"handshake workers: {exc}") from exc
        for index, listener in enumerate(self.listeners):
            listener.offload(self._forwarder(index))
        emit(log, logging.INFO, "handshake-workers", count=len(self.workers), engine=self.engine)

    def stop(self) -> None:
        """Stop routing, end every worker (SIGTERM, then SIGKILL after 2 s)."""
        self._stopping = True
        for listener in self.listeners:
            for addr in listener.offloaded_addresses:
                listener.handshake_failed(addr, CloseReason.WORKER_LOST)
            listener.offload(None)
        for worker in self.workers:
            self._end(worker, wait=2.0)

    def status(self) -> list[dict[str, object]]:
        """One entry per worker: pid, alive, restarts, handoffs."""
        return [
            {
                "index": w.index,
                "pid": w.process.pid if w.process is not None else None,
                "alive": w.ready and w.process is not None and w.process.poll() is None,
                "restarts": w.restarts,
                "handoffs": w.handoffs,
            }
            for w in self.workers
        ]

    def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            for sock in (ours, theirs):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            fds = (theirs.fileno(), self.sockets[0].fileno(), self.sockets[1].fileno())
            process = subprocess.Popen(
                [sys.executable, "-m", "sengd.dataplane.hsworker", *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.sendall(wire.encode_init(self._settings(worker.index)))
        ours.setblocking(False)
        worker.process = process
        worker.ctrl = ours
        worker.ready = False
        self.loop.add_reader(ours.fileno(), lambda: self._on_worker(worker))

    def _settings(self, index: int) -> wire.WorkerSettings:
        n = len(self.workers)
        ref = self.listeners[0]
        return wire.WorkerSettings(
            credentials=self.credentials,
            mtu=ref.mtu,
            handshake_timeout=ref.handshake_timeout,
            max_pending=math.ceil(ref.max_pending / n),
            max_pending_per_host=math.ceil(ref.max_pending_per_host / n),
            index=index,
            log_level=self.log_level,
            engine=self.engine,
        )

    def _await_ready(self, worker: _Worker, deadline: float) -> None:
        ctrl = worker.ctrl
        assert ctrl is not None
        ctrl.setblocking(True)
        try:
            ctrl.settimeout(max(0.1, deadline - time.monotonic()))
            message = ctrl.recv(wire.MAX_MESSAGE)
        except TimeoutError:
            raise HandshakePoolError(f"worker {worker.index} not ready in time") from None
        finally:
            ctrl.setblocking(False)
        if message != wire.encode_ready():
            code = worker.process.poll() if worker.process is not None else None
            raise HandshakePoolError(f"worker {worker.index} did not start (exit status {code})")
        worker.ready = True

    def _end(self, worker: _Worker, wait: float = 0.0) -> None:
        if worker.ctrl is not None:
            self.loop.remove_reader(worker.ctrl.fileno())
            worker.ctrl.close()
            worker.ctrl = None
        worker.ready = False
        process = worker.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        worker.process = None

    # -- forwarding process -> worker ---------------------------------------------------------

    def _forwarder(self, index: int) -> Callable[[bytes, Address], None]:
        workers = self.workers
        drops = self.listeners[index].drops
        encode = wire.encode_datagram

        owner = self.owner

        def forward(data: bytes, addr: Address) -> None:
            ctrl = workers[owner(addr)].ctrl
            if ctrl is None:
                drops[DropReason.WORKER_UNAVAILABLE] += 1
                return
            try:
                ctrl.send(encode(index, addr, data))
            except OSError:  # BlockingIOError: the worker is behind; the client retransmits
                drops[DropReason.WORKER_UNAVAILABLE] += 1

        return forward

    def drain(self) -> None:
        """Apply every report the workers have sent so far (not just one batch each)."""
        for worker in self.workers:
            self._on_worker(worker, DRAIN_LIMIT)

    def owner(self, addr: Address) -> int:
        """Index of the worker that runs `addr`'s handshakes."""
        return hash(addr) % len(self.workers)

    # -- worker -> forwarding process ---------------------------------------------------------

    def _on_worker(self, worker: _Worker, limit: int = BATCH) -> None:
        ctrl = worker.ctrl
        if ctrl is None:
            return
        touched = [False, False]
        problem = None
        for _ in range(limit):
            try:
                message = ctrl.recv(wire.MAX_MESSAGE)
            except BlockingIOError:
                break
            except OSError as exc:
                problem = f"control socket: {exc.strerror or exc}"
                break
            if not message:
                problem = "exited"
                break
            if not worker.ready:
                if message != wire.encode_ready():
                    problem = "no READY"
                    break
                worker.ready = True
                continue
            try:
                index = self._apply(worker, wire.decode_worker_message(message))
            except wire.HandoffError as exc:
                problem = f"malformed message: {exc}"
                break
            touched[index] = True
        for index in (0, 1):
            if touched[index]:
                self.after(index)
        if problem is not None:
            self._lost(worker, problem)

    def _apply(self, worker: _Worker, message: wire.WorkerMessage) -> int:
        listener = self.listeners[message.listener]
        if isinstance(message, wire.Started):
            listener.handshake_started(message.addr, message.client_random)
        elif isinstance(message, wire.Handoff):
            worker.handoffs += 1
            try:
                listener.adopt(message.handoff)
            except (ValueError, DtlsError) as exc:
                emit(
                    log,
                    logging.ERROR,
                    "handoff-refused",
                    peer=f"{message.handoff.addr[0]}:{message.handoff.addr[1]}",
                    reason=str(exc),
                )
                listener.handshake_failed(message.handoff.addr, CloseReason.EXPORT_FAILED)
        elif isinstance(message, wire.Closed):
            listener.handshake_failed(message.addr, message.reason)
        else:
            listener.hello_verify_requests += message.hello_verify_requests
            listener.export_failures += message.export_failures
            listener.drops.update(message.drops)
        return message.listener

    def _lost(self, worker: _Worker, reason: str) -> None:
        process = worker.process
        self._end(worker)
        emit(
            log,
            logging.ERROR,
            "handshake-worker-lost",
            index=worker.index,
            pid=process.pid if process is not None else None,
            exit_status=process.returncode if process is not None else None,
            reason=reason,
        )
        for index, listener in enumerate(self.listeners):
            lost = [a for a in listener.offloaded_addresses if self.owner(a) == worker.index]
            for addr in lost:
                listener.handshake_failed(addr, CloseReason.WORKER_LOST)
            if lost:
                self.after(index)
        if not self._stopping:
            self.loop.call_later(RESPAWN_DELAY, lambda: self._respawn(worker))

    def _respawn(self, worker: _Worker) -> None:
        if self._stopping or worker.ctrl is not None:
            return
        worker.restarts += 1
        try:
            self._spawn(worker)
        except OSError as exc:
            emit(
                log, logging.ERROR, "handshake-worker-spawn-failed", index=worker.index, reason=exc
            )
            self.loop.call_later(RESPAWN_DELAY * 5, lambda: self._respawn(worker))
            return
        emit(log, logging.WARNING, "handshake-worker-restarted", index=worker.index)
