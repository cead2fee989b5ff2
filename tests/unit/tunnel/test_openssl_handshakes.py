"""OpenSslHandshakes (the handshake workers' OpenSSL engine) against the real pyOpenSSL client.

Everything runs in memory: a `Wire` carries datagrams between one `DtlsClient` and the engine
(no sockets, no mocks of the cryptography). The engine never establishes a connection itself:
a finished handshake leaves as a `HandshakeHandoff` whose record state is checked here with
`RecordLayer.from_state`, as the forwarding process adopts it.
"""

from __future__ import annotations

import os
import time
from typing import cast

import pytest

from sengd.testing.enclave_emu import Build, DtlsClient
from sengd.tunnel import keyexport, recordlayer
from sengd.tunnel.clienthello import parse_client_hello
from sengd.tunnel.dtls import (
    MAX_DATAGRAM,
    Address,
    CloseReason,
    ConnectionClosed,
    DropReason,
    DtlsListener,
    HandshakeHandoff,
    HandshakeStarted,
    KeyType,
)
from sengd.tunnel.keyexport import ExportedSession, TrafficKeys
from sengd.tunnel.openssl_handshakes import OpenSslHandshakes
from sengd.tunnel.recordlayer import (
    CONTENT_APPLICATION_DATA,
    CONTENT_HANDSHAKE,
    REASON_REPLAY,
    RecordLayer,
    RecordRejected,
)
from sengd.tunnel.records import iter_records
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.harness import Filter, Link, deliver_all
from tests.unit.tunnel.test_clienthello import openssl_hello, with_cookie

ADDR: Address = ("10.1.2.3", 40001)
HANDSHAKE = 22
ALERT = 21
CHANGE_CIPHER_SPEC = 20
HELLO_VERIFY_REQUEST = 3
SERVER_HELLO = 2
SUITE_NAMES = {
    KeyType.ECDSA: "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
    KeyType.RSA: "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
}
KEY_LENGTHS = {KeyType.ECDSA: 16, KeyType.RSA: 32}


class Wire(Link):
    """`harness.Link` for the engine: the same wire on the real monotonic clock, but the
    handshake ends at the handoff (the engine keeps no established connections)."""

    def __init__(
        self,
        engine: OpenSslHandshakes,
        client: DtlsClient,
        addr: Address = ADDR,
        *,
        to_server: Filter = deliver_all,
        to_client: Filter = deliver_all,
    ) -> None:
        # Link only uses what both engines have (datagrams, events, timers).
        super().__init__(
            cast(DtlsListener, engine), client, addr, to_server=to_server, to_client=to_client
        )
        self.engine = engine

    def settle(self) -> None:
        """Pump until nothing moves (no timers)."""
        for _ in range(100):
            if not self.pump():
                return
        raise AssertionError("the wire never settled")

    def handshake(self) -> HandshakeHandoff:
        """Run the handshake to its end on both sides; the one handoff."""
        self.client.start()
        self.settle()
        (handoff,) = handoffs(self)
        assert self.client.established
        return handoff


def engine_for(*kinds: str, **kwargs: float) -> OpenSslHandshakes:
    return OpenSslHandshakes([server_credential(kind) for kind in kinds], **kwargs)  # type: ignore[arg-type]


def client_for(
    kind: str, server_kind: str | None = None, *, mtu: int = 1472, cipher_list: bytes | None = None
) -> DtlsClient:
    pin = server_credential(server_kind or kind).certificate_der
    return DtlsClient(
        client_identity(kind), pinned_server_cert=pin, mtu=mtu, cipher_list=cipher_list
    )


def established(client: DtlsClient) -> bool:
    return client.established


def handoffs(wire: Wire) -> list[HandshakeHandoff]:
    return [e for e in wire.events if isinstance(e, HandshakeHandoff)]


def closed(wire: Wire) -> list[ConnectionClosed]:
    return [e for e in wire.events if isinstance(e, ConnectionClosed)]


def started(wire: Wire) -> list[HandshakeStarted]:
    return [e for e in wire.events if isinstance(e, HandshakeStarted)]


def is_hvr(datagram: bytes) -> bool:
    return datagram[0] == HANDSHAKE and datagram[13] == HELLO_VERIFY_REQUEST


def hvr_cookie(datagram: bytes) -> bytes:
    """The cookie of a HelloVerifyRequest datagram (server_version(2), cookie<0..255>)."""
    assert is_hvr(datagram)
    return datagram[28 : 28 + datagram[27]]


def cookie_hello(hello: bytes, cookie: bytes) -> bytes:
    """`hello` (cookie-less) re-sent with `cookie`, message_seq 1 as a real client does."""
    datagram = bytearray(with_cookie(hello, cookie))
    datagram[17:19] = b"\x00\x01"
    return bytes(datagram)


def epoch1_records(datagrams: list[bytes] | tuple[bytes, ...]) -> list[bytes]:
    return [
        bytes(record)
        for datagram in datagrams
        for record in iter_records(datagram)
        if bytes(record[3:5]) == b"\x00\x01"
    ]


def seq_of(record: bytes) -> int:
    return int.from_bytes(record[5:11], "big")


