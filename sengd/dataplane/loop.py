"""The single-threaded epoll loop: readable descriptors, timers and signals.

Deliberately small: it knows nothing about DTLS, sessions or packets. Readers are called when
their descriptor is readable (level-triggered, so a reader that stops early for fairness is
called again); timers are kept in a heap of (deadline, sequence, handle) with lazy cancellation,
which costs O(log n) per timer and nothing per packet; signals arrive through
`signal.set_wakeup_fd` and run their handlers in the loop, never inside a reader.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

log = logging.getLogger(__name__)

Callback = Callable[[], None]


@dataclass(order=True)
class TimerHandle:
    """A scheduled callback. `cancel()` makes it never run."""

    when: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """epoll over descriptors plus a timer heap and signal delivery. Time is `time.monotonic()`."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._timers: list[TimerHandle] = []
        self._seq = 0
        self._running = False
        self._signal_handlers: dict[int, Callback] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.add_reader(self._wake_r.fileno(), self._drain_wakeup)

    @staticmethod
    def time() -> float:
        """The loop's clock (monotonic seconds)."""
        return time.monotonic()

    def _update(self, fd: int) -> None:
        mask = (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )
        if mask:
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:
                self._epoll.register(fd, mask)
        else:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def add_reader(self, fd: int, callback: Callback) -> None:
        """Call `callback()` whenever `fd` is readable."""
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        """Stop watching `fd` for reading (no error if it was not watched)."""
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        """Call `callback()` whenever `fd` is writable (remove it once the data is out)."""
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        """Stop watching `fd` for writing (no error if it was not watched)."""
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    def call_at(self, when: float, callback: Callback) -> TimerHandle:
        """Run `callback()` once at loop time `when` (or as soon after as the loop gets to it)."""
        self._seq += 1
        handle = TimerHandle(when, self._seq, callback)
        heapq.heappush(self._timers, handle)
        return handle

    def call_no_later(
        self, current: TimerHandle | None, when: float | None, callback: Callback
    ) -> TimerHandle | None:
        """Make sure `callback()` runs by `when` (None: nothing due): `current` is kept if it
        is live and not later, otherwise cancelled and replaced. Returns the handle to keep."""
        if when is None:
            return current
        if current is not None and not current.cancelled and current.when <= when:
            return current
        if current is not None:
            current.cancel()
        return self.call_at(when, callback)

    def call_later(self, delay: float, callback: Callback) -> TimerHandle:
        """Run `callback()` once after `delay` seconds."""
        return self.call_at(self.time() + delay, callback)

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run `callback()` in the loop when signal `signum` arrives."""
        self._signal_handlers[signum] = callback
        signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The real work happens in _drain_wakeup: the wakeup fd carries the signal number.
        pass

    def _drain_wakeup(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            handler = self._signal_handlers.get(signum)
            if handler is not None:
                handler()

    @property
    def running(self) -> bool:
        """True between `run()` and `stop()`."""
        return self._running

    def stop(self) -> None:
        """Make `run()` return after the current iteration."""
        self._running = False

    def _run_due_timers(self) -> float | None:
        """Run the timers due now; return seconds until the next one (None: no timers).

        Timers scheduled while this runs wait for the next turn, after the descriptors have
        been polled: a callback that re-schedules itself with no delay (work done in slices)
        therefore cannot starve the readers.
        """
        now = self.time()
        last_seq = self._seq
        while self._timers:
            head = self._timers[0]
            if head.cancelled:
                heapq.heappop(self._timers)
                continue
            if head.when > now:
                return head.when - now
            if head.seq > last_seq:
                return 0.0
            heapq.heappop(self._timers)
            head.callback()
        return None

    def run(self) -> None:
        """Dispatch readers and timers until `stop()` is called."""
        self._running = True
        while self._running:
            wait = self._run_due_timers()
            if not self.running:  # a timer may have stopped the loop
                break
            events = self._epoll.poll(-1.0 if wait is None else max(wait, 0.0))
            for fd, mask in events:
                if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    reader = self._readers.get(fd)
                    if reader is not None:
                        reader()
                if mask & (select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR):
                    writer = self._writers.get(fd)
                    if writer is not None:
                        writer()

    def close(self) -> None:
        """Release the loop's own descriptors and restore default signal handling."""
        for signum in self._signal_handlers:
            signal.signal(signum, signal.SIG_DFL)
        if self._signal_handlers:
            signal.set_wakeup_fd(-1)
        self._signal_handlers.clear()
        self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()
