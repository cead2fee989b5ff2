"""`sengadm apply FILE.toml [--prune] [--dry-run]` offline on real SQLite files."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from .conftest import Sengadm

REPO = Path(__file__).resolve().parents[3]
H1 = "11" * 32
H2 = "22" * 32
SIGNER = "5a" * 32

FILE = f"""\
version = 1

[[subnet]]
name = "default"
cidr = "192.168.28.0/24"
default = true

[[subnet]]
name = "backend"
cidr = "10.77.0.0/24"
gateway = "10.77.0.1"
description = "api enclaves"

[[category]]
name = "web"
description = "front ends"

[[enclave]]
name = "nginx"
mr_enclave = "{H1}"
host_subnets = ["0.0.0.0/0"]
categories = ["web"]

[[enclave]]
name = "api"
mr_signer = "{SIGNER}"
isv_prod_id = 2
min_isv_svn = 3
host_subnets = ["10.1.0.0/16=backend"]
"""


@pytest.fixture
def allowlist(tmp_path: Path) -> Path:
    path = tmp_path / "allowlist.toml"
    path.write_text(FILE)
    return path


def names(sengadm: Sengadm) -> list[str]:
    return [e["name"] for e in json.loads(sengadm("enclave", "list", "--json").out)]


def test_apply_twice_changes_nothing_the_second_time(sengadm: Sengadm, allowlist: Path) -> None:
    first = sengadm("apply", str(allowlist))
    assert first.code == 0, first.err
    assert first.out.splitlines() == [
        "+ subnet default: 192.168.28.0/24 gateway 192.168.28.1, default",
        "+ subnet backend: 10.77.0.0/24 gateway 10.77.0.1",
        "+ category web",
        f"+ entry nginx: MRENCLAVE {H1}",
        "    host 0.0.0.0/0 -> default (192.168.28.0/24)",
        "    categories web",
        f"+ entry api: MRSIGNER {SIGNER} product 2",
        "    host 10.1.0.0/16 -> backend (10.77.0.0/24)",
        f"applied {allowlist}: 5 created (0 unchanged)",
    ]
    audit = json.loads(sengadm("audit", "--json").out)
    second = sengadm("apply", str(allowlist))
    assert second.code == 0
    assert second.out == f"nothing to change: the store already matches {allowlist}\n"
    assert json.loads(sengadm("audit", "--json").out) == audit  # no event either

    # A changed file: only the difference is applied and shown.
    allowlist.write_text(FILE.replace("min_isv_svn = 3", "min_isv_svn = 4"))
    third = sengadm("apply", str(allowlist), "--json")
    result = json.loads(third.out)
    assert [(c["name"], c["fields"]) for c in result["changes"]] == [("api", ["min_isv_svn"])]
    assert result["unchanged"] == {"subnet": 2, "category": 1, "entry": 1}


def test_dry_run_shows_the_diff_and_changes_nothing(sengadm: Sengadm, allowlist: Path) -> None:
    dry = sengadm("apply", str(allowlist), "--dry-run")
    assert dry.code == 0
    assert (
        dry.out.splitlines()[-1] == "dry run, nothing changed: would have 5 created (0 unchanged)"
    )
    assert names(sengadm) == []
    assert json.loads(sengadm("subnet", "list", "--json").out) == []
    assert sengadm("apply", str(allowlist)).code == 0
    assert sengadm("apply", str(allowlist), "--dry-run").out.startswith("nothing to change")


def test_prune_removes_what_the_file_no_longer_lists(sengadm: Sengadm, allowlist: Path) -> None:
    sengadm("apply", str(allowlist))
    sengadm(
        "enclave",
        "add",
        "stray",
        "--mrenclave",
        H2,
        "--host-subnet",
        "0.0.0.0/0",
        "--category",
        "old",
    )
    kept = sengadm("apply", str(allowlist))
    assert kept.out.startswith("nothing to change") and "stray" in names(sengadm)
    pruned = sengadm("apply", str(allowlist), "--prune")
    assert pruned.code == 0
    assert pruned.out.splitlines() == [
        "- entry stray",
        "- category old",
        f"applied {allowlist}: 2 removed (5 unchanged)",
    ]
    assert names(sengadm) == ["nginx", "api"]
    # Dropping an entry and a subnet from the file: pruned, in one go.
    smaller = FILE.split('[[enclave]]\nname = "api"', maxsplit=1)[0].replace(
        '[[subnet]]\nname = "backend"\ncidr = "10.77.0.0/24"\ngateway = "10.77.0.1"\n'
        'description = "api enclaves"\n',
        "",
    )
    allowlist.write_text(smaller)
    result = json.loads(sengadm("apply", str(allowlist), "--prune", "--json").out)
    assert [(c["action"], c["object"], c["name"]) for c in result["changes"]] == [
        ("delete", "entry", "api"),
        ("delete", "subnet", "backend"),
    ]
    assert sengadm("apply", str(allowlist), "--prune").out.startswith("nothing to change")


def test_problems_in_the_file_are_all_listed(sengadm: Sengadm, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[enclave]]\nname = "a"\nmr_enclave = "12"\nhost_subnets = ["0.0.0.0/0"]\n'
        '[[enclave]]\nname = "b"\nmr_enclave = "' + H2 + '"\nhostsubnets = ["0.0.0.0/0"]\n'
    )
    run = sengadm("apply", str(path))
    assert run.code == 2
    lines = run.err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("sengadm: the document has 2 problem(s)")
    assert lines[1].startswith("  enclave[1] (a): mr_enclave must be 64 hexadecimal digits")
    assert lines[2] == "  enclave[2] (b): unknown parameter(s): hostsubnets"
    assert names(sengadm) == []


def test_conflicts_with_the_database_refuse_the_whole_file(
    sengadm: Sengadm, allowlist: Path
) -> None:
    sengadm("enclave", "add", "legacy", "--mrenclave", H1, "--host-subnet", "0.0.0.0/0")
    run = sengadm("apply", str(allowlist))
    assert run.code == 1
    assert "enclave 'nginx'" in run.err and "'legacy'" in run.err
    assert names(sengadm) == ["legacy"]
    assert [s["name"] for s in json.loads(sengadm("subnet", "list", "--json").out)] == ["default"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[[enclave]\n", "not valid TOML"),
        ('[[enclave]]\nname = "a"\nwhen = 2026-01-01\n', "enclave[1].when: dates and times"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unreadable_files(
    sengadm: Sengadm, tmp_path: Path, content: str | bytes, needle: str
) -> None:
    path = tmp_path / "f.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    run = sengadm("apply", str(path))
    assert run.code == 2 and needle in run.err


def test_missing_file_and_stdin(
    sengadm: Sengadm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = sengadm("apply", str(tmp_path / "absent.toml"))
    assert missing.code == 2 and "No such file" in missing.err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(FILE.encode())))
    assert sengadm("apply", "-").code == 0
    assert names(sengadm) == ["nginx", "api"]


def test_the_documented_example_applies(sengadm: Sengadm, tmp_path: Path) -> None:
    text = (REPO / "docs" / "apply.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert blocks, "docs/apply.md has no ```toml example"
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block)
        run = sengadm("apply", str(path), "--dry-run")
        assert run.code == 0, (index, run.err)
