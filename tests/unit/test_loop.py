"""The epoll loop: readers, timers (ordering, cancellation) and signals, on real descriptors."""

from __future__ import annotations

import os
import signal
import socket

from sengd.dataplane.loop import EventLoop


def test_reader_timer_and_stop() -> None:
    loop = EventLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    seen: list[str] = []

    def on_readable() -> None:
        seen.append(a.recv(100).decode())

    loop.add_reader(a.fileno(), on_readable)
    loop.call_later(0.01, lambda: b.send(b"ping"))
    cancelled = loop.call_later(0.02, lambda: seen.append("cancelled timer ran"))
    cancelled.cancel()
    loop.call_later(0.03, lambda: seen.append("second"))
    loop.call_later(0.05, loop.stop)
    loop.run()
    loop.remove_reader(a.fileno())
    loop.close()
    a.close()
    b.close()
    assert seen == ["ping", "second"]


def test_timers_run_in_deadline_order() -> None:
    loop = EventLoop()
    order: list[int] = []
    now = loop.time()
    for i in (3, 1, 2):
        loop.call_at(now + i / 1000, lambda i=i: order.append(i))
    loop.call_at(now + 0.01, loop.stop)
    loop.run()
    loop.close()
    assert order == [1, 2, 3]


def test_signal_handler_runs_in_loop() -> None:
    loop = EventLoop()
    got: list[str] = []

    def on_hup() -> None:
        got.append("hup")
        loop.stop()

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGHUP))
    loop.call_later(5, loop.stop)  # safety net: the test fails instead of hanging
    loop.run()
    loop.close()
    assert got == ["hup"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_zero_delay_timer_chains_let_readers_run() -> None:
    """A callback that re-schedules itself with no delay must not starve a readable socket."""
    loop = EventLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    slices: list[int] = []
    read_after: list[int] = []

    def work_slice() -> None:
        slices.append(1)
        if len(slices) < 1000:
            loop.call_later(0, work_slice)

    def on_readable() -> None:
        a.recv(10)
        read_after.append(len(slices))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable)
    b.send(b"x")
    loop.call_later(0, work_slice)
    loop.run()
    loop.close()
    a.close()
    b.close()
    assert read_after and read_after[0] < 5


def test_writer_called_when_writable_and_removable() -> None:
    loop = EventLoop()
    a, b = socket.socketpair()
    a.setblocking(False)
    calls: list[str] = []

    def on_writable() -> None:
        calls.append("w")
        loop.remove_writer(a.fileno())
        a.send(b"done")

    def on_readable() -> None:
        calls.append(b.recv(10).decode())
        loop.stop()

    loop.add_writer(a.fileno(), on_writable)
    loop.add_reader(b.fileno(), on_readable)
    loop.call_later(5, loop.stop)
    loop.run()
    loop.close()
    a.close()
    b.close()
    assert calls == ["w", "done"]


def test_call_no_later_keeps_the_earlier_timer() -> None:
    loop = EventLoop()
    ran: list[str] = []
    now = loop.time()
    assert loop.call_no_later(None, None, lambda: ran.append("never")) is None
    first = loop.call_no_later(None, now + 0.02, lambda: ran.append("first"))
    assert first is not None
    # A later deadline keeps the earlier timer; an earlier one replaces (and cancels) it.
    assert loop.call_no_later(first, now + 0.05, lambda: ran.append("later")) is first
    assert loop.call_no_later(first, None, lambda: ran.append("none")) is first
    earlier = loop.call_no_later(first, now + 0.01, lambda: ran.append("earlier"))
    assert earlier is not first and first.cancelled
    # A cancelled handle is replaced even by a later deadline.
    assert earlier is not None
    earlier.cancel()
    last = loop.call_no_later(earlier, now + 0.03, lambda: ran.append("last"))
    assert last is not earlier
    loop.call_at(now + 0.06, loop.stop)
    loop.run()
    loop.close()
    assert ran == ["last"]
