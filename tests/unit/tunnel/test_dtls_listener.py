"""DtlsListener (mbedtls) against the real pyOpenSSL client, in memory.

Most tests run in two modes: "inline" (one DtlsListener runs handshakes and connections) and
"split" (`split.SplitListener`: a listener in offload mode plus a handshake worker's listener,
every report through the handoff codec), where the behaviour must be the same.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import cast

import pytest

from sengd.testing.enclave_emu import Build, DtlsClient
from sengd.tunnel import handoff as wire
from sengd.tunnel.clienthello import parse_client_hello
from sengd.tunnel.dtls import (
    ApplicationData,
    CloseReason,
    ConnectionClosed,
    DropReason,
    DtlsError,
    DtlsListener,
    HandshakeCompleted,
    KeyType,
)
from sengd.tunnel.keyexport import SessionReader, session_reader
from sengd.tunnel.records import iter_records
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.harness import Link
from tests.unit.tunnel.split import SplitListener
from tests.unit.tunnel.test_clienthello import openssl_hello, with_cookie

HANDSHAKE = 22
HELLO_VERIFY_REQUEST = 3

MODES = ["inline", "split"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


def as_listener(split: SplitListener) -> DtlsListener:
    """`split` where a DtlsListener is expected: it offers the same surface (duck typing)."""
    return cast(DtlsListener, split)


def split_for(*kinds: str, **kwargs: object) -> SplitListener:
    return SplitListener([server_credential(kind) for kind in kinds], **kwargs)  # type: ignore[arg-type]


def listener_for(*kinds: str, mode: str = "inline", **kwargs: object) -> DtlsListener:
    if mode == "split":
        return as_listener(split_for(*kinds, **kwargs))
    return DtlsListener([server_credential(kind) for kind in kinds], **kwargs)  # type: ignore[arg-type]


def runner_of(listener: DtlsListener) -> DtlsListener:
    """The listener that runs the handshakes: the worker in split mode."""
    split = cast(object, listener)
    if isinstance(split, SplitListener):
        return split.worker
    return listener


def client_for(kind: str, server_kind: str | None = None, **kwargs: object) -> DtlsClient:
    pin = server_credential(server_kind or kind).certificate_der
    return DtlsClient(client_identity(kind), pinned_server_cert=pin, **kwargs)  # type: ignore[arg-type]


def connected(
    kind: str = "ecdsa", addr: tuple[str, int] = ("10.1.2.3", 40001), *, mode: str = "inline"
) -> Link:
    link = Link(listener_for(kind, mode=mode), client_for(kind), addr)
    link.handshake()
    assert link.client.established
    assert link.listener.is_established(addr)
    return link


def completed(link: Link) -> list[HandshakeCompleted]:
    return [e for e in link.events if isinstance(e, HandshakeCompleted)]


def closed(link: Link) -> list[ConnectionClosed]:
    return [e for e in link.events if isinstance(e, ConnectionClosed)]


def app_data(link: Link) -> list[bytes]:
    return [e.data for e in link.events if isinstance(e, ApplicationData)]


@pytest.mark.parametrize(
    ("kind", "suite"),
    [
        ("rsa", "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"),
        ("ecdsa", "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"),
    ],
)
def test_handshake_goes_through_hello_verify_request(mode: str, kind: str, suite: str) -> None:
    link = Link(listener_for(kind, mode=mode), client_for(kind))
    link.handshake()

    first = link.server_datagrams[0]
    assert first[0] == HANDSHAKE and first[13] == HELLO_VERIFY_REQUEST
    assert link.listener.hello_verify_requests == 1
    (done,) = completed(link)
    assert done.addr == link.addr
    assert done.peer_cert_der == client_identity(kind).certificate_der
    assert done.cipher_suite == suite
    assert done.key_type == KeyType(kind)
    assert link.client.server_certificate == server_credential(kind).certificate_der
    assert link.listener.pending_count == 0
    assert link.listener.connection_count == 1
    assert not link.listener.drops
    assert all(len(d) <= 1472 for d in link.server_datagrams)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_both_credentials_configured_suite_selects_certificate(mode: str, kind: str) -> None:
    listener = listener_for("ecdsa", "rsa", mode=mode)
    link = Link(listener, client_for(kind))
    link.handshake()
    (done,) = completed(link)
    assert done.key_type == KeyType(kind)
    assert link.client.server_certificate == server_credential(kind).certificate_der
    assert listener.key_types == (KeyType.ECDSA, KeyType.RSA)


def test_client_offering_both_suites_gets_its_first_choice(mode: str) -> None:
    listener = listener_for("rsa", "ecdsa", mode=mode)
    # Offer both builds' suites, ECDSA first (a generic OpenSSL client, not a SENG build).
    client = DtlsClient(
        client_identity("ecdsa"),
        pinned_server_cert=None,
        cipher_list=b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
    )
    link = Link(listener, client)
    link.handshake()
    (done,) = completed(link)
    assert done.key_type == KeyType.ECDSA


def test_dtls_1_0_hello_is_refused_without_an_answer(mode: str) -> None:
    datagram = bytearray(openssl_hello(Build.ECDSA))
    datagram[25:27] = b"\xfe\xff"  # client_version DTLS 1.0
    listener = listener_for("ecdsa", mode=mode)
    listener.datagram_received(bytes(datagram), ("10.0.0.1", 5), 0.0)
    # mbedtls rejects the version before the cookie check; its alert is not sent to an
    # unverified address.
    assert listener.drops[DropReason.HELLO_REJECTED] == 1
    assert listener.datagrams_to_send() == []
    assert listener.connection_count == 0
    # The lobby is still usable afterwards.
    link = Link(listener, client_for("ecdsa"), ("10.0.0.1", 5))
    link.handshake()
    assert link.client.established


def test_no_shared_cipher_is_dropped_silently(mode: str) -> None:
    link = Link(listener_for("rsa", mode=mode), client_for("ecdsa", "rsa"))
    link.client.start()
    link.pump()
    assert link.server_datagrams == []
    assert link.listener.drops[DropReason.NO_SHARED_CIPHER] == 1
    assert link.listener.connection_count == 0


@pytest.mark.parametrize("padding", [8000, 12000])
def test_large_client_certificate_is_reassembled(mode: str, padding: int) -> None:
    identity = client_identity("rsa", padding=padding)
    assert len(identity.certificate_der) > padding
    client = DtlsClient(identity, pinned_server_cert=server_credential("rsa").certificate_der)
    link = Link(listener_for("rsa", mode=mode), client)
    link.handshake()
    (done,) = completed(link)
    assert done.peer_cert_der == identity.certificate_der


@pytest.mark.slow
def test_certificate_beyond_mbedtls_input_buffer_ends_in_handshake_timeout(mode: str) -> None:
    # MBEDTLS_SSL_IN_CONTENT_LEN is 16384 in the wheel: a larger Certificate message is
    # silently ignored. It must end as a clean timeout, not as anything worse.
    identity = client_identity("ecdsa", padding=17000)
    assert len(identity.certificate_der) > 16384
    client = DtlsClient(identity, pinned_server_cert=server_credential("ecdsa").certificate_der)
    link = Link(listener_for("ecdsa", mode=mode, handshake_timeout=2.0), client)
    link.client.start()
    link.run(until=lambda: bool(closed(link)), timeout=10.0)
    assert closed(link) == [ConnectionClosed(link.addr, CloseReason.HANDSHAKE_TIMEOUT, False)]
    assert completed(link) == []
    assert link.listener.connection_count == 0


def test_client_without_certificate_is_rejected(mode: str) -> None:
    client = DtlsClient(
        None, pinned_server_cert=server_credential("ecdsa").certificate_der, build=Build.ECDSA
    )
    link = Link(listener_for("ecdsa", mode=mode), client)
    link.client.start()
    link.run(until=lambda: bool(closed(link)) and link.client.closed)
    assert completed(link) == []
    (event,) = closed(link)
    assert event.reason == CloseReason.NO_CLIENT_CERTIFICATE
    assert not event.established
    assert link.client.close_reason == "close-notify"
    assert link.listener.connection_count == 0
    assert link.listener.pending_count == 0


def test_pin_mismatch_fails_the_handshake_on_both_sides(mode: str) -> None:
    client = DtlsClient(
        client_identity("ecdsa"), pinned_server_cert=server_credential("rsa").certificate_der
    )
    link = Link(listener_for("ecdsa", mode=mode), client)
    link.handshake()
    assert link.client.closed and link.client.pin_mismatch
    assert completed(link) == []
    (event,) = closed(link)
    assert event.reason == CloseReason.HANDSHAKE_FAILED
    assert link.listener.connection_count == 0


def test_client_without_extended_master_secret(mode: str) -> None:
    client = client_for("rsa", extended_master_secret=False)
    client.start()
    hello = parse_client_hello(client.datagrams_to_send()[0])
    assert 0x17 not in hello.extensions
    assert hello.cipher_suites[0] == 0xC030
    link = Link(listener_for("rsa", mode=mode), client_for("rsa", extended_master_secret=False))
    link.handshake()
    assert link.client.established and not link.client.extended_master_secret
    ems_link = connected("rsa", mode=mode)
    assert ems_link.client.extended_master_secret


def test_application_data_both_ways_full_size_records(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    listener, client = link.listener, link.client
    assert listener.max_plaintext == 1435
    sent = [os.urandom(1400) for _ in range(50)] + [os.urandom(1435), b"x"]
    for payload in sent:
        client.send(payload)
    link.pump()
    assert app_data(link) == sent
    replies = [os.urandom(1400) for _ in range(50)] + [os.urandom(1435)]
    for payload in replies:
        listener.send(link.addr, payload)
    out = listener.datagrams_to_send()
    assert all(len(d) <= 1472 and addr == link.addr for d, addr in out)
    for datagram, _ in out:
        client.datagram_received(datagram)
    assert client.records() == replies


def test_several_records_in_one_datagram_all_arrive(mode: str) -> None:
    link = connected("rsa", mode=mode)
    for payload in (b"one", b"two", b"three"):
        link.client.send(payload)
    datagram = b"".join(link.client.datagrams_to_send())
    link.listener.datagram_received(datagram, link.addr, 0.0)
    link.collect()
    assert app_data(link) == [b"one", b"two", b"three"]


def test_send_size_guard_keeps_the_session(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    listener = link.listener
    with pytest.raises(DtlsError, match="1435"):
        listener.send(link.addr, b"x" * 1436)
    with pytest.raises(DtlsError):
        listener.send(link.addr, b"")
    with pytest.raises(DtlsError, match="no established"):
        listener.send(("10.9.9.9", 1), b"x")
    listener.send(link.addr, b"still alive")
    for datagram, _ in listener.datagrams_to_send():
        link.client.datagram_received(datagram)
    assert link.client.records() == [b"still alive"]


def test_smaller_mtu_limits_datagrams_and_plaintext(mode: str) -> None:
    listener = listener_for("rsa", mode=mode, mtu=1200)
    link = Link(listener, client_for("rsa", mtu=1200))
    link.handshake()
    assert listener.max_plaintext == 1163
    assert all(len(d) <= 1200 for d in link.server_datagrams)
    with pytest.raises(DtlsError):
        listener.send(link.addr, b"x" * 1164)


def test_close_notify_from_client(mode: str) -> None:
    link = connected("rsa", mode=mode)
    link.client.close()
    link.pump()
    (event,) = closed(link)
    assert event == ConnectionClosed(link.addr, CloseReason.CLOSE_NOTIFY, True)
    assert link.listener.connection_count == 0


def test_close_from_server_sends_close_notify(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    assert link.listener.close(link.addr)
    link.pump()
    assert link.client.closed and link.client.close_reason == "close-notify"
    assert closed(link) == []
    assert link.listener.connection_count == 0
    assert not link.listener.close(link.addr)


def test_abort_sends_nothing(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    assert link.listener.abort(link.addr)
    assert link.listener.datagrams_to_send() == []
    assert link.listener.connection_count == 0
    assert not link.listener.abort(link.addr)


def test_reconnect_from_same_address_replaces_only_after_cookie(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    listener = link.listener
    newcomer = client_for("ecdsa")
    newcomer.start()
    hello = newcomer.datagrams_to_send()
    for datagram in hello:
        listener.datagram_received(datagram, link.addr, 0.0)
    # Only a HelloVerifyRequest so far: the old connection is untouched.
    (hvr,) = listener.datagrams_to_send()
    assert hvr[0][13] == HELLO_VERIFY_REQUEST
    assert listener.events() == []
    link.client.send(b"old still works")
    link.pump()
    assert app_data(link) == [b"old still works"]

    link2 = Link(listener, newcomer, link.addr)
    newcomer.datagram_received(hvr[0])
    link2.run(until=lambda: newcomer.established and listener.is_established(link.addr))
    link2.pump()
    assert link2.events[0] == ConnectionClosed(link.addr, CloseReason.REPLACED, True)
    assert isinstance(link2.events[1], HandshakeCompleted)
    newcomer.send(b"new")
    link2.pump()
    assert app_data(link2) == [b"new"]
    assert listener.connection_count == 1


def test_forged_cookie_does_not_touch_established_connection(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    listener = link.listener
    attacker = client_for("ecdsa")
    attacker.start()
    (hello,) = attacker.datagrams_to_send()
    forged = with_cookie(hello, os.urandom(20))
    assert parse_client_hello(forged).cookie
    listener.datagram_received(forged, link.addr, 0.0)
    assert listener.drops[DropReason.BAD_COOKIE] == 1
    assert listener.events() == []
    assert listener.is_established(link.addr)
    link.client.send(b"alive")
    link.pump()
    assert app_data(link) == [b"alive"]


def test_replayed_client_hello_after_handshake_is_dropped(mode: str) -> None:
    client = client_for("rsa")
    captured: list[bytes] = []

    def capture(_index: int, datagram: bytes) -> bool:
        captured.append(datagram)
        return True

    link = Link(listener_for("rsa", mode=mode), client, to_server=capture)
    link.handshake()
    cookie_hello = captured[1]
    assert parse_client_hello(cookie_hello).cookie
    link.listener.datagram_received(cookie_hello, link.addr, 0.0)
    assert link.listener.drops[DropReason.DUPLICATE_CLIENT_HELLO] == 1
    assert link.listener.datagrams_to_send() == []
    link.client.send(b"fine")
    link.pump()
    assert app_data(link) == [b"fine"]


PLAINTEXT_FATAL_ALERT = b"\x15\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\x00\x02" + b"\x02\x28"

GARBAGE = [
    b"",
    b"\x00",
    os.urandom(7),
    b"\x17\xfe\xfd" + b"\x00" * 10,  # header only, length 0
    b"\x16\xfe\xfd" + b"\x00" * 8 + b"\x00\x40" + b"x" * 10,  # truncated record
    b"\x16\xfe\xfd\x00\x00" + b"\x00" * 6 + b"\x00\x05" + b"\x01\x00\x00\x00\x00",  # bad hello
    PLAINTEXT_FATAL_ALERT,
    b"\x17\xfe\xfd\x00\x01" + b"\x00" * 6 + b"\x00\x20" + os.urandom(32),  # forged app data
    b"GET / HTTP/1.1\r\n\r\n",
    os.urandom(1400),
    b"\x16" * 20000,
]


def test_garbage_from_unknown_addresses_is_dropped_and_counted(mode: str) -> None:
    listener = listener_for("ecdsa", "rsa", mode=mode)
    for index, datagram in enumerate(GARBAGE):
        listener.datagram_received(datagram, (f"10.0.0.{index + 1}", 999), 0.0)
    assert listener.datagrams_to_send() == []
    assert listener.events() == []
    assert listener.connection_count == 0
    assert sum(listener.drops.values()) == len(GARBAGE)
    assert listener.drops[DropReason.OVERSIZED] == 1


def test_garbage_during_handshake_does_not_break_it(mode: str) -> None:
    link = Link(listener_for("ecdsa", mode=mode), client_for("ecdsa"))
    injected = False

    def inject(index: int, datagram: bytes) -> bool:
        nonlocal injected
        if index >= 1 and not injected:  # after the cookie hello
            injected = True
            for junk in GARBAGE:
                if junk != PLAINTEXT_FATAL_ALERT:
                    link.listener.datagram_received(junk, link.addr, 0.0)
        return True

    link.to_client = inject
    link.handshake()
    assert injected
    assert len(completed(link)) == 1
    assert link.client.established


def test_plaintext_fatal_alert_during_handshake_ends_it(mode: str) -> None:
    # DTLS 1.2 has no way to authenticate an alert before the keys exist; it is also how a
    # client tells us it rejected our certificate, so it is honoured (and only then).
    link = Link(listener_for("ecdsa", mode=mode), client_for("ecdsa"))
    link.client.start()
    link.pump()
    link.pump()
    assert link.listener.pending_count == 1
    link.listener.datagram_received(PLAINTEXT_FATAL_ALERT, link.addr, 0.0)
    link.collect()
    assert closed(link) == [ConnectionClosed(link.addr, CloseReason.HANDSHAKE_FAILED, False)]
    assert link.listener.pending_count == 0


def test_garbage_after_handshake_is_discarded_and_session_survives(mode: str) -> None:
    link = connected("rsa", mode=mode)
    other = connected("rsa", ("10.1.2.4", 40002), mode=mode)
    listener = link.listener
    link.client.send(b"a real one")
    (real,) = link.client.datagrams_to_send()
    tampered = bytearray(real)
    tampered[-1] ^= 1
    for junk in [*GARBAGE, bytes(tampered), real[:-5]]:
        listener.datagram_received(junk, link.addr, 0.0)
        other.listener.datagram_received(junk, other.addr, 0.0)
    link.collect()
    assert listener.is_established(link.addr)
    assert closed(link) == []
    assert listener.drops[DropReason.DISCARDED] >= 2
    listener.datagram_received(real, link.addr, 0.0)
    link.collect()
    assert app_data(link) == [b"a real one"]
    # Replaying the same record is discarded (anti-replay).
    listener.datagram_received(real, link.addr, 0.0)
    link.collect()
    assert app_data(link) == [b"a real one"]
    other.client.send(b"other fine")
    other.pump()
    assert app_data(other) == [b"other fine"]


def test_two_connections_on_one_listener_are_independent(mode: str) -> None:
    listener = listener_for("ecdsa", "rsa", mode=mode)
    one = Link(listener, client_for("ecdsa"), ("10.0.0.1", 1000))
    two = Link(listener, client_for("rsa"), ("10.0.0.1", 1001))
    one.handshake()
    two.handshake()
    assert listener.connection_count == 2
    listener.send(one.addr, b"to one")
    listener.send(two.addr, b"to two")
    for datagram, addr in listener.datagrams_to_send():
        (one if addr == one.addr else two).client.datagram_received(datagram)
    assert one.client.records() == [b"to one"]
    assert two.client.records() == [b"to two"]
    one.client.close()
    one.pump()
    two.client.send(b"two lives")
    two.pump()
    assert [e.data for e in two.events if isinstance(e, ApplicationData)] == [b"two lives"]
    assert listener.connection_count == 1


def test_an_internal_error_costs_only_that_peer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Inline only: in split mode this check runs in the forwarding listener, which has no
    # pending connection to close (see the next test for an error where the handshake runs).
    from sengd.tunnel import dtls

    listener = listener_for("ecdsa")
    healthy = Link(listener, client_for("ecdsa"), ("10.0.0.1", 1))
    healthy.handshake()
    victim = Link(listener, client_for("ecdsa"), ("10.0.0.2", 2))
    victim.client.start()
    victim.pump()
    victim.pump()
    assert listener.pending_count == 1

    def boom(_data: bytes) -> bool:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(dtls, "looks_like_record", boom)
    listener.datagram_received(b"\x16\xfe\xfd" + bytes(30), victim.addr, 0.0)
    monkeypatch.undo()
    assert listener.drops[DropReason.INTERNAL_ERROR] == 1
    assert listener.events() == [ConnectionClosed(victim.addr, CloseReason.PROTOCOL_ERROR, False)]
    assert "simulated bug" in caplog.text
    assert listener.pending_count == 0
    healthy.client.send(b"unaffected")
    healthy.pump()
    assert app_data(healthy) == [b"unaffected"]


def test_an_internal_error_in_a_handshake_costs_only_that_peer(
    mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listener = listener_for("ecdsa", mode=mode)
    healthy = Link(listener, client_for("ecdsa"), ("10.0.0.1", 1))
    healthy.handshake()
    victim = Link(listener, client_for("ecdsa"), ("10.0.0.2", 2))
    victim.client.start()
    victim.pump()
    victim.pump()
    assert listener.pending_count == 1

    def boom(*_args: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(runner_of(listener), "_feed_handshake", boom)
    listener.datagram_received(b"\x16\xfe\xfd" + bytes(30), victim.addr, 0.0)
    monkeypatch.undo()
    assert listener.drops[DropReason.INTERNAL_ERROR] == 1
    assert listener.events() == [ConnectionClosed(victim.addr, CloseReason.PROTOCOL_ERROR, False)]
    assert "simulated bug" in caplog.text
    assert listener.pending_count == 0
    assert listener.connection_count == 1
    healthy.client.send(b"unaffected")
    healthy.pump()
    assert app_data(healthy) == [b"unaffected"]


def test_unknown_address_non_hello_record(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    link.client.send(b"x")
    (record,) = link.client.datagrams_to_send()
    link.listener.datagram_received(record, ("10.200.0.1", 5), 0.0)
    assert link.listener.drops[DropReason.UNKNOWN_ADDRESS] == 1
    assert link.listener.events() == []


def test_handshake_timeout_with_a_client_that_stops(mode: str) -> None:
    now = 1000.0
    listener = listener_for("ecdsa", mode=mode, handshake_timeout=30.0)
    link = Link(listener, client_for("ecdsa"), clock=lambda: now)
    # Stop after the cookie hello: the server has sent its flight and waits.
    link.client.start()
    link.pump()
    link.pump()
    assert listener.pending_count == 1
    timer = listener.next_timer()
    assert timer == pytest.approx(now + 1.0)
    listener.handle_timers(now + 29.0)
    link.collect()
    assert closed(link) == []
    listener.handle_timers(now + 30.0)
    link.collect()
    assert closed(link) == [ConnectionClosed(link.addr, CloseReason.HANDSHAKE_TIMEOUT, False)]
    assert listener.pending_count == 0
    assert listener.connection_count == 0
    assert listener.next_timer() is None


def test_no_timer_without_pending_handshakes(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    assert link.listener.next_timer() is None
    link.listener.handle_timers(1e12)
    assert link.listener.is_established(link.addr)


@pytest.mark.slow
def test_server_retransmits_its_flight_with_backoff(mode: str) -> None:
    import time

    times: list[float] = []
    start = time.monotonic()

    def drop_after_hvr(index: int, _datagram: bytes) -> bool:
        if index >= 1:
            times.append(time.monotonic() - start)
            return False
        return True

    link = Link(listener_for("ecdsa", mode=mode), client_for("ecdsa"), to_client=drop_after_hvr)
    # Feed the client nothing after the HVR and never let it retransmit on its own.
    link.client.start()
    link.pump()
    link.pump()
    deadline = time.monotonic() + 3.6
    while time.monotonic() < deadline:
        timer = link.listener.next_timer()
        assert timer is not None
        time.sleep(max(0.0, min(timer - time.monotonic(), 0.1)))
        link.listener.handle_timers(time.monotonic())
        link.pump()
    flights = sorted({round(t, 1) for t in times})
    # First flight at ~0 s, retransmissions at ~+1 s and ~+3 s (1 s, then doubled).
    assert flights[0] < 0.3
    assert any(0.9 <= t <= 1.4 for t in flights)
    assert any(2.9 <= t <= 3.5 for t in flights)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("direction", "victim"),
    [
        ("to_client", 0),  # the HelloVerifyRequest
        ("to_client", 1),  # the server's hello flight
        ("to_server", 2),  # the first client certificate fragment
        ("to_client", 2),  # the server's ChangeCipherSpec + Finished
        ("to_server", 1),  # the cookie ClientHello
    ],
)
def test_handshake_recovers_from_a_lost_datagram(mode: str, direction: str, victim: int) -> None:
    def lose(index: int, _datagram: bytes) -> bool:
        return index != victim

    link = Link(listener_for("rsa", mode=mode), client_for("rsa"), **{direction: lose})  # type: ignore[arg-type]
    link.handshake(timeout=15.0)
    assert link.client.established
    assert len(completed(link)) == 1
    link.client.send(b"after loss")
    link.pump()
    assert app_data(link) == [b"after loss"]
    link.listener.send(link.addr, b"back")
    for datagram, _ in link.listener.datagrams_to_send():
        link.client.datagram_received(datagram)
    assert link.client.records() == [b"back"]


def test_pending_limit_per_host_and_total(mode: str) -> None:
    listener = listener_for("ecdsa", mode=mode, max_pending=3, max_pending_per_host=2)

    def start(addr: tuple[str, int]) -> Link:
        link = Link(listener, client_for("ecdsa"), addr)
        link.client.start()
        link.pump()  # hello -> HVR
        link.pump()  # cookie hello -> flight (or dropped)
        return link

    start(("10.0.0.1", 1))
    start(("10.0.0.1", 2))
    assert listener.pending_count == 2
    start(("10.0.0.1", 3))
    assert listener.drops[DropReason.HOST_PENDING_LIMIT] == 1
    start(("10.0.0.2", 1))
    assert listener.pending_count == 3
    start(("10.0.0.3", 1))
    assert listener.drops[DropReason.PENDING_LIMIT] == 1
    assert listener.pending_count == 3


def test_connection_limit(mode: str) -> None:
    listener = listener_for("ecdsa", mode=mode, max_connections=1)
    Link(listener, client_for("ecdsa"), ("10.0.0.1", 1)).handshake()
    second = Link(listener, client_for("ecdsa"), ("10.0.0.2", 1))
    second.client.start()
    second.pump()
    second.pump()
    assert listener.drops[DropReason.CONNECTION_LIMIT] == 1
    assert listener.connection_count == 1


def test_listener_parameters_are_validated() -> None:
    # Inline only: the constructor's checks; a SplitListener builds two such listeners.
    ecdsa = server_credential("ecdsa")
    with pytest.raises(ValueError, match="at least one"):
        DtlsListener([])
    with pytest.raises(ValueError, match="one credential per key type"):
        DtlsListener([ecdsa, ecdsa])
    with pytest.raises(ValueError, match="mtu"):
        DtlsListener([ecdsa], mtu=100)
    with pytest.raises(ValueError, match="handshake_timeout"):
        DtlsListener([ecdsa], handshake_timeout=0)
    with pytest.raises(ValueError, match="pending"):
        DtlsListener([ecdsa], max_pending=0)
    with pytest.raises(ValueError, match="max_connections"):
        DtlsListener([ecdsa], max_connections=0)


def test_events_and_datagrams_are_drained(mode: str) -> None:
    link = connected("ecdsa", mode=mode)
    assert link.listener.events() == []
    assert link.listener.datagrams_to_send() == []
    key = server_credential("ecdsa").private_key_der
    assert key.hex() not in repr(server_credential("ecdsa"))
    assert "peer_cert_der" not in repr(HandshakeCompleted(link.addr, b"x", "s", KeyType.RSA))


# -- split only: what only the offload/handoff split has -----------------------------------


def split_link(
    kind: str = "ecdsa", addr: tuple[str, int] = ("10.1.2.3", 40001), **kwargs: object
) -> tuple[SplitListener, Link]:
    split = split_for(kind, **kwargs)
    return split, Link(as_listener(split), client_for(kind), addr)


def split_connected(
    kind: str = "ecdsa", addr: tuple[str, int] = ("10.1.2.3", 40001), **kwargs: object
) -> tuple[SplitListener, Link]:
    split, link = split_link(kind, addr, **kwargs)
    link.handshake()
    assert link.client.established and split.is_established(addr)
    return split, link


def epoch1_record(datagrams: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The first record of epoch 1 (a Finished) in `datagrams`."""
    for datagram in datagrams:
        for record in iter_records(datagram):
            if bytes(record[3:5]) == b"\x00\x01":
                return bytes(record)
    raise AssertionError("no epoch-1 record")


