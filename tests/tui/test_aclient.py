"""The asyncio client and the self-reconnecting link, over real Unix sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from sengadm.aclient import AsyncClient, Backoff, Link, LinkDown, LinkState, LinkUp
from sengadm.client import Unreachable
from sengd.rpc.protocol import FORBIDDEN, NOT_FOUND, RpcError
from tests.tui import gateway_data
from tests.tui.scripted import ScriptedDaemon, ScriptError


def test_backoff_doubles_up_to_the_limit_and_resets() -> None:
    backoff = Backoff(0.5, 5.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_calls_by_id_errors_events_and_long_answers(tmp_path: Path) -> None:
    def slow_echo(params: dict[str, Any]) -> Any:
        return params

    def missing(params: dict[str, Any]) -> Any:
        raise ScriptError(NOT_FOUND, "no session holds 192.168.28.9")

    answers = {
        "echo": slow_echo,
        "sessions.get": missing,
        "big": "x" * 3_000_000,
        "rpc.hello": gateway_data.hello(),
    }
    events: list[tuple[str, dict[str, Any]]] = []

    async def scenario(daemon: ScriptedDaemon) -> None:
        client = await AsyncClient.connect(daemon.path, lambda n, p: events.append((n, p)))
        results = await asyncio.gather(*(client.call("echo", {"n": i}) for i in range(50)))
        assert results == [{"n": i} for i in range(50)]
        with pytest.raises(RpcError) as err:
            await client.call("sessions.get", {"enclave_ip": "192.168.28.9"})
        assert err.value.code == NOT_FOUND and "192.168.28.9" in err.value.message
        assert len(await client.call("big")) == 3_000_000
        await client.subscribe()
        for i in range(20):
            daemon.publish("stats", {"i": i})
        for _ in range(100):
            if len(events) == 20:
                break
            await asyncio.sleep(0.01)
        assert [p["i"] for _, p in events] == list(range(20))
        daemon.stop()
        await asyncio.wait_for(client.closed.wait(), 5)
        with pytest.raises(Unreachable, match="closed the connection"):
            await client.call("echo")
        await client.close()

    with ScriptedDaemon(tmp_path / "s.sock", answers) as daemon:
        asyncio.run(scenario(daemon))


def test_unreachable_socket(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(Unreachable, match="no daemon listening"):
            await AsyncClient.connect(tmp_path / "none.sock")

    asyncio.run(scenario())


def test_link_retries_until_the_daemon_comes_and_again_when_it_goes(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    states: list[LinkState] = []

    async def scenario() -> None:
        link = Link(path, lambda n, p: None, states.append, Backoff(0.05, 0.2))
        task = asyncio.create_task(link.run())
        await asyncio.sleep(0.5)
        downs = [s for s in states if isinstance(s, LinkDown)]
        assert len(downs) >= 3 and not link.connected
        assert [d.retry_in for d in downs[:4]] == [0.05, 0.1, 0.2, 0.2][: len(downs[:4])]
        assert "no daemon listening" in downs[0].reason
        with pytest.raises(Unreachable, match="not connected"):
            await link.call("status")
        daemon = ScriptedDaemon(path, gateway_data.answers()).start()
        try:
            for _ in range(100):
                if link.connected:
                    break
                await asyncio.sleep(0.02)
            assert isinstance(states[-1], LinkUp) and states[-1].hello["gateway"] == "gw-fra-1"
            assert (await link.call("status"))["gateway"] == "gw-fra-1"
            assert ("events.subscribe", {}) in daemon.calls
        finally:
            daemon.stop()
        for _ in range(100):
            if isinstance(states[-1], LinkDown):
                break
            await asyncio.sleep(0.02)
        last = states[-1]
        assert isinstance(last, LinkDown) and last.retry_in == 0.05  # backoff starts again
        link.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_a_refused_caller_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "refuse.sock"
    states: list[LinkState] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        error = {"code": FORBIDDEN, "message": "not authorized: nobody (uid 65534)"}
        writer.write((json.dumps({"jsonrpc": "2.0", "id": None, "error": error}) + "\n").encode())
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_unix_server(refuse, str(path))
        try:
            link = Link(path, lambda n, p: None, states.append, Backoff(0.01, 0.01))
            await asyncio.wait_for(link.run(), 5)  # returns by itself
        finally:
            server.close()
        assert len(states) == 1
        only = states[0]
        assert isinstance(only, LinkDown) and only.fatal and "not authorized" in only.reason

    asyncio.run(scenario())
