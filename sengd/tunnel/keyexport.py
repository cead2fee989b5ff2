"""Traffic keys of a finished python-mbedtls DTLS 1.2 session, from its serialized context.

python-mbedtls exposes `mbedtls_ssl_context_save()` as `MbedTLSBuffer.__getstate__()`. The blob
holds the master secret, both randoms, the outgoing sequence number and the anti-replay window,
in a layout that is specific to the Mbed TLS version and its compile-time options. Both are
recorded in the blob's first eight bytes, so `parse_context()` accepts exactly the header it was
written for (Mbed TLS 2.28.x with the options of the python-mbedtls 2.10 wheel) and raises
`KeyExportError` for anything else; the caller then keeps mbedtls doing the records.

`derive_keys()` turns the master secret into the AES-GCM write keys and implicit nonces
(RFC 5246 §6.3, §5 PRF; RFC 5288 for the GCM suites). Everything here is pure.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hmac

CONTEXT_HEADER = bytes.fromhex("021c00ff00000e")
"""Bytes 0-1 and 3-7 of a context saved by Mbed TLS 2.28.x (byte 2 is the patch level):
session options 0x00ff (time, certificates, tickets, MFL, truncated HMAC, ETM, peer
certificate kept), context options 0x00000e (bad-MAC limit, anti-replay, ALPN; no CID)."""

_SESSION_START = 12
"""8 header bytes, then the session's 4-byte length."""


@dataclass(frozen=True, slots=True)
class Suite:
    """An AES-GCM cipher suite this module can take over."""

    iana_id: int
    key_len: int
    prf_hash: type[hashes.SHA256] | type[hashes.SHA384]


SUITES: dict[int, Suite] = {
    0xC02B: Suite(0xC02B, 16, hashes.SHA256),  # ECDHE-ECDSA-AES128-GCM-SHA256
    0xC02F: Suite(0xC02F, 16, hashes.SHA256),  # ECDHE-RSA-AES128-GCM-SHA256
    0xC02C: Suite(0xC02C, 32, hashes.SHA384),  # ECDHE-ECDSA-AES256-GCM-SHA384
    0xC030: Suite(0xC030, 32, hashes.SHA384),  # ECDHE-RSA-AES256-GCM-SHA384
}

SALT_LEN = 4
"""The implicit part of the GCM nonce (client/server_write_IV)."""


class KeyExportError(ValueError):
    """The saved context has an unknown layout or a suite we cannot take over."""


@dataclass(frozen=True, slots=True)
class ExportedSession:
    """What a saved mbedtls context says about an established DTLS 1.2 connection.

    `out_seq` is the next outgoing 48-bit sequence number of `epoch`; `in_top` and `in_window`
    are mbedtls' anti-replay state (highest sequence number seen; bit i set = `in_top - i` seen).
    """

    suite: Suite
    master_secret: bytes = field(repr=False)
    server_random: bytes
    client_random: bytes
    epoch: int
    out_seq: int
    in_top: int
    in_window: int


@dataclass(frozen=True, slots=True)
class TrafficKeys:
    """Write keys and implicit nonces of both directions."""

    client_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    client_salt: bytes = field(repr=False)
    server_salt: bytes = field(repr=False)


def parse_context(blob: bytes) -> ExportedSession:
    """Parse the bytes of `mbedtls_ssl_context_save()` (Mbed TLS 2.28.x layout only).

    Raises KeyExportError if the header, the suite or any length does not match.
    """
    if len(blob) < _SESSION_START or blob[0:2] + blob[3:8] != CONTEXT_HEADER:
        raise KeyExportError(f"unsupported saved-context header {blob[:8].hex()}")
    session_len = int.from_bytes(blob[8:12], "big")
    s = _SESSION_START
    # Session: start time (8), suite (2), compression (1), id length (1), id (32), master (48).
    if session_len < 92:
        raise KeyExportError(f"saved session of {session_len} bytes is too short")
    suite_id = int.from_bytes(blob[s + 8 : s + 10], "big")
    suite = SUITES.get(suite_id)
    if suite is None:
        raise KeyExportError(f"cipher suite 0x{suite_id:04x} is not an AES-GCM suite we handle")
    if blob[s + 10] != 0:
        raise KeyExportError("compression is on")
    master = blob[s + 44 : s + 92]
    p = s + session_len
    # Context: randbytes (server random, client random), bad-MAC count (4), anti-replay top
    # (8) and window (8), datagram packing flag (1), outgoing counter (8), MTU (2), ALPN.
    if len(blob) < p + 64 + 4 + 16 + 1 + 8 + 2 + 1:
        raise KeyExportError("saved context is truncated")
    server_random, client_random = blob[p : p + 32], blob[p + 32 : p + 64]
    p += 68
    in_top = int.from_bytes(blob[p : p + 8], "big")
    in_window = int.from_bytes(blob[p + 8 : p + 16], "big")
    p += 17
    epoch = int.from_bytes(blob[p : p + 2], "big")
    out_seq = int.from_bytes(blob[p + 2 : p + 8], "big")
    p += 10
    alpn_len = blob[p]
    if p + 1 + alpn_len != len(blob):
        raise KeyExportError(f"saved context has {len(blob) - p - 1 - alpn_len} stray bytes")
    if epoch != 1 or in_top >= 1 << 48:
        raise KeyExportError(f"unexpected epoch {epoch} or window top {in_top}")
    return ExportedSession(
        suite=suite,
        master_secret=master,
        server_random=server_random,
        client_random=client_random,
        epoch=epoch,
        out_seq=out_seq,
        in_top=in_top,
        in_window=in_window,
    )