def has_epoch1_record(datagram: bytes) -> bool:
    return any(bytes(record[3:5]) == b"\x00\x01" for record in iter_records(datagram))


def seq_of(record: bytes) -> int:
    return int.from_bytes(record[5:11], "big")


def test_split_handshake_runs_in_the_worker_and_is_adopted() -> None:
    split, link = split_link("rsa")
    link.client.start()
    link.pump()  # hello -> HelloVerifyRequest, from the worker
    assert split.forwarded and split.hello_verify_requests == 1
    assert not any(isinstance(m, wire.Started) for m in split.messages)
    assert split.offloaded_addresses == [] and split.pending_count == 0
    link.pump()  # cookie hello -> STARTED
    (started,) = [m for m in split.messages if isinstance(m, wire.Started)]
    assert started == wire.Started(0, link.addr, parse_client_hello(split.forwarded[1][0]).random)
    assert split.offloaded_addresses == [link.addr]
    assert split.pending_count == 1 and split.connection_count == 1
    assert split.main.connection_count == 1 and split.worker.connection_count == 1
    link.handshake()
    (handoff,) = split.handoffs
    assert [m for m in split.messages if isinstance(m, wire.Handoff)] == [wire.Handoff(0, handoff)]
    assert handoff.client_random == started.client_random
    assert handoff.peer_cert_der == client_identity("rsa").certificate_der
    assert handoff.cipher_suite == "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"
    assert not handoff.peer_spoke and handoff.early_data == ()
    # The worker forgot it; the main listener has it, with our own record layer.
    assert split.worker.connection_count == 0 and split.worker.pending_count == 0
    assert split.worker.exported == 1 and split.main.exported == 1
    assert split.offloaded_addresses == [] and split.pending_count == 0
    assert split.connection_count == 1 and split.is_established(link.addr)
    (done,) = completed(link)
    assert done == HandshakeCompleted(
        link.addr, handoff.peer_cert_der, handoff.cipher_suite, KeyType.RSA
    )
    assert split.next_timer() is None