def to_pending(engine: OpenSslHandshakes, client: DtlsClient, addr: Address) -> Wire:
    """Start `client` and stop once the engine sent its first flight (a pending handshake)."""
    wire = Wire(engine, client, addr)
    client.start()
    wire.pump()  # hello -> HelloVerifyRequest
    wire.pump()  # cookie hello -> server flight (or dropped)
    return wire


# -- complete handshakes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "configured"),
    [
        ("ecdsa", ("ecdsa",)),
        ("rsa", ("rsa",)),
        ("ecdsa", ("ecdsa", "rsa")),
        ("rsa", ("ecdsa", "rsa")),
        ("rsa", ("rsa", "ecdsa")),
    ],
)
def test_handshake_goes_through_hello_verify_request_and_is_handed_off(
    kind: str, configured: tuple[str, ...]
) -> None:
    engine = engine_for(*configured)
    assert engine.key_types == tuple(KeyType(k) for k in configured)
    wire = Wire(engine, client_for(kind))
    handoff = wire.handshake()

    first_hello, second_hello = (parse_client_hello(d) for d in wire.client_datagrams[:2])
    assert first_hello.cookie == b"" and second_hello.cookie != b""
    assert is_hvr(wire.server_datagrams[0])
    assert hvr_cookie(wire.server_datagrams[0]) == second_hello.cookie
    assert wire.server_datagrams[1][13] == SERVER_HELLO
    assert engine.hello_verify_requests == 1
    assert [type(e) for e in wire.events] == [HandshakeStarted, HandshakeHandoff]
    assert wire.events[0] == HandshakeStarted(ADDR, first_hello.random)
    assert first_hello.random == second_hello.random

    assert handoff.addr == ADDR
    assert handoff.client_random == first_hello.random
    assert handoff.peer_cert_der == client_identity(kind).certificate_der
    assert handoff.key_type == KeyType(kind)
    assert handoff.cipher_suite == SUITE_NAMES[KeyType(kind)]
    assert wire.client.cipher_name is not None and kind.upper() in wire.client.cipher_name
    assert wire.client.server_certificate == server_credential(kind).certificate_der
    assert not handoff.peer_spoke and handoff.early_data == ()

    # The final flight is what the engine sent last: ChangeCipherSpec + Finished (epoch 1).
    assert handoff.final_flight
    flight = list(handoff.final_flight)
    assert wire.server_datagrams[-len(flight) :] == flight
    assert flight[0][0] == CHANGE_CIPHER_SPEC
    (server_finished,) = epoch1_records(flight)
    assert server_finished[0] == CONTENT_HANDSHAKE
    (client_finished,) = epoch1_records(wire.client_datagrams)

    records = handoff.records
    assert records.epoch == 1
    assert records.out_seq == seq_of(server_finished) + 1
    assert (records.in_top, records.in_window) == (seq_of(client_finished), 1)
    assert len(records.read_key) == len(records.write_key) == KEY_LENGTHS[KeyType(kind)]
    assert len(records.read_salt) == len(records.write_salt) == 4
    assert records.read_key != records.write_key

    # Forgotten after the handoff: nothing pending, no timer, nothing more to send.
    assert engine.pending_count == 0
    assert engine.next_timer() is None
    assert engine.events() == [] and engine.datagrams_to_send() == []
    assert not engine.drops and engine.export_failures == 0
    assert all(len(d) <= 1472 for d in wire.server_datagrams)
    assert wire.other == []


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_handed_off_records_protect_application_data_both_ways(kind: str) -> None:
    wire = Wire(engine_for("ecdsa", "rsa"), client_for(kind))
    handoff = wire.handshake()
    records = RecordLayer.from_state(handoff.records)
    (client_finished,) = epoch1_records(wire.client_datagrams)

    # Client -> server: the client's next records open, in and out of order.
    sent = [os.urandom(1400), b"x", os.urandom(100)]
    for payload in sent:
        wire.client.send(payload)
    datagrams = wire.client.datagrams_to_send()
    assert [seq_of(d) for d in datagrams] == [seq_of(client_finished) + 1 + i for i in range(3)]
    opened = [records.open(d) for d in (datagrams[1], datagrams[0], datagrams[2])]
    assert opened == [(CONTENT_APPLICATION_DATA, p) for p in (sent[1], sent[0], sent[2])]
    # Replays, including the client's Finished (in the handed-off window), are rejected.
    for replayed in [*datagrams, client_finished]:
        with pytest.raises(RecordRejected) as info:
            records.open(replayed)
        assert info.value.reason == REASON_REPLAY
    # A tampered record does not open.
    wire.client.send(b"tamper with me")
    (genuine,) = wire.client.datagrams_to_send()
    with pytest.raises(RecordRejected):
        records.open(genuine[:-1] + bytes((genuine[-1] ^ 1,)))
    assert records.open(genuine) == (CONTENT_APPLICATION_DATA, b"tamper with me")

    # Server -> client: our records go on after our Finished and the client accepts them.
    replies = [os.urandom(1435), b"y"]
    for reply in replies:
        record = records.seal(CONTENT_APPLICATION_DATA, reply)
        assert seq_of(record) == handoff.records.out_seq + replies.index(reply)
        wire.client.datagram_received(record)
    assert wire.client.records() == replies
    assert not wire.client.closed


