"""What the two handshake engines share: output queues, handshake timers, pending counts.

`DtlsListener` (mbedtls) and `OpenSslHandshakes` (OpenSSL) are sans-IO endpoints with the
same outputs: events and datagrams drained by the I/O shell, and one timer per pending
handshake, kept in a heap of weak references so that a connection that is gone needs no
bookkeeping. Each connection carries `wake_at` (the time its live timer entry is for) and its
peer address; `_timer_live` says whether a due entry still matters.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from enum import StrEnum
from ipaddress import AddressValueError, IPv4Address
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from sengd.tunnel.dtls import Address, Event


class DropReason(StrEnum):
    """Why a datagram was dropped without effect (keys of `DtlsListener.drops`)."""

    GARBAGE = "garbage"
    """Not a DTLS record at all."""
    OVERSIZED = "oversized"
    UNKNOWN_ADDRESS = "unknown-address"
    """A record that is no ClientHello from an address without a connection."""
    BAD_CLIENT_HELLO = "bad-client-hello"
    NO_SHARED_CIPHER = "no-shared-cipher"
    BAD_COOKIE = "bad-cookie"
    """A cookie was presented but did not verify (a fresh HelloVerifyRequest was sent)."""
    PENDING_LIMIT = "pending-limit"
    HOST_PENDING_LIMIT = "host-pending-limit"
    CONNECTION_LIMIT = "connection-limit"
    HELLO_REJECTED = "hello-rejected"
    """mbedtls refused a ClientHello in the lobby (version, extensions, ...)."""
    DUPLICATE_CLIENT_HELLO = "duplicate-client-hello"
    """A copy of the ClientHello that started an established connection."""
    DISCARDED = "discarded"
    """An application-data datagram that yielded no record (bad MAC, replay, truncation)."""
    INTERNAL_ERROR = "internal-error"
    SEND_FAILED = "send-failed"
    """(handshake workers) A flight datagram the socket refused (buffer full); the client
    retransmits."""
    WORKER_UNAVAILABLE = "worker-unavailable"
    """A handshake datagram that could not be passed to its handshake worker (busy or
    restarting); the client retransmits."""


class TimedConnection(Protocol):
    addr: tuple[str, int]
    wake_at: float


C = TypeVar("C", bound=TimedConnection)


class Endpoint(Generic[C]):
    """Output queues, a timer heap and per-host pending counts of one sans-IO endpoint."""

    def __init__(
        self,
        key_types: Sequence[object],
        mtu: int,
        handshake_timeout: float,
        max_pending: int,
        max_pending_per_host: int,
    ) -> None:
        """Check and keep the parameters both engines take (ValueError naming the bad one)."""
        if not key_types:
            raise ValueError("at least one server credential is required")
        if len(set(key_types)) != len(key_types):
            raise ValueError("at most one credential per key type")
        if not 256 <= mtu <= 65507:
            raise ValueError(f"mtu {mtu} outside 256..65507")
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        if max_pending < 1 or max_pending_per_host < 1:
            raise ValueError("pending limits must be at least 1")
        self.mtu = mtu
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.max_pending_per_host = max_pending_per_host
        self._conns: dict[Address, C] = {}
        self._events: list[Event] = []
        self._out: list[tuple[bytes, Address]] = []
        self._timers: list[tuple[float, int, weakref.ref[C]]] = []
        self._timer_seq = itertools.count()
        self._pending_by_host: dict[str, int] = {}
        self.drops: Counter[DropReason] = Counter()
        """Datagrams dropped, by reason (monotonic counters)."""

    # -- outputs ---------------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Return and forget the events produced since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Return and forget the datagrams to send, in order, each with its destination."""
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        """When `handle_timers` must be called next (same clock as `now`), or None."""
        timers = self._timers
        while timers:
            when, _, ref = timers[0]
            conn = ref()
            if conn is not None and self._timer_live(conn, when):
                return when
            heapq.heappop(timers)
        return None

    # -- for the engines -------------------------------------------------------------------

    def _timer_live(self, conn: C, when: float) -> bool:
        """Whether a timer entry for `conn` at `when` is still wanted."""
        return conn.wake_at == when

    def _set_timer(self, conn: C, when: float) -> None:
        """Wake `conn` at `when` (replacing its earlier timer)."""
        conn.wake_at = when
        heapq.heappush(self._timers, (when, next(self._timer_seq), weakref.ref(conn)))

    def _due(self, now: float) -> Iterator[C]:
        """Pop and yield the connections whose live timer is due at `now` and which are still
        this endpoint's connection of their address."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, ref = heapq.heappop(timers)
            conn = ref()
            if (
                conn is not None
                and self._timer_live(conn, when)
                and self._conns.get(conn.addr) is conn
            ):
                yield conn

    def _admit_hello(self, has_cookie: bool, addr: Address, old: C | None) -> bytes | None:
        """For a ClientHello from `addr` (which has connection `old`): the peer's cookie
        identity (IPv4 address and port, 6 bytes), or None after counting why it is dropped (a
        cookie-bearing hello over a limit, or an address that is no IPv4 address and port)."""
        if has_cookie:
            reason = self._limit_reached(addr[0], old)
            if reason is not None:
                self.drops[reason] += 1
                return None
        try:
            return IPv4Address(addr[0]).packed + addr[1].to_bytes(2, "big")
        except (AddressValueError, OverflowError, TypeError, ValueError):
            self.drops[DropReason.GARBAGE] += 1
            return None

    def _limit_reached(self, host: str, old: C | None) -> DropReason | None:
        raise NotImplementedError

    def _host_pending(self, host: str) -> int:
        return self._pending_by_host.get(host, 0)

    def _hold_host(self, host: str) -> None:
        self._pending_by_host[host] = self._pending_by_host.get(host, 0) + 1

    def _release_host(self, host: str) -> None:
        left = self._pending_by_host.get(host, 0) - 1
        if left > 0:
            self._pending_by_host[host] = left
        else:
            self._pending_by_host.pop(host, None)