def tls12_prf(
    algorithm: type[hashes.SHA256] | type[hashes.SHA384],
    secret: bytes,
    label: bytes,
    seed: bytes,
    length: int,
) -> bytes:
    """The TLS 1.2 PRF, P_hash(secret, label + seed) cut to `length` bytes (RFC 5246 §5)."""

    def mac(data: bytes) -> bytes:
        h = hmac.HMAC(secret, algorithm())
        h.update(data)
        return h.finalize()

    seed = label + seed
    out = bytearray()
    a = seed
    while len(out) < length:
        a = mac(a)
        out += mac(a + seed)
    return bytes(out[:length])


def derive_keys(session: ExportedSession) -> TrafficKeys:
    """The key block of `session` (RFC 5246 §6.3) split into keys and GCM salts."""
    n = session.suite.key_len
    block = tls12_prf(
        session.suite.prf_hash,
        session.master_secret,
        b"key expansion",
        session.server_random + session.client_random,
        2 * n + 2 * SALT_LEN,
    )
    return TrafficKeys(
        client_key=block[:n],
        server_key=block[n : 2 * n],
        client_salt=block[2 * n : 2 * n + SALT_LEN],
        server_salt=block[2 * n + SALT_LEN :],
    )


# -- the session of a connection that never sent a record ----------------------------------------
#
# `mbedtls_ssl_context_save()` refuses to run until mbedtls has freed its handshake state, and
# mbedtls frees it only when the client's first record of the new epoch arrives. On tunnel #2 the
# client never sends one, so there the master secret is read through two other public functions
# of the same library: `mbedtls_ssl_get_session_pointer()` and `mbedtls_ssl_session_save()`. They
# need the address of the `mbedtls_ssl_context` inside python-mbedtls' buffer object, which is
# checked against the context's `mbedtls_ssl_config` pointer and the negotiated version before
# use; and the caller verifies the derived keys on a record mbedtls itself encrypted before it
# relies on them.

_SESSION_HEADER = bytes.fromhex("021c00ff")
"""Bytes 0-1 and 3-4 of `mbedtls_ssl_session_save()` output from Mbed TLS 2.28.x."""
_BUFFER_BASICSIZE = 568
_CONTEXT_OFFSET = 16  # PyObject header; then python-mbedtls' `_context` object reference
_SSL_OFFSET = 24  # the embedded mbedtls_ssl_context, whose first field is `conf`
_CONFIG_HOLDER_OFFSET = 16  # in the context object: the object embedding mbedtls_ssl_config
_CONFIG_IN_HOLDER = 32  # where in that object the mbedtls_ssl_config starts


def _ssl_pointer(buffer: object, context: object) -> int:
    """Address of the mbedtls_ssl_context inside `buffer`, a buffer made by `context`.

    Checked: the buffer type's size, its reference to `context`, and that the first field of
    the embedded ssl context (`conf`) points to the configuration `context` holds. Raises
    KeyExportError otherwise.
    """
    if type(buffer).__basicsize__ != _BUFFER_BASICSIZE:
        raise KeyExportError("unexpected python-mbedtls buffer layout")
    base = id(buffer)
    if ctypes.c_void_p.from_address(base + _CONTEXT_OFFSET).value != id(context):
        raise KeyExportError("buffer does not reference its context where expected")
    holder = ctypes.c_void_p.from_address(id(context) + _CONFIG_HOLDER_OFFSET).value
    conf = ctypes.c_void_p.from_address(base + _SSL_OFFSET).value
    if not holder or conf != holder + _CONFIG_IN_HOLDER:
        raise KeyExportError("buffer's ssl context does not point to the configuration")
    return base + _SSL_OFFSET


