"""The appliance config: the documented file matches the code, and bad input is named precisely."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sengd import config
from tests.conftest import REPO

SAMPLE = REPO / "etc" / "seng.toml"


def test_documented_file_equals_embedded_defaults() -> None:
    loaded = config.load(SAMPLE)
    defaults = config.load(None)
    assert dataclasses.replace(loaded, source="x") == dataclasses.replace(defaults, source="x")


def test_documented_file_mentions_every_key() -> None:
    text = SAMPLE.read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        for f in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{f.name} = ", text, re.M), f"{section}.{f.name} undocumented"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "seng.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ("[tunnel]\nport = 32767\n", "tunnel.port", "must be 1..32766"),
        ("[tunnel]\nport = true\n", "tunnel.port", "not a boolean"),
        ("[tunnel]\nport = '1'\n", "tunnel.port", "must be an integer"),
        ("[tunnel]\naddress = '0.0.0.0'\n", "tunnel.address", "specific address"),
        ("[tunnel]\naddress = 'gw.example'\n", "tunnel.address", "not an IPv4 address"),
        ("[tunnel]\nmtu = 1500\n", "tunnel.mtu", "576..1432"),
        ("[tunnel]\nrsa_certificate = '/x.crt'\n", "tunnel.rsa_private_key", "together"),
        ("[tunnel]\ngenerate_if_missing = false\n", "tunnel.ecdsa_certificate", "no server"),
        ("[tunnel]\nhandshake_timeout = 0\n", "tunnel.handshake_timeout", "> 0"),
        ("[tunnel]\nidle_timeout = -1\n", "tunnel.idle_timeout", "0 (off)"),
        ("[tunnel]\nprot = 1\n", "tunnel.prot", "unknown key"),
        ("[tunel]\n", "tunel", "unknown section"),
        ("tunnel = 3\n", "tunnel", "must be a table"),
        ("[limits]\nmax_sessions = 0\n", "limits.max_sessions", "1..1000000"),
        (
            "[limits]\nmax_pending_handshakes = 10\nmax_pending_handshakes_per_host = 11\n",
            "limits.max_pending_handshakes_per_host",
            "must not exceed",
        ),
        ("[attestation]\nias_chain_time = 'later'\n", "attestation.ias_chain_time", '"now"'),
        (
            "[attestation]\nquote_statuses = ['OK', 'GROUP_REVOKED']\n",
            "attestation.quote_statuses",
            "can never be accepted",
        ),
        ("[attestation]\nquote_statuses = 'OK'\n", "attestation.quote_statuses", "list"),
        ("[attestation]\ntcb_statuses = ['Revoked']\n", "attestation.tcb_statuses", "not an"),
        ("[interface]\nname = 'a-very-long-interface'\n", "interface.name", "not a valid"),
        ("[gateway]\nid = 'gw 1'\n", "gateway.id", "letters, digits"),
        ("[gateway]\nlog_level = 'loud'\n", "gateway.log_level", "debug, info"),
        ("[database]\nurl = 'mysql://x'\n", "database.url", "sqlite:// or postgresql://"),
        ("[control]\nsocket = 'rel.sock'\n", "control.socket", "absolute"),
    ],
)
def test_bad_values_name_file_key_and_reason(
    tmp_path: Path, body: str, key: str, reason: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[tunnel\n"))
    with pytest.raises(config.ConfigError, match="is a directory"):
        config.load(tmp_path)


def test_values_are_converted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[tunnel]\naddress = '10.1.2.3'\nport = 4000\nrsa_certificate = '/etc/seng/r.crt'\n"
        "rsa_private_key = '/etc/seng/r.key'\nhandshake_timeout = 5\n"
        "[attestation]\nquote_statuses = ['OK']\n",
    )
    cfg = config.load(path)
    assert str(cfg.tunnel.address) == "10.1.2.3"
    assert cfg.tunnel.rsa_certificate == Path("/etc/seng/r.crt")
    assert cfg.tunnel.ecdsa_certificate is None
    assert cfg.tunnel.handshake_timeout == 5.0
    assert cfg.attestation.quote_statuses == ("OK",)
    assert cfg.source == str(path)
