"""The dashboard driven by Pilot against a real sengd in namespaces, with emulated enclaves.

Every test starts a real daemon (tests/integration/site.py), opens the dashboard on its control
socket and works it the way an operator would: keys, forms, confirmations. Blocking enclave
work (DTLS handshakes) runs in threads so that the app keeps running meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest

from sengadm.aclient import Backoff
from sengadm.tui.app import SengDashboard
from sengadm.tui.widgets.sessions_table import SessionsTable
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EnclaveEmulator
from tests.integration.site import Site
from tests.tui.conftest import wait_until

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)
MR_B = bytes.fromhex("b2" * 32)
SIZE = (80, 24)


def dashboard(site: Site) -> SengDashboard:
    assert site.socket_path is not None
    return SengDashboard(site.socket_path, refresh=0.5, backoff=Backoff(0.2, 1.0))


def table_keys(app: SengDashboard) -> list[str]:
    return app.screen.query_one(SessionsTable).keys


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
