"""An asyncio client for sengd's control socket, and a link that keeps itself connected.

`AsyncClient.connect(path)` opens one connection; `call(method, params)` sends a request and
awaits the answer with the same id (any number may be in flight); notifications from the
daemon (subscribed events) are handed to `on_event(name, params)` in the order they arrive.
Errors are the synchronous client's: `RpcError` (the daemon's answer) and `Unreachable` (no
daemon, no access, or the connection went away).

`Link` is what the dashboard uses: it connects, greets (`rpc.hello`), subscribes to events and
reports it; when the connection breaks it reports that and retries with exponential backoff
(`Backoff`) until stopped, so a restarted daemon is picked up by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sengadm.client import Unreachable
from sengd.rpc.protocol import FORBIDDEN, INTERNAL_ERROR, RpcError

MAX_LINE = 64 * 1024 * 1024
"""Longest answer line accepted (`sessions.list` of 10,000 sessions is about 10 MB)."""
DEFAULT_TIMEOUT = 30.0

EventHandler = Callable[[str, dict[str, Any]], None]


def _unreachable(path: str, exc: BaseException) -> Unreachable:
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return Unreachable(f"{path}: no daemon listening (is sengd running?)")
    if isinstance(exc, PermissionError):
        return Unreachable(f"{path}: permission denied (join the seng-admin or seng-monitor group)")
    if isinstance(exc, OSError):
        return Unreachable(f"{path}: {exc.strerror or exc}")
    return Unreachable(f"{path}: {exc}")


class AsyncClient:
    """One connection to the daemon. Create with `await AsyncClient.connect(path)`.

    `closed` is set when the connection has ended (by either side); `close_reason` says why.
    Pending calls then fail with `Unreachable`.
    """

    def __init__(
        self,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: EventHandler | None,
    ) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.refusal: RpcError | None = None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        path: Path | str,
        on_event: EventHandler | None = None,
        timeout: float = 10.0,
    ) -> AsyncClient:
        """Open a connection to the socket at `path`; raise `Unreachable` if that fails."""
        text = str(path)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(text, limit=MAX_LINE), timeout
            )
        except TimeoutError:
            raise Unreachable(f"{text}: the daemon did not accept in time") from None
        except OSError as exc:
            raise _unreachable(text, exc) from None
        return cls(text, reader, writer, on_event)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Call `method` and return its result; `RpcError` with the daemon's error."""
        if self.closed.is_set():
            if self.refusal is not None:
                raise self.refusal
            raise Unreachable(f"{self.path}: {self.close_reason or 'connection closed'}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        )
        try:
            self._writer.write(line.encode() + b"\n")
            await self._writer.drain()
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise Unreachable(f"{self.path}: no answer to {method} in {timeout:g} s") from None
        except (OSError, RuntimeError) as exc:  # RuntimeError: writing to a closed transport
            self._finish(f"write failed: {exc}")
            raise _unreachable(self.path, exc) from None
        finally:
            self._pending.pop(request_id, None)

    async def subscribe(self) -> None:
        """Start receiving event notifications (handed to `on_event`)."""
        await self.call("events.subscribe")

    async def close(self) -> None:
        """Close the connection (pending calls fail with `Unreachable`)."""
        self._finish("closed by the client")
        self._read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._read_task

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "the daemon closed the connection"
        try:
            while True:
                try:
                    line = await self._reader.readline()
                except ValueError:  # longer than MAX_LINE
                    reason = f"an answer longer than {MAX_LINE} bytes"
                    break
                except OSError as exc:
                    reason = exc.strerror or str(exc)
                    break
                if not line:
                    break
                if not self._dispatch(line):
                    reason = "the daemon refused the connection"
                    break
        finally:
            self._finish(reason)

    def _dispatch(self, line: bytes) -> bool:
        """Handle one line from the daemon; False if the connection is to end."""
        try:
            doc = json.loads(line)
        except ValueError:
            return True  # not ours to interpret; the call waiting for it times out
        if not isinstance(doc, dict):
            return True
        if "id" not in doc:
            method = doc.get("method")
            params = doc.get("params")
            if isinstance(method, str) and self._on_event is not None:
                self._on_event(method, params if isinstance(params, dict) else {})
            return True
        error = doc.get("error")
        if doc["id"] is None and isinstance(error, dict):
            # Refused before any request was read (not authorized, too many connections).
            exc = RpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message")))
            self.close_reason = exc.message
            self.refusal = exc
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(exc)
            return False
        waiting = self._pending.get(doc["id"]) if isinstance(doc["id"], int) else None
        if waiting is None or waiting.done():
            return True
        if isinstance(error, dict):
            waiting.set_exception(
                RpcError(
                    int(error.get("code", INTERNAL_ERROR)),
                    str(error.get("message", "error")),
                    error.get("data"),
                )
            )
        else:
            waiting.set_result(doc.get("result"))
        return True

    def _finish(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = self.close_reason or reason
        self.closed.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unreachable(f"{self.path}: {self.close_reason}"))
        self._writer.close()


@dataclass
class Backoff:
    """Delays between reconnection attempts: `first`, doubling up to `limit` seconds."""

    first: float = 0.5
    limit: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count the attempt)."""
        delay = min(self.first * 2.0**self.attempt, self.limit)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A connection succeeded: start again from `first`."""
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The link is connected and subscribed; `hello` is the daemon's `rpc.hello` answer."""

    hello: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link is not connected: `reason`; the next attempt is in `retry_in` seconds."""

    reason: str
    retry_in: float
    attempt: int
    fatal: bool = False


LinkState = LinkUp | LinkDown


class Link:
    """A connection to the daemon that comes back by itself.

    `run()` (a task) connects, calls `rpc.hello`, subscribes to events and calls
    `on_state(LinkUp(hello))`; events go to `on_event`. When the connection breaks or cannot
    be made, `on_state(LinkDown(...))` says why and when it retries. A daemon that refuses the
    caller (not authorized) is reported `fatal` and not retried. `stop()` ends `run()`.
    `on_state` may be a coroutine function; `run()` awaits it before going on (so a consumer
    can load its data before the first event is handled).
    """

    def __init__(
        self,
        path: Path | str,
        on_event: EventHandler,
        on_state: Callable[[LinkState], Awaitable[None] | None],
        backoff: Backoff | None = None,
    ) -> None:
        self.path = str(path)
        self.on_event = on_event
        self.on_state = on_state
        self.backoff = backoff or Backoff()
        self.client: AsyncClient | None = None
        self._stopped = asyncio.Event()

    @property
    def connected(self) -> bool:
        """True while a subscribed connection is open."""
        return self.client is not None and not self.client.closed.is_set()

    async def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Any:
        """Call `method` on the current connection; `Unreachable` when there is none."""
        client = self.client
        if client is None or client.closed.is_set():
            raise Unreachable(f"{self.path}: not connected to the daemon")
        return await client.call(method, params, timeout)

    def stop(self) -> None:
        """Make `run()` return (closing the connection)."""
        self._stopped.set()

    async def _report(self, state: LinkState) -> None:
        result = self.on_state(state)
        if result is not None:
            await result

    async def run(self) -> None:
        """Keep connected until `stop()`."""
        try:
            while not self._stopped.is_set():
                reason = await self._session()
                if self._stopped.is_set():
                    return
                if reason is None:  # refused for good
                    return
                delay = self.backoff.next_delay()
                await self._report(LinkDown(reason, delay, self.backoff.attempt))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), delay)
        finally:
            if self.client is not None:
                await self.client.close()
                self.client = None

    async def _session(self) -> str | None:
        """One connection from start to end; the reason it ended (None: do not retry)."""
        try:
            client = await AsyncClient.connect(self.path, self.on_event)
        except Unreachable as exc:
            return str(exc)
        self.client = client
        try:
            hello = await client.call("rpc.hello", timeout=10.0)
            await client.subscribe()
        except RpcError as exc:
            await client.close()
            self.client = None
            if exc.code != FORBIDDEN:  # e.g. too many connections: try again later
                return exc.message
            await self._report(LinkDown(exc.message, 0.0, self.backoff.attempt, fatal=True))
            return None
        except Unreachable as exc:
            await client.close()
            self.client = None
            return str(exc)
        self.backoff.reset()
        await self._report(LinkUp(hello if isinstance(hello, dict) else {}))
        stop = asyncio.create_task(self._stopped.wait())
        closed = asyncio.create_task(client.closed.wait())
        try:
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            closed.cancel()
        reason = client.close_reason or "connection closed"
        await client.close()
        self.client = None
        return reason
