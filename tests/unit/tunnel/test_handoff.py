"""The handoff codec (`sengd.tunnel.handoff`): round trips of every message and rejections."""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import replace
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sengd.tunnel import handoff as wire
from sengd.tunnel.dtls import (
    Address,
    CloseReason,
    DropReason,
    HandshakeHandoff,
    KeyType,
    ServerCredential,
)
from sengd.tunnel.handoff import HandoffError
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.harness import Link
from tests.unit.tunnel.split import SplitListener
from tests.unit.tunnel.test_dtls_listener import as_listener, client_for

ADDR: Address = ("192.0.2.7", 40001)
Decoder = Callable[[bytes], object]


@cache
def real_handoff(kind: str) -> HandshakeHandoff:
    """The HandshakeHandoff of a real handshake run by a SplitListener's worker."""
    split = SplitListener([server_credential(kind)])
    link = Link(as_listener(split), client_for(kind), ADDR)
    link.handshake()
    assert link.client.established
    (handoff,) = split.handoffs
    return handoff


def settings_for(*kinds: str, **kwargs: object) -> wire.WorkerSettings:
    fields: dict[str, object] = {
        "credentials": tuple(server_credential(kind) for kind in kinds),
        "mtu": 1400,
        "handshake_timeout": 12.5,
        "max_pending": 512,
        "max_pending_per_host": 64,
        "index": 3,
        "log_level": "debug",
    }
    fields.update(kwargs)
    return wire.WorkerSettings(**fields)  # type: ignore[arg-type]


