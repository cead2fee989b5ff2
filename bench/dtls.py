"""CPU and memory cost of the sans-IO DTLS listener against the real OpenSSL client.

Method: everything in one process, no sockets: the pyOpenSSL client's datagrams are handed to
`DtlsListener.datagram_received()` and back. Only the listener's side is timed, with
`time.process_time_ns()` (CPU time of this process) around the listener calls; the figure is
the median (handshakes) or the mean over a batch (per-packet paths).

- handshake:   a complete handshake including the HelloVerifyRequest round trip, a ~6.4 KB
               client certificate (the size of a real RA-TLS certificate), per server key type
               (RSA-3072 / ECDSA P-384, the two deployments of PROTOCOL.md §2).
               *_openssl: the same with the handshake workers' engine (`OpenSslHandshakes`,
               up to its handoff) instead of mbedtls (`DtlsListener`).
- spoofed hello: one ClientHello from a never-seen address -> one HelloVerifyRequest.
- garbage:     one datagram that is not DTLS at all.
- decrypt:     one 1400-byte application-data record in, one ApplicationData event out.
- encrypt:     `send()` of 1400 bytes plus `datagrams_to_send()`.
- ipv4 check:  `packets.check_enclave_packet()` + `packets.destination()` on a 1400-byte packet.
- memory:      RSS the listener gives back per dropped connection (200 connections, after the
               client's first record), /proc/self/statm after malloc_trim. This sees freed
               mbedtls buffers; the few hundred bytes of a taken-over connection live in
               Python's small-object arenas, which are not returned, so read it as a lower bound.
- *_mbedtls:   the same with `export_keys=False` (mbedtls keeps the records).

Run:  .venv/bin/python -m bench.dtls [--handshakes 40] [--records 20000]
Writes bench/results/dtls.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from mbedtls import version as mbedtls_version
from OpenSSL import SSL

from sengd.testing.enclave_emu import DtlsClient
from sengd.tunnel import packets
from sengd.tunnel.dtls import DtlsListener, HandshakeCompleted, HandshakeHandoff
from sengd.tunnel.openssl_handshakes import OpenSslHandshakes
from tests.unit.tunnel.certs import client_identity, server_credential

RESULTS = Path(__file__).resolve().parent / "results"
RATLS_PADDING = 5600  # -> a ~6.4 KB certificate, like a real SENG RA-TLS certificate


class Timed:
    """Wraps a listener so that only its own CPU time is counted."""

    def __init__(self, listener: DtlsListener) -> None:
        self.listener = listener
        self.ns = 0

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.process_time_ns()
        result = fn(*args)
        self.ns += time.process_time_ns() - start
        return result


def handshake(timed: Timed, client: DtlsClient, addr: tuple[str, int]) -> None:
    listener = timed.listener
    client.start()
    done = False
    for _ in range(20):
        for datagram in client.datagrams_to_send():
            timed.call(listener.datagram_received, datagram, addr, time.monotonic())
        for event in timed.call(listener.events):
            done = done or isinstance(event, HandshakeCompleted | HandshakeHandoff)
        for datagram, _ in timed.call(listener.datagrams_to_send):
            client.datagram_received(datagram)
        if client.established and done:
            return
    raise RuntimeError("handshake did not complete")


def bench_handshakes(kind: str, count: int, engine: str = "mbedtls") -> dict[str, float]:
    listener: Any = (
        OpenSslHandshakes([server_credential(kind)])
        if engine == "openssl"
        else DtlsListener([server_credential(kind)])
    )
    identity = client_identity(kind, padding=RATLS_PADDING)
    pin = server_credential(kind).certificate_der
    cpu: list[float] = []
    wall: list[float] = []
    for index in range(count):
        timed = Timed(listener)
        client = DtlsClient(identity, pinned_server_cert=pin)
        start = time.perf_counter()
        handshake(timed, client, ("10.0.0.1", 1000 + index))
        wall.append(time.perf_counter() - start)
        cpu.append(timed.ns / 1e6)
        if engine != "openssl":  # the OpenSSL engine forgets a connection at its handoff
            listener.abort(("10.0.0.1", 1000 + index))
    return {
        "client_cert_bytes": len(identity.certificate_der),
        "server_cpu_ms_median": statistics.median(cpu),
        "both_sides_wall_ms_median": statistics.median(wall) * 1000,
    }


def per_call_us(fn: Callable[[int], None], count: int) -> float:
    start = time.process_time_ns()
    for index in range(count):
        fn(index)
    return (time.process_time_ns() - start) / count / 1000


def bench_stateless(count: int, engine: str = "mbedtls") -> dict[str, float]:
    creds = [server_credential("ecdsa"), server_credential("rsa")]
    listener: Any = OpenSslHandshakes(creds) if engine == "openssl" else DtlsListener(creds)
    client = DtlsClient(client_identity("ecdsa"), pinned_server_cert=None)
    client.start()
    (hello,) = client.datagrams_to_send()
    garbage = os.urandom(200)

    def spoofed(index: int) -> None:
        listener.datagram_received(
            hello, (f"10.{index >> 16 & 255}.{index >> 8 & 255}.1", index), 0
        )
        listener.datagrams_to_send()

    def junk(index: int) -> None:
        listener.datagram_received(garbage, ("10.9.9.9", index), 0)

    return {"spoofed_hello_us": per_call_us(spoofed, count), "garbage_us": per_call_us(junk, count)}


def bench_records(count: int, export_keys: bool = True) -> dict[str, float]:
    listener = DtlsListener([server_credential("ecdsa")], export_keys=export_keys)
    client = DtlsClient(client_identity("ecdsa"), pinned_server_cert=None)
    addr = ("10.0.0.1", 999)
    handshake(Timed(listener), client, addr)
    client.send(b"first")  # the records are taken over after the client's first one
    for datagram in client.datagrams_to_send():
        listener.datagram_received(datagram, addr, 0.0)
    listener.events()
    payload = os.urandom(1400)
    datagrams = []
    for _ in range(count):
        client.send(payload)
        datagrams.extend(client.datagrams_to_send())

    def decrypt(index: int) -> None:
        listener.datagram_received(datagrams[index], addr, 0.0)
        if index & 255 == 255:
            listener.events()

    def encrypt(_index: int) -> None:
        listener.send(addr, payload)
        listener.datagrams_to_send()

    decrypt_us = per_call_us(decrypt, count)
    events = listener.events()
    assert len(events) == count & 255 and all(len(getattr(e, "data", b"")) == 1400 for e in events)
    encrypt_us = per_call_us(encrypt, count)
    packet = bytes([0x45, 0]) + (1400).to_bytes(2, "big") + bytes(8)
    packet += IPv4Address("192.168.28.2").packed + IPv4Address("10.0.0.9").packed + bytes(1380)
    assigned = IPv4Address("192.168.28.2").packed

    def check(_index: int) -> None:
        packets.check_enclave_packet(packet, assigned)
        packets.destination(packet)

    return {
        "decrypt_us": decrypt_us,
        "encrypt_us": encrypt_us,
        "ipv4_check_us": per_call_us(check, count * 10),
    }


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_memory(connections: int, export_keys: bool = True) -> dict[str, float]:
    """RSS the listener gives back when it drops `connections` established connections.

    The OpenSSL clients stay alive throughout, so only the listener's share is measured;
    malloc_trim() makes glibc return the freed heap to the kernel.
    """
    libc = ctypes.CDLL("libc.so.6")
    listener = DtlsListener([server_credential("ecdsa")], export_keys=export_keys)
    identity = client_identity("ecdsa", padding=RATLS_PADDING)
    clients = []
    addrs = [("10.2.0.1", 1000 + index) for index in range(connections)]
    for addr in addrs:
        client = DtlsClient(identity, pinned_server_cert=None)
        handshake(Timed(listener), client, addr)
        client.send(b"first record")  # mbedtls frees handshake state after the first record
        for datagram in client.datagrams_to_send():
            listener.datagram_received(datagram, addr, 0.0)
        listener.events()
        clients.append(client)
    gc.collect()
    libc.malloc_trim(0)
    with_connections = rss()
    for addr in addrs:
        listener.abort(addr)
    gc.collect()
    libc.malloc_trim(0)
    without = rss()
    assert len(clients) == connections
    return {
        "connections": connections,
        "rss_kb_per_connection": (with_connections - without) / connections / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=40)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "mbedtls": mbedtls_version.version,
            "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(),
        },
        "handshake_rsa3072": bench_handshakes("rsa", args.handshakes),
        "handshake_ecdsa_p384": bench_handshakes("ecdsa", args.handshakes),
        "handshake_rsa3072_openssl": bench_handshakes("rsa", args.handshakes, "openssl"),
        "handshake_ecdsa_p384_openssl": bench_handshakes("ecdsa", args.handshakes, "openssl"),
        "stateless": bench_stateless(args.records),
        "stateless_openssl": bench_stateless(args.records, "openssl"),
        "records_1400": bench_records(args.records),
        "records_1400_mbedtls": bench_records(args.records, export_keys=False),
        "memory": bench_memory(args.connections),
        "memory_mbedtls": bench_memory(args.connections, export_keys=False),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dtls.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| measurement | value |\n|---|---|")
    for section, values in results.items():
        for key, value in values.items():
            shown = f"{value:.2f}" if isinstance(value, float) else value
            print(f"| {section}.{key} | {shown} |")


if __name__ == "__main__":
    main()
