"""The dashboard driven by Pilot against a real sengd in namespaces, with emulated enclaves.

Every test starts a real daemon (tests/integration/site.py), opens the dashboard on its control
socket and works it the way an operator would: keys, forms, confirmations. Blocking enclave
work (DTLS handshakes) runs in threads so that the app keeps running meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Input

from sengadm.aclient import Backoff
from sengadm.client import Client
from sengadm.tui.app import SengDashboard
from sengadm.tui.screens.allowlist import AllowlistScreen
from sengadm.tui.screens.confirm import ConfirmScreen
from sengadm.tui.screens.entry_form import EntryFormScreen
from sengadm.tui.screens.events import EventsScreen
from sengadm.tui.screens.kill import KillScreen
from sengadm.tui.screens.session_detail import SessionDetailScreen
from sengadm.tui.screens.subnet_form import SubnetFormScreen
from sengadm.tui.screens.subnets import SubnetsScreen
from sengadm.tui.widgets.allowlist_table import AllowlistTable
from sengadm.tui.widgets.event_log import EventLog
from sengadm.tui.widgets.sessions_table import SessionsTable
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EmulatorError, EnclaveEmulator
from tests.integration.site import Site
from tests.tui import gateway_data
from tests.tui.conftest import screen_text, wait_until

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)
MR_B = bytes.fromhex("b2" * 32)
SIZE = (80, 24)


def dashboard(site: Site) -> SengDashboard:
    assert site.socket_path is not None
    return SengDashboard(site.socket_path, refresh=0.5, backoff=Backoff(0.2, 1.0))


def table_keys(app: SengDashboard) -> list[str]:
    """The rows of the sessions table (also while a dialog covers it)."""
    return app.screen_stack[0].query_one(SessionsTable).keys


async def connect(site: Site, emu: EnclaveEmulator) -> None:
    await asyncio.to_thread(site.connect, emu)


def test_session_appears_within_a_second_and_goes_when_it_closes(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            assert table_keys(app) == []
            emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
            await connect(site, emu)
            took = await wait_until(
                pilot, lambda: table_keys(app) == ["192.168.28.2"], timeout=1.0, what="row"
            )
            assert took < 1.0
            table = app.screen.query_one(SessionsTable)
            row = [str(c).strip() for c in table.get_row("192.168.28.2")]
            assert row[:3] == ["192.168.28.2", "demo", "10.200.1.2"]
            emu.close()
            await wait_until(pilot, lambda: table_keys(app) == [], timeout=1.0, what="gone")
            assert app.state.ended["192.168.28.2"]["reason"] == "close-notify"

    asyncio.run(scenario())


def test_kill_from_the_ui_closes_the_session_with_the_reason(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            await connect(site, emu)
            await wait_until(pilot, lambda: table_keys(app) == ["192.168.28.2"], what="row")
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, SessionDetailScreen))
            shown = screen_text(app)
            assert MR_A.hex() in shown and "ec-p384" in shown and "quote OK" in shown
            await pilot.press("k")
            await wait_until(pilot, lambda: isinstance(app.screen, KillScreen), what="dialog")
            reason = app.screen.query_one("#reason", Input)
            reason.value = ""
            await pilot.press(*"suspected compromise")
            await pilot.press("enter")
            await wait_until(pilot, lambda: not app.state.sessions, what="session gone")
            assert app.state.ended["192.168.28.2"]["reason"] == "killed"
            # The detail view stays open and says how the session ended.
            assert isinstance(app.screen, SessionDetailScreen)
            await wait_until(
                pilot,
                lambda: "closed: closed by an administrator" in screen_text(app),
                what="the end in the detail view",
            )
            await pilot.press("escape")
            await wait_until(pilot, lambda: table_keys(app) == [], what="row gone")

    asyncio.run(scenario())
    assert emu.wait_closed(5)
    site.wait_log("reason=killed")
    assert 'detail="suspected compromise"' in site.log_text()
    assert any("kill" in action and actor == "root" for action, actor in site.audit_actions())


def test_denial_shows_with_its_reason_and_a_new_entry_lets_the_enclave_in(
    site: Site, ias: TestIas
) -> None:
    site.allow("demo", MR_A)
    site.start()
    minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_B)

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            stranger = site.emulator(minted, timeout=3)
            with pytest.raises(EmulatorError):
                await connect(site, stranger)
            stranger.close()
            await pilot.press("2")
            await wait_until(pilot, lambda: isinstance(app.screen, EventsScreen))
            log = app.screen.query_one(EventLog)
            await wait_until(pilot, lambda: log.row_count >= 1, what="denial in the log")
            denial = log.selected()
            assert denial is not None and denial.kind == "denial"
            row = [str(c).strip() for c in log.get_row(log.keys[-1])]
            assert row[1] == "denied" and row[2].startswith("10.200.1.2:")
            assert row[4].startswith("not-allowlisted: no allowlist entry names this")
            shown = screen_text(app)
            assert "reason    not-allowlisted: no allowlist entry names" in shown
            assert MR_B.hex() in shown

            # Allow it from the form: name, MRENCLAVE, host route into the default subnet.
            await pilot.press("3")
            await wait_until(pilot, lambda: isinstance(app.screen, AllowlistScreen))
            await pilot.press("a")
            await wait_until(pilot, lambda: isinstance(app.screen, EntryFormScreen))
            await pilot.press(*"newcomer", "tab", *MR_B.hex())
            form = app.screen
            routes = form.query_one("#host_routes", Input)
            routes.value = "10.200.1.0/24"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: isinstance(app.screen, AllowlistScreen), what="saved")
            await wait_until(
                pilot, lambda: "newcomer" in app.state.entry_names(), what="entry listed"
            )
            table = app.screen.query_one(AllowlistTable)
            await wait_until(pilot, lambda: table.row_count == 2, what="table row")
            admitted = site.emulator(minted)
            await connect(site, admitted)
            await pilot.press("1")
            await wait_until(
                pilot,
                lambda: [s.get("app") for s in app.state.sessions.values()] == ["newcomer"],
                what="session of the new entry",
            )
            await wait_until(pilot, lambda: table_keys(app) == ["192.168.28.2"], what="row")
            admitted.close()

    asyncio.run(scenario())
    assert ("create", "root") in site.audit_actions()


def test_daemon_restart_shows_disconnected_and_reconnects_by_itself(
    site: Site, ias: TestIas
) -> None:
    site.allow("demo", MR_A)
    site.start()
    minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A)

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            await connect(site, site.emulator(minted))
            await wait_until(pilot, lambda: table_keys(app) == ["192.168.28.2"], what="row")
            await asyncio.to_thread(site.stop)
            await wait_until(pilot, lambda: app.state.link.state == "disconnected", what="down")
            await wait_until(
                pilot,
                lambda: "disconnected, retrying" in screen_text(app),
                what="the header saying so",
            )
            assert app.screen.has_class("-stale")
            await asyncio.to_thread(site.start)
            await wait_until(pilot, lambda: app.state.connected, timeout=10, what="reconnected")
            # The old daemon closed the session on shutdown; the new one has none.
            await wait_until(pilot, lambda: table_keys(app) == [], what="old session gone")
            await wait_until(
                pilot, lambda: "● connected" in screen_text(app), what="the header saying so"
            )
            assert not app.screen.has_class("-stale")
            await connect(site, site.emulator(minted))
            await wait_until(pilot, lambda: len(table_keys(app)) == 1, what="new session")

    asyncio.run(scenario())


def test_remove_entry_confirms_with_its_sessions_and_closes_them(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.allow("other", MR_B)
    site.start()
    emus = [
        site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=mr))
        for mr in (MR_A, MR_A, MR_B)
    ]

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            for emu in emus:
                await connect(site, emu)
            await wait_until(pilot, lambda: len(app.state.sessions) == 3, what="sessions")
            await pilot.press("3")
            await wait_until(pilot, lambda: isinstance(app.screen, AllowlistScreen))
            table = app.screen.query_one(AllowlistTable)
            await wait_until(pilot, lambda: table.row_count == 2, what="entries")
            selected = table.selected()
            assert selected is not None and selected["name"] == "demo"
            assert [str(c).strip() for c in table.get_row(table.keys[0])][4] == "2"
            await pilot.press("x")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            shown = screen_text(app)
            assert "It will close 2 live session(s)" in shown
            demo_ips = sorted(ip for ip, s in app.state.sessions.items() if s["app"] == "demo")
            assert all(ip in shown for ip in demo_ips)
            await pilot.press("enter")  # the focus is on Cancel: nothing happens
            await wait_until(pilot, lambda: isinstance(app.screen, AllowlistScreen))
            assert app.state.entry_names() == ["demo", "other"]
            await pilot.press("x")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_until(pilot, lambda: app.state.entry_names() == ["other"], what="gone")
            await wait_until(
                pilot,
                lambda: [s["app"] for s in app.state.sessions.values()] == ["other"],
                what="sessions of demo closed",
            )
            await wait_until(pilot, lambda: table.row_count == 1, what="table")

    asyncio.run(scenario())
    assert emus[0].wait_closed(5) and emus[1].wait_closed(5)
    assert ("delete", "root") in site.audit_actions()


def test_forms_check_input_and_show_the_daemons_refusals(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()

    async def scenario() -> None:
        app = dashboard(site)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.state.connected, what="connected")
            await pilot.press("3", "a")
            await wait_until(pilot, lambda: isinstance(app.screen, EntryFormScreen))
            form = app.screen
            values = {
                "name": "demo",
                "mr_enclave": MR_B.hex()[:-1] + "g",
                "host_routes": "10.200.1.0/24=elsewhere",
            }
            for key, value in values.items():
                form.query_one(f"#{key}", Input).value = value
            await pilot.press("ctrl+s")
            await pilot.pause(0.2)
            shown = screen_text(app)
            assert "an entry named 'demo' exists already" in shown
            assert "'g' is not a hexadecimal digit" in shown
            assert "no enclave subnet 'elsewhere' (known: default)" in shown
            assert isinstance(app.screen, EntryFormScreen)
            # Right by the form's checks, wrong by the daemon's: its message is shown.
            values = {
                "name": "second",
                "mr_enclave": MR_B.hex(),
                "host_routes": "10.200.1.0/24",
                "quote_statuses": "OK, REVOKED_SOMEHOW",
            }
            for key, value in values.items():
                form.query_one(f"#{key}", Input).value = value
            await pilot.press("ctrl+s")
            await wait_until(
                pilot,
                lambda: "The daemon refused: quote_statuses: REVOKED_SOMEHOW" in screen_text(app),
                what="the daemon's refusal",
            )
            assert isinstance(app.screen, EntryFormScreen)
            await pilot.press("escape")
            # A subnet: one that overlaps is caught in the form, a good one is added.
            await pilot.press("4", "a")
            await wait_until(pilot, lambda: isinstance(app.screen, SubnetFormScreen))
            subnet_form = app.screen
            subnet_form.query_one("#cidr", Input).value = "192.168.28.128/25"
            subnet_form.query_one("#gateway", Input).value = "10.0.0.1"
            await pilot.press("ctrl+s")
            await pilot.pause(0.2)
            shown = screen_text(app)
            assert "192.168.28.128/25 overlaps 192.168.28.0/24" in shown
            subnet_form.query_one("#cidr", Input).value = "172.30.0.0/24"
            subnet_form.query_one("#gateway", Input).value = "172.30.1.1"
            await pilot.press("ctrl+s")
            await pilot.pause(0.2)
            assert "172.30.1.1 is outside 172.30.0.0/24" in screen_text(app)
            subnet_form.query_one("#gateway", Input).value = "172.30.0.254"
            subnet_form.query_one("#name", Input).value = "lab"
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: isinstance(app.screen, SubnetsScreen), what="saved")
            await wait_until(
                pilot, lambda: [s["name"] for s in app.state.subnets] == ["default", "lab"]
            )
            assert app.state.subnets[1]["gateway"] == "172.30.0.254"

    asyncio.run(scenario())
    assert site.audit_actions().count(("create", "root")) == 1  # only the subnet


def test_the_scripted_gateway_answers_like_sengd(site: Site, ias: TestIas) -> None:
    """The snapshot tests' fixed answers have exactly the keys of a live daemon's."""
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    stranger = site.emulator(mint_ratls_certificate(ias, mr_enclave=MR_B), timeout=3)
    with pytest.raises(EmulatorError):
        site.connect(stranger)
    assert site.socket_path is not None
    with Client(site.socket_path, timeout=10) as client:
        live = {
            "rpc.hello": client.call("rpc.hello"),
            "status": client.call("status"),
            "sessions.list": client.call("sessions.list")[0],
            "denials.recent": client.call("denials.recent")[0],
            "allowlist.list": client.call("allowlist.list")[0],
            "subnets.list": client.call("subnets.list")[0],
        }
        stats = next(e for e in client.events() if e["event"] == "stats")
    scripted = gateway_data.answers()
    for method, answer in live.items():
        fixed = scripted[method]
        fixed = fixed({}) if callable(fixed) else fixed
        sample = fixed[0] if isinstance(fixed, list) else fixed
        assert set(sample) == set(answer), method
    assert set(gateway_data.stats_events(1)[0]) == set(stats) - {"event"}
    emu.close()