@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        (b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384", KeyType.ECDSA),
        (b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256", KeyType.RSA),
    ],
)
@pytest.mark.parametrize("configured", [("ecdsa", "rsa"), ("rsa", "ecdsa")])
def test_client_first_offered_suite_picks_the_certificate(
    offer: bytes, expected: KeyType, configured: tuple[str, ...]
) -> None:
    # A generic OpenSSL client offering both builds' suites (the certificate is not pinned).
    client = DtlsClient(client_identity("ecdsa"), pinned_server_cert=None, cipher_list=offer)
    wire = Wire(engine_for(*configured), client)
    handoff = wire.handshake()
    assert handoff.key_type == expected
    assert handoff.cipher_suite == SUITE_NAMES[expected]
    assert client.server_certificate == server_credential(expected.value).certificate_der


def test_client_offering_both_suites_gets_the_one_we_serve() -> None:
    client = DtlsClient(
        client_identity("rsa"),
        pinned_server_cert=None,
        cipher_list=b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
    )
    wire = Wire(engine_for("rsa"), client)
    assert wire.handshake().key_type == KeyType.RSA


def test_two_interleaved_handshakes_are_independent() -> None:
    engine = engine_for("ecdsa", "rsa")
    one = Wire(engine, client_for("ecdsa"), ("10.0.0.1", 1000))
    two = Wire(engine, client_for("rsa"), ("10.0.0.1", 1001))
    one.client.start()
    two.client.start()
    while one.pump() | two.pump():
        pass
    (first,) = handoffs(one)
    (second,) = handoffs(two)
    assert (first.addr, first.key_type) == (one.addr, KeyType.ECDSA)
    assert (second.addr, second.key_type) == (two.addr, KeyType.RSA)
    assert first.records.read_key != second.records.read_key
    assert engine.pending_count == 0 and engine.hello_verify_requests == 2


def test_large_client_certificate_completes() -> None:
    identity = client_identity("ecdsa", padding=20000)
    assert len(identity.certificate_der) > 20000
    client = DtlsClient(identity, pinned_server_cert=server_credential("ecdsa").certificate_der)
    wire = Wire(engine_for("ecdsa"), client)
    handoff = wire.handshake()
    assert handoff.peer_cert_der == identity.certificate_der
    assert len(wire.client_datagrams) > 15  # the certificate came in many datagrams
    assert all(len(d) <= 1472 for d in wire.client_datagrams)


def test_small_mtu_cuts_the_server_flights() -> None:
    engine = engine_for("rsa", mtu=400)
    wire = Wire(engine, client_for("rsa", mtu=400))
    wire.handshake()
    assert len(wire.server_datagrams) > 4
    assert all(len(d) <= 400 for d in wire.server_datagrams)


# -- what never gets in ----------------------------------------------------------------------


def test_no_shared_cipher_is_dropped_silently() -> None:
    engine = engine_for("rsa")
    wire = Wire(engine, client_for("ecdsa", "rsa"))
    wire.client.start()
    wire.pump()
    assert wire.server_datagrams == [] and wire.events == []
    assert engine.drops == {DropReason.NO_SHARED_CIPHER: 1}
    assert engine.hello_verify_requests == 0
    assert engine.pending_count == 0


def test_forged_cookie_is_counted_and_answered_with_a_fresh_hello_verify_request() -> None:
    engine = engine_for("ecdsa")
    hello = openssl_hello(Build.ECDSA)
    engine.datagram_received(hello, ADDR, 100.0)
    ((hvr, to),) = engine.datagrams_to_send()
    assert to == ADDR and is_hvr(hvr)
    honest_cookie = hvr_cookie(hvr)
    assert len(honest_cookie) == 32  # HMAC-SHA256

    for forged in (os.urandom(32), os.urandom(20), honest_cookie[:-1] + b"\x00"):
        engine.datagram_received(cookie_hello(hello, forged), ADDR, 100.0)
    assert engine.drops == {DropReason.BAD_COOKIE: 3}
    assert engine.hello_verify_requests == 4
    fresh = engine.datagrams_to_send()
    assert [(hvr_cookie(d), a) for d, a in fresh] == [(honest_cookie, ADDR)] * 3
    assert engine.events() == [] and engine.pending_count == 0
    # The honest cookie still gets in.
    engine.datagram_received(cookie_hello(hello, honest_cookie), ADDR, 100.0)
    assert engine.events() == [HandshakeStarted(ADDR, parse_client_hello(hello).random)]
    assert engine.pending_count == 1


@pytest.mark.parametrize("intruder", [("10.1.2.3", 40002), ("10.1.2.4", 40001)])
def test_cookie_is_bound_to_address_and_port(intruder: Address) -> None:
    engine = engine_for("ecdsa")
    client = client_for("ecdsa")
    wire = Wire(engine, client)
    client.start()
    wire.pump()  # hello -> HVR, delivered: the client answers with its cookie hello
    (cookie_datagram,) = client.datagrams_to_send()
    cookie = parse_client_hello(cookie_datagram).cookie
    assert cookie == hvr_cookie(wire.server_datagrams[0])

    engine.datagram_received(cookie_datagram, intruder, time.monotonic())
    assert engine.drops == {DropReason.BAD_COOKIE: 1}
    ((hvr, to),) = engine.datagrams_to_send()
    assert to == intruder and hvr_cookie(hvr) != cookie
    assert engine.events() == [] and engine.pending_count == 0

    engine.datagram_received(cookie_datagram, ADDR, time.monotonic())
    assert [type(e) for e in engine.events()] == [HandshakeStarted]
    assert engine.pending_count == 1


