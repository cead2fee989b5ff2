"""The control socket: a Unix-socket JSON-RPC server driven by the daemon's event loop.

Authorization is by the kernel's word about the peer (SO_PEERCRED), never by anything the
client says: root and members of the admin group may change things, members of the monitor
group may only read, everyone else is told so and disconnected. The socket file is created
with mode 0660 and the admin group, so the filesystem already keeps strangers out.

Everything is bounded: request line size, connections, and each connection's unsent output. A
subscriber whose output backs up beyond the bound is sent a final `events.dropped` notice (if it
fits) and disconnected; the loop never waits for a client.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sengd.dataplane.loop import EventLoop
from sengd.eventlog import emit
from sengd.rpc.protocol import (
    FORBIDDEN,
    INTERNAL_ERROR,
    MAX_REQUEST_BYTES,
    METHOD_NOT_FOUND,
    OVERLOADED,
    TOO_LARGE,
    Params,
    RpcError,
    error_line,
    notification_line,
    parse_request,
    result_line,
)

log = logging.getLogger("sengd.rpc")

MAX_CONNECTIONS = 64
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
READ_CHUNK = 65536

ADMIN = "admin"
MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is on the other end, as the kernel vouches (SO_PEERCRED), and what they may do."""

    pid: int
    uid: int
    gid: int
    name: str
    role: str  # ADMIN or MONITOR


