"""recvmmsg/sendmmsg helpers on real loopback UDP sockets."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator

import pytest

from sengd.dataplane import batchio


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    tx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.setblocking(False)
    yield rx, tx
    rx.close()
    tx.close()


def receive_all(receiver: batchio.Receiver, count: int) -> list[tuple[bytes, tuple[str, int]]]:
    got: list[tuple[bytes, tuple[str, int]]] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        batch = receiver.receive()
        if not batch:
            time.sleep(0.001)
        got.extend(batch)
    return got


def test_available() -> None:
    assert batchio.available()


def test_send_and_receive_in_batches(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    dst = rx.getsockname()
    datagrams = [(os.urandom(1 + index * 7 % 1500), dst) for index in range(300)]
    assert batchio.Sender(tx, batch=64).send(datagrams) == []
    receiver = batchio.Receiver(rx, batch=64)
    got = receive_all(receiver, 300)
    assert [data for data, _ in got] == [data for data, _ in datagrams]
    assert {addr for _, addr in got} == {tx.getsockname()}
    assert receiver.receive() == []  # nothing left: no error, no datagram


def test_sender_matches_sendto_for_several_destinations(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = pair
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.setblocking(False)
    try:
        batch = [(b"a%d" % i, rx.getsockname() if i % 2 else other.getsockname()) for i in range(9)]
        assert batchio.Sender(tx).send(batch) == []
        got_rx = receive_all(batchio.Receiver(rx), 4)
        got_other = receive_all(batchio.Receiver(other), 5)
        assert [d for d, _ in got_rx] == [b"a1", b"a3", b"a5", b"a7"]
        assert [d for d, _ in got_other] == [b"a0", b"a2", b"a4", b"a6", b"a8"]
    finally:
        other.close()


def test_oversized_datagram_is_seen_as_too_long(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    tx.sendto(b"x" * 3000, rx.getsockname())
    tx.sendto(b"small", rx.getsockname())
    got = receive_all(batchio.Receiver(rx, size=2048), 2)
    assert len(got[0][0]) == 2049 and got[1][0] == b"small"


def test_a_failing_datagram_is_reported_and_the_rest_still_go(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = pair
    dst = rx.getsockname()
    bad = ("127.0.0.1", 0)  # port 0 cannot be a destination
    failed = batchio.Sender(tx).send([(b"one", dst), (b"lost", bad), (b"two", dst)])
    assert failed == [(bad, errno.EINVAL)]
    assert [d for d, _ in receive_all(batchio.Receiver(rx), 2)] == [b"one", b"two"]


def test_receive_on_a_closed_socket_raises(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, _ = pair
    receiver = batchio.Receiver(rx)
    rx.close()
    with pytest.raises(OSError):
        receiver.receive()
