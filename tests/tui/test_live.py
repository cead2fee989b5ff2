"""The dashboard driven by Pilot against a real sengd in namespaces, with emulated enclaves.

Every test starts a real daemon (tests/integration/site.py), opens the dashboard on its control
socket and works it the way an operator would: keys, forms, confirmations. Blocking enclave
work (DTLS handshakes) runs in threads so that the app keeps running meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest

from sengadm.aclient import Backoff
from textual.widgets import Input

from sengadm.tui.app import SengDashboard
from sengadm.tui.screens.allowlist import AllowlistScreen
from sengadm.tui.screens.entry_form import EntryFormScreen
from sengadm.tui.screens.events import EventsScreen
from sengadm.tui.screens.kill import KillScreen
from sengadm.tui.screens.session_detail import SessionDetailScreen
from sengadm.tui.widgets.allowlist_table import AllowlistTable
from sengadm.tui.widgets.event_log import EventLog
from sengadm.tui.widgets.sessions_table import SessionsTable
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EmulatorError, EnclaveEmulator
from tests.integration.site import Site
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
