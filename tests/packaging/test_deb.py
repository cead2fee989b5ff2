"""The Debian package end to end: build, lint, install into a fresh Debian 12, run, upgrade, purge.

One build (`packaging/build-deb`, i.e. `dpkg-buildpackage -us -uc -b`) serves both tests. The
install test starts from a debootstrap'ed bookworm minbase system (cached per day, see
rootfs.py), installs the package's dependencies first (so that what the package itself adds can
be told apart), then the .deb with `apt-get install ./x.deb`, and checks what an administrator
relies on: the programs, the configuration, the unit (`systemd-analyze verify`), accounts and
permissions, a real start of sengd as the unprivileged user with only CAP_NET_ADMIN, an
upgrade that keeps configuration and data, and a purge after which the file system (and the
account database) is exactly what it was before the install.

Needs root, debootstrap, dpkg-dev, debhelper, lintian (scripts/bootstrap.sh installs them) and
the Debian mirror and PyPI. A few minutes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netns import require_root, topology
from tests.packaging.rootfs import Chroot, host_mirrors, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
VENV = "/usr/lib/seng-gateway/venv"
CONFIG = "/etc/seng/seng.toml"
DB_URL = "sqlite:////var/lib/seng/seng.db"
UNIT = "/lib/systemd/system/sengd.service"
# What the unit file may cost at most in `systemd-analyze security` (0 = fully locked down,
# 10 = unprotected); the unit measures 1.9.
MAX_EXPOSURE = 2.5

# Parts of the file system that record that something happened (package database, apt's lists
# and logs, backups of the account files) rather than what is installed.
BOOKKEEPING = (
    "/var/lib/dpkg/",
    "/var/lib/apt/",
    "/var/cache/",
    "/var/log/",
    "/tmp/",
    "/run/systemd/",  # written by systemd-analyze itself
)
BOOKKEEPING_FILES = ("/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built from this work tree."""
    require_root()
    out = tmp_path_factory.mktemp("deb")
    proc = run([str(REPO / "packaging/build-deb"), str(out)], cwd=REPO)
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and re.fullmatch(r"seng-gateway_[^_]+_[a-z0-9]+\.deb", path.name)
    return path


@pytest.fixture
def chroot() -> Iterator[Chroot]:
    """A fresh bookworm minbase system, deleted afterwards."""
    require_root()
    parent = Path(tempfile.gettempdir())
    box = Chroot.create(parent, host_mirrors())
    try:
        yield box
    finally:
        box.close()


def control_field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def package_names(relations: str) -> list[str]:
    """Package names of a Depends-style field (first alternative, no versions, no substvars)."""
    names = []
    for relation in filter(None, (r.strip() for r in relations.split(","))):
        first = relation.split("|")[0].strip()
        names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """path -> (mode, uid, gid, content hash or link target) of the tree, mounts excluded."""
    skip = {root / "proc", root / "dev", root / "sys", root / "var/cache/apt/archives"}
    result: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = ""
            result["/" + str(path.relative_to(root))] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                content,
            )
    return result


def is_bookkeeping(path: str) -> bool:
    return path.startswith(BOOKKEEPING) or path in BOOKKEEPING_FILES


def exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert match, output
    return float(match[1])