def test_split_replacement_only_when_the_new_cookie_verifies() -> None:
    split, link = split_connected("ecdsa")
    # A forged cookie from the same address: the worker drops it, the session lives.
    attacker = client_for("ecdsa")
    attacker.start()
    (hello,) = attacker.datagrams_to_send()
    split.datagram_received(with_cookie(hello, os.urandom(20)), link.addr, 0.0)
    assert split.drops[DropReason.BAD_COOKIE] == 1
    assert split.worker.drops[DropReason.BAD_COOKIE] == 1
    assert split.events() == [] and split.is_established(link.addr)
    ((fresh_hvr, to),) = split.datagrams_to_send()  # the worker's answer to a bad cookie
    assert fresh_hvr[13] == HELLO_VERIFY_REQUEST and to == link.addr
    # A genuine new client from the same address: nothing happens before its cookie.
    newcomer = client_for("ecdsa")
    newcomer.start()
    (hello,) = newcomer.datagrams_to_send()
    before = len(split.forwarded)
    split.datagram_received(hello, link.addr, 0.0)
    assert split.forwarded[before:] == [(hello, link.addr)]
    (hvr,) = split.datagrams_to_send()
    assert hvr[0][13] == HELLO_VERIFY_REQUEST
    assert split.events() == [] and split.is_established(link.addr)
    assert split.offloaded_addresses == []
    link.client.send(b"old still works")
    link.pump()
    assert app_data(link) == [b"old still works"]
    # Its cookie verifies: STARTED replaces the old connection at once.
    newcomer.datagram_received(hvr[0])
    (cookie_hello,) = newcomer.datagrams_to_send()
    split.datagram_received(cookie_hello, link.addr, time.monotonic())
    assert split.events() == [ConnectionClosed(link.addr, CloseReason.REPLACED, True)]
    assert not split.is_established(link.addr)
    assert split.offloaded_addresses == [link.addr] and split.connection_count == 1
    with pytest.raises(DtlsError):
        split.send(link.addr, b"to the old one")
    link2 = Link(as_listener(split), newcomer, link.addr)
    for datagram, _ in split.datagrams_to_send():
        newcomer.datagram_received(datagram)
    link2.run(until=lambda: newcomer.established and split.is_established(link.addr))
    link2.pump()
    assert [type(e) for e in link2.events] == [HandshakeCompleted]
    newcomer.send(b"new")
    link2.pump()
    assert app_data(link2) == [b"new"]
    assert split.connection_count == 1 and len(split.handoffs) == 2


