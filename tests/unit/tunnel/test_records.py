"""DTLS record splitting and datagram packing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.tunnel.records import RecordError, iter_records, looks_like_record, pack_datagrams


def record(payload_len: int, content_type: int = 22) -> bytes:
    header = bytes([content_type, 0xFE, 0xFD]) + b"\x00" * 8 + payload_len.to_bytes(2, "big")
    return header + bytes([payload_len % 251]) * payload_len


def test_iter_records_splits_at_boundaries() -> None:
    data = record(10) + record(0) + record(1400, 23)
    assert [len(r) for r in iter_records(data)] == [23, 13, 1413]


@pytest.mark.parametrize("data", [b"\x16\xfe", record(10)[:-1], record(5) + b"\x16"])
def test_torn_records_raise(data: bytes) -> None:
    with pytest.raises(RecordError):
        list(iter_records(data))


def test_pack_keeps_order_and_fills_datagrams() -> None:
    records = [record(n) for n in (1000, 400, 50, 1459, 10)]
    datagrams = pack_datagrams(b"".join(records), 1472)
    assert b"".join(datagrams) == b"".join(records)
    # 1013 + 413 = 1426 fit, + 63 would exceed; 63 alone then 1472 cannot join; 23 follows.
    assert [len(d) for d in datagrams] == [1426, 63, 1472, 23]


def test_pack_small_and_empty() -> None:
    assert pack_datagrams(b"", 1472) == []
    assert pack_datagrams(record(3), 1472) == [record(3)]
    with pytest.raises(RecordError):
        pack_datagrams(record(3)[:-1], 1472)


def test_oversized_single_record_travels_alone() -> None:
    big = record(2000)
    assert pack_datagrams(record(1) + big + record(1), 1472) == [record(1), big, record(1)]


def test_looks_like_record() -> None:
    assert looks_like_record(record(0))
    assert not looks_like_record(record(0)[:12])
    assert not looks_like_record(b"\x18\xfe\xfd" + b"\x00" * 10)
    assert not looks_like_record(b"\x16\x03\x03" + b"\x00" * 10)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 1459), max_size=30), st.integers(1472, 1500))
def test_pack_roundtrip(lengths: list[int], mtu: int) -> None:
    data = b"".join(record(n) for n in lengths)
    datagrams = pack_datagrams(data, mtu)
    assert b"".join(datagrams) == data
    assert all(len(d) <= mtu for d in datagrams)
    assert sum(len(list(iter_records(d))) for d in datagrams) == len(lengths)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_never_raises_other_errors(data: bytes) -> None:
    with contextlib.suppress(RecordError):
        pack_datagrams(data, 1472)
