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
# 10 = unprotected); the unit measures 1.7.
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
    skip = {root / "proc", root / "dev", root / "sys"}
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
    """Run the installed sengd as the unit would (user seng with its groups, no capability
    but CAP_NET_ADMIN, no new privileges) in a network namespace of its own: it must
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
                    "--init-groups",
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
            # ExecReload: `sengadm reload` as the daemon's own user.
            reload = ns.run(
                *box.command("runuser", "-u", "seng", "--", "/usr/bin/sengadm", "reload"),
                check=False,
            )
            assert reload.returncode == 0, reload.stdout + reload.stderr
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
    box.save_apt_cache()
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
    members = {}
    for group in ("seng", "seng-admin", "seng-monitor"):
        members[group] = box.run("getent", "group", group).stdout.strip().split(":")[3]
    assert members == {"seng": "", "seng-admin": "seng", "seng-monitor": ""}
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


# The booted test: a unit that stands in for udev, which makes /dev/net/tun 0666 on a Debian
# host (50-udev-default.rules); systemd-nspawn gives the container the host's mode, which in
# a CI container may be 0600.
TUN_MODE_UNIT = """\
[Unit]
Description=Test stand-in for udev's /dev/net/tun mode
Before=sengd.service
[Service]
Type=oneshot
ExecStart=/bin/chmod 0666 /dev/net/tun
[Install]
WantedBy=multi-user.target
"""
# A short watchdog, so that a missing WATCHDOG=1 would show within the test.
WATCHDOG_DROP_IN = "[Service]\nWatchdogSec=3s\n"
HANDSHAKE_PROBE = """\
import contextlib
from datetime import UTC, datetime, timedelta
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sengd.testing.enclave_emu import ClientIdentity, EmulatorError, EnclaveEmulator
key = ec.generate_private_key(ec.SECP384R1())
name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "probe")])
now = datetime.now(UTC)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256()))
emu = EnclaveEmulator(("127.0.0.1", 12345), ClientIdentity.from_certificate(cert, key),
                      pinned_server_cert=None, timeout=5.0)
with contextlib.suppress(EmulatorError):
    emu.connect()
"""


class Container:
    """The chroot's tree booted with systemd-nspawn (private network, not registered)."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        env = dict(os.environ)
        # systemd inside wants the unified cgroup hierarchy; a hybrid host (as CI's container)
        # offers it only when asked.
        env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", f"--directory={root}",
             f"--machine={name}", "--register=no", "--keep-unit", "--private-network"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        self.leader = self._find_leader()

    def _find_leader(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited:\n{self.process.stdout.read()}")  # type: ignore[union-attr]
            for stat_file in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat_file.read_text().rsplit(")", 1)[1].split()
                    comm = (stat_file.parent / "comm").read_text().strip()
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if int(fields[1]) == self.process.pid and comm == "systemd":
                    return int(stat_file.parent.name)
            time.sleep(0.2)
        raise AssertionError("the container's systemd did not start")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the container (its namespaces, its PATH)."""
        full = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p",
                "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *cmd]  # fmt: skip
        if check:
            return run(full)
        return subprocess.run(full, capture_output=True, text=True, check=False)

    def wait_until(self, *cmd: str, expect: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.run(*cmd, check=False).stdout.strip()
            if out == expect:
                return out
            time.sleep(0.5)
        journal = self.run("journalctl", "-b", "--no-pager", "-n", "60", check=False).stdout
        raise AssertionError(f"{' '.join(cmd)}: {out!r}, not {expect!r}\n{journal}")

    def close(self) -> None:
        """Power the container off (SIGTERM to nspawn), kill it if it does not go."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()
        # nspawn's per-machine mount propagation directory on the host.
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)


