"""A synchronous client for sengd's control socket (newline-delimited JSON-RPC 2.0).

`Client(path).call(method, params)` returns the result or raises `RpcError` (the daemon's
answer) or `Unreachable` (no daemon at that socket). `events()` subscribes and yields the
daemon's notifications until the connection ends.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sengd.rpc.protocol import INTERNAL_ERROR, RpcError

DEFAULT_SOCKET = Path("/run/seng/sengd.sock")


class Unreachable(Exception):
    """The control socket could not be reached (the daemon is not running, or no access)."""


class Client:
    """One connection to the daemon. Use as a context manager or call `close()`."""

    def __init__(self, path: Path | str = DEFAULT_SOCKET, timeout: float | None = 30.0) -> None:
        self.path = str(path)
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except FileNotFoundError:
            self._sock.close()
            raise Unreachable(f"{self.path}: no such socket (is sengd running?)") from None
        except PermissionError:
            self._sock.close()
            raise Unreachable(
                f"{self.path}: permission denied (join the seng-admin or seng-monitor group)"
            ) from None
        except OSError as exc:
            self._sock.close()
            raise Unreachable(f"{self.path}: {exc.strerror or exc}") from None
        self._file = self._sock.makefile("rb")
        self._pending: list[dict[str, Any]] = []

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise Unreachable(f"{self.path}: the daemon did not answer in time") from None
        except OSError as exc:
            raise Unreachable(f"{self.path}: {exc.strerror or exc}") from None
        if not line:
            raise Unreachable(f"{self.path}: the daemon closed the connection")
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise RpcError(INTERNAL_ERROR, f"unreadable answer from the daemon: {exc}") from None
        if not isinstance(doc, dict):
            raise RpcError(INTERNAL_ERROR, "unreadable answer from the daemon")
        return doc

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` and return its result; raise RpcError with the daemon's error."""
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            # The daemon may have refused us (and hung up) before reading: say why if it did.
            refusal = self._refusal()
            if refusal is not None:
                raise refusal from None
            raise Unreachable(f"{self.path}: {exc.strerror or exc}") from None
        while True:
            doc = self._read()
            if "id" not in doc:  # an event notification: keep it for events()
                self._pending.append(doc)
                continue
            if doc.get("id") is None and "error" in doc:  # refused before reading the request
                error = doc["error"]
                raise RpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message")))
            if doc.get("id") != request_id:
                continue
            if "error" in doc:
                error = doc["error"]
                raise RpcError(
                    int(error.get("code", INTERNAL_ERROR)),
                    str(error.get("message", "error")),
                    error.get("data"),
                )
            return doc.get("result")

    def _refusal(self) -> RpcError | None:
        try:
            doc = self._read()
        except (Unreachable, RpcError):
            return None
        error = doc.get("error")
        if not isinstance(error, dict):
            return None
        return RpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message")))

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe now; the iterator yields each event as {"event": name, **params} until
        the daemon disconnects."""
        self.call("events.subscribe")
        self._sock.settimeout(None)
        return self._event_stream()

    def _event_stream(self) -> Iterator[dict[str, Any]]:
        while True:
            while self._pending:
                doc = self._pending.pop(0)
                yield {"event": doc.get("method"), **(doc.get("params") or {})}
            try:
                doc = self._read()
            except Unreachable:
                return
            if "id" not in doc:
                self._pending.append(doc)