Handler = Callable[[Params, Caller], Any]


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC method: who may call it and what it does (the handler validates its params)."""

    role: str
    handler: Handler
    summary: str = ""


def posix_acl_rw_group(gid: int) -> bytes:
    """The `system.posix_acl_access` value for mode 0660 plus `group:<gid>:rw-`.

    Format (linux/posix_acl_xattr.h): version 2, then (tag u16, perm u16, id u32) entries in tag
    order: USER_OBJ rw, GROUP_OBJ rw, GROUP gid rw, MASK rw, OTHER none.
    """
    undefined = 0xFFFFFFFF
    entries = [
        (0x01, 6, undefined),  # ACL_USER_OBJ
        (0x04, 6, undefined),  # ACL_GROUP_OBJ
        (0x08, 6, gid),  # ACL_GROUP
        (0x10, 6, undefined),  # ACL_MASK
        (0x20, 0, undefined),  # ACL_OTHER
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def role_of(uid: int, gid: int, admin_gid: int | None, monitor_gid: int | None) -> str | None:
    """ADMIN, MONITOR or None (refused) for a peer with `uid`/`gid` and its supplementary groups."""
    if uid == 0:
        return ADMIN
    try:
        user = pwd.getpwuid(uid).pw_name
        groups = set(os.getgrouplist(user, gid))
    except KeyError:
        groups = {gid}
    if admin_gid is not None and admin_gid in groups:
        return ADMIN
    if monitor_gid is not None and monitor_gid in groups:
        return MONITOR
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid-{uid}"


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@dataclass(eq=False)
class Connection:
    """One client connection and its buffers."""

    sock: socket.socket
    caller: Caller
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    subscribed: bool = False
    closing: bool = False


class RpcServer:
    """Serves `methods` on a Unix socket at `path` inside `loop`."""

    def __init__(
        self,
        loop: EventLoop,
        path: Path,
        methods: dict[str, Method],
        *,
        admin_group: str,
        monitor_group: str,
        max_connections: int = MAX_CONNECTIONS,
        max_output: int = MAX_OUTPUT_BYTES,
    ) -> None:
        self.loop = loop
        self.path = path
        self.methods = methods
        self.admin_gid = _group_id(admin_group)
        self.monitor_gid = _group_id(monitor_group)
        self.admin_group = admin_group
        self.monitor_group = monitor_group
        self.max_connections = max_connections
        self.max_output = max_output
        self.connections: dict[int, Connection] = {}
        self._listener: socket.socket | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the socket (replacing a stale one), mode 0660, group = the admin group."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o117)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        if self.admin_gid is not None:
            os.chown(self.path, -1, self.admin_gid)
        if self.monitor_gid is not None and self.monitor_gid != self.admin_gid:
            self._grant_monitor_group()
        sock.listen(16)
        sock.setblocking(False)
        self._listener = sock
        self.loop.add_reader(sock.fileno(), self._accept)

    def _grant_monitor_group(self) -> None:
        """Let the monitor group connect too: a POSIX ACL entry group:MONITOR:rw- on the socket
        (the file's own group stays the admin group, its mode 0660)."""
        assert self.monitor_gid is not None
        try:
            os.setxattr(self.path, "system.posix_acl_access", posix_acl_rw_group(self.monitor_gid))
        except OSError as exc:
            emit(
                log,
                logging.WARNING,
                "rpc-acl-unsupported",
                path=self.path,
                reason=exc.strerror or str(exc),
                hint=f"members of {self.monitor_group} cannot connect; add them to "
                f"{self.admin_group} or use a filesystem with POSIX ACLs",
            )

    def close(self) -> None:
        """Disconnect everyone and remove the socket file."""
        for conn in list(self.connections.values()):
            self._drop(conn)
        if self._listener is not None:
            self.loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("control socket accept failed: %s", exc)
                return
            sock.setblocking(False)
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        pid, uid, gid = peer_credentials(sock)
        role = role_of(uid, gid, self.admin_gid, self.monitor_gid)
        name = _user_name(uid)
        if role is None:
            emit(log, logging.WARNING, "rpc-refused", uid=uid, user=name, pid=pid)
            self._refuse(
                sock,
                RpcError(
                    FORBIDDEN,
                    f"not authorized: {name} (uid {uid}) is neither root nor a member of "
                    f"{self.admin_group} or {self.monitor_group}",
                ),
            )
            return
        if len(self.connections) >= self.max_connections:
            self._refuse(sock, RpcError(OVERLOADED, "too many control connections; try later"))
            return
        conn = Connection(sock, Caller(pid, uid, gid, name, role))
        self.connections[sock.fileno()] = conn
        self.loop.add_reader(sock.fileno(), lambda: self._read(conn))

    @staticmethod
    def _refuse(sock: socket.socket, error: RpcError) -> None:
        with contextlib.suppress(OSError):
            sock.send(error_line(None, error))
        sock.close()

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.inbuf += data
        while not conn.closing:
            end = conn.inbuf.find(b"\n")
            if end < 0:
                if len(conn.inbuf) > MAX_REQUEST_BYTES:
                    self._send(
                        conn,
                        error_line(
                            None,
                            RpcError(TOO_LARGE, f"request longer than {MAX_REQUEST_BYTES} bytes"),
                        ),
                    )
                    self._close_after_flush(conn)
                return
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[: end + 1]
            if len(line) > MAX_REQUEST_BYTES:
                self._send(
                    conn,
                    error_line(
                        None, RpcError(TOO_LARGE, f"request longer than {MAX_REQUEST_BYTES} bytes")
                    ),
                )
                self._close_after_flush(conn)
                return
            if line.strip():
                self._handle(conn, line)

    def _handle(self, conn: Connection, line: bytes) -> None:
        try:
            request = parse_request(line)
        except RpcError as exc:
            request_id = exc.data.get("id") if isinstance(exc.data, dict) else None
            if isinstance(exc.data, dict):
                exc.data = None
            self._send(conn, error_line(request_id, exc))
            return
        try:
            result = self._dispatch(conn, request.method, Params(request.params))
        except RpcError as exc:
            if not request.is_notification:
                self._send(conn, error_line(request.id, exc))
            return
        except Exception:
            log.exception("RPC method %s failed", request.method)
            if not request.is_notification:
                self._send(
                    conn,
                    error_line(
                        request.id, RpcError(INTERNAL_ERROR, f"internal error in {request.method}")
                    ),
                )
            return
        if not request.is_notification:
            self._send(conn, result_line(request.id, result))

    def _dispatch(self, conn: Connection, name: str, params: Params) -> Any:
        if name == "events.subscribe":
            params.done()
            conn.subscribed = True
            return {"subscribed": True}
        if name == "events.unsubscribe":
            params.done()
            conn.subscribed = False
            return {"subscribed": False}
        method = self.methods.get(name)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"no method {name!r} (see rpc.methods)")
        if method.role == ADMIN and conn.caller.role != ADMIN:
            raise RpcError(
                FORBIDDEN,
                f"{name} changes the gateway: {conn.caller.name} is only a monitor "
                f"(member of {self.monitor_group}, not {self.admin_group})",
            )
        return method.handler(params, conn.caller)

    # -- output ----------------------------------------------------------------------------

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.closing and not conn.outbuf:
            return
        if len(conn.outbuf) + len(data) > self.max_output:
            emit(
                log,
                logging.WARNING,
                "rpc-client-dropped",
                user=conn.caller.name,
                reason="output backlog",
            )
            notice = notification_line(
                "events.dropped", {"reason": f"more than {self.max_output} bytes unread"}
            )
            with contextlib.suppress(OSError):
                conn.sock.send(notice)
            self._drop(conn)
            return
        if not conn.outbuf:
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(conn)
                return
            data = data[sent:]
            if not data:
                return
            self.loop.add_writer(conn.sock.fileno(), lambda: self._flush(conn))
        conn.outbuf += data

    def _flush(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        del conn.outbuf[:sent]
        if not conn.outbuf:
            self.loop.remove_writer(conn.sock.fileno())
            if conn.closing:
                self._drop(conn)

    def _close_after_flush(self, conn: Connection) -> None:
        conn.closing = True
        self.loop.remove_reader(conn.sock.fileno())
        if not conn.outbuf:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self.loop.remove_reader(fd)
        self.loop.remove_writer(fd)
        self.connections.pop(fd, None)
        conn.sock.close()

    def publish(self, event: str, params: dict[str, Any]) -> None:
        """Send an event notification to every subscriber (slow ones are dropped)."""
        subscribers = [c for c in self.connections.values() if c.subscribed and not c.closing]
        if not subscribers:
            return
        line = notification_line(event, params)
        for conn in subscribers:
            self._send(conn, line)