def test_split_duplicate_client_hello_is_dropped_in_the_main_listener() -> None:
    captured: list[bytes] = []

    def capture(_index: int, datagram: bytes) -> bool:
        captured.append(datagram)
        return True

    split, link = split_link("rsa")
    link.to_server = capture
    link.handshake()
    first_hello, cookie_hello = captured[0], captured[1]
    assert parse_client_hello(cookie_hello).cookie
    forwarded = len(split.forwarded)
    worker_drops = split.worker.drops.copy()
    for hello in (cookie_hello, first_hello):
        split.datagram_received(hello, link.addr, 0.0)
    assert split.main.drops[DropReason.DUPLICATE_CLIENT_HELLO] == 2
    assert len(split.forwarded) == forwarded  # never reached the worker
    assert split.worker.drops == worker_drops
    assert split.datagrams_to_send() == [] and split.events() == []
    link.client.send(b"fine")
    link.pump()
    assert app_data(link) == [b"fine"]


@pytest.mark.slow
def test_split_lost_server_finished_is_resent_by_the_main_listener() -> None:
    split, link = split_link("ecdsa")
    lost: list[bytes] = []

    def lose_final_flight(_index: int, datagram: bytes) -> bool:
        if split.handoffs and not lost and datagram in split.handoffs[0].final_flight:
            lost.append(datagram)
            return False
        return True

    link.to_client = lose_final_flight
    link.handshake(timeout=15.0)
    assert lost
    (handoff,) = split.handoffs
    # The client's retransmitted last flight stayed in the main listener (only its first
    # Finished went to the worker), which answered with the bytes of the worker's flight.
    finished_to_worker = [d for d, _ in split.forwarded if has_epoch1_record(d)]
    assert len(finished_to_worker) == 1
    assert split.worker.connection_count == 0
    assert split.drops[DropReason.UNKNOWN_ADDRESS] == 0
    flight = list(handoff.final_flight)
    sent = link.server_datagrams
    start = sent.index(flight[0])
    assert sent[start : start + len(flight)] == flight
    assert flight[0] in sent[start + len(flight) :]  # resent
    assert len(completed(link)) == 1 and closed(link) == []
    link.client.send(b"after loss")
    link.pump()
    assert app_data(link) == [b"after loss"]
    split.send(link.addr, b"back")
    for datagram, _ in split.datagrams_to_send():
        link.client.datagram_received(datagram)
    assert link.client.records() == [b"back"]


