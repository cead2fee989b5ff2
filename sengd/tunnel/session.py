"""One enclave session (pure): assigned -> waiting for tunnel #2 -> active -> closed.

The DTLS handshakes, attestation, policy and the lease happen before a `Session` exists: the
gateway creates one only for an enclave that was verified, admitted and given an address. From
then on the session owns the setup exchange of PROTOCOL.md §1.3/§7.1 and the per-packet
decision for tunnel #1. It never touches a socket or a clock: the caller passes `now`
(monotonic seconds) and carries out what the methods return.

Timing rules (PROTOCOL.md §1.5, our choices where the originals differ):
- IpAssignment is sent at `start()` and once more after `assignment_resend` seconds without
  an ACK (the Runtime ignores a duplicate);
- the ACK, or a verified matching tunnel #2 (an implicit ACK: clients never resend a lost ACK),
  must come within `pairing_timeout` of the first send; after an explicit ACK tunnel #2 must
  come within `pairing_timeout` of it;
- an active session is idle-timed-out only when `idle_timeout` > 0 (off by default: the clients
  are silent when idle and cannot reconnect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

from sengd.attestation.evidence import Evidence
from sengd.tunnel import packets, setup

Address = tuple[str, int]


class State(StrEnum):
    """Where a session is in its life."""

    ASSIGNING = "assigning"
    """IpAssignment sent on tunnel #1, waiting for the ACK or tunnel #2."""
    AWAITING_TUNNEL2 = "awaiting-tunnel2"
    """ACK received, waiting for tunnel #2 from the same host with the same quote."""
    ACTIVE = "active"
    """Both tunnels up: packets flow."""
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Timers:
    """The session timing knobs from `[tunnel]`, in seconds."""

    assignment_resend: float = 3.0
    pairing_timeout: float = 30.0
    idle_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class Send:
    """Send `data` as one record on tunnel #1."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Write this enclave packet to the TUN interface."""

    packet: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the record (counted by `reason`); the session stays up."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """End the session (close both tunnels, release the lease) for `reason`."""

    reason: str


Action = Send | Forward | Drop | Fail | None


@dataclass(slots=True)
class Counters:
    """Traffic of one session. rx = enclave -> gateway (tunnel #1), tx = gateway -> enclave."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Session:
    """An admitted enclave and its address. See the module docstring for the state machine."""

    id: int
    tunnel1: Address
    evidence: Evidence
    app: str
    entry_id: int | None
    categories: tuple[str, ...]
    address: IPv4Address
    network: IPv4Network
    gateway: IPv4Address
    started_at: datetime
    subnet_id: int = 0
    timers: Timers = field(default_factory=Timers)
    state: State = State.ASSIGNING
    tunnel2: Address | None = None
    deadline: float = 0.0
    last_activity: float = 0.0
    counters: Counters = field(default_factory=Counters)
    lease_id: int | None = None
    _assignment: bytes = b""
    _sends: int = 0
    _first_send: float = 0.0
    _packed_address: bytes = b""

    @property
    def host(self) -> str:
        """The client host's IPv4 address (source of tunnel #1)."""
        return self.tunnel1[0]

    @property
    def packed_address(self) -> bytes:
        """The enclave address as 4 network-order bytes (the TUN routing key)."""
        return self._packed_address

    def start(self, now: float) -> Send:
        """Begin the setup exchange: the IpAssignment record to send on tunnel #1."""
        self._packed_address = self.address.packed
        self._assignment = setup.encode_ip_assignment(
            self.address, self.network.netmask, self.gateway
        )
        self._sends = 1
        self._first_send = now
        self.last_activity = now
        self.deadline = now + self.timers.assignment_resend
        return Send(self._assignment)

    def on_timer(self, now: float) -> Action:
        """Handle the session's deadline (call when `now >= deadline`)."""
        if self.state is State.ASSIGNING:
            give_up = self._first_send + self.timers.pairing_timeout
            if now >= give_up:
                return Fail("no-ack")
            if self._sends < 2:
                self._sends += 1
                self.deadline = give_up
                return Send(self._assignment)
            self.deadline = give_up
            return None
        if self.state is State.AWAITING_TUNNEL2:
            return Fail("pairing-timeout") if now >= self.deadline else None
        if self.state is State.ACTIVE and self.timers.idle_timeout > 0:
            idle_until = self.last_activity + self.timers.idle_timeout
            if now >= idle_until:
                return Fail("idle-timeout")
            self.deadline = idle_until
        return None

    def on_tunnel1_record(self, record: bytes, now: float) -> Action:
        """Handle one record from tunnel #1: the ACK during setup, an IPv4 packet once active."""
        if self.state is State.ACTIVE:
            reason = packets.check_enclave_packet(record, self._packed_address)
            if reason is not None:
                self._count_drop(reason)
                return Drop(reason)
            self.counters.rx_packets += 1
            self.counters.rx_bytes += len(record)
            self.last_activity = now
            return Forward(record)
        if self.state is State.ASSIGNING:
            try:
                setup.decode_ip_assign_ack(record)
            except setup.SetupMessageError as exc:
                return Fail(f"bad-ack: {exc}")
            self.state = State.AWAITING_TUNNEL2
            self.deadline = now + self.timers.pairing_timeout
            return None
        self._count_drop("unexpected-record")
        return Drop("unexpected-record")

    def matches_tunnel2(self, evidence: Evidence, host: str) -> bool:
        """True when a verified tunnel #2 from `host` with `evidence` belongs to this session."""
        return (
            self.state in (State.ASSIGNING, State.AWAITING_TUNNEL2)
            and host == self.host
            and evidence.quote_body == self.evidence.quote_body
            and evidence.spki_sha256 == self.evidence.spki_sha256
        )

    def pair(self, tunnel2: Address, now: float) -> None:
        """Tunnel #2 arrived (an implicit ACK if none came): the session becomes active."""
        self.tunnel2 = tunnel2
        self.state = State.ACTIVE
        self.last_activity = now
        self.deadline = now + self.timers.idle_timeout if self.timers.idle_timeout > 0 else 0.0

    def _count_drop(self, reason: str) -> None:
        drops = self.counters.drops
        drops[reason] = drops.get(reason, 0) + 1
