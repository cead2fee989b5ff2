"""Fixtures of the DCAP tests: the kit's PKI and platform, collateral issued around NOW, and
the real Intel-signed samples in ../shared/testdata."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from sengd.attestation import CollateralStore, RawCollateral, TrustConfig
from sengd.attestation.trust import TrustOptions
from sengd.testing.dcap_kit import DcapPlatform, DcapTestPki
from tests.unit.attestation.conftest import NOW

ISSUED = NOW - timedelta(days=1)
"""When the kit's collateral is issued (valid for 30 days from then)."""


@pytest.fixture(scope="session")
def pki() -> DcapTestPki:
    """Our own SGX PKI (root, PCK CAs, TCB Signing), shared by the session."""
    return DcapTestPki.create()


@pytest.fixture(scope="session")
def platform(pki: DcapTestPki) -> DcapPlatform:
    """A platform with a PCK certificate from the Processor CA at the kit's default TCB."""
    return DcapPlatform.create(pki)


@pytest.fixture(scope="session")
def collateral(pki: DcapTestPki) -> RawCollateral:
    """Complete collateral for the default FMSPC: UpToDate at the default TCB."""
    return pki.collateral(at=ISSUED)


TrustFactory = Callable[..., TrustConfig]


@pytest.fixture()
def make_trust(pki: DcapTestPki, collateral: RawCollateral) -> TrustFactory:
    """A fresh trust config pinned on the kit root, whose store holds `raw` (default: the
    session collateral)."""

    def make(raw: RawCollateral | None = collateral, **options: object) -> TrustConfig:
        roots = pki.trust().sgx_roots
        store = CollateralStore(roots)
        if raw is not None:
            assert store.load_raw(raw) == []
        opts: TrustOptions = {"collateral": store}
        opts.update(options)  # type: ignore[typeddict-item]
        return pki.trust(**opts)

    return make
