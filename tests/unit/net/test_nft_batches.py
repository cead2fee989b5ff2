"""The JSON batches and the reload script sengd sends to nftables (pure builders)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from sengd.config import FirewallSection
from sengd.net.nft import (
    Batch,
    FirewallError,
    admin_objects,
    include_script,
    referenced_sets,
    replace_admin_script,
    sets_in,
)

SUBNETS = (IPv4Network("192.168.28.0/24"), IPv4Network("172.16.28.0/26"))


def test_replace_table_adds_deletes_and_adds_in_one_batch() -> None:
    batch = Batch("inet", "seng")
    batch.replace_table()
    table = {"family": "inet", "name": "seng"}
    assert batch.commands == [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
    ]


def test_elements_are_sorted_strings_and_empty_lists_are_skipped() -> None:
    batch = Batch("inet", "seng")
    batch.add_elements("app_a", [IPv4Address("192.168.28.10"), IPv4Address("192.168.28.9")])
    batch.delete_elements("app_b", [])
    batch.add_elements("app_c", [])
    assert batch.commands == [
        {
            "add": {
                "element": {
                    "family": "inet",
                    "table": "seng",
                    "name": "app_a",
                    "elem": ["192.168.28.9", "192.168.28.10"],
                }
            }
        }
    ]


def rules(batch: Batch, chain: str) -> list[list[dict[str, Any]]]:
    return [
        c["add"]["rule"]["expr"]
        for c in batch.commands
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def test_no_uplink_no_base_policy() -> None:
    batch = Batch("inet", "seng")
    batch.base_policy(FirewallSection(), "tunFA", SUBNETS)
    assert batch.commands == []


def test_base_policy_forwards_tun_and_uplink_and_masquerades() -> None:
    settings = FirewallSection(uplink="eno1", masquerade=True, forward_policy="drop")
    batch = Batch("inet", "seng")
    batch.base_policy(settings, "tunFA", SUBNETS)
    chains = [c["add"]["chain"] for c in batch.commands if "chain" in c.get("add", {})]
    assert [(c["name"], c["hook"], c["prio"], c["policy"]) for c in chains] == [
        ("seng_forward", "forward", 0, "accept"),
        ("seng_postrouting", "postrouting", 100, "accept"),
    ]
    forward = rules(batch, "seng_forward")
    assert forward[0][-1] == {"accept": None}
    assert forward[0][0]["match"]["right"] == ["established", "related"]
    out = forward[1]
    assert out[0]["match"]["right"] == "tunFA" and out[1]["match"]["right"] == "eno1"
    assert out[2]["match"]["right"]["set"] == [
        {"prefix": {"addr": "192.168.28.0", "len": 24}},
        {"prefix": {"addr": "172.16.28.0", "len": 26}},
    ]
    assert forward[2][2]["match"]["left"]["payload"]["field"] == "daddr"
    assert forward[3] == [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "tunFA"}},
        {"drop": None},
    ]
    assert forward[4][0]["match"]["left"] == {"meta": {"key": "oifname"}}
    (nat,) = rules(batch, "seng_postrouting")
    assert nat[-1] == {"masquerade": None} and nat[0]["match"]["right"] == "eno1"


def test_base_policy_without_subnets_keeps_only_the_default() -> None:
    batch = Batch("ip", "gw")
    batch.base_policy(FirewallSection(uplink="eno1", masquerade=True), "tunFA", ())
    assert len(rules(batch, "seng_forward")) == 3
    assert rules(batch, "seng_postrouting") == []


def test_include_script_is_the_fixed_template() -> None:
    script = include_script("inet", "seng", "/etc/seng/rules.nft")
    assert script == 'table inet seng {\ninclude "/etc/seng/rules.nft"\n}\n'


def test_replace_admin_script_flushes_chains_before_deleting_anything() -> None:
    objects = [("chain", "fwd_in", 4), ("set", "ports", 7), ("map", "m", 8), ("chain", "sub", 5)]
    script = replace_admin_script("inet", "seng", objects, "/etc/seng/rules.nft")
    assert script.splitlines() == [
        "flush chain inet seng fwd_in",
        "flush chain inet seng sub",
        "delete set inet seng handle 7",
        "delete set inet seng handle 8",
        "delete chain inet seng handle 4",
        "delete chain inet seng handle 5",
        "table inet seng {",
        'include "/etc/seng/rules.nft"',
        "}",
    ]
    assert replace_admin_script("inet", "seng", [], None) == "\n"


def test_replace_admin_script_refuses_names_it_cannot_write_safely() -> None:
    with pytest.raises(FirewallError, match="cannot be reloaded"):
        replace_admin_script("inet", "seng", [("chain", 'x"; flush ruleset', 1)], None)


LISTING: list[dict[str, Any]] = [
    {"table": {"family": "inet", "name": "seng", "handle": 1}},
    {"set": {"name": "app_a", "type": "ipv4_addr", "handle": 2, "elem": ["192.168.28.2"]}},
    {"set": {"name": "cat_x", "type": "ipv4_addr", "handle": 3}},
    {"set": {"name": "ports", "type": "inet_service", "handle": 4, "elem": [80]}},
    {"set": {"name": "app_theirs", "type": "inet_service", "handle": 9}},
    {"chain": {"name": "seng_forward", "handle": 5}},
    {"chain": {"name": "admin", "handle": 6}},
    {"rule": {"chain": "admin", "handle": 7}},
    {"counter": {"name": "c", "handle": 8}},
]


def test_sets_in_finds_sengds_sets_only() -> None:
    assert sets_in(LISTING) == {
        "app_a": frozenset({IPv4Address("192.168.28.2")}),
        "cat_x": frozenset(),
    }


def test_admin_objects_are_everything_sengd_did_not_make() -> None:
    assert admin_objects(LISTING, {"app_a", "cat_x"}) == [
        ("set", "ports", 4),
        ("set", "app_theirs", 9),
        ("chain", "admin", 6),
        ("counter", "c", 8),
    ]


def test_admin_objects_of_unsupported_kinds_refuse_the_reload() -> None:
    with pytest.raises(FirewallError, match="flowtable 'ft'"):
        admin_objects([{"flowtable": {"name": "ft", "handle": 3}}], set())


def test_referenced_sets_are_found_in_rules_text() -> None:
    text = "ip saddr @app_demo tcp dport @ports accept\nip daddr @cat_server ip saddr @host_lab\n"
    assert referenced_sets(text) == {"app_demo", "cat_server", "host_lab"}