def test_spoofed_hellos_keep_no_state() -> None:
    engine = engine_for("ecdsa", "rsa")
    hello = bytearray(openssl_hello(Build.ECDSA))
    cookies: set[bytes] = set()
    for index in range(2000):
        hello[27:59] = os.urandom(32)  # a fresh client random each time
        addr = (f"10.{index // 250}.{index % 250}.1", 1024 + index)
        engine.datagram_received(bytes(hello), addr, 5.0)
        ((hvr, to),) = engine.datagrams_to_send()
        assert to == addr and is_hvr(hvr)
        cookies.add(hvr_cookie(hvr))
    assert len(cookies) == 2000
    assert engine.hello_verify_requests == 2000
    assert engine.pending_count == 0
    assert engine.next_timer() is None
    assert engine.events() == [] and not engine.drops


PLAINTEXT_FATAL_ALERT = b"\x15\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\x00\x02" + b"\x02\x28"
APPLICATION_RECORD = b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x20" + bytes(32)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", DropReason.GARBAGE),
        (b"\x00", DropReason.GARBAGE),
        (b"GET / HTTP/1.1\r\n\r\n", DropReason.GARBAGE),
        (b"\x16\x03\x03" + bytes(40), DropReason.GARBAGE),  # TLS, not DTLS
        (b"\x16\xfe\xfd" + bytes(9), DropReason.GARBAGE),  # shorter than a header
        (b"\x16" * (MAX_DATAGRAM + 1), DropReason.OVERSIZED),
        (b"\x16\xfe\xfd" + bytes(MAX_DATAGRAM), DropReason.OVERSIZED),
        (APPLICATION_RECORD, DropReason.UNKNOWN_ADDRESS),
        (PLAINTEXT_FATAL_ALERT, DropReason.UNKNOWN_ADDRESS),
        (b"\x14\xfe\xfd" + bytes(8) + b"\x00\x01\x01", DropReason.UNKNOWN_ADDRESS),  # CCS
        (b"\x16\xfe\xfd" + bytes(8) + b"\x00\x0c\x0b" + bytes(11), DropReason.UNKNOWN_ADDRESS),
        (
            b"\x16\xfe\xfd\x00\x00" + bytes(6) + b"\x00\x05\x01\x00\x00\x00\x00",
            DropReason.BAD_CLIENT_HELLO,
        ),
    ],
)
def test_unusable_datagrams_from_unknown_addresses_are_dropped(
    datagram: bytes, reason: DropReason
) -> None:
    engine = engine_for("ecdsa", "rsa")
    engine.datagram_received(datagram, ("10.0.0.9", 999), 0.0)
    assert engine.drops == {reason: 1}
    assert engine.datagrams_to_send() == [] and engine.events() == []
    assert engine.pending_count == 0 and engine.hello_verify_requests == 0


@pytest.mark.parametrize("addr", [("::1", 5), ("10.0.0.1", 70000), ("10.0.0.1", -1), ("x", 1)])
def test_hello_from_an_unusable_address_is_garbage(addr: Address) -> None:
    engine = engine_for("ecdsa")
    engine.datagram_received(openssl_hello(Build.ECDSA), addr, 0.0)
    assert engine.drops == {DropReason.GARBAGE: 1}
    assert engine.datagrams_to_send() == [] and engine.hello_verify_requests == 0


def test_dtls_1_0_client_fails_after_its_cookie() -> None:
    hello = bytearray(openssl_hello(Build.ECDSA))
    hello[25:27] = b"\xfe\xff"  # client_version DTLS 1.0
    engine = engine_for("ecdsa")
    engine.datagram_received(bytes(hello), ADDR, 0.0)
    ((hvr, _),) = engine.datagrams_to_send()
    engine.datagram_received(cookie_hello(bytes(hello), hvr_cookie(hvr)), ADDR, 0.0)
    events = engine.events()
    assert [type(e) for e in events] == [HandshakeStarted, ConnectionClosed]
    assert events[1] == ConnectionClosed(ADDR, CloseReason.HANDSHAKE_FAILED, False)
    ((alert, _),) = engine.datagrams_to_send()
    assert alert[0] == ALERT
    assert engine.pending_count == 0 and engine.next_timer() is None


def test_client_without_certificate_is_closed_without_handoff() -> None:
    client = DtlsClient(
        None, pinned_server_cert=server_credential("ecdsa").certificate_der, build=Build.ECDSA
    )
    engine = engine_for("ecdsa")
    wire = Wire(engine, client)
    client.start()
    wire.settle()
    assert handoffs(wire) == []
    assert [type(e) for e in wire.events] == [HandshakeStarted, ConnectionClosed]
    assert closed(wire) == [ConnectionClosed(ADDR, CloseReason.NO_CLIENT_CERTIFICATE, False)]
    # OpenSSL finished its side, then we sent close_notify.
    assert wire.server_datagrams[-1][0] == ALERT
    assert client.closed and client.close_reason == "close-notify"
    assert engine.pending_count == 0 and engine.next_timer() is None
    assert engine.export_failures == 0


