"""Our own AES-GCM record layer (keys exported from mbedtls) against the real OpenSSL client.

Behaviour tests run twice: with the records taken over (`export_keys=True`, the default) and
with mbedtls keeping them, so that both paths are held to the same contract.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.testing.enclave_emu import DtlsClient
from sengd.tunnel import dtls as dtls_module
from sengd.tunnel.dtls import (
    KEY_EXPORT_SUPPORTED,
    ApplicationData,
    CloseReason,
    ConnectionClosed,
    DropReason,
    DtlsListener,
)
from sengd.tunnel.keyexport import (
    KeyExportError,
    derive_keys,
    parse_context,
    tls12_prf,
)
from sengd.tunnel.recordlayer import (
    MAX_SEQ,
    REASON_BAD_TAG,
    REASON_EPOCH,
    REASON_MALFORMED,
    REASON_REPLAY,
    REASON_TOO_OLD,
    RecordLayer,
    RecordRejected,
    SequenceExhausted,
)
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.harness import Link

ADDR = ("10.1.2.3", 40001)
BOTH = pytest.mark.parametrize("export", [True, False], ids=["exported", "mbedtls"])


def test_this_mbedtls_supports_key_export() -> None:
    # The wheel pinned by pyproject.toml is Mbed TLS 2.28; if this fails the fast records are
    # silently off, which must not go unnoticed.
    assert KEY_EXPORT_SUPPORTED


def connected(kind: str = "ecdsa", *, export: bool = True, first: bool = True) -> Link:
    """An established link; with `first`, the client's first record has been delivered."""
    listener = DtlsListener([server_credential(kind)], export_keys=export)
    client = DtlsClient(client_identity(kind), pinned_server_cert=None)
    link = Link(listener, client, ADDR)
    link.handshake()
    assert client.established and listener.is_established(ADDR)
    if first:
        client.send(b"first")
        link.pump()
        assert app_data(link) == [b"first"]
        link.events.clear()
        assert listener.exported == (1 if export else 0)
    return link


def app_data(link: Link) -> list[bytes]:
    return [e.data for e in link.events if isinstance(e, ApplicationData)]


def closed(link: Link) -> list[ConnectionClosed]:
    return [e for e in link.events if isinstance(e, ConnectionClosed)]


def client_records(link: Link, *payloads: bytes) -> list[bytes]:
    """Datagrams (one record each) the OpenSSL client produced for `payloads`."""
    out = []
    for payload in payloads:
        link.client.send(payload)
        (datagram,) = link.client.datagrams_to_send()
        out.append(datagram)
    return out


def deliver(link: Link, *datagrams: bytes) -> None:
    for datagram in datagrams:
        link.listener.datagram_received(datagram, ADDR, time.monotonic())
    link.collect()


def forged_client(link: Link) -> RecordLayer:
    """A record layer with the client's keys (from OpenSSL), writing far ahead of its counter."""
    keys = derive_keys(_session_from_openssl(link))
    return RecordLayer(
        read_key=keys.server_key,
        read_salt=keys.server_salt,
        write_key=keys.client_key,
        write_salt=keys.client_salt,
        epoch=1,
        out_seq=1000,
    )


def _session_from_openssl(link: Link) -> Any:
    from sengd.tunnel.keyexport import SUITES, ExportedSession

    conn: Any = link.client._conn
    suite = {"ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B, "ECDHE-RSA-AES256-GCM-SHA384": 0xC030}[
        conn.get_cipher_name()
    ]
    return ExportedSession(
        suite=SUITES[suite],
        master_secret=conn.master_key(),
        server_random=conn.server_random(),
        client_random=conn.client_random(),
        epoch=1,
        out_seq=0,
        in_top=0,
        in_window=0,
    )