def config_pointer(buffer: object, context: object) -> int:
    """Address of the mbedtls_ssl_config of `context`, checked through its `buffer`."""
    _ssl_pointer(buffer, context)
    return int(ctypes.c_void_p.from_address(id(buffer) + _SSL_OFFSET).value or 0)


class SessionReader:
    """Master secret of an established python-mbedtls buffer via Mbed TLS' C API (ctypes).

    `load()` returns None if the bundled library or the buffer layout is not the one this was
    written for (python-mbedtls 2.10 wheels with Mbed TLS 2.28).
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._pointer = lib.mbedtls_ssl_get_session_pointer
        self._pointer.restype = ctypes.c_void_p
        self._pointer.argtypes = [ctypes.c_void_p]
        self._save = lib.mbedtls_ssl_session_save
        self._save.restype = ctypes.c_int
        self._save.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        ]
        self._version = lib.mbedtls_ssl_get_version
        self._version.restype = ctypes.c_char_p
        self._version.argtypes = [ctypes.c_void_p]
        self._conf_curves = lib.mbedtls_ssl_conf_curves
        self._conf_curves.restype = None
        self._conf_curves.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def load(cls) -> SessionReader | None:
        """The reader for the Mbed TLS bundled with python-mbedtls, or None."""
        from mbedtls import _tls, version

        if tuple(version.version_info[:2]) != (2, 28):
            return None
        if getattr(_tls.MbedTLSBuffer, "__basicsize__", 0) != _BUFFER_BASICSIZE:
            return None
        libs = Path(_tls.__file__).resolve().parent.parent / "python_mbedtls.libs"
        candidates = sorted(libs.glob("libmbedtls-*.so*"))
        if len(candidates) != 1:
            return None
        try:
            return cls(ctypes.CDLL(str(candidates[0])))
        except (OSError, AttributeError):
            return None

    def master_secret(self, buffer: object, context: object) -> tuple[int, bytes]:
        """(cipher suite id, master secret) of `buffer`, an established buffer of `context`.

        Raises KeyExportError if the object layout does not check out.
        """
        ssl = _ssl_pointer(buffer, context)
        if self._version(ssl) != b"DTLSv1.2":
            raise KeyExportError("connection is not DTLS 1.2")
        session = self._pointer(ssl)
        if not session:
            raise KeyExportError("no session")
        size = ctypes.c_size_t(0)
        self._save(session, None, 0, ctypes.byref(size))  # asks for the length
        if not 97 <= size.value <= 1 << 16:
            raise KeyExportError(f"session of {size.value} bytes")
        out = ctypes.create_string_buffer(size.value)
        if self._save(session, out, size.value, ctypes.byref(size)) != 0:
            raise KeyExportError("mbedtls_ssl_session_save failed")
        blob = out.raw[: size.value]
        if blob[0:2] + blob[3:5] != _SESSION_HEADER:
            raise KeyExportError(f"unsupported saved-session header {blob[:5].hex()}")
        # Header (5), start time (8), suite (2), compression (1), id length (1), id (32).
        return int.from_bytes(blob[13:15], "big"), blob[49:97]


@functools.cache
def session_reader() -> SessionReader | None:
    """The process-wide `SessionReader`, loaded on first use (None if unsupported)."""
    return SessionReader.load()


# mbedtls_ecp_group_id values of Mbed TLS 2.28 (include/mbedtls/ecp.h).
ECP_GROUPS: dict[str, int] = {
    "x25519": 9,
    "secp256r1": 3,
    "secp384r1": 4,
    "secp521r1": 5,
}

ECDHE_PREFERENCE = ("x25519", "secp256r1", "secp384r1", "secp521r1")
"""Our order for the ECDHE group. mbedtls' default puts secp521r1 first, and as the server it
picks by its own order: a P-521 key exchange costs ~30% of a handshake's CPU here."""


def prefer_ecdhe_groups(
    context: object, buffer: object, groups: tuple[str, ...] = ECDHE_PREFERENCE
) -> ctypes.Array[ctypes.c_int] | None:
    """Set the ECDHE groups (in order of preference) of a python-mbedtls ServerContext.

    `buffer` is any buffer made by `context` (to find and check the configuration). Returns
    the array mbedtls now points to: the caller must keep it alive as long as `context`.
    Returns None (nothing changed) if the library or layout is not the one this supports.
    """
    reader = session_reader()
    if reader is None:
        return None
    try:
        conf = config_pointer(buffer, context)
    except KeyExportError:
        return None
    ids = [ECP_GROUPS[name] for name in groups] + [0]
    array = (ctypes.c_int * len(ids))(*ids)
    reader._conf_curves(conf, array)
    return array
