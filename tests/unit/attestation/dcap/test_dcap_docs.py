"""docs/attestation.md keeps up with the code: every reason code is explained and every DCAP
config key is named."""

from __future__ import annotations

import dataclasses
import re

from sengd import config
from sengd.attestation import Reason
from tests.conftest import REPO

DOC = (REPO / "docs" / "attestation.md").read_text()


def test_every_reason_code_is_explained() -> None:
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOC, re.M))
    assert {r.value for r in Reason} <= rows


def test_every_dcap_config_key_is_named() -> None:
    keys = [f.name for f in dataclasses.fields(config.AttestationSection)]
    dcap = [k for k in keys if k.startswith(("pccs_", "collateral_", "sgx_root"))]
    assert len(dcap) == 8
    for key in dcap:
        assert f"`{key}`" in DOC, key
