"""Messages between the dashboard's parts (Textual messages; they carry data, not widgets)."""

from __future__ import annotations

from textual.message import Message


class StateChanged(Message):
    """The gateway state changed; `parts` names what ("link", "stats", "sessions", "log",
    "allowlist", "subnets"). Sent to the active screen at most a few times a second."""

    def __init__(self, parts: frozenset[str]) -> None:
        super().__init__()
        self.parts = parts


class ShowSession(Message):
    """Open the detail view of the session holding `enclave_ip`."""

    def __init__(self, enclave_ip: str) -> None:
        super().__init__()
        self.enclave_ip = enclave_ip


class KillSession(Message):
    """Ask to close the session holding `enclave_ip` (a confirmation asks for the reason)."""

    def __init__(self, enclave_ip: str) -> None:
        super().__init__()
        self.enclave_ip = enclave_ip
