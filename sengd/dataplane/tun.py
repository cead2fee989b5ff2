"""The TUN interface enclave packets enter and leave through.

`TunInterface.open()` creates the interface (or adopts an existing persistent one of that name),
sets its MTU, assigns the gateway address of every enclave subnet and brings it up. `close()`
undoes exactly what `open()` did: an interface sengd created disappears with its descriptor;
on an adopted one only the addresses sengd added are removed.

Addresses are managed with iproute2 (`ip -json`), the kernel's own tool: python-pytun only sets
one address per device, and the enclave subnets need several.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

import pytun

log = logging.getLogger(__name__)

SYS_NET = Path("/sys/class/net")


class TunError(Exception):
    """The interface could not be set up as configured (message names the interface and step)."""


def _ip(*args: str) -> str:
    """Run `ip ARGS...` and return its stdout; raise TunError with ip's own message on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TunError(f"ip {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def interface_addresses(name: str) -> set[IPv4Interface]:
    """The IPv4 addresses (with prefix) currently on interface `name`."""
    data = json.loads(_ip("-json", "-4", "addr", "show", "dev", name) or "[]")
    found: set[IPv4Interface] = set()
    for link in data:
        for info in link.get("addr_info", []):
            found.add(IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    return found


@dataclass
class TunInterface:
    """A TUN device (IFF_TUN | IFF_NO_PI) carrying the gateway address of each enclave subnet."""

    name: str
    mtu: int
    addresses: tuple[IPv4Interface, ...]
    manage: bool = True
    created: bool = False
    _device: pytun.TunTapDevice | None = field(default=None, repr=False)
    _added: list[IPv4Interface] = field(default_factory=list, repr=False)

    def open(self) -> None:
        """Create or adopt the interface and converge it to the configured state.

        With `manage` off the interface must exist already and is used as it is: no address,
        MTU or link state is touched (the administrator configures it).
        """
        exists = (SYS_NET / self.name).exists()
        if not self.manage and not exists:
            raise TunError(
                f"interface {self.name} does not exist (interface.manage = false: create it "
                f"first, e.g. ip tuntap add dev {self.name} mode tun)"
            )
        self.created = not exists
        try:
            self._device = pytun.TunTapDevice(name=self.name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        except (pytun.Error, OSError) as exc:
            raise TunError(f"cannot open TUN interface {self.name}: {exc}") from exc
        if self._device.name != self.name:  # pragma: no cover - kernel renamed it
            self.close()
            raise TunError(f"kernel gave interface {self._device.name!r}, not {self.name!r}")
        os.set_blocking(self._device.fileno(), False)
        if not self.manage:
            log.info("interface adopted unmanaged name=%s", self.name)
            return
        try:
            _ip("link", "set", "dev", self.name, "mtu", str(self.mtu))
            self.sync_addresses(self.addresses)
            _ip("link", "set", "dev", self.name, "up")
        except TunError:
            self.close()
            raise
        log.info(
            "interface ready name=%s created=%s mtu=%d addresses=%s",
            self.name,
            self.created,
            self.mtu,
            ",".join(str(a) for a in self.addresses) or "-",
        )

    def sync_addresses(self, wanted: tuple[IPv4Interface, ...]) -> None:
        """Add missing gateway addresses and remove those sengd added that are no longer wanted."""
        present = interface_addresses(self.name)
        for addr in wanted:
            if addr not in present:
                _ip("addr", "add", str(addr), "dev", self.name)
                self._added.append(addr)
        for addr in list(self._added):
            if addr not in wanted:
                _ip("addr", "del", str(addr), "dev", self.name)
                self._added.remove(addr)
        self.addresses = wanted

    def fileno(self) -> int:
        """The non-blocking descriptor: one read() returns one IPv4 packet."""
        if self._device is None:
            raise TunError(f"interface {self.name} is not open")
        return int(self._device.fileno())

    def close(self) -> None:
        """Remove what `open()` added. Safe to call twice."""
        if self._device is None:
            return
        if not self.created and self.manage:
            for addr in self._added:
                try:
                    _ip("addr", "del", str(addr), "dev", self.name)
                except TunError as exc:
                    log.warning("cannot remove address %s from %s: %s", addr, self.name, exc)
        self._added.clear()
        self._device.close()  # a non-persistent device the kernel created for us vanishes here
        self._device = None
        log.info("interface closed name=%s removed=%s", self.name, self.created)