def test_sengd_service_runs_hardened_under_booted_systemd(deb: Path, chroot: Chroot) -> None:
    """The unit as shipped, started by systemd 252 in a booted container: ready, watchdog fed,
    control socket usable, reload through ExecReload (and refused for a bad configuration),
    nftables under the sandbox, the measured `systemd-analyze security sengd`, clean stop."""
    box = chroot
    box.run("apt-get", "update", "-qq")
    box.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd-sysv", "man-db",
            *package_names(control_field(deb, "Depends")),
            *package_names(control_field(deb, "Recommends")))  # fmt: skip
    box.save_apt_cache()
    shutil.copy(deb, box.path("/tmp"))
    box.run("apt-get", "install", "-y", f"/tmp/{deb.name}")
    box.path("/etc/systemd/system/seng-test-tun.service").write_text(TUN_MODE_UNIT)
    box.run("systemctl", "enable", "seng-test-tun.service")
    drop_in = box.path("/etc/systemd/system/sengd.service.d/test-watchdog.conf")
    drop_in.parent.mkdir(parents=True)
    drop_in.write_text(WATCHDOG_DROP_IN)
    config = box.path(CONFIG)
    config.write_text(re.sub(r"(?m)^(\[firewall\]\n(?:#.*\n)*)enabled = false",
                             r"\1enabled = true", config.read_text()))  # fmt: skip
    assert re.search(r"(?m)^\[firewall\]\n(?:#.*\n)*enabled = true", config.read_text())
    box.unmount()

    container = Container(box.root, f"seng-test-{os.getpid()}")
    try:
        container.wait_until("systemctl", "is-active", "sengd", expect="active")
        show = container.run("systemctl", "show", "sengd", "-p", "User", "-p", "WatchdogUSec",
                             "-p", "CapabilityBoundingSet", "-p", "StatusText").stdout  # fmt: skip
        assert "User=seng" in show and "WatchdogUSec=3s" in show, show
        assert "CapabilityBoundingSet=cap_net_admin\n" in show, show
        assert "StatusText=serving" in show, show
        journal = container.run("journalctl", "-u", "sengd", "-o", "cat").stdout
        assert 'event=firewall-ready table="inet seng"' in journal, journal
        assert container.run("sengadm", "status").returncode == 0
        # A handshake through the sandbox: a handshake worker (MemoryDenyWriteExecute, its
        # own lower priority) completes it and hands it over; the certificate is no RA-TLS
        # certificate, so the gateway denies it.
        container.run(f"{VENV}/bin/python", "-c", HANDSHAKE_PROBE)
        journal = container.run("journalctl", "-u", "sengd", "-o", "cat").stdout
        assert re.search(r"event=handshake-workers count=\d+ engine=openssl", journal), journal
        assert "event=denied tunnel=1" in journal, journal
        for trouble in ("worker-priority-unchanged", "handshake-worker-lost", "MemoryError"):
            assert trouble not in journal, journal
        assert container.run("ip", "link", "show", "tunFA").returncode == 0

        security = container.run("systemd-analyze", "security", "sengd", "--no-pager")
        level = exposure(security.stdout)
        print(f"systemd-analyze security sengd (booted systemd 252): exposure {level}")
        assert level <= MAX_EXPOSURE, security.stdout

        container.run("systemctl", "reload", "sengd")
        good = container.run("cat", CONFIG).stdout
        container.run("sed", "-i", 's/^log_level = "info"/log_level = "loud"/', CONFIG)
        refused = container.run("systemctl", "reload", "sengd", check=False)
        assert refused.returncode != 0
        journal = container.run("journalctl", "-u", "sengd", "-o", "cat").stdout
        assert "reload refused, the running configuration stays" in journal, journal
        assert container.run("systemctl", "is-active", "sengd").stdout.strip() == "active"
        box.path(CONFIG).write_text(good)

        time.sleep(8)  # > 2 watchdog periods
        restarts = container.run("systemctl", "show", "sengd", "-p", "NRestarts").stdout
        assert restarts.strip() == "NRestarts=0", container.run("journalctl", "-u", "sengd").stdout

        container.run("systemctl", "stop", "sengd")
        journal = container.run("journalctl", "-u", "sengd", "-o", "cat").stdout
        assert "event=stopped" in journal and 'event=firewall-removed table="inet seng"' in journal
        assert container.run("ip", "link", "show", "tunFA", check=False).returncode != 0
        result = container.run("systemctl", "show", "sengd", "-p", "Result").stdout.strip()
        assert result == "Result=success"
    finally:
        container.close()