def test_client_pinning_another_certificate_fails_the_handshake() -> None:
    engine = engine_for("ecdsa")
    client = DtlsClient(
        client_identity("ecdsa"), pinned_server_cert=server_credential("rsa").certificate_der
    )
    wire = Wire(engine, client)
    client.start()
    wire.settle()
    # The client rejects our certificate with a plaintext fatal alert, which ends ours at once.
    assert client.closed and client.pin_mismatch
    assert wire.client_datagrams[-1][0] == ALERT
    assert handoffs(wire) == []
    assert [type(e) for e in wire.events] == [HandshakeStarted, ConnectionClosed]
    assert closed(wire) == [ConnectionClosed(ADDR, CloseReason.HANDSHAKE_FAILED, False)]
    assert engine.pending_count == 0 and engine.next_timer() is None


def test_plaintext_fatal_alert_ends_a_pending_handshake() -> None:
    engine = engine_for("ecdsa")
    wire = to_pending(engine, client_for("ecdsa"), ADDR)
    assert engine.pending_count == 1
    engine.datagram_received(PLAINTEXT_FATAL_ALERT, ADDR, time.monotonic())
    assert engine.events() == [ConnectionClosed(ADDR, CloseReason.HANDSHAKE_FAILED, False)]
    assert engine.pending_count == 0
    assert wire.client.established is False


def handshake_record(body: bytes, *, content: int = HANDSHAKE, epoch: int = 0) -> bytes:
    """A plaintext record with sequence number 9 (no MAC: anyone can forge it)."""
    header = bytes((content,)) + b"\xfe\xfd" + epoch.to_bytes(2, "big") + bytes(5) + b"\x09"
    return header + len(body).to_bytes(2, "big") + body


def inject_into_handshake(junk: list[bytes]) -> Wire:
    """A handshake with `junk` from the client's address before our first flight arrives."""
    engine = engine_for("ecdsa")
    injected = False

    def inject(index: int, _datagram: bytes) -> bool:
        nonlocal injected
        if index == 1 and not injected:
            injected = True
            assert engine.pending_count == 1
            for datagram in junk:
                engine.datagram_received(datagram, ADDR, time.monotonic())
        return True

    wire = Wire(engine, client_for("ecdsa"), to_client=inject)
    wire.client.start()
    wire.settle()
    assert injected
    return wire


def test_garbage_during_a_handshake_does_not_break_it() -> None:
    junk = [
        b"\x00",
        os.urandom(7),
        os.urandom(1400),
        b"\x16" * (MAX_DATAGRAM + 1),
        b"\x16\xfe\xfd\x00\x00" + bytes(6) + b"\x00\x05\x01\x00\x00\x00\x00",  # bad hello
        b"\x17\xfe\xfd" + bytes(10),  # header only
        b"\x16\xfe\xfd" + bytes(8) + b"\x00\x40" + b"x" * 10,  # truncated record
        handshake_record(b"abcd", epoch=2),  # a future epoch
        APPLICATION_RECORD,  # epoch 1, no keys yet
        handshake_record(b"\x2f\xff\xff\xff\x00\x01" + bytes(5) + b"\x04" + bytes(4)),
        handshake_record(b"\x0b\x00\x00\x04\x00\x01" + bytes(5) + b"\x04" + bytes(4)),
        handshake_record(b"\x01", content=CHANGE_CIPHER_SPEC),  # a CCS out of place
    ]
    wire = inject_into_handshake(junk)
    engine = wire.engine
    assert closed(wire) == []
    assert engine.drops == {
        DropReason.GARBAGE: 3,
        DropReason.OVERSIZED: 1,
        DropReason.BAD_CLIENT_HELLO: 1,
    }
    (handoff,) = handoffs(wire)
    wire.client.send(b"intact")
    (record,) = wire.client.datagrams_to_send()
    assert RecordLayer.from_state(handoff.records).open(record)[1] == b"intact"


@pytest.mark.parametrize(
    "junk",
    [
        handshake_record(b"\x01\x00", content=ALERT),  # a plaintext warning close_notify
        handshake_record(b"abcd", content=CONTENT_APPLICATION_DATA),  # epoch-0 application data
        handshake_record(b"\x05", content=CHANGE_CIPHER_SPEC),  # a malformed CCS
        handshake_record(b"\x0b\x00\x00"),  # a truncated handshake header
        handshake_record(b"\x0b\x00\x00\x04\x00\x01" + bytes(5) + b"\x08" + bytes(4)),
    ],
    ids=["warning-alert", "epoch0-appdata", "bad-ccs", "short-handshake", "bad-fragment"],
)
def test_malformed_plaintext_record_from_the_client_address_ends_the_handshake(
    junk: bytes,
) -> None:
    # Like the plaintext fatal alert: epoch 0 is unauthenticated and OpenSSL treats these as
    # fatal (mbedtls' DtlsListener too, except that it ignores epoch-0 application data).
    # No handoff, a clean close.
    wire = inject_into_handshake([junk])
    assert handoffs(wire) == []
    assert closed(wire) == [ConnectionClosed(ADDR, CloseReason.HANDSHAKE_FAILED, False)]
    assert wire.engine.pending_count == 0 and wire.engine.next_timer() is None
    assert not wire.client.established
    # The client's next flight comes from an address without a handshake.
    assert wire.engine.drops == {DropReason.UNKNOWN_ADDRESS: 1}