def start_sengd_as_service_user(box: Chroot) -> None:
    """Run the installed sengd as the unit would (user seng, groups seng + seng-admin, no
    capability but CAP_NET_ADMIN, no new privileges) in a network namespace of its own: it must
    report READY=1 over NOTIFY_SOCKET, answer `sengadm status` on its control socket and stop
    cleanly on SIGTERM."""
    notify_inside = "/run/seng-test-notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(box.path(notify_inside)))
    os.chmod(box.path(notify_inside), 0o666)
    notify.settimeout(60)
    try:
        with topology() as topo:
            ns = topo.netns("deb")
            sengd = topo.spawn(
                ns,
                box.command(
                    "setpriv",
                    "--reuid=seng",
                    "--regid=seng",
                    "--groups=seng-admin",
                    "--inh-caps=-all,+net_admin",
                    "--ambient-caps=-all,+net_admin",
                    "--bounding-set=-all,+net_admin",
                    "--no-new-privs",
                    "--",
                    "/usr/bin/sengd",
                    "--config",
                    CONFIG,
                ),
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": notify_inside},
                stderr=subprocess.PIPE,
            )
            messages = ""
            deadline = time.monotonic() + 60
            while "READY=1" not in messages and time.monotonic() < deadline:
                try:
                    messages += notify.recv(4096).decode() + "\n"
                except TimeoutError:
                    break
            if "READY=1" not in messages:
                sengd.kill()
                raise AssertionError(f"sengd never got ready:\n{sengd.communicate()[1]}")
            status = ns.run(*box.command("/usr/bin/sengadm", "status"), check=False)
            assert status.returncode == 0, status.stderr
            assert "127.0.0.1:12345" in status.stdout
            sock = box.path("/run/seng/sengd.sock")
            assert stat.S_ISSOCK(sock.lstat().st_mode)
            assert stat.S_IMODE(sock.lstat().st_mode) == 0o660
            sengd.send_signal(signal.SIGTERM)
            _, err = sengd.communicate(timeout=30)
            assert sengd.returncode == 0, err
            assert "event=stopped" in err
    finally:
        notify.close()
        box.path(notify_inside).unlink(missing_ok=True)