# -- key export -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_exported_secrets_match_openssl(kind: str) -> None:
    link = connected(kind, export=False)  # mbedtls saves a context only after the first record
    client_conn: Any = link.client._conn
    buf: Any = link.listener._conns[ADDR].buf
    state = buf.__getstate__()["connection"]
    session = parse_context(state)
    assert session.master_secret == client_conn.master_key()
    assert session.client_random == client_conn.client_random()
    assert session.server_random == client_conn.server_random()
    assert session.epoch == 1
    assert session.suite.key_len == (16 if kind == "ecdsa" else 32)
    # Keys derived from OpenSSL's view and from mbedtls' agree.
    assert derive_keys(session) == derive_keys(_session_from_openssl(link))


def test_saved_context_needs_the_first_record() -> None:
    link = connected(export=False, first=False)
    buf: Any = link.listener._conns[ADDR].buf
    with pytest.raises(TypeError):
        buf.__getstate__()
    link.client.send(b"first")
    link.pump()
    assert app_data(link) == [b"first"]


def test_parse_context_refuses_other_layouts() -> None:
    link = connected(export=False)
    buf: Any = link.listener._conns[ADDR].buf
    state = bytearray(buf.__getstate__()["connection"])
    parse_context(bytes(state))
    for index, value in ((0, 3), (1, 0x1B), (7, 0x0F)):  # major, minor, context options
        bad = bytearray(state)
        bad[index] = value
        with pytest.raises(KeyExportError, match="header"):
            parse_context(bytes(bad))
    with pytest.raises(KeyExportError):
        parse_context(bytes(state[:-1]))
    with pytest.raises(KeyExportError):
        parse_context(bytes(state) + b"\0")
    with pytest.raises(KeyExportError):
        parse_context(b"")


def test_tls12_prf_known_answer() -> None:
    # The widely published TLS 1.2 PRF (SHA-256) test vector of the IETF TLS WG mailing list.
    from cryptography.hazmat.primitives import hashes

    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = tls12_prf(hashes.SHA256, secret, b"test label", seed, 100)
    assert out.hex().startswith("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a")
    assert len(out) == 100


# -- the take-over ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_records_flow_both_ways_after_the_take_over(kind: str) -> None:
    link = connected(kind)
    conn = link.listener._conns[ADDR]
    assert conn.buf is None and conn.records is not None  # mbedtls' state is released
    payloads = [os.urandom(size) for size in (1, 64, 1400, link.listener.max_plaintext)]
    deliver(link, *client_records(link, *payloads))
    assert app_data(link) == payloads
    for payload in payloads:
        link.listener.send(ADDR, payload)
    for datagram, addr in link.listener.datagrams_to_send():
        assert addr == ADDR
        link.client.datagram_received(datagram)
    assert link.client.records() == payloads
    assert not link.listener.drops


def test_server_sequence_numbers_continue_from_mbedtls() -> None:
    # Records sent by mbedtls before the take-over and by us after it must not reuse a
    # sequence number: OpenSSL's own replay check would drop the second copy.
    link = connected(first=False)
    for index in range(3):
        link.listener.send(ADDR, b"before %d" % index)
    link.pump()
    link.client.send(b"ack")
    link.pump()
    assert link.listener.exported == 1
    for index in range(3):
        link.listener.send(ADDR, b"after %d" % index)
    link.pump()
    before = [b"before 0", b"before 1", b"before 2"]
    assert link.client.records() == [*before, b"after 0", b"after 1", b"after 2"]


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_saved_context_route_when_the_session_cannot_be_read(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dtls_module, "session_reader", lambda: None)
    link = connected(kind, first=False)
    assert link.listener.exported == 0
    link.listener.send(ADDR, b"assignment")  # still by mbedtls
    link.client.send(b"first")
    link.pump()
    assert link.listener.exported == 1 and link.listener._conns[ADDR].buf is None
    deliver(link, *client_records(link, b"second"))
    link.listener.send(ADDR, b"reply")
    link.pump()
    assert app_data(link) == [b"first", b"second"]
    assert link.client.records() == [b"assignment", b"reply"]