# -- timers ----------------------------------------------------------------------------------


def test_handshake_timeout_with_a_client_that_stops() -> None:
    engine = engine_for("ecdsa", handshake_timeout=0.5)
    start = time.monotonic()
    wire = to_pending(engine, client_for("ecdsa"), ADDR)
    assert [type(e) for e in wire.events] == [HandshakeStarted]
    assert wire.server_datagrams[1][13] == SERVER_HELLO
    timer = engine.next_timer()
    assert timer is not None and start < timer <= time.monotonic() + 0.5
    engine.handle_timers(time.monotonic())
    assert engine.events() == [] and engine.pending_count == 1
    time.sleep(max(0.0, timer - time.monotonic()))
    engine.handle_timers(time.monotonic())
    assert engine.events() == [ConnectionClosed(ADDR, CloseReason.HANDSHAKE_TIMEOUT, False)]
    assert engine.datagrams_to_send() == []  # OpenSSL's 1 s retransmission never came due
    assert engine.pending_count == 0
    assert engine.next_timer() is None
    assert not engine.drops and not wire.client.established


def test_first_retransmission_timer_is_one_second() -> None:
    engine = engine_for("ecdsa")
    before = time.monotonic()
    to_pending(engine, client_for("ecdsa"), ADDR)
    timer = engine.next_timer()
    assert timer is not None
    assert before + 0.9 <= timer <= time.monotonic() + 1.1


def test_server_retransmits_its_lost_flight() -> None:
    lost: list[bytes] = []

    def lose_first_flight(index: int, datagram: bytes) -> bool:
        if index == 1:
            lost.append(datagram)
            return False
        return True

    engine = engine_for("ecdsa")
    wire = Wire(engine, client_for("ecdsa"), to_client=lose_first_flight)
    wire.client.start()
    wire.settle()
    assert len(lost) == 1 and lost[0][13] == SERVER_HELLO
    sent_at = time.monotonic()
    # Only the server's timer runs (the client is never asked to retransmit).
    timer = engine.next_timer()
    assert timer is not None
    time.sleep(max(0.0, timer - time.monotonic()))
    while len(wire.server_datagrams) < 3 and time.monotonic() - sent_at < 3.0:
        engine.handle_timers(time.monotonic())
        if not wire.pump():
            time.sleep(0.01)  # the engine's clock may be a hair ahead of OpenSSL's
    assert 0.9 <= time.monotonic() - sent_at <= 2.0  # OpenSSL starts at 1 s
    wire.settle()
    resent = wire.server_datagrams[2]
    assert resent[13] == SERVER_HELLO
    # The same messages under new record sequence numbers.
    assert [bytes(r[13:]) for r in iter_records(resent)] == [
        bytes(r[13:]) for r in iter_records(lost[0])
    ]
    assert seq_of(resent) > seq_of(lost[0])
    (handoff,) = handoffs(wire)
    assert wire.client.established and handoff.addr == ADDR
    assert closed(wire) == [] and engine.pending_count == 0


# -- limits, replacement, lost final flight ------------------------------------------------


def test_pending_limit_per_host_and_total() -> None:
    engine = engine_for("ecdsa", max_pending=3, max_pending_per_host=2)
    to_pending(engine, client_for("ecdsa"), ("10.0.0.1", 1))
    to_pending(engine, client_for("ecdsa"), ("10.0.0.1", 2))
    assert engine.pending_count == 2
    refused = to_pending(engine, client_for("ecdsa"), ("10.0.0.1", 3))
    assert engine.drops == {DropReason.HOST_PENDING_LIMIT: 1}
    assert len(refused.server_datagrams) == 1  # the HelloVerifyRequest only
    to_pending(engine, client_for("ecdsa"), ("10.0.0.2", 1))
    assert engine.pending_count == 3
    refused = to_pending(engine, client_for("ecdsa"), ("10.0.0.3", 1))
    assert engine.drops[DropReason.PENDING_LIMIT] == 1
    assert len(refused.server_datagrams) == 1
    assert engine.pending_count == 3
    # Cookie-less hellos are still answered (they cost nothing).
    assert engine.hello_verify_requests == 5


def test_finished_handshake_frees_its_pending_slot() -> None:
    engine = engine_for("ecdsa", max_pending=1, max_pending_per_host=1)
    Wire(engine, client_for("ecdsa"), ("10.0.0.1", 1)).handshake()
    second = Wire(engine, client_for("ecdsa"), ("10.0.0.1", 2))
    second.handshake()
    assert not engine.drops