def repack_with_version(deb: Path, version: str, dest: Path) -> Path:
    """The same package with another version number: what an upgrade's maintainer scripts see."""
    tree = dest / "tree"
    run(["dpkg-deb", "-R", str(deb), str(tree)])
    control = tree / "DEBIAN/control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", control.read_text()))
    out = dest / f"seng-gateway_{version}_{control_field(deb, 'Architecture')}.deb"
    run(["dpkg-deb", "-Zgzip", "-z1", "-b", str(tree), str(out)])
    shutil.rmtree(tree)
    return out


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = subprocess.run(
        ["lintian", "--fail-on", "error", "--display-info", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr


def test_install_run_upgrade_purge_in_fresh_bookworm(deb: Path, chroot: Chroot) -> None:
    box = chroot
    box.run("apt-get", "update", "-qq")
    depends = package_names(control_field(deb, "Depends"))
    recommends = package_names(control_field(deb, "Recommends"))
    # man-db: systemd-analyze verify checks the unit's Documentation=man:... pages with it.
    box.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "man-db",
            *depends, *recommends)  # fmt: skip
    assert not box.run("dpkg-query", "-W", "seng-gateway", check=False).stdout

    before = snapshot(box.root)
    shutil.copy(deb, box.path("/tmp"))
    box.run("apt-get", "install", "-y", f"/tmp/{deb.name}")
    box.path(f"/tmp/{deb.name}").unlink()
    status = box.run("dpkg-query", "-W", "-f=${Status} ${Version}", "seng-gateway").stdout
    assert status == f"install ok installed {control_field(deb, 'Version')}"

    # The programs.
    version = box.run("sengd", "--version").stdout.strip()
    assert version == f"sengd {control_field(deb, 'Version')}"
    checked = box.run("sengd", "--check-config", CONFIG)
    assert checked.stdout.strip() == f"sengd: configuration {CONFIG} is valid"
    # ...as the daemon's user too: the configuration is root:seng 0640.
    box.run("runuser", "-u", "seng", "--", "sengd", "--check-config", CONFIG)
    refused = box.run("runuser", "-u", "nobody", "--", "sengd", "--check-config", CONFIG,
                      check=False)  # fmt: skip
    assert refused.returncode == 3, refused
    helptext = box.run("sengadm", "--help").stdout
    assert "usage: sengadm" in helptext and "enclave" in helptext
    shutil.copy(REPO / "packaging/smoke.py", box.path("/tmp/smoke.py"))
    smoke = box.run(f"{VENV}/bin/python3", "/tmp/smoke.py").stdout
    box.path("/tmp/smoke.py").unlink()
    assert "smoke: mbed TLS" in smoke and "smoke: psycopg" in smoke
    for page in ("sengd", "sengadm"):
        assert box.run("man", "-w", page).stdout.strip() == f"/usr/share/man/man8/{page}.8.gz"

    # The unit.
    verify = box.run("systemd-analyze", "verify", UNIT, check=False)
    assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify
    security = box.run("systemd-analyze", "security", "--offline=true", UNIT, check=False)
    level = exposure(security.stdout)
    assert level <= MAX_EXPOSURE, security.stdout
    print(f"systemd-analyze security --offline=true sengd.service: exposure {level}")
    assert box.path("/etc/systemd/system/multi-user.target.wants/sengd.service").is_symlink()

    # Accounts, directories, permissions, the migrated database.
    for group in ("seng", "seng-admin", "seng-monitor"):
        assert box.run("getent", "group", group).stdout
    passwd = box.run("getent", "passwd", "seng").stdout.strip().split(":")
    assert passwd[4:] == ["seng-gateway daemon", "/var/lib/seng", "/usr/sbin/nologin"]
    modes = box.run("stat", "-c", "%n %U:%G %a", "/etc/seng", CONFIG, "/var/lib/seng",
                    "/run/seng", "/var/lib/seng/seng.db").stdout.splitlines()  # fmt: skip
    assert modes == [
        "/etc/seng root:seng 750",
        f"{CONFIG} root:seng 640",
        "/var/lib/seng seng:seng 750",
        "/run/seng seng:seng 755",
        "/var/lib/seng/seng.db seng:seng 600",
    ]
    db = box.run("sengadm", "db", "status", "--db", DB_URL).stdout
    assert "current" in db, db

    # It runs as the unit runs it.
    start_sengd_as_service_user(box)
    cert = box.path("/var/lib/seng/server-ecdsa.crt").read_bytes()

    # Upgrade: the administrator's configuration and the data stay.
    config = box.path(CONFIG)
    config.write_text(config.read_text().replace('log_level = "info"', 'log_level = "debug"'))
    box.run("runuser", "-u", "seng", "--", "sengadm", "--db", DB_URL, "subnet", "add",
            "10.77.0.0/24", "--name", "upgrade-marker")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=box.path("/tmp")) as work:
        newer = repack_with_version(deb, control_field(deb, "Version") + "+test1", Path(work))
        box.run("apt-get", "install", "-y", f"/tmp/{Path(work).name}/{newer.name}")
    assert box.run("dpkg-query", "-W", "-f=${Version}", "seng-gateway").stdout.endswith("+test1")
    assert 'log_level = "debug"' in config.read_text()
    assert not list(box.path("/etc/seng").glob("seng.toml.dpkg-*"))
    assert "upgrade-marker" in box.run("sengadm", "--db", DB_URL, "subnet", "list").stdout
    assert box.path("/var/lib/seng/server-ecdsa.crt").read_bytes() == cert
    assert "current" in box.run("sengadm", "db", "status", "--db", DB_URL).stdout

    # Purge: nothing of the package is left, not even its accounts.
    box.run("apt-get", "purge", "-y", "seng-gateway")
    assert not box.run("dpkg-query", "-W", "seng-gateway", check=False).stdout
    after = snapshot(box.root)
    added = sorted(p for p in after.keys() - before.keys() if not is_bookkeeping(p))
    removed = sorted(p for p in before.keys() - after.keys() if not is_bookkeeping(p))
    changed = sorted(
        p for p in before.keys() & after.keys() if before[p] != after[p] and not is_bookkeeping(p)
    )
    assert (added, removed, changed) == ([], [], []), (
        f"left behind: {added}\nremoved: {removed}\nchanged: {changed}"
    )
    assert not box.run("getent", "passwd", "seng", check=False).stdout
