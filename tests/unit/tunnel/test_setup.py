"""IpAssignment / IpAssignACK: the exact bytes of PROTOCOL.md §7.1 and strict decoding."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.tunnel import setup
from sengd.tunnel.setup import SetupMessageError

IP = IPv4Address("192.168.28.2")
MASK = IPv4Address("255.255.255.0")
GW = IPv4Address("192.168.28.1")
ASSIGNMENT = bytes.fromhex("08 c0 d1 f2 10 10 ff ff ff 07 18 c0 d1 f2 08")
ACK = bytes.fromhex("08 c0 d1 f2 10")

addresses = st.integers(0, 2**32 - 1).map(IPv4Address)


def test_in_addr_values_of_the_spec() -> None:
    assert setup.in_addr_value(IP) == 35432640  # 0x021CA8C0
    assert setup.in_addr_value(MASK) == 16777215
    assert setup.in_addr_value(GW) == 18655424
    assert setup.address_from_in_addr(0x021CA8C0) == IP
    with pytest.raises(ValueError, match="out of range"):
        setup.address_from_in_addr(2**32)
    with pytest.raises(ValueError, match="out of range"):
        setup.address_from_in_addr(-1)


def test_encode_gives_the_exact_bytes() -> None:
    assert setup.encode_ip_assignment(IP, MASK, GW) == ASSIGNMENT
    assert setup.encode_ip_assign_ack(IP) == ACK


def test_decode_the_exact_bytes() -> None:
    assert setup.decode_ip_assignment(ASSIGNMENT) == (IP, MASK, GW)
    assert setup.decode_ip_assign_ack(ACK) == IP


def test_other_subnet_of_the_demo_database() -> None:
    encoded = setup.encode_ip_assignment(
        IPv4Address("172.16.28.2"), IPv4Address("255.255.255.192"), IPv4Address("172.16.28.1")
    )
    assert setup.decode_ip_assignment(encoded) == (
        IPv4Address("172.16.28.2"),
        IPv4Address("255.255.255.192"),
        IPv4Address("172.16.28.1"),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "lacks required field"),
        (ASSIGNMENT[:5], "lacks required field"),
        (ASSIGNMENT[:10], "lacks required field"),
        (ASSIGNMENT[:-1], "does not parse"),
        (b"\xff\xff\xff", "does not parse"),
        (b"\x0a\x02ab", "lacks required field"),  # field 1 with the wrong wire type
    ],
)
def test_decode_assignment_refuses_garbage(data: bytes, message: str) -> None:
    with pytest.raises(SetupMessageError, match=message):
        setup.decode_ip_assignment(data)


@pytest.mark.parametrize("data", [b"", b"\x08", b"\x10\x01", b"\x07"])
def test_decode_ack_refuses_garbage(data: bytes) -> None:
    with pytest.raises(SetupMessageError, match="IpAssignACK"):
        setup.decode_ip_assign_ack(data)


def test_ack_value_is_not_compared_but_returned() -> None:
    other = setup.encode_ip_assign_ack(IPv4Address("10.0.0.9"))
    assert setup.decode_ip_assign_ack(other) == IPv4Address("10.0.0.9")


def test_an_assignment_is_also_a_valid_ack_like_in_protobuf() -> None:
    # Unknown fields are skipped by protobuf; both originals accept this too.
    assert setup.decode_ip_assign_ack(ASSIGNMENT) == IP


def test_non_bytes_are_refused() -> None:
    with pytest.raises(SetupMessageError, match="expected bytes"):
        setup.decode_ip_assign_ack("08c0")  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(addresses, addresses, addresses)
def test_roundtrip(ip: IPv4Address, mask: IPv4Address, gw: IPv4Address) -> None:
    assert setup.decode_ip_assignment(setup.encode_ip_assignment(ip, mask, gw)) == (ip, mask, gw)
    assert setup.decode_ip_assign_ack(setup.encode_ip_assign_ack(ip)) == ip


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_decoders_raise_only_our_error(data: bytes) -> None:
    for decode in (setup.decode_ip_assignment, setup.decode_ip_assign_ack):
        with contextlib.suppress(SetupMessageError):
            decode(data)