def test_replacement_by_a_new_handshake_from_the_same_address() -> None:
    engine = engine_for("ecdsa", max_pending=1, max_pending_per_host=1)
    old = to_pending(engine, client_for("ecdsa"), ADDR)
    old_random = parse_client_hello(old.client_datagrams[0]).random
    assert old.events == [HandshakeStarted(ADDR, old_random)]

    # The old client's retransmitted hellos (same random) go to its handshake: no replacement.
    for datagram in old.client_datagrams[:2]:
        engine.datagram_received(datagram, ADDR, time.monotonic())
    assert engine.events() == [] and engine.pending_count == 1
    assert not engine.drops

    newcomer = client_for("ecdsa")
    newcomer.start()
    (hello,) = newcomer.datagrams_to_send()
    engine.datagram_received(hello, ADDR, time.monotonic())
    # Only a HelloVerifyRequest: the old handshake is untouched until the cookie verifies.
    ((hvr, _),) = engine.datagrams_to_send()
    assert is_hvr(hvr)
    assert engine.events() == [] and engine.pending_count == 1
    # A forged cookie does not replace it either.
    engine.datagram_received(cookie_hello(hello, os.urandom(32)), ADDR, time.monotonic())
    assert engine.drops == {DropReason.BAD_COOKIE: 1}
    engine.datagrams_to_send()
    assert engine.events() == [] and engine.pending_count == 1

    new = Wire(engine, newcomer, ADDR)
    newcomer.datagram_received(hvr)
    new.pump()  # the newcomer's cookie hello (the limits allow a replacement)
    assert new.events == [
        ConnectionClosed(ADDR, CloseReason.REPLACED, False),
        HandshakeStarted(ADDR, parse_client_hello(hello).random),
    ]
    assert engine.pending_count == 1
    new.settle()
    (handoff,) = handoffs(new)
    assert handoff.client_random == parse_client_hello(hello).random
    assert engine.pending_count == 0

    # The old client's next flight now reaches nobody.
    old.settle()
    assert handoffs(old) == [] and not old.client.established
    assert engine.drops[DropReason.UNKNOWN_ADDRESS] >= 1


def test_lost_final_flight_is_in_the_handoff() -> None:
    engine = engine_for("rsa")
    final: list[bytes] = []

    def lose_final_flight(_index: int, datagram: bytes) -> bool:
        if epoch1_records([datagram]):
            final.append(datagram)
            return False
        return True

    wire = Wire(engine, client_for("rsa"), to_client=lose_final_flight)
    wire.client.start()
    wire.settle()
    (handoff,) = handoffs(wire)
    assert not established(wire.client)
    # Exactly what the engine sent when the handshake completed, nothing else.
    assert list(handoff.final_flight) == final
    assert wire.server_datagrams[-len(final) :] == final
    client_flight = wire.client_datagrams[2:]
    assert epoch1_records(client_flight)

    # The client retransmits its last flight: the engine forgot the address.
    for datagram in client_flight:
        engine.datagram_received(datagram, ADDR, time.monotonic())
    assert engine.drops == {DropReason.UNKNOWN_ADDRESS: len(client_flight)}
    assert engine.datagrams_to_send() == [] and engine.events() == []
    # The forwarding process resends `final_flight`: the client finishes, the keys match.
    for datagram in handoff.final_flight:
        wire.client.datagram_received(datagram)
    assert established(wire.client)
    records = RecordLayer.from_state(handoff.records)
    wire.client.send(b"after loss")
    (record,) = wire.client.datagrams_to_send()
    assert records.open(record) == (CONTENT_APPLICATION_DATA, b"after loss")
    wire.client.datagram_received(records.seal(CONTENT_APPLICATION_DATA, b"back"))
    assert wire.client.records() == [b"back"]


def test_export_failure_closes_without_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    real = keyexport.derive_keys

    def wrong_keys(session: ExportedSession) -> TrafficKeys:
        keys = real(session)
        return TrafficKeys(
            client_key=keys.client_key,
            server_key=bytes(len(keys.server_key)),
            client_salt=keys.client_salt,
            server_salt=keys.server_salt,
        )

    monkeypatch.setattr(recordlayer, "derive_keys", wrong_keys)
    engine = engine_for("ecdsa")
    wire = Wire(engine, client_for("ecdsa"))
    wire.client.start()
    wire.settle()
    assert engine.export_failures == 1
    assert handoffs(wire) == []
    assert [type(e) for e in wire.events] == [HandshakeStarted, ConnectionClosed]
    assert closed(wire) == [ConnectionClosed(ADDR, CloseReason.EXPORT_FAILED, False)]
    assert engine.pending_count == 0 and engine.next_timer() is None
    # The engine keeps working with the right keys.
    monkeypatch.undo()
    other = Wire(engine, client_for("ecdsa"), ("10.0.0.2", 2))
    other.handshake()
    assert engine.export_failures == 1


# -- cookies over time -----------------------------------------------------------------------


