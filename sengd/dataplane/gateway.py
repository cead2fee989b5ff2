"""The gateway: wires the sans-IO pieces to sockets, the TUN device, the store and the clock.

Data flow (DESIGN.md "How data flows"):
- a datagram on A:P or A:P+1 goes to that port's `DtlsListener`; its events drive admission
  (tunnel #1 handshake: attestation -> policy -> lease -> `Session.start`), pairing (tunnel #2
  handshake from the same host with the same quote), the setup exchange and forwarding;
- a record on tunnel #1 of an active session is checked by the session and written to the TUN;
- a packet read from the TUN is routed by destination address to its session's tunnel #2;
- any close (close_notify or fatal alert on either tunnel, timeout, kill, revocation,
  shutdown) tears the whole session down: both tunnels, the lease, the routing entry.

The forwarding path touches no database and logs nothing at info level. Denials and session
changes are logged as one event line each (`sengd.eventlog`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import Any, Protocol

from sengd import policy
from sengd.attestation import AttestationError, TrustConfig, verify_certificate
from sengd.attestation.evidence import Evidence
from sengd.config import Config
from sengd.dataplane import batchio
from sengd.dataplane.loop import EventLoop, TimerHandle
from sengd.eventlog import emit
from sengd.store.allocator import Allocator, EndReason
from sengd.store.allocator import Counters as LeaseCounters
from sengd.store.errors import PoolExhausted, StoreError
from sengd.tunnel import packets
from sengd.tunnel import session as sess
from sengd.tunnel.dtls import (
    MAX_DATAGRAM,
    ApplicationData,
    ConnectionClosed,
    DtlsListener,
    Event,
    HandshakeCompleted,
)
from sengd.tunnel.recordlayer import CONTENT_APPLICATION_DATA, MAX_SEQ

log = logging.getLogger("sengd.gateway")

BATCH = 256
"""Datagrams or packets handled per readiness callback before other descriptors get a turn."""
RECV_BATCH = 64
"""Datagrams per recvmmsg call."""
RECV_BUFFER = 4 * 1024 * 1024
MAX_DENIALS_KEPT = 256

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused tunnel, kept for the operator (log line, RPC, dashboard)."""

    at: datetime
    tunnel: int
    host: str
    port: int
    reason: str
    detail: str
    mr_enclave: bytes | None
    app: str | None


