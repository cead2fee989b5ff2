"""Batched UDP I/O for IPv4 sockets: recvmmsg(2) and sendmmsg(2) through ctypes.

Python's socket module has no recvmmsg/sendmmsg. Measured on loopback with 1437-byte datagrams
(median of 7 rounds of 30,000, CPU time of the calling process): recvfrom_into plus the copy
1.55 us, `Receiver` in batches of 64 1.21 us; sendto 3.20 us, `Sender` 3.21 us. Receiving in
batches pays and the gateway uses it; sending does not (the kernel's per-datagram work
dominates), so `Sender` is kept for measurements only.

This is the I/O shell's helper, not part of the sans-IO protocol code: it only moves bytes.
`available()` says whether libc provides both calls; callers fall back to recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from collections.abc import Sequence

Address = tuple[str, int]

_MSG_TRUNC = 0x20


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _SendIoVec(ctypes.Structure):
    # c_char_p: assigning a bytes object stores a pointer to its buffer without a copy.
    _fields_ = (("base", ctypes.c_char_p), ("len", ctypes.c_size_t))


class _SockaddrIn(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_ushort),
        ("port", ctypes.c_uint16),  # network byte order
        ("addr", ctypes.c_uint32),  # network byte order
        ("zero", ctypes.c_char * 8),
    )


def _msghdr(iov_type: type[ctypes.Structure]) -> type[ctypes.Structure]:
    class MsgHdr(ctypes.Structure):
        _fields_ = (
            ("name", ctypes.c_void_p),
            ("namelen", ctypes.c_uint32),
            ("iov", ctypes.POINTER(iov_type)),
            ("iovlen", ctypes.c_size_t),
            ("control", ctypes.c_void_p),
            ("controllen", ctypes.c_size_t),
            ("flags", ctypes.c_int),
        )

    class MMsgHdr(ctypes.Structure):
        _fields_ = (("hdr", MsgHdr), ("len", ctypes.c_uint))

    return MMsgHdr


_RecvMMsg = _msghdr(_IoVec)
_SendMMsg = _msghdr(_SendIoVec)
_MMSG_SIZE = ctypes.sizeof(_RecvMMsg)
_NAMELEN_AT = 8  # msg_hdr.msg_namelen, after the msg_name pointer
_LEN_AT = _MMSG_SIZE - 8  # msg_len, after the msghdr (padded to 8 bytes)
_NAMELEN_16 = (16).to_bytes(4, "little")
_U32_STRIDE = _MMSG_SIZE // 4
_LEN_U32 = _LEN_AT // 4
assert _MMSG_SIZE % 4 == 0 and _LEN_AT % 4 == 0, "mmsghdr fields are 4-byte aligned"

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _recvmmsg = _libc.recvmmsg
    _sendmmsg = _libc.sendmmsg
    _recvmmsg.argtypes = (
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    )
    _recvmmsg.restype = ctypes.c_int
    _sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    _sendmmsg.restype = ctypes.c_int
    _AVAILABLE = True
except (OSError, AttributeError):  # pragma: no cover - every glibc since 2.14 has both
    _AVAILABLE = False


def available() -> bool:
    """True if libc offers recvmmsg and sendmmsg."""
    return _AVAILABLE


_MAX_ADDRESSES = 1 << 16


class Receiver:
    """Receives up to `batch` datagrams per call from one non-blocking IPv4 UDP socket.

    Datagrams longer than `size` bytes are returned truncated to `size + 1` bytes, so a caller
    that drops anything above `size` still sees that they were too long.
    """

    def __init__(self, sock: socket.socket, batch: int = 64, size: int = 16384) -> None:
        self._fd = sock.fileno()
        self._batch = batch
        self._size = size
        self._buffers = [ctypes.create_string_buffer(size + 1) for _ in range(batch)]
        self._names = (_SockaddrIn * batch)()
        self._iovs = (_IoVec * batch)()
        self._msgs = (_RecvMMsg * batch)()
        for i in range(batch):
            self._iovs[i].base = ctypes.addressof(self._buffers[i])
            self._iovs[i].len = size + 1
            hdr = self._msgs[i].hdr
            hdr.name = ctypes.addressof(self._names[i])
            hdr.iov = ctypes.pointer(self._iovs[i])
            hdr.iovlen = 1
        self._names_view = memoryview(self._names).cast("B")
        self._views = [memoryview(buffer) for buffer in self._buffers]
        # Message lengths and name lengths are read and reset through one flat view: creating
        # a ctypes object per message would cost more than the system calls saved.
        self._msgs_view = memoryview(self._msgs).cast("B")
        self._msgs_u32 = self._msgs_view.cast("I")  # msg_len of message i: [i * 16 + 14]
        self._used = batch  # how many name lengths the last call may have changed
        self._addresses: dict[bytes, Address] = {}

    def receive(self) -> list[tuple[bytes, Address]]:
        """The datagrams waiting now (at most `batch`), oldest first; [] if none.

        Raises OSError for socket errors other than "nothing to read".
        """
        flat = self._msgs_view
        stride = _MMSG_SIZE
        for i in range(self._used):
            flat[i * stride + _NAMELEN_AT : i * stride + _NAMELEN_AT + 4] = _NAMELEN_16
        count = _recvmmsg(self._fd, self._msgs, self._batch, socket.MSG_DONTWAIT, None)
        if count < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        self._used = count
        out = []
        names = bytes(self._names_view[: count * 16])  # one copy, then cheap bytes slices
        lengths = self._msgs_u32
        addresses = self._addresses
        views = self._views
        for i in range(count):
            key = names[i * 16 + 2 : i * 16 + 8]
            addr = addresses.get(key)
            if addr is None:
                if len(addresses) >= _MAX_ADDRESSES:
                    addresses.clear()
                (port,) = struct.unpack("!H", key[:2])
                addr = addresses[key] = (socket.inet_ntoa(key[2:]), port)
            out.append((bytes(views[i][: lengths[i * _U32_STRIDE + _LEN_U32]]), addr))
        return out


class Sender:
    """Sends datagrams to IPv4 addresses from one non-blocking UDP socket, `batch` per call."""

    def __init__(self, sock: socket.socket, batch: int = 64) -> None:
        self._fd = sock.fileno()
        self._batch = batch
        self._iovs = (_SendIoVec * batch)()
        self._msgs = (_SendMMsg * batch)()
        for i in range(batch):
            hdr = self._msgs[i].hdr
            hdr.iov = ctypes.pointer(self._iovs[i])
            hdr.iovlen = 1
            hdr.namelen = 16
        self._addresses: dict[Address, _SockaddrIn] = {}

    def _sockaddr(self, addr: Address) -> _SockaddrIn:
        name = self._addresses.get(addr)
        if name is None:
            if len(self._addresses) >= _MAX_ADDRESSES:
                self._addresses.clear()
            name = _SockaddrIn.from_buffer_copy(
                struct.pack("=H", socket.AF_INET)
                + struct.pack("!H4s8x", addr[1], socket.inet_aton(addr[0]))
            )
            self._addresses[addr] = name
        return name

    def send(self, datagrams: Sequence[tuple[bytes, Address]]) -> list[tuple[Address, int]]:
        """Send every datagram in order; return (destination, errno) of those that failed.

        A datagram that fails (a full send buffer: EAGAIN; an ICMP error: ECONNREFUSED, ...) is
        skipped and the rest are still sent.
        """
        failed: list[tuple[Address, int]] = []
        iovs, msgs = self._iovs, self._msgs
        start = 0
        total = len(datagrams)
        while start < total:
            chunk = datagrams[start : start + self._batch]
            names = []
            for i, (data, addr) in enumerate(chunk):
                iovs[i].base = data
                iovs[i].len = len(data)
                name = self._sockaddr(addr)
                names.append(name)
                msgs[i].hdr.name = ctypes.addressof(name)
            sent = _sendmmsg(self._fd, msgs, len(chunk), 0)
            if sent < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                failed.append((chunk[0][1], err))
                sent = 1  # skip the datagram that failed
            # sendmmsg stops at the first failure without reporting it: the next call starts
            # with that datagram and reports its errno.
            start += sent
        return failed