def test_split_data_both_ways_and_sequence_numbers_continue() -> None:
    to_server: list[bytes] = []

    def capture(_index: int, datagram: bytes) -> bool:
        to_server.append(datagram)
        return True

    split, link = split_link("ecdsa")
    link.to_server = capture
    link.handshake()
    forwarded = len(split.forwarded)
    (handoff,) = split.handoffs
    records = handoff.records
    server_finished = epoch1_record(handoff.final_flight)
    client_finished = epoch1_record(to_server)
    assert records.epoch == 1
    assert records.out_seq == seq_of(server_finished) + 1
    assert (records.in_top, records.in_window) == (seq_of(client_finished), 1)
    assert len(records.read_key) == len(records.write_key) == 16  # AES-128-GCM

    # Server -> client: the main listener goes on where the worker's Finished left off.
    payloads = [os.urandom(1400), b"x", os.urandom(1435)]
    for payload in payloads:
        split.send(link.addr, payload)
    out = split.datagrams_to_send()
    assert [seq_of(d) for d, _ in out] == [records.out_seq + i for i in range(3)]
    assert all(d[3:5] == b"\x00\x01" and addr == link.addr for d, addr in out)
    for datagram, _ in out:
        link.client.datagram_received(datagram)
    assert link.client.records() == payloads

    # Client -> server: accepted after adopt, replays rejected.
    sent = [os.urandom(100) for _ in range(5)]
    for payload in sent:
        link.client.send(payload)
    datagrams = link.client.datagrams_to_send()
    assert [seq_of(d) for d in datagrams] == [seq_of(client_finished) + 1 + i for i in range(5)]
    for datagram in reversed(datagrams):  # out of order within the window is fine
        split.datagram_received(datagram, link.addr, 0.0)
    link.collect()
    assert sorted(app_data(link)) == sorted(sent)
    discarded = split.drops[DropReason.DISCARDED]
    for datagram in [*datagrams, client_finished]:  # the Finished is in the handed-off window
        split.datagram_received(datagram, link.addr, 0.0)
    link.collect()
    assert len(app_data(link)) == 5
    assert split.drops[DropReason.DISCARDED] == discarded + 6
    assert split.is_established(link.addr) and closed(link) == []
    assert len(split.forwarded) == forwarded  # all of it stayed in the main listener
    link.client.send(b"still fine")
    link.pump()
    assert app_data(link)[-1] == b"still fine"