class SessionObserver(Protocol):
    """Told about sessions entering and leaving the active state (firewall sets, RPC events).

    `session_down` runs before the session's lease is released, so that whatever the observer
    keeps for the enclave address (set elements, conntrack entries) is gone before the address
    can be handed out again. Observers must not raise; an exception is logged and ignored.
    """

    def session_up(self, session: sess.Session) -> None: ...

    def session_down(self, session: sess.Session, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """Where an admitted enclave goes: its app (allowlist entry) and enclave subnet."""

    app: str
    entry_id: int | None
    categories: tuple[str, ...]
    subnet_id: int


@dataclass(slots=True)
class _Totals:
    """Traffic counters summed over sessions (rx = enclave -> gateway)."""

    rx_bytes: int = 0
    rx_packets: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0

    def __iadd__(self, other: tuple[int, int, int, int]) -> _Totals:
        self.rx_bytes += other[0]
        self.rx_packets += other[1]
        self.tx_bytes += other[2]
        self.tx_packets += other[3]
        return self

    def values(self) -> tuple[int, int, int, int]:
        return (self.rx_bytes, self.rx_packets, self.tx_bytes, self.tx_packets)


# The reason a session ended, mapped to the lease end reason stored in the database.
_END_REASONS: dict[str, EndReason] = {
    "close-notify": EndReason.CLOSED,
    "no-ack": EndReason.SETUP_FAILED,
    "pairing-timeout": EndReason.SETUP_FAILED,
    "idle-timeout": EndReason.TIMEOUT,
    "killed": EndReason.KILLED,
    "revoked": EndReason.REVOKED,
    "subnet-removed": EndReason.REVOKED,
    "shutdown": EndReason.SHUTDOWN,
}


class Gateway:
    """All sessions of one gateway process and the descriptors that feed them."""

    def __init__(
        self,
        config: Config,
        loop: EventLoop,
        listeners: tuple[DtlsListener, DtlsListener],
        tun_fd: int,
        trust: TrustConfig,
        allocator: Allocator,
        allowlist: policy.Allowlist,
        default_subnet_id: int | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.loop = loop
        self.listeners = listeners
        self.tun_fd = tun_fd
        self.trust = trust
        self.allocator = allocator
        self.allowlist = allowlist
        self.default_subnet_id = default_subnet_id
        self.clock = clock
        self.defaults = policy_defaults(config)
        self.timers = sess.Timers(
            assignment_resend=config.tunnel.assignment_resend,
            pairing_timeout=config.tunnel.pairing_timeout,
            idle_timeout=config.tunnel.idle_timeout,
        )
        self.sockets: list[socket.socket] = []
        self._receivers: list[batchio.Receiver] = []
        self.by_tunnel1: dict[Address, sess.Session] = {}
        self.by_tunnel2: dict[Address, sess.Session] = {}
        self.by_address: dict[bytes, sess.Session] = {}
        self._session_timers: dict[int, TimerHandle] = {}
        self._listener_timers: list[TimerHandle | None] = [None, None]
        self._next_id = 1
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self.drops: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()
        self.denials: deque[Denial] = deque(maxlen=MAX_DENIALS_KEPT)
        self.started_at = clock()
        self.accepting = True
        self.observers: list[SessionObserver] = []
        self.denial_listeners: list[Callable[[Denial], None]] = []
        self._closed_totals = _Totals()
        self.sync_handshakes: Callable[[], None] | None = None
        """Apply what handshake workers reported so far (set when they run handshakes)."""

    # -- set-up ----------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind A:P and A:P+1 (exact address: replies must leave from it) and start reading."""
        address = str(self.config.tunnel.address)
        for index, port in enumerate((self.config.tunnel.port, self.config.tunnel.port + 1)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RECV_BUFFER)
            sock.bind((address, port))
            sock.setblocking(False)
            self.sockets.append(sock)
            if batchio.available():
                self._receivers.append(batchio.Receiver(sock, RECV_BATCH, MAX_DATAGRAM))
            self.loop.add_reader(sock.fileno(), self._reader_for(index))
        self.loop.add_reader(self.tun_fd, self._on_tun)

    def _reader_for(self, index: int) -> Callable[[], None]:
        return lambda: self._on_udp(index)

    # -- descriptors -----------------------------------------------------------------------

    def _on_udp(self, index: int) -> None:
        listener = self.listeners[index]
        now = self.loop.time()
        if self._receivers:
            # recvmmsg: measured 1.2 us instead of 1.55 us per datagram (recvfrom_into + copy).
            receive = self._receivers[index].receive
            received = listener.datagram_received
            for _ in range(BATCH // RECV_BATCH):
                try:
                    batch = receive()
                except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                    self.drops[f"socket-error-{exc.errno}"] += 1
                    continue
                for data, addr in batch:
                    received(data, addr, now)
                if len(batch) < RECV_BATCH:
                    break
            self._after_listener(index)
            return
        sock = self.sockets[index]
        buf, view = self._buf, self._view
        for _ in range(BATCH):
            try:
                size, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                self.drops[f"socket-error-{exc.errno}"] += 1
                continue
            listener.datagram_received(bytes(view[:size]), addr, now)
        self._after_listener(index)

    def _on_tun(self) -> None:
        """The gateway->enclave path: route each packet by destination to its tunnel #2.

        Dense on purpose: for a tunnel whose records are ours the record is sealed and sent
        here (`records_of`), otherwise `DtlsListener.send` does it; each packet routed counts in
        its session's tx counters, send errors in the gateway's drops as in `_flush`.
        """
        fd = self.tun_fd
        listener = self.listeners[1]
        records_of = listener.records_of
        sendto = self.sockets[1].sendto
        limit = min(listener.max_plaintext, self.config.tunnel.mtu)
        routes = self.by_address
        drops = self.drops
        for _ in range(BATCH):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                break
            size = len(packet)
            if size < 20 or packet[0] >> 4 != 4:
                drops["tun-not-ipv4"] += 1
                continue
            session = routes.get(packet[16:20])
            if session is None or session.tunnel2 is None:
                drops["tun-no-route"] += 1
                continue
            if size > limit:
                drops["tun-too-big"] += 1
                continue
            counters = session.counters
            counters.tx_packets += 1
            counters.tx_bytes += size
            records = records_of(session.tunnel2)
            if records is None or records.out_seq >= MAX_SEQ:
                listener.send(session.tunnel2, packet)  # mbedtls' records, or the last ones
                continue
            try:
                sendto(records.seal(CONTENT_APPLICATION_DATA, packet), session.tunnel2)
            except BlockingIOError:
                drops["send-buffer-full"] += 1
            except OSError as exc:
                drops[f"send-error-{exc.errno}"] += 1
        self._after_listener(1)

    def after_listener(self, index: int) -> None:
        """Act on what listener `index` produced outside a datagram (handshake workers)."""
        self._after_listener(index)

    def _after_listener(self, index: int) -> None:
        """Send what the listener produced, act on its events, re-arm its timer."""
        listener = self.listeners[index]
        events = listener.events()
        if index == 0 and events:
            events = self._forward_fast(events)
        for event in events:
            if isinstance(event, ApplicationData):
                if index == 0:
                    self._on_tunnel1_data(event)
                else:
                    self.drops["tunnel2-data"] += 1
            elif isinstance(event, HandshakeCompleted):
                if index == 0:
                    self._admit(event)
                else:
                    self._pair(event)
            elif isinstance(event, ConnectionClosed):
                self._on_closed(index, event)
        self._flush(index)
        self._arm_listener(index)

    def _forward_fast(self, events: list[Event]) -> list[Event]:
        """Forward tunnel #1 data of active sessions to the TUN; return the other events.

        The enclave->gateway fast path: `_on_tunnel1_data` + `Session.on_tunnel1_record` for an
        ACTIVE session, inlined (same check, same counters, same drops). It handles the leading
        run of ApplicationData events only; from the first other event on (a handshake, a
        close) everything goes the general way, in order.
        """
        sessions = self.by_tunnel1
        active = sess.State.ACTIVE
        check = packets.check_enclave_packet
        fd = self.tun_fd
        now = self.loop.time()
        for position, event in enumerate(events):
            if type(event) is not ApplicationData:
                return events[position:]
            session = sessions.get(event.addr)
            if session is None or session.state is not active:
                self._on_tunnel1_data(event)
                continue
            packet = event.data
            reason = check(packet, session.packed_address)
            if reason is not None:
                session.counters.drops[reason] = session.counters.drops.get(reason, 0) + 1
                self.drops[reason] += 1
                continue
            counters = session.counters
            counters.rx_packets += 1
            counters.rx_bytes += len(packet)
            session.last_activity = now
            try:
                os.write(fd, packet)
            except BlockingIOError:
                self.drops["tun-full"] += 1
            except OSError as exc:
                self.drops[f"tun-error-{exc.errno}"] += 1
        return []

    def _flush(self, index: int) -> None:
        sock = self.sockets[index]
        for datagram, addr in self.listeners[index].datagrams_to_send():
            try:
                sock.sendto(datagram, addr)
            except BlockingIOError:
                self.drops["send-buffer-full"] += 1
            except OSError as exc:
                self.drops[f"send-error-{exc.errno}"] += 1

    def _arm_listener(self, index: int) -> None:
        self._listener_timers[index] = self.loop.call_no_later(
            self._listener_timers[index],
            self.listeners[index].next_timer(),
            lambda: self._listener_due(index),
        )

    def _listener_due(self, index: int) -> None:
        self._listener_timers[index] = None
        self.listeners[index].handle_timers(self.loop.time())
        self._after_listener(index)

    # -- admission and pairing -------------------------------------------------------------

    def _verify(self, event: HandshakeCompleted, tunnel: int) -> Evidence | None:
        try:
            return verify_certificate(event.peer_cert_der, self.trust, self.clock())
        except AttestationError as exc:
            self._deny(tunnel, event.addr, exc.reason.value, exc.message, None)
            return None

    def _admit(self, event: HandshakeCompleted) -> None:
        addr = event.addr
        evidence = self._verify(event, 1)
        if evidence is None:
            self.listeners[0].close(addr)
            return
        admission = self._decide(evidence, addr)
        if admission is None:
            self.listeners[0].close(addr)
            return
        if len(self.by_tunnel1) >= self.config.limits.max_sessions:
            self._deny(1, addr, "max-sessions", "the session limit is reached", evidence)
            self.listeners[0].close(addr)
            return
        try:
            grant = self.allocator.lease(
                admission.subnet_id,
                mr_enclave=evidence.mr_enclave,
                mr_signer=evidence.mr_signer,
                host_address=IPv4Address(addr[0]),
                host_port=addr[1],
                app_id=admission.entry_id,
                isv_prod_id=evidence.isv_prod_id,
                isv_svn=evidence.isv_svn,
            )
        except PoolExhausted as exc:
            self._deny(1, addr, "pool-exhausted", str(exc), evidence, admission.app)
            self.listeners[0].close(addr)
            return
        except StoreError as exc:
            self._deny(1, addr, "store-error", str(exc), evidence, admission.app)
            self.listeners[0].close(addr)
            return
        old = self.by_tunnel1.get(addr)
        if old is not None:  # the client reconnected from the same address and port
            self.teardown(old, "replaced")
        session = sess.Session(
            id=self._next_id,
            tunnel1=addr,
            evidence=evidence,
            app=admission.app,
            entry_id=admission.entry_id,
            categories=admission.categories,
            address=grant.address,
            network=grant.network,
            gateway=grant.gateway,
            subnet_id=grant.subnet_id,
            started_at=grant.started_at,
            timers=self.timers,
            lease_id=grant.lease_id,
        )
        self._next_id += 1
        self.by_tunnel1[addr] = session
        self.handshakes["admitted"] += 1
        send = session.start(self.loop.time())
        self.listeners[0].send(addr, send.data)
        self._arm_session(session)
        emit(
            log,
            logging.INFO,
            "session-assigned",
            session=session.id,
            enclave_ip=session.address,
            app=session.app,
            mrenclave=evidence.mr_enclave[:8],
            host=f"{addr[0]}:{addr[1]}",
        )

    def _decide(self, evidence: Evidence, addr: Address) -> Admission | None:
        if self.config.attestation.allow_any_attested:
            if self.default_subnet_id is None:  # pragma: no cover - the daemon creates it
                raise RuntimeError("allow_any_attested needs the default enclave subnet")
            return Admission("any-attested", None, (), self.default_subnet_id)
        verdict = policy.decide(evidence, IPv4Address(addr[0]), self.allowlist, self.defaults)
        if isinstance(verdict, policy.Denial):
            self._deny(1, addr, verdict.reason, verdict.message, evidence)
            return None
        entry = verdict.entry
        return Admission(entry.name, entry.id, entry.categories, verdict.enclave_subnet_id)

    def _pair(self, event: HandshakeCompleted) -> None:
        addr = event.addr
        evidence = self._verify(event, 2)
        if evidence is None:
            self.listeners[1].close(addr)
            return
        for session in self.by_tunnel1.values():
            if session.matches_tunnel2(evidence, addr[0]):
                break
        else:
            self._deny(
                2,
                addr,
                "no-matching-tunnel1",
                "no enclave from this host with this quote is waiting for its second tunnel",
                evidence,
            )
            self.listeners[1].close(addr)
            return
        old = self.by_tunnel2.get(addr)
        if old is not None:
            self.teardown(old, "replaced")
        session.pair(addr, self.loop.time())
        self.by_tunnel2[addr] = session
        self.by_address[session.packed_address] = session
        self.handshakes["paired"] += 1
        self._arm_session(session)
        self._notify("session_up", session)
        emit(
            log,
            logging.INFO,
            "session-up",
            session=session.id,
            enclave_ip=session.address,
            app=session.app,
            mrenclave=evidence.mr_enclave[:8],
            host=session.host,
            scheme=evidence.scheme,
            quote_status=evidence.quote_status,
        )

    def _deny(
        self,
        tunnel: int,
        addr: Address,
        reason: str,
        detail: str,
        evidence: Evidence | None,
        app: str | None = None,
    ) -> None:
        self.handshakes[f"denied:{reason}"] += 1
        mr_enclave = evidence.mr_enclave if evidence is not None else None
        denial = Denial(self.clock(), tunnel, addr[0], addr[1], reason, detail, mr_enclave, app)
        self.denials.append(denial)
        for listener in self.denial_listeners:
            try:
                listener(denial)
            except Exception:
                log.exception("denial listener %r failed", listener)
        emit(
            log,
            logging.WARNING,
            "denied",
            tunnel=tunnel,
            host=f"{addr[0]}:{addr[1]}",
            reason=reason,
            mrenclave=mr_enclave[:8] if mr_enclave else None,
            app=app,
            detail=detail,
        )

    # -- established sessions --------------------------------------------------------------

    def _on_tunnel1_data(self, event: ApplicationData) -> None:
        session = self.by_tunnel1.get(event.addr)
        if session is None:
            self.drops["tunnel1-no-session"] += 1
            return
        if session.state is sess.State.AWAITING_TUNNEL2 and self.sync_handshakes is not None:
            # A worker reports a handoff before it sends the flight that ends the handshake,
            # so a client that already talks after finishing tunnel #2 finds it applied.
            self.sync_handshakes()
        action = session.on_tunnel1_record(event.data, self.loop.time())
        if isinstance(action, sess.Forward):
            try:
                os.write(self.tun_fd, action.packet)
            except BlockingIOError:
                self.drops["tun-full"] += 1
            except OSError as exc:
                self.drops[f"tun-error-{exc.errno}"] += 1
        elif isinstance(action, sess.Drop):
            self.drops[action.reason] += 1
        elif isinstance(action, sess.Fail):
            self.teardown(session, action.reason)
        else:
            self._arm_session(session)  # the ACK moved the deadline

    def _on_closed(self, index: int, event: ConnectionClosed) -> None:
        table = self.by_tunnel1 if index == 0 else self.by_tunnel2
        session = table.get(event.addr)
        if session is None:
            if not event.established:
                self.handshakes[f"failed:{event.reason.value}"] += 1
            return
        self.teardown(session, event.reason.value, tunnel=index + 1)

    def _arm_session(self, session: sess.Session) -> None:
        old = self._session_timers.pop(session.id, None)
        if old is not None:
            old.cancel()
        if session.deadline > 0 and session.state is not sess.State.CLOSED:
            self._session_timers[session.id] = self.loop.call_at(
                session.deadline, lambda: self._session_due(session)
            )

    def _session_due(self, session: sess.Session) -> None:
        self._session_timers.pop(session.id, None)
        if session.state is sess.State.CLOSED:
            return
        action = session.on_timer(self.loop.time())
        if isinstance(action, sess.Send):
            self.listeners[0].send(session.tunnel1, action.data)
            self._flush(0)
        elif isinstance(action, sess.Fail):
            self.teardown(session, action.reason)
            return
        self._arm_session(session)

    def teardown(
        self,
        session: sess.Session,
        reason: str,
        tunnel: int | None = None,
        *,
        detail: str | None = None,
        actor: str | None = None,
    ) -> None:
        """End `session` now: close_notify on both tunnels, forget its routes, end its lease.

        `detail` and `actor` (an administrator's kill message and name) reach the log line."""
        if session.state is sess.State.CLOSED:
            return
        was_active = session.state is sess.State.ACTIVE
        session.state = sess.State.CLOSED
        timer = self._session_timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()
        if self.by_tunnel1.get(session.tunnel1) is session:
            del self.by_tunnel1[session.tunnel1]
            if tunnel != 1:
                self.listeners[0].close(session.tunnel1)
        if session.tunnel2 is not None and self.by_tunnel2.get(session.tunnel2) is session:
            del self.by_tunnel2[session.tunnel2]
            if tunnel != 2:
                self.listeners[1].close(session.tunnel2)
        if self.by_address.get(session.packed_address) is session:
            del self.by_address[session.packed_address]
        self._flush(0)
        if self.sockets[1:]:
            self._flush(1)
        if was_active:
            self._notify("session_down", session, reason)
        c = session.counters
        self._closed_totals += (c.rx_bytes, c.rx_packets, c.tx_bytes, c.tx_packets)
        end_reason = _END_REASONS.get(reason, EndReason.ERROR)
        if session.lease_id is not None:
            try:
                self.allocator.release(
                    session.lease_id,
                    end_reason,
                    LeaseCounters(
                        bytes_in=c.tx_bytes,
                        bytes_out=c.rx_bytes,
                        packets_in=c.tx_packets,
                        packets_out=c.rx_packets,
                    ),
                )
            except StoreError as exc:
                log.error("cannot release lease %s: %s", session.lease_id, exc)
        emit(
            log,
            logging.INFO,
            "session-down",
            session=session.id,
            enclave_ip=session.address,
            app=session.app,
            mrenclave=session.evidence.mr_enclave[:8],
            host=session.host,
            reason=reason,
            tunnel=tunnel,
            actor=actor,
            detail=detail,
            duration=(self.clock() - session.started_at).total_seconds(),
            rx_bytes=c.rx_bytes,
            tx_bytes=c.tx_bytes,
            drops=sum(c.drops.values()),
        )

    def _notify(self, method: str, session: sess.Session, *args: str) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(session, *args)
            except Exception:  # an observer bug must not take the data plane down
                log.exception("session observer %r failed in %s", observer, method)

    # -- administration --------------------------------------------------------------------

    def sessions(self) -> list[sess.Session]:
        """Every live session (assigning, waiting for tunnel #2 or active), oldest first."""
        return sorted(self.by_tunnel1.values(), key=lambda s: s.id)

    def apply_allowlist(self, allowlist: policy.Allowlist) -> list[sess.Session]:
        """Switch to a new allowlist; close and return the sessions it no longer admits."""
        self.allowlist = allowlist
        if self.config.attestation.allow_any_attested:
            return []
        revoked = []
        for session in self.sessions():
            verdict = policy.decide(
                session.evidence, IPv4Address(session.host), allowlist, self.defaults
            )
            if isinstance(verdict, policy.Denial) or verdict.enclave_subnet_id != session.subnet_id:
                revoked.append(session)
        for session in revoked:
            self.teardown(session, "revoked")
        return revoked

    def shutdown(self) -> None:
        """Close every session (close_notify on both tunnels), then the sockets."""
        self.accepting = False
        for session in self.sessions():
            self.teardown(session, "shutdown")
        for index in range(len(self.sockets)):
            self._flush(index)
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()
        self.loop.remove_reader(self.tun_fd)

    def traffic_totals(self) -> dict[str, int]:
        """Bytes and packets since start, live and ended sessions together."""
        t = _Totals(*self._closed_totals.values())
        for session in self.by_tunnel1.values():
            c = session.counters
            t += (c.rx_bytes, c.rx_packets, c.tx_bytes, c.tx_packets)
        return {
            "rx_bytes": t.rx_bytes,
            "rx_packets": t.rx_packets,
            "tx_bytes": t.tx_bytes,
            "tx_packets": t.tx_packets,
        }

    def status(self) -> dict[str, Any]:
        """Counters for logs and the control plane."""
        return {
            "sessions": len(self.by_tunnel1),
            "active": len(self.by_address),
            "handshakes": dict(self.handshakes),
            "drops": dict(self.drops),
            "listener_drops": [
                {k.value: v for k, v in listener.drops.items()} for listener in self.listeners
            ],
        }


def policy_defaults(config: Config) -> policy.PolicyDefaults:
    """The global policy knobs of `[attestation]`."""
    a = config.attestation
    return policy.PolicyDefaults(
        allow_debug=a.allow_debug,
        quote_statuses=frozenset(a.quote_statuses),
        tcb_statuses=frozenset(a.tcb_statuses),
        denied_advisories=frozenset(a.denied_advisories),
    )
