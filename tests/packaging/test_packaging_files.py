"""Fast checks of packaging/: the lock files, the copyright file, the version, the unit's
hardening, the maintainer scripts, the accounts and directories against the default
configuration, and the man page generator. The package itself is built and installed by
test_deb.py."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import sengadm.cli
import sengd.cli
from sengd import __version__, config

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
DEBIAN = PACKAGING / "debian"
UNIT = DEBIAN / "seng-gateway.sengd.service"
MAX_EXPOSURE = 2.5


def load_manpage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seng_manpage", PACKAGING / "manpage.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


manpage = load_manpage()


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text()):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", entry)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
            pins[canonicalize_name(match[1])] = (match[2], hashes)
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_lock_pins_every_runtime_dependency_and_its_extras_with_hashes() -> None:
    pins = locked(PACKAGING / "requirements.lock")
    assert pins
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in packaging/requirements.lock"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"{req} does not allow the pinned {pins[name][0]}: run packaging/update-locks"
        )
        for extra in req.extras:
            for sub in importlib.metadata.requires(req.name) or []:
                dep = Requirement(sub)
                if dep.marker and dep.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(dep.name) in pins, f"{req}: {dep} not pinned"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash"
    build = locked(PACKAGING / "build-requirements.lock")
    assert "setuptools" in build and all(h for _, h in build.values())


def test_copyright_has_a_paragraph_for_every_bundled_distribution() -> None:
    copyright_text = (DEBIAN / "copyright").read_text()
    patterns = set(re.findall(r"SITE/([A-Za-z0-9_.]+?)[*/]", copyright_text))
    for name in locked(PACKAGING / "requirements.lock"):
        files = importlib.metadata.distribution(name).files or []
        tops = {
            f.parts[0].split(".")[0]
            for f in files
            if not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] not in ("..",)
        }
        assert tops & patterns, f"debian/copyright has no paragraph for {name} ({tops})"


def test_changelog_version_is_the_release() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"seng-gateway \(([^)]+)\) (\S+); urgency=", first)
    assert match, first
    assert match[1] == __version__, "debian/changelog and sengd.__version__ disagree"


def analyze_security(unit: Path) -> str:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout + proc.stderr


def test_unit_is_locked_down_to_cap_net_admin() -> None:
    out = analyze_security(UNIT)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    assert float(match[1]) <= MAX_EXPOSURE, out
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0].isalpha()
    )
    assert settings["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert settings["AmbientCapabilities"] == "CAP_NET_ADMIN"
    assert settings["Type"] == "notify" and settings["WatchdogSec"]
    assert settings["Restart"] == "on-failure"
    assert settings["User"] == "seng" and settings["NoNewPrivileges"] == "yes"
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert settings[key] in ("strict", "yes"), key
    assert settings["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_NETLINK"]
    directives = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in directives if "CAP_NET_BIND_SERVICE" in line]


def test_low_port_drop_in_adds_only_cap_net_bind_service() -> None:
    text = (DEBIAN / "sengd-low-port.conf").read_text()
    for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
        (line,) = [x for x in text.splitlines() if x.startswith(key + "=")]
        assert line.split("=", 1)[1].split() == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_script_is_valid_sh_with_one_debhelper_token(script: str) -> None:
    path = DEBIAN / f"seng-gateway.{script}"
    text = path.read_text()
    # debhelper substitutes the token anywhere, comments included.
    assert text.count("#DEBHELPER#") == 1
    assert re.search(r"(?m)^#DEBHELPER#$", text)
    assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text
    subprocess.run(["sh", "-n", str(path)], check=True)


def test_accounts_and_directories_match_the_default_configuration() -> None:
    cfg = config.load(REPO / "etc/seng.toml")
    sysusers = (DEBIAN / "seng-gateway.sysusers").read_text()
    groups = set(re.findall(r"(?m)^g (\S+)", sysusers))
    assert {cfg.control.admin_group, cfg.control.monitor_group} <= groups
    tmpfiles = (DEBIAN / "seng-gateway.tmpfiles").read_text()
    dirs = dict(re.findall(r"(?m)^d (\S+) \d+ (\S+) ", tmpfiles))
    assert dirs[str(cfg.control.socket.parent)] == "seng"
    assert cfg.database.url == "sqlite:////var/lib/seng/seng.db"
    assert dirs["/var/lib/seng"] == "seng" and str(cfg.tunnel.generated_dir) == "/var/lib/seng"
    unit = UNIT.read_text()
    assert f"ReadWritePaths={cfg.control.socket.parent}" in unit
    # sengd sets its socket's group and `sengadm reload` (ExecReload) runs as seng.
    assert f"m seng {cfg.control.admin_group}" in sysusers and "User=seng" in unit
    assert cfg.tunnel.port >= 1024  # else the unit would need CAP_NET_BIND_SERVICE


def subcommand_progs(parser: object) -> list[str]:
    progs = []
    for _, _, sub in manpage.subcommands(parser):
        progs.append(sub.prog)
        progs.extend(subcommand_progs(sub))
    return progs


@pytest.mark.parametrize("module", [sengd.cli, sengadm.cli], ids=["sengd", "sengadm"])
def test_man_page_documents_every_subcommand_and_option_without_groff_warnings(
    module: ModuleType, tmp_path: Path
) -> None:
    parser = module.build_parser()
    info = manpage.PageInfo(section="8", version=__version__, date=manpage.page_date())
    page = manpage.render(parser, info)
    assert page.startswith('.\\"') and f".TH {parser.prog.upper()} 8 " in page
    progs = subcommand_progs(parser)
    for prog in progs:
        assert f'.SS "{manpage.escape(prog)}"' in page, prog
    if module is sengadm.cli:
        assert "sengadm enclave add" in progs and "sengadm db upgrade" in progs
        assert "\\fB\\-\\-mrenclave\\fR \\fIHEX\\fR" in page
    assert '.SH "EXIT STATUS"' in page
    source = tmp_path / "page.8"
    source.write_text(page)
    groff = subprocess.run(
        ["groff", "-man", "-ww", "-z", "-Tutf8", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert groff.returncode == 0 and not groff.stderr, groff.stderr


def test_roff_escaping() -> None:
    assert manpage.escape(".start\n'quote\nback\\slash --opt") == (
        "\\&.start\n\\&'quote\nback\\eslash \\-\\-opt"
    )


def test_epilog_headings_become_sections_and_indented_text_stays_as_written() -> None:
    sections = manpage.epilog_sections(
        "exit status:\n  0  ok\n  1  refused\n\nexamples:\n  sengadm status\n\nSee also x."
    )
    assert [s.title for s in sections] == ["exit status", "examples"]
    assert sections[0].blocks[0].preformatted
    assert sections[0].blocks[0].lines == ["  0  ok", "  1  refused"]
    assert [b.preformatted for b in sections[1].blocks] == [True, False]