def test_failed_export_leaves_mbedtls_in_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_blob: bytes) -> Any:
        raise KeyExportError("unsupported saved-context header (test)")

    monkeypatch.setattr(dtls_module, "parse_context", refuse)
    monkeypatch.setattr(dtls_module, "session_reader", lambda: None)  # an unknown library
    link = connected(export=True, first=False)
    link.client.send(b"first")
    link.pump()
    assert app_data(link) == [b"first"]
    assert link.listener.exported == 0 and link.listener.export_failures == 1
    conn = link.listener._conns[ADDR]
    assert conn.records is None and conn.buf is not None
    deliver(link, *client_records(link, b"second", b"third"))
    assert app_data(link) == [b"first", b"second", b"third"]
    link.listener.send(ADDR, b"reply")
    link.pump()
    assert link.client.records() == [b"reply"]


# -- anti-replay, reordering, tampering (both record paths) -----------------------------------


@BOTH
def test_replayed_record_is_dropped(export: bool) -> None:
    link = connected(export=export)
    (record,) = client_records(link, b"once")
    deliver(link, record, record, record)
    assert app_data(link) == [b"once"]
    assert link.listener.drops[DropReason.DISCARDED] == 2
    deliver(link, *client_records(link, b"next"))
    assert app_data(link) == [b"once", b"next"]


@BOTH
def test_reordered_records_within_the_window_are_delivered(export: bool) -> None:
    link = connected(export=export)
    payloads = [b"r%d" % index for index in range(40)]
    records = client_records(link, *payloads)
    order = records[20:] + records[:20][::-1]
    deliver(link, *order)
    assert sorted(app_data(link)) == sorted(payloads)
    assert not link.listener.drops
    deliver(link, records[5], records[30])  # replays after reordering
    assert len(app_data(link)) == 40


@BOTH
def test_record_older_than_the_window_is_dropped(export: bool) -> None:
    link = connected(export=export)
    records = client_records(link, *[b"w%d" % index for index in range(70)])
    deliver(link, *records[1:])
    deliver(link, records[0])  # 69 behind the newest: outside the 64-record window
    got = app_data(link)
    assert len(got) == 69 and b"w0" not in got
    assert link.listener.drops[DropReason.DISCARDED] == 1


@BOTH
@pytest.mark.parametrize(
    "where",
    [5, 8, 12, 16, 40, -1],  # seq, seq, length, explicit nonce, ciphertext, tag
    ids=["seq-high", "seq-low", "length", "nonce", "ciphertext", "tag"],
)
def test_tampered_record_is_dropped_and_the_connection_survives(export: bool, where: int) -> None:
    link = connected(export=export)
    (record,) = client_records(link, os.urandom(200))
    bad = bytearray(record)
    bad[where] ^= 0x01
    deliver(link, bytes(bad))
    assert app_data(link) == []
    assert link.listener.drops[DropReason.DISCARDED] == 1
    assert not closed(link)
    deliver(link, record)  # the genuine record was not marked as seen by the forgery
    assert len(app_data(link)) == 1
    assert link.listener.is_established(ADDR)


@BOTH
def test_truncated_and_epoch_zero_records_are_dropped(export: bool) -> None:
    link = connected(export=export)
    (record,) = client_records(link, b"x" * 100)
    deliver(link, record[:-1], record[:20])
    epoch0 = bytearray(record)
    epoch0[3:5] = b"\0\0"
    deliver(link, bytes(epoch0))
    assert app_data(link) == [] and not closed(link)
    assert link.listener.drops[DropReason.DISCARDED] >= 3
    deliver(link, record)
    assert app_data(link) == [b"x" * 100]


# -- alerts and close_notify ------------------------------------------------------------------


@BOTH
def test_client_close_notify_closes_the_connection(export: bool) -> None:
    link = connected(export=export)
    link.client.close()
    deliver(link, *link.client.datagrams_to_send())
    assert [(e.reason, e.established) for e in closed(link)] == [(CloseReason.CLOSE_NOTIFY, True)]
    assert not link.listener.is_established(ADDR)
    if export:  # we answer with a close_notify of our own (RFC 5246 §7.2.1)
        ((reply, addr),) = link.listener.datagrams_to_send()
        assert addr == ADDR and reply[0] == 21 and len(reply) == 13 + 8 + 2 + 16


