"""The ClientHello parser: real hellos from OpenSSL, hand-made edge cases, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.testing.enclave_emu import Build, DtlsClient
from sengd.tunnel.clienthello import (
    ClientHello,
    ClientHelloError,
    is_client_hello,
    parse_client_hello,
)
from tests.unit.tunnel.certs import client_identity


def openssl_hello(build: Build, **kwargs: object) -> bytes:
    client = DtlsClient(client_identity(build.value), build=build, **kwargs)  # type: ignore[arg-type]
    client.start()
    (datagram,) = client.datagrams_to_send()
    return datagram


def build_hello(
    *,
    suites: tuple[int, ...] = (0xC02B,),
    cookie: bytes = b"",
    session_id: bytes = b"",
    extensions: bytes | None = b"",
    random: bytes = bytes(range(32)),
    compression: bytes = b"\x00",
    record_type: int = 22,
    epoch: int = 0,
    message_seq: int = 0,
) -> bytes:
    body = (
        b"\xfe\xfd"
        + random
        + bytes([len(session_id)])
        + session_id
        + bytes([len(cookie)])
        + cookie
        + (2 * len(suites)).to_bytes(2, "big")
        + b"".join(s.to_bytes(2, "big") for s in suites)
        + bytes([len(compression)])
        + compression
    )
    if extensions is not None:
        body += len(extensions).to_bytes(2, "big") + extensions
    handshake = (
        b"\x01"
        + len(body).to_bytes(3, "big")
        + message_seq.to_bytes(2, "big")
        + b"\x00\x00\x00"
        + len(body).to_bytes(3, "big")
        + body
    )
    return (
        bytes([record_type, 0xFE, 0xFF])
        + epoch.to_bytes(2, "big")
        + b"\x00" * 6
        + len(handshake).to_bytes(2, "big")
        + handshake
    )


def with_cookie(hello: bytes, cookie: bytes) -> bytes:
    """Rewrite an unfragmented, cookie-less ClientHello datagram to carry `cookie`."""
    parsed = parse_client_hello(hello)
    assert parsed.cookie == b""
    offset = 13 + 12 + 2 + 32 + 1 + len(parsed.session_id)
    body = hello[13 + 12 : offset] + bytes([len(cookie)]) + cookie + hello[offset + 1 :]
    return (
        hello[:11]
        + (12 + len(body)).to_bytes(2, "big")
        + b"\x01"
        + len(body).to_bytes(3, "big")
        + hello[17:19]
        + b"\x00\x00\x00"
        + len(body).to_bytes(3, "big")
        + body
    )


def test_with_cookie_helper() -> None:
    hello = openssl_hello(Build.RSA)
    forged = parse_client_hello(with_cookie(hello, b"k" * 20))
    assert forged.cookie == b"k" * 20
    assert forged.random == parse_client_hello(hello).random


@pytest.mark.parametrize(("build", "suite"), [(Build.RSA, 0xC030), (Build.ECDSA, 0xC02B)])
def test_real_openssl_hello_offers_exactly_the_build_suite(build: Build, suite: int) -> None:
    datagram = openssl_hello(build)
    assert is_client_hello(datagram)
    hello = parse_client_hello(datagram)
    # OpenSSL adds the renegotiation SCSV (0x00FF) after the one real suite.
    assert [s for s in hello.cipher_suites if s != 0x00FF] == [suite]
    assert hello.cookie == b""
    assert hello.client_version == 0xFEFD
    assert hello.message_seq == 0
    assert len(hello.random) == 32
    assert hello.compression_methods == b"\x00"
    assert 0x17 in hello.extensions  # extended master secret offered by default
    assert 0x00 not in hello.extensions  # no SNI


def test_hand_made_hello_fields() -> None:
    extension = (0x000A).to_bytes(2, "big") + b"\x00\x04\x00\x02\x00\x18"
    hello = parse_client_hello(
        build_hello(
            suites=(0xC030, 0x00FF),
            cookie=b"c" * 20,
            session_id=b"s" * 32,
            extensions=extension,
            message_seq=1,
        )
    )
    assert hello == ClientHello(
        record_version=0xFEFF,
        message_seq=1,
        client_version=0xFEFD,
        random=bytes(range(32)),
        session_id=b"s" * 32,
        cookie=b"c" * 20,
        cipher_suites=(0xC030, 0x00FF),
        compression_methods=b"\x00",
        extensions=(0x000A,),
    )


def test_hello_without_extension_block_and_trailing_records() -> None:
    datagram = build_hello(extensions=None) + b"\x16\xfe\xfd" + b"\x00" * 10
    assert parse_client_hello(datagram).extensions == ()


@pytest.mark.parametrize(
    ("datagram", "message"),
    [
        (b"", "too short"),
        (build_hello(record_type=23), "content type"),
        (build_hello(epoch=1), "epoch 0"),
        (build_hello(suites=()), "cipher_suites"),
        (build_hello(compression=b""), "compression"),
        (build_hello(session_id=b"s" * 33), "session_id"),
        (build_hello()[:-3], "claims"),
        (build_hello(extensions=b"\x00\x0a\x00\x09\x00"), "truncated"),
    ],
)
def test_malformed_hellos_raise_only_our_error(datagram: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse_client_hello(datagram)


def test_fragmented_or_inconsistent_lengths_are_refused() -> None:
    good = bytearray(build_hello())
    fragment = bytearray(good)
    fragment[13 + 6 : 13 + 9] = (1).to_bytes(3, "big")  # fragment_offset 1
    with pytest.raises(ClientHelloError, match="fragmented"):
        parse_client_hello(bytes(fragment))
    odd_suites = bytearray(good)
    odd_suites[13 + 12 + 2 + 32 + 2 : 13 + 12 + 2 + 32 + 4] = (3).to_bytes(2, "big")
    with pytest.raises(ClientHelloError):
        parse_client_hello(bytes(odd_suites))
    short_record = bytearray(good)
    short_record[11:13] = (len(good) - 13 - 1).to_bytes(2, "big")
    with pytest.raises(ClientHelloError, match="does not match"):
        parse_client_hello(bytes(short_record))
    not_dtls = bytearray(good)
    not_dtls[1] = 0x03
    with pytest.raises(ClientHelloError, match="not DTLS"):
        parse_client_hello(bytes(not_dtls))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(ClientHelloError):
        parse_client_hello(data)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fuzz_mutated_real_hello(data: st.DataObject) -> None:
    original = bytearray(build_hello(suites=(0xC02B, 0xC030, 0x00FF), cookie=b"k" * 20))
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    try:
        hello = parse_client_hello(bytes(original[:cut]))
    except ClientHelloError:
        return
    assert len(hello.random) == 32
    assert hello.cipher_suites


@settings(max_examples=300, deadline=None)
@given(
    suites=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40).map(tuple),
    cookie=st.binary(max_size=255),
    session_id=st.binary(max_size=32),
)
def test_roundtrip_of_generated_hellos(
    suites: tuple[int, ...], cookie: bytes, session_id: bytes
) -> None:
    hello = parse_client_hello(build_hello(suites=suites, cookie=cookie, session_id=session_id))
    assert hello.cipher_suites == suites
    assert hello.cookie == cookie
    assert hello.session_id == session_id


def test_parser_refuses_non_bytes() -> None:
    with pytest.raises(ClientHelloError):
        parse_client_hello("not bytes")  # type: ignore[arg-type]