def test_cookie_survives_one_secret_rotation_but_not_two() -> None:
    engine = engine_for("ecdsa")
    a, b, c, d = (("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3), ("10.0.0.4", 4))
    hellos = {addr: openssl_hello(Build.ECDSA) for addr in (a, b, c, d)}

    def cookie_at(addr: Address, now: float) -> bytes:
        engine.datagram_received(hellos[addr], addr, now)
        ((hvr, to),) = engine.datagrams_to_send()
        assert to == addr
        return hvr_cookie(hvr)

    def gets_in(addr: Address, cookie: bytes, now: float) -> bool:
        engine.datagram_received(cookie_hello(hellos[addr], cookie), addr, now)
        engine.datagrams_to_send()
        return [type(e) for e in engine.events()] == [HandshakeStarted]

    cookie_a, cookie_d = cookie_at(a, 1000.0), cookie_at(d, 1000.0)
    cookie_b = cookie_at(b, 1061.0)  # the secret rotates
    assert cookie_at(a, 1061.0) != cookie_a  # a new secret
    assert gets_in(a, cookie_a, 1061.0)  # the previous secret is still accepted
    cookie_at(c, 1122.0)  # and rotates again
    assert not gets_in(d, cookie_d, 1122.0)  # two secrets ago
    assert engine.drops == {DropReason.BAD_COOKIE: 1}
    assert gets_in(b, cookie_b, 1122.0)
    assert engine.pending_count == 2


def test_cookie_older_than_two_periods_is_refused() -> None:
    engine = engine_for("ecdsa")
    hello = openssl_hello(Build.ECDSA)
    engine.datagram_received(hello, ADDR, 1000.0)
    ((hvr, _),) = engine.datagrams_to_send()
    # 300 s later, no hello in between: by the documented 60 s rotation ("the previous one is
    # still accepted") the cookie is at least four secrets old.
    engine.datagram_received(cookie_hello(hello, hvr_cookie(hvr)), ADDR, 1300.0)
    assert engine.events() == []
    assert engine.drops == {DropReason.BAD_COOKIE: 1}


def test_cookie_hello_with_message_seq_0_is_never_answered_and_times_out() -> None:
    # Non-conformant (the second ClientHello has message_seq 1): OpenSSL accepts the cookie in
    # DTLSv1_listen but its handshake never answers. It must end as a plain timeout.
    engine = engine_for("ecdsa", handshake_timeout=0.3)
    hello = openssl_hello(Build.ECDSA)
    engine.datagram_received(hello, ADDR, 0.0)
    ((hvr, _),) = engine.datagrams_to_send()
    engine.datagram_received(with_cookie(hello, hvr_cookie(hvr)), ADDR, 0.0)
    assert [type(e) for e in engine.events()] == [HandshakeStarted]
    wakeups = 0
    while engine.pending_count:
        timer = engine.next_timer()
        assert timer is not None and wakeups < 100
        engine.handle_timers(timer)
        wakeups += 1
    assert engine.events() == [ConnectionClosed(ADDR, CloseReason.HANDSHAKE_TIMEOUT, False)]
    assert engine.datagrams_to_send() == []


# -- once bugs -------------------------------------------------------------------------------


def test_forged_epoch1_record_during_handshake_does_not_poison_the_replay_window() -> None:
    engine = engine_for("ecdsa")
    wire = to_pending(engine, client_for("ecdsa"), ADDR)
    # Anyone who can spoof the client's address: an epoch-1 record with the largest sequence
    # number and garbage inside. OpenSSL discards it (it cannot authenticate it).
    forged = b"\x17\xfe\xfd\x00\x01" + b"\xff" * 6 + b"\x00\x30" + os.urandom(48)
    engine.datagram_received(forged, ADDR, time.monotonic())
    assert engine.events() == [] and engine.datagrams_to_send() == []
    wire.settle()
    (handoff,) = handoffs(wire)
    (client_finished,) = epoch1_records(wire.client_datagrams)
    assert handoff.records.in_top == seq_of(client_finished)
    wire.client.send(b"first record")
    (record,) = wire.client.datagrams_to_send()
    assert RecordLayer.from_state(handoff.records).open(record)[1] == b"first record"


# -- construction and queries ----------------------------------------------------------------


def test_parameters_are_validated() -> None:
    ecdsa = server_credential("ecdsa")
    with pytest.raises(ValueError, match="at least one"):
        OpenSslHandshakes([])
    with pytest.raises(ValueError, match="one credential per key type"):
        OpenSslHandshakes([ecdsa, ecdsa])
    with pytest.raises(ValueError, match="one credential per key type"):
        OpenSslHandshakes([ecdsa, server_credential("rsa"), ecdsa])
    for mtu in (100, 255, 65508):
        with pytest.raises(ValueError, match="mtu"):
            OpenSslHandshakes([ecdsa], mtu=mtu)
    for bad, message in (
        ({"handshake_timeout": 0.0}, "handshake_timeout must be positive"),
        ({"handshake_timeout": -1.0}, "handshake_timeout must be positive"),
        ({"max_pending": 0}, "pending limits must be at least 1"),
        ({"max_pending_per_host": 0}, "pending limits must be at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            OpenSslHandshakes([ecdsa], **bad)
    # The edges are allowed.
    OpenSslHandshakes([ecdsa], mtu=256, max_pending=1, max_pending_per_host=1)
    OpenSslHandshakes([ecdsa], mtu=65507, handshake_timeout=0.001)


def test_fresh_engine_is_idle() -> None:
    engine = engine_for("rsa", "ecdsa")
    assert engine.handoff is True
    assert engine.key_types == (KeyType.RSA, KeyType.ECDSA)
    assert engine.pending_count == 0 and engine.next_timer() is None
    assert engine.events() == [] and engine.datagrams_to_send() == []
    assert not engine.drops and engine.hello_verify_requests == 0
    assert engine.export_failures == 0
    engine.handle_timers(1e12)
    assert engine.events() == [] and engine.datagrams_to_send() == []
