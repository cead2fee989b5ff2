"""A flood of spoofed ClientHellos costs no state: memory stays flat, real clients get in."""

from __future__ import annotations

import gc
import os

from sengd.testing.enclave_emu import Build, DtlsClient
from sengd.tunnel.dtls import DropReason, DtlsListener
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.harness import Link
from tests.unit.tunnel.test_clienthello import openssl_hello, with_cookie

SOURCES = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def spoofed(index: int) -> tuple[str, int]:
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 1024 + index % 60000


def flood(listener: DtlsListener, hello: bytes, first: int, count: int) -> int:
    answered = 0
    for index in range(first, first + count):
        listener.datagram_received(hello, spoofed(index), 0.0)
        answered += len(listener.datagrams_to_send())
        listener.events()
    return answered


def test_spoofed_hello_flood_keeps_memory_flat_and_service_up() -> None:
    listener = DtlsListener([server_credential("ecdsa"), server_credential("rsa")])
    client = DtlsClient(client_identity("ecdsa"), pinned_server_cert=None)
    client.start()
    (hello,) = client.datagrams_to_send()
    forged_cookie = with_cookie(openssl_hello(Build.RSA), os.urandom(20))

    # Warm up allocator pools and caches, then measure.
    flood(listener, hello, 0, 1000)
    gc.collect()
    objects_before = len(gc.get_objects())
    rss_before = rss_bytes()

    answered = flood(listener, hello, 1000, SOURCES)
    answered += flood(listener, forged_cookie, 1000 + SOURCES, 2000)

    gc.collect()
    rss_growth = rss_bytes() - rss_before
    object_growth = len(gc.get_objects()) - objects_before
    assert answered == SOURCES + 2000  # every hello got exactly one stateless HVR
    assert listener.hello_verify_requests == 1000 + SOURCES + 2000
    assert listener.drops[DropReason.BAD_COOKIE] == 2000
    assert listener.connection_count == 0
    assert listener.pending_count == 0
    assert listener.next_timer() is None
    assert object_growth < 200, object_growth
    # One pending connection alone costs ~100 KB; 12,000 of them would be > 1 GB.
    assert rss_growth < 2 * 1024 * 1024, rss_growth

    link = Link(listener, DtlsClient(client_identity("rsa"), pinned_server_cert=None))
    link.handshake()
    assert link.client.established
    assert listener.connection_count == 1
