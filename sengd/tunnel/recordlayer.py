"""DTLS 1.2 AES-GCM record protection in Python (RFC 6347 §4.1, RFC 5288), sans-IO.

Once a connection's handshake is over, `DtlsListener` hands its records to a `RecordLayer`
built from the keys exported from mbedtls (`keyexport.py`): OpenSSL's AES-GCM (through
`cryptography`) is about ten times faster than mbedtls' and the per-connection state shrinks
from ~100 KB of mbedtls buffers to a few hundred bytes.

Record format (epoch 1 onwards):

    type(1) version(2)=FE FD epoch(2) seq(6) length(2) | explicit nonce(8) ciphertext tag(16)

The nonce is the 4-byte implicit salt followed by the explicit part; ours is epoch||seq, which
never repeats under one key. The additional data is epoch||seq, type, version and the plaintext
length (RFC 5246 §6.2.3.3).

Incoming records are checked in this order: header, epoch, anti-replay window (RFC 6347
§4.1.2.6: a 64-record sliding window, a record older than the window or seen before is
rejected), authentication tag; the window is updated only after the tag verified, so a forged
record cannot advance it. Rejections raise `RecordRejected` with a reason and leave the state
unchanged; a DTLS receiver discards such records silently (RFC 6347 §4.1.2.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sengd.tunnel.keyexport import ExportedSession, KeyExportError, TrafficKeys, derive_keys

HEADER_LEN = 13
EXPLICIT_NONCE_LEN = 8
TAG_LEN = 16
OVERHEAD = HEADER_LEN + EXPLICIT_NONCE_LEN + TAG_LEN
MAX_PLAINTEXT = 16384
WINDOW = 64
MAX_SEQ = (1 << 48) - 1

CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23

ALERT_WARNING = 1
ALERT_FATAL = 2
ALERT_CLOSE_NOTIFY = 0

_VERSION = b"\xfe\xfd"
_WINDOW_MASK = (1 << WINDOW) - 1


class RecordRejected(Exception):
    """An incoming record was not accepted; `reason` is one of the REASON_* strings."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


REASON_MALFORMED = "malformed"
REASON_EPOCH = "wrong-epoch"
REASON_REPLAY = "replayed"
REASON_TOO_OLD = "too-old"
REASON_BAD_TAG = "bad-tag"


class SequenceExhausted(Exception):
    """2^48 records were sent in this epoch; the connection must end (we never renegotiate)."""


@dataclass(frozen=True, slots=True)
class RecordState:
    """All of a `RecordLayer`: what a handshake worker hands to the forwarding process."""

    read_key: bytes = field(repr=False)
    read_salt: bytes = field(repr=False)
    write_key: bytes = field(repr=False)
    write_salt: bytes = field(repr=False)
    epoch: int
    out_seq: int
    in_top: int
    in_window: int


