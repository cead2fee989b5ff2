"""Fixtures of the attestation tests: a test IAS, keys of every kind, the real samples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sengd.attestation import TrustConfig
from sengd.testing.attestation_kit import KEY_TYPES, KeyType, PrivateKey, TestIas, generate_key
from tests.unit.attestation.realdata import RealReport, load_real_reports

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
"""The tests' fixed "now": one week after Intel's IAS signing certificate expired."""


@pytest.fixture(scope="session")
def ias() -> TestIas:
    """A test IAS (RSA-3072 CA like Intel's, RSA-2048 signer) shared by the whole session."""
    return TestIas.create()


@pytest.fixture(scope="session")
def other_ias() -> TestIas:
    """A second, unrelated test IAS: its reports must not verify under `ias`."""
    return TestIas.create(ca_key_size=2048)


@pytest.fixture(scope="session")
def keys() -> dict[KeyType, PrivateKey]:
    """One key of each kind (RSA key generation is too slow to repeat per test)."""
    return {kind: generate_key(kind) for kind in KEY_TYPES}


@pytest.fixture()
def trust(ias: TestIas) -> TrustConfig:
    """A fresh trust config (empty caches) anchored on the test IAS."""
    return ias.trust()


@pytest.fixture(scope="session")
def intel_trust_at_report() -> TrustConfig:
    """Intel's production root, IAS chain checked at each report's timestamp."""
    return TrustConfig.builtin(ias_chain_time="report")


@pytest.fixture(scope="session")
def real_reports(testdata: Path) -> list[RealReport]:
    reports = load_real_reports(testdata)
    assert len(reports) == 15
    return reports


_EXPECTED_WARNINGS = (
    # SENG certificates have serial 0 (the attester never sets one); sengd silences this.
    "ignore:Parsed a serial number which wasn't positive",
    # hostile certificates with broken names, rejected anyway
    "ignore:Attribute's length must be:UserWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            for spec in _EXPECTED_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))