def init_message(header: object, parts: tuple[bytes, ...]) -> bytes:
    """An INIT with any JSON header and any credential parts (what encode_init lays out)."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return bytes((wire.INIT,)) + wire._blob(body) + wire._blobs(parts)


def good_header(**changes: object) -> dict[str, object]:
    header: dict[str, object] = {
        "mtu": 1400,
        "handshake_timeout": 10.0,
        "max_pending": 8,
        "max_pending_per_host": 2,
        "index": 0,
    }
    header.update(changes)
    return header


def ecdsa_parts() -> tuple[bytes, bytes]:
    credential = server_credential("ecdsa")
    return credential.certificate_der, credential.private_key_der


def stats_message(*entries: tuple[bytes, int], listener: int = 0) -> bytes:
    body = b"".join(wire._blob(name) + struct.pack("!I", count) for name, count in entries)
    return struct.pack("!BBIIH", wire.STATS, listener, 1, 2, len(entries)) + body


def worker_messages() -> dict[str, bytes]:
    """One valid message of each kind a worker sends after READY."""
    return {
        "started": wire.encode_started(1, ADDR, os.urandom(32)),
        "handoff": wire.encode_handoff(0, real_handoff("ecdsa")),
        "closed": wire.encode_closed(1, ADDR, CloseReason.HANDSHAKE_TIMEOUT),
        "stats": wire.encode_stats(0, 3, 1, {DropReason.BAD_COOKIE: 2, DropReason.GARBAGE: 70000}),
    }


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("kinds", [("ecdsa",), ("rsa",), ("ecdsa", "rsa")])
def test_init_round_trip_with_real_credentials(kinds: tuple[str, ...]) -> None:
    settings_ = settings_for(*kinds)
    message = wire.encode_init(settings_)
    assert message[0] == wire.INIT
    decoded = wire.decode_init(message)
    assert decoded == settings_
    assert [c.key_type for c in decoded.credentials] == [KeyType(k) for k in kinds]
    assert len(message) < wire.MAX_MESSAGE


def test_init_without_log_level_defaults_to_info() -> None:
    assert wire.decode_init(init_message(good_header(), ecdsa_parts())).log_level == "info"


def test_ready_is_one_byte() -> None:
    assert wire.encode_ready() == bytes((wire.READY,)) == b"r"


@pytest.mark.parametrize("listener", [0, 1])
@pytest.mark.parametrize("addr", [("0.0.0.0", 0), ("10.1.2.3", 4433), ("255.255.255.255", 65535)])
@pytest.mark.parametrize("data", [b"", b"\x16", os.urandom(1472), os.urandom(16384)])
def test_datagram_round_trip(listener: int, addr: Address, data: bytes) -> None:
    message = wire.encode_datagram(listener, addr, data)
    assert message[0] == wire.DATAGRAM and len(message) == 8 + len(data)
    assert wire.decode_datagram(message) == wire.Datagram(listener, addr, data)


@pytest.mark.parametrize("listener", [0, 1])
def test_started_round_trip(listener: int) -> None:
    random = os.urandom(32)
    message = wire.encode_started(listener, ADDR, random)
    assert wire.decode_worker_message(message) == wire.Started(listener, ADDR, random)


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
@pytest.mark.parametrize("listener", [0, 1])
def test_handoff_round_trip_of_a_real_handshake(kind: str, listener: int) -> None:
    handoff = real_handoff(kind)
    assert handoff.peer_cert_der == client_identity(kind).certificate_der
    assert handoff.key_type is KeyType(kind) and handoff.final_flight
    decoded = wire.decode_worker_message(wire.encode_handoff(listener, handoff))
    assert decoded == wire.Handoff(listener, handoff)
    assert isinstance(decoded, wire.Handoff)
    assert decoded.handoff.records == handoff.records
    assert decoded.handoff.final_flight == handoff.final_flight


@pytest.mark.parametrize(
    "changes",
    [
        {"peer_spoke": True},
        {"early_data": (b"first", b"", os.urandom(1400))},
        {"final_flight": ()},
        {"cipher_suite": ""},
        {"addr": ("255.255.255.255", 65535)},
    ],
)
def test_handoff_round_trip_variants(changes: dict[str, object]) -> None:
    handoff = replace(real_handoff("ecdsa"), **changes)  # type: ignore[arg-type]
    assert wire.decode_worker_message(wire.encode_handoff(1, handoff)) == wire.Handoff(1, handoff)


def test_handoff_round_trip_of_extreme_record_state() -> None:
    handoff = real_handoff("rsa")
    records = replace(
        handoff.records, epoch=65535, out_seq=(1 << 64) - 1, in_top=(1 << 48) - 1, in_window=0
    )
    handoff = replace(handoff, records=records)
    assert wire.decode_worker_message(wire.encode_handoff(0, handoff)) == wire.Handoff(0, handoff)


@pytest.mark.parametrize("reason", list(CloseReason))
def test_closed_round_trip_of_every_reason(reason: CloseReason) -> None:
    message = wire.encode_closed(1, ADDR, reason)
    assert wire.decode_worker_message(message) == wire.Closed(1, ADDR, reason)


def test_stats_round_trip() -> None:
    drops = {reason: index * 1000 + 1 for index, reason in enumerate(DropReason)}
    drops[DropReason.GARBAGE] = (1 << 32) - 1
    message = wire.encode_stats(1, 7, 2, drops)
    assert wire.decode_worker_message(message) == wire.Stats(1, 7, 2, drops)


def test_stats_leave_out_zero_counts() -> None:
    drops = {DropReason.BAD_COOKIE: 0, DropReason.OVERSIZED: 4}
    decoded = wire.decode_worker_message(wire.encode_stats(0, 0, 0, drops))
    assert decoded == wire.Stats(0, 0, 0, {DropReason.OVERSIZED: 4})
    empty = wire.encode_stats(0, 0, 0, {})
    assert wire.decode_worker_message(empty) == wire.Stats(0, 0, 0, {})


def test_stats_add_up_a_repeated_reason() -> None:
    message = stats_message((b"garbage", 2), (b"garbage", 3))
    assert wire.decode_worker_message(message) == wire.Stats(0, 1, 2, {DropReason.GARBAGE: 5})


# -- rejections --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["started", "handoff", "closed", "stats"])
def test_every_truncation_of_a_worker_message_is_rejected(kind: str) -> None:
    message = worker_messages()[kind]
    wire.decode_worker_message(message)
    for size in range(len(message)):
        with pytest.raises(HandoffError):
            wire.decode_worker_message(message[:size])


def test_every_truncation_of_init_is_rejected() -> None:
    message = wire.encode_init(settings_for("ecdsa", "rsa"))
    for size in range(len(message)):
        with pytest.raises(HandoffError):
            wire.decode_init(message[:size])


def test_a_datagram_truncated_into_its_header_is_rejected() -> None:
    message = wire.encode_datagram(1, ADDR, b"payload")
    for size in range(8):
        with pytest.raises(HandoffError):
            wire.decode_datagram(message[:size])
    # The payload has no length field: whatever follows the header is the datagram.
    assert wire.decode_datagram(message[:8]) == wire.Datagram(1, ADDR, b"")


@pytest.mark.parametrize("kind", ["started", "handoff", "closed", "stats"])
@pytest.mark.parametrize("extra", [b"\x00", b"x" * 100])
def test_trailing_bytes_after_a_worker_message_are_rejected(kind: str, extra: bytes) -> None:
    with pytest.raises(HandoffError):
        wire.decode_worker_message(worker_messages()[kind] + extra)


def test_trailing_bytes_after_init_are_rejected() -> None:
    with pytest.raises(HandoffError, match="bytes after"):
        wire.decode_init(wire.encode_init(settings_for("ecdsa")) + b"\x00")


def test_unknown_kinds_are_rejected_by_every_decoder() -> None:
    body = os.urandom(32)
    worker_kinds = {wire.STARTED, wire.HANDOFF, wire.CLOSED, wire.STATS}
    for kind in range(256):
        message = bytes((kind, 0)) + bytes(6) + body
        if kind not in worker_kinds:
            with pytest.raises(HandoffError):
                wire.decode_worker_message(message)
        if kind != wire.DATAGRAM:
            with pytest.raises(HandoffError, match="kind"):
                wire.decode_datagram(message)
        if kind != wire.INIT:
            with pytest.raises(HandoffError, match="INIT"):
                wire.decode_init(message)
    # READY and INIT are never a worker report, DATAGRAM never comes from a worker.
    for message in (
        wire.encode_ready(),
        wire.encode_init(settings_for("ecdsa")),
        wire.encode_datagram(0, ADDR, b"x" * 40),
    ):
        with pytest.raises(HandoffError):
            wire.decode_worker_message(message)
    # ... and a report is no DATAGRAM.
    for message in worker_messages().values():
        with pytest.raises(HandoffError):
            wire.decode_datagram(message)


@pytest.mark.parametrize("index", [2, 3, 127, 255])
def test_bad_listener_index_is_rejected(index: int) -> None:
    for message in [*worker_messages().values(), wire.encode_datagram(0, ADDR, b"data")]:
        bad = message[:1] + bytes((index,)) + message[2:]
        decode: Decoder = (
            wire.decode_datagram if message[0] == wire.DATAGRAM else wire.decode_worker_message
        )
        with pytest.raises(HandoffError, match="listener index"):
            decode(bad)


@pytest.mark.parametrize(
    "text", [b"", b"nope", b"REPLACED", b"replaced ", b"replace", b"\xff\xfe", b"replaced\x00"]
)
def test_unknown_close_reason_is_rejected(text: bytes) -> None:
    head = wire.encode_closed(0, ADDR, CloseReason.REPLACED)[:8]
    with pytest.raises(HandoffError, match="close reason"):
        wire.decode_worker_message(head + text)


@pytest.mark.parametrize("name", [b"", b"nope", b"GARBAGE", b"garbage ", b"close-notify"])
def test_unknown_drop_reason_is_rejected(name: bytes) -> None:
    with pytest.raises(HandoffError, match="drop reason"):
        wire.decode_worker_message(stats_message((b"garbage", 1), (name, 1)))


def test_non_ascii_drop_reason_is_rejected() -> None:
    with pytest.raises(HandoffError, match="ASCII"):
        wire.decode_worker_message(stats_message((b"garb\xe4ge", 1)))


def test_stats_with_a_bad_listener_index_are_rejected() -> None:
    with pytest.raises(HandoffError, match="listener index"):
        wire.decode_worker_message(stats_message(listener=2))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("read_key", b"", "key length"),
        ("read_key", bytes(15), "key length"),
        ("read_key", bytes(24), "key length"),
        ("read_key", bytes(33), "key length"),
        ("write_key", bytes(32), "key length"),  # read key is 16 bytes (ECDSA suite)
        ("write_key", bytes(15), "key length"),
        ("read_salt", bytes(3), "salt length"),
        ("read_salt", bytes(5), "salt length"),
        ("write_salt", b"", "salt length"),
        ("write_salt", bytes(12), "salt length"),
    ],
)
def test_bad_key_or_salt_lengths_are_rejected(field: str, value: bytes, match: str) -> None:
    handoff = real_handoff("ecdsa")
    records = replace(handoff.records, **{field: value})  # type: ignore[arg-type]
    message = wire.encode_handoff(0, replace(handoff, records=records))
    with pytest.raises(HandoffError, match=match):
        wire.decode_worker_message(message)


def test_both_aes_key_sizes_are_accepted() -> None:
    records = real_handoff("rsa").records
    assert len(records.read_key) == len(records.write_key) == 32
    records = real_handoff("ecdsa").records
    assert len(records.read_key) == len(records.write_key) == 16


@pytest.mark.parametrize(
    "changes",
    [{"client_random": bytes(31)}, {"client_random": bytes(33)}, {"peer_cert_der": b""}],
)
def test_bad_client_random_or_empty_certificate_is_rejected(changes: dict[str, object]) -> None:
    handoff = replace(real_handoff("ecdsa"), **changes)  # type: ignore[arg-type]
    with pytest.raises(HandoffError, match="client random or empty certificate"):
        wire.decode_worker_message(wire.encode_handoff(0, handoff))


@pytest.mark.parametrize(("offset", "value"), [(8, 2), (8, 255), (9, 2), (9, 255)])
def test_bad_key_type_or_flag_is_rejected(offset: int, value: int) -> None:
    message = bytearray(wire.encode_handoff(0, real_handoff("ecdsa")))
    message[offset] = value  # after the 8-byte head: key type, then peer_spoke
    with pytest.raises(HandoffError, match="key type or flag"):
        wire.decode_worker_message(bytes(message))


def test_non_ascii_cipher_suite_is_rejected() -> None:
    handoff = real_handoff("ecdsa")
    message = wire.encode_handoff(0, handoff)
    suite = handoff.cipher_suite.encode("ascii")
    at = message.index(suite)
    bad = message[:at] + b"\xff" + message[at + 1 :]
    with pytest.raises(HandoffError, match="ASCII"):
        wire.decode_worker_message(bad)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"not json", "INIT header"),
        (b"\xff\xfe", "INIT header"),
        (b"[1, 2]", "bad header"),
        (b"null", "bad header"),
        (good_header(mtu="many"), "INIT"),
        (good_header(mtu=None), "INIT"),
        (good_header(handshake_timeout=[1]), "INIT"),
        ({k: v for k, v in good_header().items() if k != "index"}, "index"),
    ],
)
def test_bad_init_header_is_rejected(header: object, match: str) -> None:
    with pytest.raises(HandoffError, match=match):
        wire.decode_init(init_message(header, ecdsa_parts()))


def test_bad_init_credentials_are_rejected() -> None:
    cert, key = ecdsa_parts()
    rsa = server_credential("rsa")
    for parts in [
        (),
        (cert,),
        (cert, key, cert),
        (b"garbage", key),
        (cert, b"garbage"),
        (cert, rsa.private_key_der),  # key of another certificate
        (key, cert),
    ]:
        with pytest.raises(HandoffError, match="INIT"):
            wire.decode_init(init_message(good_header(), parts))
    # Two credentials of one key type load here; the listener refuses them later.
    settings_ = wire.decode_init(init_message(good_header(), (cert, key, cert, key)))
    assert settings_.credentials == (ServerCredential.from_bytes(cert, key),) * 2


# Each of these once raised something other than HandoffError.


def test_deeply_nested_init_header_is_rejected() -> None:
    with pytest.raises(HandoffError):
        wire.decode_init(init_message(b"[" * 100_000, ecdsa_parts()))


def test_infinite_init_number_is_rejected() -> None:
    header = json.dumps(good_header()).replace("1400", "1e999").encode()
    with pytest.raises(HandoffError):
        wire.decode_init(init_message(header, ecdsa_parts()))


def _unsupported_curve(der: bytes) -> bytes:
    p384 = bytes.fromhex("06052b81040022")  # OID 1.3.132.0.34
    at = der.index(p384)
    return der[:at] + bytes.fromhex("06052b81040063") + der[at + len(p384) :]


@pytest.mark.parametrize("part", [0, 1])
def test_credential_on_an_unknown_curve_is_rejected(part: int) -> None:
    parts = list(ecdsa_parts())
    parts[part] = _unsupported_curve(parts[part])
    with pytest.raises(HandoffError, match="does not load"):
        wire.decode_init(init_message(good_header(), (parts[0], parts[1])))


# -- fuzzing -----------------------------------------------------------------------------


DECODERS: list[Decoder] = [wire.decode_worker_message, wire.decode_datagram, wire.decode_init]


def only_handoff_errors(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(HandoffError):
            decode(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_raise_only_handoff_error(data: bytes) -> None:
    only_handoff_errors(data)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(
        [wire.INIT, wire.READY, wire.DATAGRAM, wire.STARTED, wire.HANDOFF, wire.CLOSED, wire.STATS]
    ),
    st.integers(0, 3),
    st.binary(max_size=300),
)
def test_fuzz_known_kinds_raise_only_handoff_error(kind: int, listener: int, rest: bytes) -> None:
    only_handoff_errors(bytes((kind, listener)) + rest)


@st.composite
def mutated(draw: st.DrawFn, messages: list[bytes]) -> bytes:
    """A valid message with a few bytes changed, cut, or inserted."""
    data = bytearray(draw(st.sampled_from(messages)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_worker_messages_raise_only_handoff_error(data: st.DataObject) -> None:
    messages = list(worker_messages().values())
    only_handoff_errors(data.draw(mutated(messages)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_init_raises_only_handoff_error(data: st.DataObject) -> None:
    message = data.draw(mutated([wire.encode_init(settings_for("ecdsa"))]))
    with contextlib.suppress(HandoffError):
        wire.decode_init(message)
