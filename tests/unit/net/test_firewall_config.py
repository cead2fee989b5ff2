"""The [firewall] section: defaults, host groups, and precise errors."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from sengd import config


def load(tmp_path: Path, body: str) -> config.Config:
    path = tmp_path / "seng.toml"
    path.write_text(body)
    return config.load(path)


def test_defaults_keep_the_firewall_off() -> None:
    fw = config.load(None).firewall
    assert (fw.enabled, fw.table, fw.family, fw.rules_file) == (False, "seng", "inet", None)
    assert len(fw.host_groups) == 0 and fw.uplink == "" and fw.forward_policy == "drop"


def test_host_groups_as_inline_table_and_as_sub_table(tmp_path: Path) -> None:
    inline = load(tmp_path, '[firewall]\nhost_groups = { lab = ["10.0.0.0/8"] }\n').firewall
    assert list(inline.host_groups) == [("lab", (IPv4Network("10.0.0.0/8"),))]
    sub = load(
        tmp_path,
        '[firewall]\nenabled = true\n[firewall.host_groups]\nlab = ["10.0.0.0/8"]\n'
        'dmz = ["192.0.2.0/24", "198.51.100.0/24"]\n',
    ).firewall
    assert sub.enabled and dict(sub.host_groups)["dmz"] == (
        IPv4Network("192.0.2.0/24"),
        IPv4Network("198.51.100.0/24"),
    )


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ("table = 'Seng'", "firewall.table", "starting a-z"),
        ("table = 'se ng'", "firewall.table", "starting a-z"),
        ("family = 'ip6'", "firewall.family", '"inet" or "ip"'),
        ("rules_file = 'rules.nft'", "firewall.rules_file", "absolute"),
        ("rules_file = '/etc/x\"y'", "firewall.rules_file", "quotes"),
        ("host_groups = ['10.0.0.0/8']", "firewall.host_groups", "must be a table"),
        ("host_groups = { lab = '10.0.0.0/8' }", "firewall.host_groups.lab", "list of IPv4"),
        ("host_groups = { lab = ['10.0.0.1/8'] }", "firewall.host_groups.lab", "not an IPv4"),
        ("host_groups = { lab = [] }", "firewall.host_groups.lab", "at least one"),
        ("host_groups = { 'l b' = ['10.0.0.0/8'] }", "firewall.host_groups.l b", "group names"),
        (
            "host_groups = { a-b = ['10.0.0.0/8'], a_b = ['10.0.0.0/8'] }",
            "firewall.host_groups.a_b",
            "same set name",
        ),
        ("uplink = 'a/b'", "firewall.uplink", "not a valid interface"),
        ("uplink = 'tunFA'", "firewall.uplink", "TUN"),
        ("masquerade = true", "firewall.masquerade", "needs firewall.uplink"),
        ("forward_policy = 'reject'", "firewall.forward_policy", '"accept" or "drop"'),
        ("enabled = 'yes'", "firewall.enabled", "true or false"),
    ],
)
def test_bad_values_name_file_key_and_reason(
    tmp_path: Path, body: str, key: str, reason: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, f"[firewall]\n{body}\n")
    assert err.value.file == str(tmp_path / "seng.toml")
    assert err.value.key == key
    assert reason in err.value.reason
