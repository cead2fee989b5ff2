"""ctnetlink messages built and parsed byte by byte (the kernel side is in
tests/integration/test_firewall.py)."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address

import pytest

from sengd.net import conntrack as ct
from sengd.net.conntrack import Entry, Field, attr, attrs, parse_entry, replies

ENCLAVE = IPv4Address("192.168.28.2")
SERVER = IPv4Address("10.200.2.2")


def tuple_payload(src: IPv4Address, dst: IPv4Address, sport: int, dport: int) -> bytes:
    ip = attr(ct.CTA_IP_V4_SRC, src.packed) + attr(ct.CTA_IP_V4_DST, dst.packed)
    proto = (
        attr(1, bytes([6])) + attr(2, struct.pack("!H", sport)) + attr(3, struct.pack("!H", dport))
    )
    return attr(ct.CTA_TUPLE_IP | ct.NLA_F_NESTED, ip) + attr(2 | ct.NLA_F_NESTED, proto)


def entry_body(zone: int | None = None) -> bytes:
    body = attr(ct.CTA_TUPLE_ORIG | ct.NLA_F_NESTED, tuple_payload(ENCLAVE, SERVER, 40000, 80))
    body += attr(ct.CTA_TUPLE_REPLY | ct.NLA_F_NESTED, tuple_payload(SERVER, ENCLAVE, 80, 40000))
    body += attr(ct.CTA_ID, struct.pack("!I", 0xDEADBEEF))
    if zone is not None:
        body += attr(ct.CTA_ZONE, struct.pack("!H", zone))
    return body


def test_attributes_are_padded_and_read_back() -> None:
    raw = attr(1, b"abc") + attr(2 | ct.NLA_F_NESTED, b"") + attr(3, b"12345")
    assert len(raw) == 8 + 4 + 12
    assert list(attrs(raw)) == [(1, b"abc"), (2, b""), (3, b"12345")]


def test_truncated_attributes_stop_the_walk() -> None:
    raw = attr(1, b"abcd") + struct.pack("=HH", 40, 2) + b"short"
    assert list(attrs(raw)) == [(1, b"abcd")]
    assert list(attrs(struct.pack("=HH", 2, 1))) == []  # a length below the header size


def test_parse_entry_reads_both_tuples_id_and_zone() -> None:
    entry = parse_entry(entry_body(zone=7))
    assert (entry.orig_src, entry.orig_dst) == (ENCLAVE, SERVER)
    assert (entry.reply_src, entry.reply_dst) == (SERVER, ENCLAVE)
    assert entry.id == 0xDEADBEEF and entry.zone == 7
    assert entry.orig_tuple == tuple_payload(ENCLAVE, SERVER, 40000, 80)
    assert entry.involves({ENCLAVE}) and entry.involves({SERVER})
    assert not entry.involves({IPv4Address("192.168.28.3")})


def test_reply_direction_alone_counts() -> None:
    nat = IPv4Address("203.0.113.5")
    body = attr(ct.CTA_TUPLE_ORIG | ct.NLA_F_NESTED, tuple_payload(SERVER, nat, 1, 443))
    body += attr(ct.CTA_TUPLE_REPLY | ct.NLA_F_NESTED, tuple_payload(ENCLAVE, SERVER, 443, 1))
    assert parse_entry(body).involves({ENCLAVE})


def test_dump_request_carries_the_kernel_filter() -> None:
    raw = ct.dump_request(9, ENCLAVE, Field.REPLY_DST)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert length == len(raw) and seq == 9 and pid == 0
    assert kind == (ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_GET
    assert flags == ct.NLM_F_REQUEST | ct.NLM_F_DUMP
    assert raw[16] == socket.AF_INET
    top = dict(attrs(raw[20:]))
    assert set(top) == {ct.CTA_TUPLE_REPLY, ct.CTA_FILTER}
    ((_, ip),) = attrs(top[ct.CTA_TUPLE_REPLY])
    assert list(attrs(ip)) == [(ct.CTA_IP_V4_DST, ENCLAVE.packed)]
    flags_by_kind = {k: struct.unpack("=I", v)[0] for k, v in attrs(top[ct.CTA_FILTER])}
    assert flags_by_kind == {
        ct.CTA_FILTER_ORIG_FLAGS: 0,
        ct.CTA_FILTER_REPLY_FLAGS: ct.CTA_FILTER_FLAG_IP_DST,
    }


def test_unfiltered_dump_request_has_no_attributes() -> None:
    assert len(ct.dump_request(1)) == 20


def test_delete_request_names_exactly_one_entry() -> None:
    entry = parse_entry(entry_body(zone=3))
    raw = ct.delete_request(5, entry)
    _, kind, flags, seq, _ = struct.unpack_from("=IHHII", raw)
    assert kind == (ct.NFNL_SUBSYS_CTNETLINK << 8) | ct.IPCTNL_MSG_CT_DELETE
    assert flags == ct.NLM_F_REQUEST | ct.NLM_F_ACK and seq == 5
    top = dict(attrs(raw[20:]))
    assert top[ct.CTA_TUPLE_ORIG] == entry.orig_tuple
    assert struct.unpack("!H", top[ct.CTA_ZONE])[0] == 3
    assert struct.unpack("!I", top[ct.CTA_ID])[0] == 0xDEADBEEF


def test_a_delete_without_tuple_is_never_built() -> None:
    """An IPCTNL_MSG_CT_DELETE without a tuple flushes the whole table."""
    empty = Entry(ENCLAVE, SERVER, None, None, b"", 1, None)
    with pytest.raises(ValueError, match="without its original tuple"):
        ct.delete_request(1, empty)


def test_replies_split_a_datagram_and_decode_errors() -> None:
    ack = struct.pack("=IHHII", 36, ct.NLMSG_ERROR, 0, 4, 0) + struct.pack("=i", 0) + bytes(16)
    enoent = struct.pack("=IHHII", 36, ct.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -2) + bytes(16)
    done = struct.pack("=IHHII", 20, ct.NLMSG_DONE, ct.NLM_F_MULTI, 6, 0) + bytes(4)
    got = list(replies(ack + enoent + done + b"\x01\x02"))
    assert [(r.kind, r.seq, r.error) for r in got] == [
        (ct.NLMSG_ERROR, 4, 0),
        (ct.NLMSG_ERROR, 5, 2),
        (ct.NLMSG_DONE, 6, 0),
    ]