class RecordLayer:
    """Protection of one connection's records in epoch `epoch`, one direction each way.

    `seal(type, plaintext)` returns one complete record; `open(record)` returns
    `(type, plaintext)` of one complete record or raises RecordRejected.
    """

    __slots__ = (
        "_keys",
        "_open",
        "_read_salt",
        "_seal",
        "_write_prefix",
        "_write_salt",
        "epoch",
        "in_top",
        "in_window",
        "out_seq",
    )

    def __init__(
        self,
        *,
        read_key: bytes,
        read_salt: bytes,
        write_key: bytes,
        write_salt: bytes,
        epoch: int,
        out_seq: int = 0,
        in_top: int = 0,
        in_window: int = 0,
    ) -> None:
        if len(read_salt) != 4 or len(write_salt) != 4:
            raise ValueError("GCM salts are 4 bytes")
        if not 0 <= epoch < 1 << 16 or not 0 <= out_seq <= MAX_SEQ + 1:
            raise ValueError("epoch or sequence number out of range")
        self._keys = (read_key, write_key)
        self._open = AESGCM(read_key).decrypt
        self._seal = AESGCM(write_key).encrypt
        self._read_salt = read_salt
        self._write_salt = write_salt
        self._write_prefix = epoch.to_bytes(2, "big")
        self.epoch = epoch
        self.out_seq = out_seq
        """Sequence number of the next record sealed."""
        self.in_top = in_top
        """Highest sequence number accepted so far."""
        self.in_window = in_window & _WINDOW_MASK
        """Bit i set: record `in_top - i` was accepted."""

    @classmethod
    def server(cls, session: ExportedSession, keys: TrafficKeys) -> RecordLayer:
        """The server's side: reads with the client's keys, writes with the server's."""
        return cls(
            read_key=keys.client_key,
            read_salt=keys.client_salt,
            write_key=keys.server_key,
            write_salt=keys.server_salt,
            epoch=session.epoch,
            out_seq=session.out_seq,
            in_top=session.in_top,
            in_window=session.in_window,
        )

    @classmethod
    def from_state(cls, state: RecordState) -> RecordLayer:
        """Rebuild a record layer from `state()` (raises ValueError if it is inconsistent)."""
        return cls(
            read_key=state.read_key,
            read_salt=state.read_salt,
            write_key=state.write_key,
            write_salt=state.write_salt,
            epoch=state.epoch,
            out_seq=state.out_seq,
            in_top=state.in_top,
            in_window=state.in_window,
        )

    def state(self) -> RecordState:
        """Keys, epoch, sequence number and replay window as they are now."""
        return RecordState(
            read_key=self._keys[0],
            read_salt=self._read_salt,
            write_key=self._keys[1],
            write_salt=self._write_salt,
            epoch=self.epoch,
            out_seq=self.out_seq,
            in_top=self.in_top,
            in_window=self.in_window,
        )

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """One record of `content_type` carrying `plaintext` (1..16384 bytes; alerts 2).

        Raises SequenceExhausted after 2^48 records, ValueError for an oversized plaintext.
        """
        size = len(plaintext)
        if size > MAX_PLAINTEXT:
            raise ValueError(f"plaintext of {size} bytes exceeds {MAX_PLAINTEXT}")
        seq = self.out_seq
        if seq > MAX_SEQ:
            raise SequenceExhausted("2^48 records sent in this epoch")
        self.out_seq = seq + 1
        explicit = self._write_prefix + seq.to_bytes(6, "big")
        head = bytes((content_type,)) + _VERSION
        aad = explicit + head + size.to_bytes(2, "big")
        body = self._seal(self._write_salt + explicit, plaintext, aad)
        return head + explicit + (size + 24).to_bytes(2, "big") + explicit + body

    def open(self, record: bytes) -> tuple[int, bytes]:
        """Check and decrypt one complete record (header included); see the module docstring.

        Raises RecordRejected (state unchanged) if it is malformed, of another epoch, replayed,
        older than the window or fails authentication.
        """
        size = len(record)
        if (
            size < OVERHEAD
            or record[1] != 0xFE
            or record[2] != 0xFD
            or (record[11] << 8 | record[12]) != size - HEADER_LEN
        ):
            raise RecordRejected(REASON_MALFORMED)
        if (record[3] << 8 | record[4]) != self.epoch:
            raise RecordRejected(REASON_EPOCH)
        seq = int.from_bytes(record[5:11], "big")
        top = self.in_top
        if seq <= top:
            back = top - seq
            if back >= WINDOW:
                raise RecordRejected(REASON_TOO_OLD)
            if self.in_window >> back & 1:
                raise RecordRejected(REASON_REPLAY)
        plain_len = size - OVERHEAD
        aad = record[3:11] + record[0:3] + plain_len.to_bytes(2, "big")
        try:
            plaintext = self._open(self._read_salt + record[13:21], record[21:], aad)
        except InvalidTag:
            raise RecordRejected(REASON_BAD_TAG) from None
        if seq > top:
            shift = seq - top
            self.in_window = (self.in_window << shift | 1) & _WINDOW_MASK if shift < WINDOW else 1
            self.in_top = seq
        else:
            self.in_window |= 1 << (top - seq)
        return record[0], plaintext


def verified_keys(session: ExportedSession, our_finished: bytes) -> TrafficKeys:
    """The traffic keys of `session`, accepted only if they decrypt `our_finished` (the
    server's Finished as its TLS stack encrypted it). Raises KeyExportError otherwise."""
    keys = derive_keys(session)
    check = RecordLayer(
        read_key=keys.server_key,
        read_salt=keys.server_salt,
        write_key=keys.client_key,
        write_salt=keys.client_salt,
        epoch=session.epoch,
    )
    try:
        kind, _ = check.open(our_finished)
    except RecordRejected as exc:
        raise KeyExportError(f"derived keys do not open our Finished: {exc.reason}") from None
    if kind != CONTENT_HANDSHAKE:
        raise KeyExportError("our Finished is not a handshake record")
    return keys
