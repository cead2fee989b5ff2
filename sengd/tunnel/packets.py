"""IPv4 checks on the forwarding hot path (PROTOCOL.md §8).

Enclave -> gateway: every record from tunnel #1 must be exactly one IPv4 packet whose source is
the enclave's assigned address; `check_enclave_packet` says why not (or None). Gateway ->
enclave: `destination` gives the key for the enclave lookup of a packet read from TUN.

Addresses are compared as their 4 packed bytes (`IPv4Address.packed`), which are also the
dictionary keys for the destination lookup: slicing a bytes object is the cheapest thing
Python offers here, and nothing else is allocated. The IPv4 header checksum is left to the
kernel, which verifies it when the packet is written to the TUN device.
"""

from __future__ import annotations

from enum import StrEnum

IPV4_MIN_HEADER = 20


class PacketDrop(StrEnum):
    """Why an enclave's record was not forwarded (stable codes for counters and logs)."""

    TRUNCATED = "truncated"
    """Shorter than a minimal IPv4 header (or empty)."""
    NOT_IPV4 = "not-ipv4"
    BAD_HEADER_LENGTH = "bad-header-length"
    """IHL below 5 or pointing past the end of the record."""
    LENGTH_MISMATCH = "length-mismatch"
    """The IPv4 total length differs from the record length."""
    SPOOFED_SOURCE = "spoofed-source"


def check_enclave_packet(packet: bytes, assigned: bytes) -> PacketDrop | None:
    """Check one record from tunnel #1 against the enclave's packed address `assigned`.

    Returns None if the record is a well-formed IPv4 packet (version 4, IHL >= 5, header within
    the record, total length == record length) with source == `assigned`; else the reason.
    """
    size = len(packet)
    if size < IPV4_MIN_HEADER:
        return PacketDrop.NOT_IPV4 if size and packet[0] >> 4 != 4 else PacketDrop.TRUNCATED
    first = packet[0]
    if first >> 4 != 4:
        return PacketDrop.NOT_IPV4
    ihl = first & 0x0F
    if ihl < 5 or ihl * 4 > size:
        return PacketDrop.BAD_HEADER_LENGTH
    if (packet[2] << 8 | packet[3]) != size:
        return PacketDrop.LENGTH_MISMATCH
    if packet[12:16] != assigned:
        return PacketDrop.SPOOFED_SOURCE
    return None


def destination(packet: bytes) -> bytes | None:
    """The packed IPv4 destination of a packet read from TUN, or None if it is not IPv4."""
    if len(packet) < IPV4_MIN_HEADER or packet[0] >> 4 != 4:
        return None
    return packet[16:20]


def source(packet: bytes) -> bytes | None:
    """The packed IPv4 source address, or None if it is not IPv4."""
    if len(packet) < IPV4_MIN_HEADER or packet[0] >> 4 != 4:
        return None
    return packet[12:16]