def test_split_connection_limit_is_checked_in_the_main_listener() -> None:
    split = split_for("ecdsa", max_connections=2)
    listener = as_listener(split)
    first = Link(listener, client_for("ecdsa"), ("10.0.0.1", 1))
    first.handshake()
    # A second client gets as far as a pending handshake (offloaded).
    second = Link(listener, client_for("ecdsa"), ("10.0.0.2", 1))
    second.client.start()
    second.pump()
    second.pump()
    assert split.offloaded_addresses == [second.addr]
    assert split.connection_count == 2
    # A third is dropped at its first hello: no HelloVerifyRequest, nothing forwarded.
    third = Link(listener, client_for("ecdsa"), ("10.0.0.3", 1))
    forwarded = len(split.forwarded)
    third.client.start()
    third.pump()
    assert split.drops[DropReason.CONNECTION_LIMIT] == 1
    assert split.main.drops[DropReason.CONNECTION_LIMIT] == 1
    assert len(split.forwarded) == forwarded and third.server_datagrams == []
    # The pending and the established address are not limited: they own a slot.
    second.run(until=lambda: split.is_established(second.addr))
    newcomer = client_for("ecdsa")
    newcomer.start()
    (hello,) = newcomer.datagrams_to_send()
    split.datagram_received(hello, first.addr, 0.0)
    assert split.forwarded[-1] == (hello, first.addr)
    assert split.drops[DropReason.CONNECTION_LIMIT] == 1
    split.datagrams_to_send()
    # A slot frees up: the third client gets in.
    assert split.close(first.addr)
    split.datagrams_to_send()
    third.run(until=lambda: split.is_established(third.addr) and third.client.established)
    assert split.connection_count == 2


