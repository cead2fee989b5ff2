"""systemd's readiness protocol (sd_notify): READY=1, STOPPING=1, WATCHDOG=1, STATUS=...

A no-op when NOTIFY_SOCKET is unset, so sengd behaves the same in a terminal and in tests.
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends state lines to the socket named by $NOTIFY_SOCKET (abstract if it starts with @)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that asked for notifications."""
        return self._sock is not None

    def notify(self, *lines: str) -> None:
        """Send `lines` (e.g. "READY=1", "STATUS=serving") as one message; errors are ignored
        because a vanished service manager must never take the data plane down."""
        if self._sock is None or self._address is None:
            return
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(lines).encode(), self._address)

    def watchdog_interval(self) -> float | None:
        """Half the watchdog timeout systemd set for us (seconds), or None without a watchdog."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
