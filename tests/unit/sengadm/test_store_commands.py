"""`sengadm enclave|subnet|category|audit` offline (`--db`) on real SQLite files."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
from pathlib import Path

import pytest

from sengadm.cli import build_parser

from .conftest import Sengadm

H1 = "11" * 32
H2 = "22" * 32
SIGNER = "5a" * 32
MY_COMMANDS = ("enclave", "subnet", "category", "audit", "apply")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_reads_like_a_man_page(sengadm: Sengadm) -> None:
    groups = _subparsers(build_parser())
    for name in MY_COMMANDS:
        parsers = {name: groups[name], **_subparsers(groups[name])}
        for label, parser in parsers.items():
            assert parser.description and len(parser.description) > 40, label
            assert parser.epilog and "example" in parser.epilog, label
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    assert all(a.help for a in action._choices_actions), label
                elif not isinstance(action, argparse._HelpAction):
                    assert action.help, f"{label}: {action.dest} has no help"
    run = sengadm("enclave", "add", "--help")
    assert run.code == 0
    for needle in (
        "--mrenclave",
        "--from-cert",
        "--host-subnet CIDR[=SUBNET]",
        "examples:",
        "exit status",
    ):
        assert needle in run.out
    bare = sengadm("enclave")
    assert bare.code == 2 and "add" in bare.err and "disable" in bare.err


def test_enclave_lifecycle(sengadm: Sengadm, db: Path) -> None:
    added = sengadm(
        "enclave",
        "add",
        "nginx",
        "--mrenclave",
        H1,
        "--host-subnet",
        "0.0.0.0/0",
        "--category",
        "web",
        "--comment",
        "front end",
    )
    assert added.code == 0, added.err
    assert added.out.splitlines() == [
        "+ subnet default: 192.168.28.0/24 gateway 192.168.28.1, default",
        "+ category web",
        f"+ entry nginx: MRENCLAVE {H1}",
        "    host 0.0.0.0/0 -> default (192.168.28.0/24)",
        "    categories web",
    ]
    assert db.exists()
    signer = sengadm(
        "enclave",
        "add",
        "api",
        "--mrsigner",
        SIGNER,
        "--isv-prod-id",
        "2",
        "--min-svn",
        "3",
        "--host-subnet",
        "10.1.0.0/16=default",
        "--allow-debug",
        "--quote-status",
        "OK",
        "--disabled",
        "--json",
    )
    assert signer.code == 0, signer.err
    entry = json.loads(signer.out)["entry"]
    assert (entry["match"], entry["isv_prod_id"], entry["min_isv_svn"]) == ("signer", 2, 3)
    assert (entry["allow_debug"], entry["quote_statuses"], entry["enabled"]) == (
        True,
        ["OK"],
        False,
    )

    listing = sengadm("enclave", "list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "IDENTITY",
        "HOST",
        "ROUTES",
        "CATEGORIES",
        "ENABLED",
        "LEASES",
    ]
    assert lines[1].split()[:3] == ["nginx", "MRENCLAVE", "11111111…1111"]
    assert "NO" in lines[2].split()
    listed = json.loads(sengadm("enclave", "list", "--json").out)
    assert [e["name"] for e in listed] == ["nginx", "api"]

    show = sengadm("enclave", "show", "nginx")
    assert show.code == 0
    assert "host routes        0.0.0.0/0 -> default (192.168.28.0/24)" in show.out
    assert "comment            front end" in show.out
    assert json.loads(sengadm("enclave", "show", "api", "--json").out)["name"] == "api"

    update = sengadm(
        "enclave",
        "update",
        "api",
        "--min-svn",
        "4",
        "--add-host-subnet",
        "10.2.0.0/16",
        "--default-allow-debug",
        "--enabled",
    )
    assert update.code == 0, update.err
    assert update.out.splitlines() == [
        "~ entry api:",
        "    min_isv_svn: 3 -> 4",
        "    host_routes: + 10.2.0.0/16 -> default (192.168.28.0/24)",
        "    allow_debug: yes -> (global default)",
        "    enabled: no -> yes",
    ]
    assert sengadm("enclave", "update", "api", "--min-svn", "4").out == "nothing changed\n"

    assert sengadm("enclave", "disable", "nginx").out.startswith("~ entry nginx:")
    assert sengadm("enclave", "disable", "nginx").out == "nothing changed\n"
    assert sengadm("enclave", "enable", "nginx").code == 0
    removed = sengadm("enclave", "remove", "nginx")
    assert (removed.code, removed.out) == (0, "- entry nginx\n")
    assert [e["name"] for e in json.loads(sengadm("enclave", "list", "--json").out)] == ["api"]


def test_exit_codes_and_messages(sengadm: Sengadm, tmp_path: Path) -> None:
    assert sengadm("enclave", "add", "a", "--mrenclave", H1, "--host-subnet", "0.0.0.0/0").code == 0
    missing = sengadm("enclave", "show", "nope")
    assert missing.code == 1 and missing.err == "sengadm: no allowlist entry named 'nope'\n"
    assert sengadm("enclave", "remove", "nope").code == 1
    taken = sengadm("enclave", "add", "b", "--mrenclave", H1, "--host-subnet", "0.0.0.0/0")
    assert taken.code == 1 and "already allowlists MRENCLAVE" in taken.err
    bad_hex = sengadm("enclave", "add", "b", "--mrenclave", "xyz", "--host-subnet", "0.0.0.0/0")
    assert bad_hex.code == 2 and "64 hexadecimal digits" in bad_hex.err
    host_bits = sengadm("enclave", "add", "b", "--mrenclave", H2, "--host-subnet", "10.0.0.1/8")
    assert host_bits.code == 2 and "the network is 10.0.0.0/8" in host_bits.err
    assert sengadm("enclave", "add", "b", "--mrenclave", H2).code == 2  # no --host-subnet
    stray = sengadm(
        "enclave", "add", "b", "--mrenclave", H2, "--host-subnet", "0.0.0.0/0", "--by-signer"
    )
    assert stray.code == 2 and "--from-cert" in stray.err
    contradiction = sengadm("enclave", "update", "a", "--match-signer", "--mrenclave", H2)
    assert contradiction.code == 2
    # The database cannot be opened: exit 2, saying which.
    unusable = sengadm("--db", "sqlite:////dev/null/x.db", "enclave", "list", offline=False)
    assert unusable.code == 2 and "/dev/null/x.db" in unusable.err
    # No --db and no daemon: exit 3, naming the socket and the offline way.
    gone = sengadm("enclave", "list", offline=False, socket=tmp_path / "nothing.sock")
    assert gone.code == 3
    assert "nothing.sock" in gone.err and "--db" in gone.err


def test_subnet_commands(sengadm: Sengadm) -> None:
    first = sengadm("subnet", "add", "10.77.0.0/24", "--name", "backend")
    assert (first.code, first.out) == (
        0,
        "+ subnet backend: 10.77.0.0/24 gateway 10.77.0.1, default\n",
    )
    lab = sengadm(
        "subnet",
        "add",
        "172.16.28.0/26",
        "--gateway",
        "172.16.28.62",
        "--name",
        "lab",
        "--description",
        "lab enclaves",
        "--json",
    )
    assert json.loads(lab.out)["subnet"]["gateway"] == "172.16.28.62"
    overlap = sengadm("subnet", "add", "10.77.0.0/16")
    assert overlap.code == 1 and "overlaps 10.77.0.0/24 ('backend')" in overlap.err
    assert sengadm("subnet", "add", "10.90.0.0/31").code == 2

    assert (
        sengadm(
            "enclave",
            "add",
            "a",
            "--mrenclave",
            H1,
            "--host-subnet",
            "0.0.0.0/0",
            "--host-subnet",
            "10.0.0.0/8=lab",
        ).code
        == 0
    )
    table = sengadm("subnet", "list").out.splitlines()
    assert table[0].split() == ["NAME", "NETWORK", "GATEWAY", "DEFAULT", "ENTRIES", "LEASED"]
    assert table[1].split() == ["backend", "10.77.0.0/24", "10.77.0.1", "yes", "a", "0/253"]
    assert table[2].split() == ["lab", "172.16.28.0/26", "172.16.28.62", "a", "0/61"]
    assert sengadm("subnet", "set-default", "lab").code == 0
    listed = json.loads(sengadm("subnet", "list", "--json").out)
    assert [(s["name"], s["default"]) for s in listed] == [("backend", False), ("lab", True)]

    in_use = sengadm("subnet", "remove", "lab")
    assert in_use.code == 1 and "in use" in in_use.err
    forced = sengadm("subnet", "remove", "172.16.28.0/26", "--force")
    assert forced.code == 0, forced.err
    assert forced.out.splitlines()[-2:] == [
        "- subnet lab 172.16.28.0/26",
        "entry a lost host routes 10.0.0.0/8",
    ]
    assert sengadm("subnet", "remove", "lab").code == 1


def test_categories_and_audit_name_the_local_user(sengadm: Sengadm) -> None:
    sengadm(
        "enclave",
        "add",
        "a",
        "--mrenclave",
        H1,
        "--host-subnet",
        "0.0.0.0/0",
        "--category",
        "web",
        "--category",
        "db",
    )
    categories = sengadm("category", "list")
    assert categories.out.splitlines()[1:] == ["db        a        -", "web       a        -"]
    assert [c["name"] for c in json.loads(sengadm("category", "list", "--json").out)] == [
        "db",
        "web",
    ]
    sengadm("enclave", "disable", "a")
    events = json.loads(sengadm("audit", "--json").out)
    me = pwd.getpwuid(os.getuid()).pw_name
    assert {(e["actor_uid"], e["actor_name"]) for e in events} == {(os.getuid(), me)}
    assert [e["action"] for e in events] == ["create", "create", "create", "create", "disable"]
    text = sengadm("audit", "--limit", "1").out.splitlines()
    assert text[0].endswith(f"{me} uid {os.getuid()}  disable app 1 (a)")
    assert text[1] == "    enabled: yes -> no"
    assert sengadm("audit", "--limit", "0").code == 2
    assert sengadm("audit", "--since", "2999-01-01").out == "no audit events\n"


def test_offline_write_warns_when_a_daemon_seems_to_run(sengadm: Sengadm, tmp_path: Path) -> None:
    path = tmp_path / "sengd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    try:
        run = sengadm(
            "enclave", "add", "a", "--mrenclave", H1, "--host-subnet", "0.0.0.0/0", socket=path
        )
        assert run.code == 0
        assert "applies it on its next reload" in run.err
        quiet = sengadm("enclave", "list", socket=path)
        assert quiet.err == ""
    finally:
        listener.close()


@pytest.mark.parametrize("group", MY_COMMANDS)
def test_every_read_command_has_json(group: str) -> None:
    groups = _subparsers(build_parser())
    parsers = _subparsers(groups[group]) or {group: groups[group]}
    for name, parser in parsers.items():
        options = {o for a in parser._actions for o in a.option_strings}
        assert "--json" in options, f"{group} {name}"