@BOTH
def test_gateway_close_sends_close_notify(export: bool) -> None:
    link = connected(export=export)
    assert link.listener.close(ADDR)
    link.pump()
    assert link.client.closed and link.client.close_reason == "close-notify"
    assert link.listener.connection_count == 0
    assert not closed(link)  # close() emits no event


def test_alerts_from_the_client() -> None:
    link = connected()
    forger = forged_client(link)
    deliver(link, forger.seal(21, bytes((1, 100))))  # warning no_renegotiation: ignored
    deliver(link, forger.seal(22, b"\x00" * 12))  # epoch-1 handshake record: ignored
    deliver(link, forger.seal(23, b"forged but genuine keys"))
    assert app_data(link) == [b"forged but genuine keys"] and not closed(link)
    deliver(link, forger.seal(21, bytes((2, 40))))  # fatal handshake_failure
    assert [e.reason for e in closed(link)] == [CloseReason.FATAL_ALERT]


def test_malformed_alert_is_a_protocol_error() -> None:
    link = connected()
    forger = forged_client(link)
    deliver(link, forger.seal(21, b"\x02"))
    assert [e.reason for e in closed(link)] == [CloseReason.PROTOCOL_ERROR]
    ((reply, _),) = link.listener.datagrams_to_send()
    assert forger.open(reply) == (21, bytes((2, 50)))  # decode_error


def test_several_records_in_one_datagram() -> None:
    link = connected()
    forger = forged_client(link)
    datagram = forger.seal(23, b"one") + forger.seal(23, b"two") + forger.seal(21, b"\x01\x00")
    deliver(link, datagram)
    assert app_data(link) == [b"one", b"two"]
    assert [e.reason for e in closed(link)] == [CloseReason.CLOSE_NOTIFY]


# -- RecordLayer on its own -------------------------------------------------------------------


def pair(out_seq: int = 0) -> tuple[RecordLayer, RecordLayer]:
    k1, k2, s1, s2 = os.urandom(16), os.urandom(16), os.urandom(4), os.urandom(4)
    a = RecordLayer(
        read_key=k1, read_salt=s1, write_key=k2, write_salt=s2, epoch=1, out_seq=out_seq
    )
    b = RecordLayer(read_key=k2, read_salt=s2, write_key=k1, write_salt=s1, epoch=1)
    return a, b


def test_reject_reasons() -> None:
    a, b = pair()
    record = a.seal(23, b"payload")
    assert b.open(record) == (23, b"payload")

    def reason(data: bytes) -> str:
        with pytest.raises(RecordRejected) as info:
            b.open(data)
        return info.value.reason

    assert reason(record) == REASON_REPLAY
    assert reason(record[:-1]) == REASON_MALFORMED
    assert reason(b"\x17\xfe\xfd" + record[3:]) == REASON_REPLAY
    assert reason(b"\x17\xfe\xff" + record[3:]) == REASON_MALFORMED  # DTLS 1.0
    assert reason(record[:3] + b"\x00\x02" + record[5:]) == REASON_EPOCH
    fresh = a.seal(23, b"payload")
    assert reason(fresh[:-1] + bytes([fresh[-1] ^ 1])) == REASON_BAD_TAG
    assert reason(b"\x16" + fresh[1:]) == REASON_BAD_TAG  # the type is authenticated
    assert b.open(fresh) == (23, b"payload")
    for _ in range(70):
        b.open(a.seal(23, b"."))
    assert reason(fresh) == REASON_TOO_OLD


def test_sequence_numbers_run_out() -> None:
    a, b = pair(out_seq=MAX_SEQ)
    assert b.open(a.seal(23, b"last")) == (23, b"last")
    with pytest.raises(SequenceExhausted):
        a.seal(23, b"one too many")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=120))
