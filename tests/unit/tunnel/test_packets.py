"""IPv4 checks for records from tunnel #1 and the destination lookup key."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.tunnel.packets import PacketDrop, check_enclave_packet, destination, source

ENCLAVE = IPv4Address("192.168.28.2").packed
UPSTREAM = IPv4Address("10.20.0.2").packed


def ipv4(
    src: bytes = ENCLAVE,
    dst: bytes = UPSTREAM,
    payload: bytes = b"x" * 36,
    *,
    ihl: int = 5,
    version: int = 4,
    total: int | None = None,
) -> bytes:
    options = b"\x01" * (4 * (ihl - 5)) if ihl > 5 else b""
    length = 4 * max(ihl, 5) + len(payload) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", version << 4 | ihl, 0, length, 1, 0, 64, 1, 0, src, dst)
    return header + options + payload


def test_good_packets_pass() -> None:
    assert check_enclave_packet(ipv4(), ENCLAVE) is None
    assert check_enclave_packet(ipv4(ihl=15), ENCLAVE) is None
    assert check_enclave_packet(ipv4(payload=b""), ENCLAVE) is None
    assert check_enclave_packet(ipv4(payload=b"p" * 1412), ENCLAVE) is None


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", PacketDrop.TRUNCATED),
        (ipv4()[:19], PacketDrop.TRUNCATED),
        (b"\x45", PacketDrop.TRUNCATED),
        (b"\x60" + b"\x00" * 5, PacketDrop.NOT_IPV4),
        (ipv4(version=6), PacketDrop.NOT_IPV4),
        (b"\x00" * 40, PacketDrop.NOT_IPV4),
        (ipv4(ihl=4), PacketDrop.BAD_HEADER_LENGTH),
        (ipv4(ihl=0), PacketDrop.BAD_HEADER_LENGTH),
        (ipv4(ihl=15, payload=b"")[:40], PacketDrop.BAD_HEADER_LENGTH),
        (ipv4(total=100), PacketDrop.LENGTH_MISMATCH),
        (ipv4(total=20), PacketDrop.LENGTH_MISMATCH),
        (ipv4() + b"\x00", PacketDrop.LENGTH_MISMATCH),
        (ipv4()[:-1], PacketDrop.LENGTH_MISMATCH),
        (ipv4(src=IPv4Address("192.168.28.3").packed), PacketDrop.SPOOFED_SOURCE),
        (ipv4(src=UPSTREAM), PacketDrop.SPOOFED_SOURCE),
    ],
)
def test_bad_packets_are_named(packet: bytes, reason: PacketDrop) -> None:
    assert check_enclave_packet(packet, ENCLAVE) == reason


def test_reason_codes_are_stable_strings() -> None:
    assert [r.value for r in PacketDrop] == [
        "truncated",
        "not-ipv4",
        "bad-header-length",
        "length-mismatch",
        "spoofed-source",
    ]


def test_destination_and_source() -> None:
    packet = ipv4()
    assert destination(packet) == UPSTREAM
    assert source(packet) == ENCLAVE
    lookup = {ENCLAVE: "session"}
    reply = ipv4(src=UPSTREAM, dst=ENCLAVE)
    key = destination(reply)
    assert key is not None and lookup[key] == "session"
    assert destination(b"\x60" + b"\x00" * 39) is None
    assert destination(b"\x45" * 19) is None
    assert source(b"") is None


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_never_raises(packet: bytes) -> None:
    result = check_enclave_packet(packet, ENCLAVE)
    assert result is None or isinstance(result, PacketDrop)
    destination(packet)
    source(packet)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1400), st.integers(5, 15), st.binary(min_size=4, max_size=4))
def test_generated_packets(payload: bytes, ihl: int, src: bytes) -> None:
    packet = ipv4(src=src, payload=payload, ihl=ihl)
    expected = None if src == ENCLAVE else PacketDrop.SPOOFED_SOURCE
    assert check_enclave_packet(packet, ENCLAVE) == expected
    assert destination(packet) == UPSTREAM