def test_split_handshake_failed_for_an_unknown_address_is_a_no_op() -> None:
    split, link = split_connected("ecdsa")
    main = split.main
    for addr in [("10.9.9.9", 1), link.addr]:  # never offloaded / established
        main.handshake_failed(addr, CloseReason.WORKER_LOST)
    assert main.events() == []
    assert main.is_established(link.addr) and main.connection_count == 1
    assert main.pending_count == 0
    link.client.send(b"alive")
    link.pump()
    assert app_data(link) == [b"alive"]
    # For an offloaded address it ends the handshake, once.
    main.handshake_started(("10.0.0.9", 9), os.urandom(32))
    assert main.pending_count == 1
    main.handshake_failed(("10.0.0.9", 9), CloseReason.WORKER_LOST)
    main.handshake_failed(("10.0.0.9", 9), CloseReason.WORKER_LOST)
    assert main.events() == [ConnectionClosed(("10.0.0.9", 9), CloseReason.WORKER_LOST, False)]
    assert main.pending_count == 0 and main.connection_count == 1


def test_split_adopt_refuses_an_unusable_handoff() -> None:
    split, _link = split_connected("ecdsa")
    (good,) = split.handoffs
    fresh = split_for("ecdsa")
    main = fresh.main
    main.handshake_started(good.addr, good.client_random)
    bad_states = [
        replace(good.records, read_salt=b"\x00" * 3),
        replace(good.records, write_salt=b"\x00" * 5),
        replace(good.records, read_key=b"\x00" * 15),
        replace(good.records, epoch=1 << 16),
        replace(good.records, out_seq=(1 << 48) + 1),
        replace(good.records, out_seq=-1),
    ]
    for state in bad_states:
        with pytest.raises(ValueError):
            main.adopt(replace(good, records=state))
    with pytest.raises(DtlsError, match="rsa"):
        main.adopt(replace(good, key_type=KeyType.RSA))
    # Nothing changed: still a pending (offloaded) handshake, no event.
    assert main.events() == []
    assert main.offloaded_addresses == [good.addr] and not main.is_established(good.addr)
    # Through the gateway's path a refused handoff ends the handshake with EXPORT_FAILED (an
    # out_seq beyond 2^48 passes the codec: only adopt() can refuse it).
    fresh.apply(
        wire.decode_worker_message(wire.encode_handoff(0, replace(good, records=bad_states[-2])))
    )
    assert isinstance(fresh.refused[0], ValueError)
    assert main.events() == [ConnectionClosed(good.addr, CloseReason.EXPORT_FAILED, False)]
    assert main.connection_count == 0
    # The untouched handoff is adopted.
    main.adopt(good)
    assert main.events() == [
        HandshakeCompleted(good.addr, good.peer_cert_der, good.cipher_suite, KeyType.ECDSA)
    ]
    assert main.is_established(good.addr)