def test_replay_window_matches_a_reference_model(order: list[int]) -> None:
    """Any arrival order: accepted iff never accepted before and within 64 of the newest."""
    a, b = pair()
    records = [a.seal(23, n.to_bytes(2, "big")) for n in range(301)]
    seen: set[int] = set()
    top = -1
    for seq in order:
        expect = seq not in seen and seq > top - 64
        try:
            b.open(records[seq])
            accepted = True
        except RecordRejected:
            accepted = False
        assert accepted == expect, (seq, top)
        if accepted:
            seen.add(seq)
            top = max(top, seq)


# -- take-over when the client never sends (tunnel #2) ----------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_take_over_at_completion_when_the_client_is_silent(kind: str) -> None:
    link = connected(kind, first=False)
    assert link.listener.exported == 1 and link.listener.export_failures == 0
    conn = link.listener._conns[ADDR]
    assert conn.buf is None and conn.records is not None  # before anything was sent
    payloads = [b"p%d" % index for index in range(5)]
    for payload in payloads:
        link.listener.send(ADDR, payload)
    link.pump()
    assert link.client.records() == payloads
    # The client may still speak afterwards: its records are accepted, replays are not.
    (record,) = client_records(link, b"late")
    deliver(link, record, record)
    assert app_data(link) == [b"late"]


def test_keys_that_do_not_reproduce_mbedtls_record_are_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dtls_module, "_server_random", lambda _datagram: bytes(32))
    link = connected(first=False)  # a wrong server random derives wrong keys
    assert link.listener.exported == 0 and link.listener.export_failures == 1
    conn = link.listener._conns[ADDR]
    assert conn.records is None and conn.buf is not None
    link.listener.send(ADDR, b"one")  # no second attempt with the same wrong keys
    assert link.listener.export_failures == 1
    link.listener.send(ADDR, b"two")
    link.pump()
    assert link.client.records() == [b"one", b"two"]
    link.client.send(b"first")  # the saved-context route still works afterwards
    link.pump()
    assert app_data(link) == [b"first"] and link.listener.exported == 1


def test_lost_final_flight_is_resent_after_the_take_over() -> None:
    listener = DtlsListener([server_credential("ecdsa")])
    client = DtlsClient(client_identity("ecdsa"), pinned_server_cert=None)
    dropped: list[bytes] = []

    def lose_final_flight(_index: int, datagram: bytes) -> bool:
        # Drop the server's CCS + Finished the first time (the only datagram with a CCS).
        if datagram[0] == 20 and not dropped:
            dropped.append(datagram)
            return False
        return True

    link = Link(listener, client, ADDR, to_client=lose_final_flight)
    client.start()
    link.run(until=lambda: listener.is_established(ADDR), timeout=5)
    assert dropped and not client.established
    assert listener.exported == 1  # the take-over happened while the client still waits
    listener.send(ADDR, b"early")
    link.run(until=lambda: client.established, timeout=5)  # its retransmission gets an answer
    listener.send(ADDR, b"after")
    link.pump()
    assert b"after" in client.records()


# -- ECDHE group preference -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_server_prefers_x25519_for_ecdhe(kind: str) -> None:
    # mbedtls' own order starts with secp521r1, the slowest; ours starts with x25519.
    from sengd.tunnel.records import iter_records

    link = Link(
        DtlsListener([server_credential(kind)]),
        DtlsClient(client_identity(kind), pinned_server_cert=None),
        ADDR,
    )
    link.handshake()
    groups = [
        int.from_bytes(bytes(record[26:28]), "big")
        for datagram in link.server_datagrams
        for record in iter_records(datagram)
        # ServerKeyExchange, its first fragment (fragment offset 0)
        if record[0] == 22 and record[13] == 12 and bytes(record[19:22]) == bytes(3)
    ]
    assert groups == [29]  # x25519 (RFC 8422)
