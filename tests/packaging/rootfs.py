"""A fresh Debian 12 (bookworm) root file system to install the package into, as root.

`fresh_root(dest)` unpacks a debootstrap'ed minbase system into `dest`. The debootstrap run
itself (about half a minute) is cached as a tarball per day under CACHE_DIR, outside the
repository, so that a day's test runs start from the same pristine system in seconds; the
tarball is never modified, every test gets its own copy.

`Chroot` mounts what programs in it need (/proc, a private /dev with the device nodes udev
would create), gives apt the .debs earlier runs downloaded, and always unmounts again:
`close()` refuses to delete a tree that still has anything mounted in it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CACHE_DIR = Path(os.environ.get("SENG_TEST_CACHE", "/var/cache/seng-gateway-tests"))
APT_CACHE = CACHE_DIR / "apt-archives"
SUITE = "bookworm"

# (name, major, minor, mode) of the device nodes a Debian system has under udev; /dev/net/tun
# is 0666 there (udev's 50-udev-default.rules), whatever the test host's own /dev says.
DEVICE_NODES = (
    ("null", 1, 3, 0o666),
    ("zero", 1, 5, 0o666),
    ("full", 1, 7, 0o666),
    ("random", 1, 8, 0o666),
    ("urandom", 1, 9, 0o666),
    ("tty", 5, 0, 0o666),
    ("net/tun", 10, 200, 0o666),
)


@dataclass(frozen=True)
class Mirrors:
    """The Debian archive and security archive URIs the host's apt uses."""

    debian: str
    security: str | None

    def sources_list(self) -> str:
        """A one-line-style sources.list for bookworm, its updates and security updates."""
        lines = [
            f"deb {self.debian} {SUITE} main",
            f"deb {self.debian} {SUITE}-updates main",
        ]
        if self.security:
            lines.append(f"deb {self.security} {SUITE}-security main")
        return "\n".join(lines) + "\n"


def _source_entries(text: str) -> Iterator[tuple[str, str]]:
    """(uri, suite) of every 'deb' entry in one-line or deb822 apt sources text."""
    for line in text.splitlines():
        match = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
        if match:
            yield match[1], match[2]
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    yield uri, suite


def host_mirrors(etc: Path = Path("/etc/apt")) -> Mirrors:
    """The mirrors of the host's apt sources (sources.list and sources.list.d/*)."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    files += sorted((etc / "sources.list.d").glob("*.sources"))
    debian = security = None
    for file in files:
        if not file.is_file():
            continue
        for uri, suite in _source_entries(file.read_text()):
            if suite == SUITE and debian is None:
                debian = uri
            elif suite == f"{SUITE}-security" and security is None:
                security = uri
    if debian is None:
        raise RuntimeError(f"no '{SUITE}' entry in the host's apt sources ({etc})")
    return Mirrors(debian, security)


def run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `cmd`, capture its output, raise with that output if it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc  # type: ignore[no-any-return]


def rootfs_tarball(mirrors: Mirrors, today: dt.date | None = None) -> Path:
    """Today's cached minbase tarball, made with debootstrap if there is none yet."""
    today = today or dt.datetime.now(dt.UTC).date()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"{SUITE}-minbase-{today:%Y%m%d}.tar.gz"
    if tarball.is_file():
        return tarball
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE_DIR))
    try:
        root = work / "root"
        run(["debootstrap", "--variant=minbase", SUITE, str(root), mirrors.debian])
        partial = work / "rootfs.tar.gz"
        run(["tar", "-C", str(root), "--numeric-owner", "-czf", str(partial), "."])
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for old in CACHE_DIR.glob(f"{SUITE}-minbase-*.tar.gz"):
        if old != tarball:
            old.unlink(missing_ok=True)
    return tarball


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


@dataclass
class Chroot:
    """A throw-away root file system with /proc, a private /dev and the apt cache mounted."""

    root: Path
    mounted: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, parent: Path, mirrors: Mirrors) -> Chroot:
        """Unpack today's bookworm minbase into a new directory under `parent`."""
        tarball = rootfs_tarball(mirrors)
        root = Path(tempfile.mkdtemp(prefix="seng-deb-root-", dir=parent))
        chroot = cls(root)
        try:
            run(["tar", "-C", str(root), "--numeric-owner", "-xzf", str(tarball)])
            chroot._mount(["-t", "proc", "proc"], root / "proc")
            chroot._make_dev()
            chroot._seed_apt_cache()
            (root / "etc/apt/sources.list").write_text(mirrors.sources_list())
            shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        except BaseException:
            chroot.close()
            raise
        return chroot

    def _seed_apt_cache(self) -> None:
        # Copies, not a shared bind mount: concurrent test runs must not meet on apt's lock.
        # apt verifies every cached .deb against the mirror's signed indexes before use.
        archives = self.path("/var/cache/apt/archives")
        for deb in APT_CACHE.glob("*.deb"):
            shutil.copy2(deb, archives / deb.name)

    def save_apt_cache(self) -> None:
        """Keep the .debs apt downloaded for the next run (written atomically)."""
        APT_CACHE.mkdir(parents=True, exist_ok=True)
        for deb in self.path("/var/cache/apt/archives").glob("*.deb"):
            target = APT_CACHE / deb.name
            if not target.exists():
                partial = APT_CACHE / f".{deb.name}.{os.getpid()}"
                shutil.copy2(deb, partial)
                partial.rename(target)

    def _mount(self, args: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        run(["mount", *args, str(target)])
        self.mounted.append(target)

    def _make_dev(self) -> None:
        dev = self.root / "dev"
        self._mount(["-t", "tmpfs", "-o", "mode=0755,size=4m", "seng-test-dev"], dev)
        for name, major, minor, mode in DEVICE_NODES:
            node = dev / name
            node.parent.mkdir(exist_ok=True)
            os.mknod(node, 0o020000 | mode, os.makedev(major, minor))
            os.chmod(node, mode)
        (dev / "shm").mkdir()
        os.chmod(dev / "shm", 0o1777)
        (dev / "pts").mkdir()

    def path(self, inside: str) -> Path:
        """The host path of `inside` (an absolute path in the chroot)."""
        return self.root / inside.lstrip("/")

    def command(self, *cmd: str) -> list[str]:
        """`cmd` as a host command line that runs it in the chroot."""
        return ["chroot", str(self.root), *cmd]

    def run(
        self, *cmd: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the chroot (with a Debian PATH, non-interactive apt)."""
        full_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            **(env or {}),
        }
        if check:
            return run(self.command(*cmd), env=full_env)
        return subprocess.run(
            self.command(*cmd), capture_output=True, text=True, check=False, env=full_env
        )

    def unmount(self) -> None:
        """Unmount what `create` mounted (e.g. before booting the tree in a container)."""
        for target in reversed(self.mounted):
            subprocess.run(["umount", str(target)], capture_output=True, check=False)
        self.mounted.clear()

    def close(self) -> None:
        """Unmount everything and delete the tree (never through a mount still in place)."""
        self.unmount()
        for point in mounts_under(self.root):
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        left = mounts_under(self.root)
        if left:
            raise RuntimeError(f"still mounted, not deleting {self.root}: {left}")
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=False)
