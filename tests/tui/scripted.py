"""A scripted control socket: sengd's JSON-RPC protocol over a real Unix socket, with answers
and events chosen by the test.

Snapshot tests need a gateway whose every byte is known in advance (fixed times, ports,
measurements) and the benchmark needs 1,000 sessions whose counters move; both speak to the
dashboard through this server exactly as the daemon does (newline-delimited JSON-RPC 2.0,
`events.subscribe`, notifications). The behaviour the dashboard relies on beyond the wire
format (a kill closes the session and says so in a `session.down` event) is scripted here the
way the live tests (test_live.py) show the real daemon doing it.

The server runs its own event loop in a thread, so that the app under test keeps its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Answer = Any | Callable[[dict[str, Any]], Any]


class ScriptError(Exception):
    """An error answer: raise it from an answer callable."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ScriptedDaemon:
    """Serves `answers` (method -> result, or a callable of the params) on `path`."""

    def __init__(self, path: Path, answers: dict[str, Answer]) -> None:
        self.path = path
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._subscribers: set[asyncio.StreamWriter] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ScriptedDaemon:
        """Listen (in a thread) until `stop()`."""
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="scripted-sengd", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("scripted daemon did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
            self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, str(self.path), limit=1024 * 1024
        )

    def stop(self) -> None:
        """Disconnect everyone, remove the socket and end the thread."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        done = threading.Event()

        def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()
            self._subscribers.clear()
            done.set()

        loop.call_soon_threadsafe(close)
        done.wait(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._thread = None
        self._loop = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ScriptedDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- events --------------------------------------------------------------------------------

    def publish(self, event: str, params: dict[str, Any]) -> None:
        """Send an event notification to every subscriber (from any thread)."""
        line = (json.dumps({"jsonrpc": "2.0", "method": event, "params": params}) + "\n").encode()
        loop = self._loop
        if loop is None:
            raise RuntimeError("not running")
        loop.call_soon_threadsafe(self._send_all, line)

    def _send_all(self, line: bytes) -> None:
        for writer in list(self._subscribers):
            if not writer.is_closing():
                writer.write(line)

    @property
    def subscribers(self) -> int:
        """How many connections are subscribed."""
        return len(self._subscribers)

    # -- requests ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while line := await reader.readline():
                request = json.loads(line)
                reply = self._answer(request, writer)
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._subscribers.discard(writer)
            self._writers.discard(writer)
            writer.close()

    def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> dict[str, Any]:
        method, params = request["method"], request.get("params") or {}
        self.calls.append((method, params))
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "events.subscribe":
            self._subscribers.add(writer)
            reply["result"] = {"subscribed": True}
            return reply
        answer = self.answers.get(method)
        if answer is None:
            reply["error"] = {"code": -32601, "message": f"no method {method!r}"}
            return reply
        try:
            reply["result"] = copy.deepcopy(answer(params) if callable(answer) else answer)
        except ScriptError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        return reply