def test_split_adopt_emits_early_data_and_keeps_peer_spoke() -> None:
    split, link = split_connected("ecdsa")
    (good,) = split.handoffs
    fresh = split_for("ecdsa")
    early = replace(good, early_data=(b"one", b"two"), peer_spoke=True)
    message = wire.decode_worker_message(wire.encode_handoff(0, early))
    fresh.apply(message)
    events = fresh.events()
    assert [type(e) for e in events] == [HandshakeCompleted, ApplicationData, ApplicationData]
    assert events[1:] == [ApplicationData(good.addr, b"one"), ApplicationData(good.addr, b"two")]
    # peer_spoke: a handshake datagram is no retransmitted flight any more, nothing is resent.
    fresh.datagram_received(good.final_flight[0], good.addr, 0.0)
    assert fresh.datagrams_to_send() == []
    link.client.send(b"to the adopter")
    (datagram,) = link.client.datagrams_to_send()
    fresh.datagram_received(datagram, good.addr, 0.0)
    assert fresh.events() == [ApplicationData(good.addr, b"to the adopter")]


def test_split_offload_is_refused_while_handshakes_are_pending_here() -> None:
    listener = listener_for("ecdsa")
    link = Link(listener, client_for("ecdsa"))
    link.client.start()
    link.pump()
    link.pump()
    assert listener.pending_count == 1

    def forward(_data: bytes, _addr: tuple[str, int]) -> None:
        raise AssertionError("must not be called")

    with pytest.raises(DtlsError, match="in progress"):
        listener.offload(forward)
    listener.offload(None)  # running them here is always allowed
    link.handshake()
    assert listener.pending_count == 0
    listener.offload(forward)  # established connections only: fine
    link.client.send(b"still here")
    link.pump()
    assert app_data(link) == [b"still here"]


def test_split_main_listener_runs_handshakes_again_after_offload_none() -> None:
    split, _link = split_connected("ecdsa")
    split.main.offload(None)
    forwarded = len(split.forwarded)
    other = Link(split.main, client_for("ecdsa"), ("10.0.0.7", 7))
    other.handshake()
    assert len(split.forwarded) == forwarded
    assert [type(e) for e in other.events] == [HandshakeCompleted]
    assert split.main.connection_count == 2


@pytest.mark.parametrize("failure", ["no-reader", "wrong-master-secret"])
def test_split_export_failure_in_the_worker_closes_with_export_failed(
    failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = session_reader()
    assert loaded is not None
    real: SessionReader = loaded

    class CorruptReader:
        def master_secret(self, buffer: object, context: object) -> tuple[int, bytes]:
            suite, master = real.master_secret(buffer, context)
            return suite, bytes((master[0] ^ 1,)) + master[1:]

    # Only the worker exports keys from mbedtls; the main listener adopts finished state.
    replacement = None if failure == "no-reader" else CorruptReader()
    monkeypatch.setattr("sengd.tunnel.dtls.session_reader", lambda: replacement)
    split, link = split_link("ecdsa")
    link.client.start()
    link.run(until=lambda: bool(closed(link)) and link.client.established)
    assert closed(link) == [ConnectionClosed(link.addr, CloseReason.EXPORT_FAILED, False)]
    assert completed(link) == [] and split.handoffs == []
    assert wire.Closed(0, link.addr, CloseReason.EXPORT_FAILED) in split.messages
    assert split.connection_count == 0 and split.pending_count == 0
    assert split.worker.connection_count == 0
    assert split.export_failures == (0 if failure == "no-reader" else 1)
    assert split.exported == 0
    # The client believes it is connected; its records reach nobody.
    link.client.send(b"lost")
    link.pump()
    assert app_data(link) == []
    assert split.drops[DropReason.UNKNOWN_ADDRESS] == 1


def test_records_of_is_the_established_connections_own_record_layer() -> None:
    # The gateway->enclave fast path seals with it directly; the client must accept that.
    link = connected("ecdsa")
    records = link.listener.records_of(link.addr)
    assert records is not None
    link.client.datagram_received(records.seal(23, b"sealed by the fast path"))
    assert link.client.records() == [b"sealed by the fast path"]
    link.listener.send(link.addr, b"then by send()")  # one sequence space for both
    for datagram, _ in link.listener.datagrams_to_send():
        link.client.datagram_received(datagram)
    assert link.client.records() == [b"then by send()"]
    assert link.listener.records_of(("10.9.9.9", 1)) is None
    # While mbedtls keeps the records there is no record layer to seal with.
    kept = Link(listener_for("ecdsa", export_keys=False), client_for("ecdsa"), link.addr)
    kept.handshake()
    assert kept.listener.is_established(link.addr)
    assert kept.listener.records_of(link.addr) is None
