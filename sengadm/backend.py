"""Where sengadm's store commands run: through the daemon, or on the database directly.

`open_backend(args)` returns, for the global options of `sengadm`:
- with `--db URL`: an `OfflineBackend` on that database (migrated to this release's schema if
  needed), which runs each method of `sengd.store.admin.STORE_METHODS` in one transaction as
  the local user (`Actor.local()`: uid and user name in the audit log). For image builds and
  package scripts when no daemon runs; a running daemon picks the change up at its next start
  or reload.
- otherwise an `OnlineBackend`: the daemon at `--socket PATH`, which applies changes at once.

Both answer `call(method, params)` with the same JSON-shaped results and raise the same
`RpcError`s, so a command does not care which one it has. `run_command` maps every failure to
sengadm's exit codes: 1 refused or not found, 2 bad parameters or database unusable, 3 daemon
unreachable.

This module also renders the `changes` list every write method returns, as a diff, and
holds the help formatter of the store commands.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from sengadm import exitcodes
from sengadm.client import Client, Unreachable
from sengadm.rpccall import exit_code_for
from sengd.rpc.protocol import METHOD_NOT_FOUND, Params, RpcError
from sengd.store.admin import STORE_METHODS
from sengd.store.audit import Actor
from sengd.store.db import create_store_engine, database_url, display_url, migrate
from sengd.store.errors import StoreError


class BackendError(Exception):
    """The backend could not be used at all; `exit_code` is what sengadm exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Backend(ABC):
    """Runs store methods by name; a context manager."""

    offline: bool
    where: str
    """The daemon's socket or the database, for messages."""

    @abstractmethod
    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run `method` with `params`; return its result or raise `RpcError`."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OnlineBackend(Backend):
    """The daemon at a control socket (`Unreachable` becomes `BackendError`, exit 3)."""

    offline = False

    def __init__(self, socket_path: str) -> None:
        self.where = socket_path
        try:
            self._client = Client(socket_path)
        except Unreachable as exc:
            raise BackendError(
                f"daemon unreachable: {exc} (use --db URL to work on the database directly)",
                exitcodes.UNREACHABLE,
            ) from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self._client.call(method, params)
        except Unreachable as exc:
            raise BackendError(f"daemon unreachable: {exc}", exitcodes.UNREACHABLE) from None

    def close(self) -> None:
        self._client.close()


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(Path(path).stat().st_mode)
    except OSError:
        return False


class OfflineBackend(Backend):
    """A database opened directly. `socket_path` is only used to warn that a daemon which
    appears to be running will not see a change before its next reload."""

    offline = True

    def __init__(self, url: str, *, socket_path: str | None = None, actor: Actor | None = None):
        self.actor = actor or Actor.local()
        self.socket_path = socket_path
        try:
            self.engine: Engine = create_store_engine(database_url(url))
        except (ValueError, OSError, SQLAlchemyError) as exc:
            raise BackendError(f"cannot use database {url!r}: {exc}", exitcodes.USAGE) from None
        self.where = display_url(self.engine.url)
        try:
            migrate(self.engine)
        except StoreError as exc:
            self.engine.dispose()
            raise BackendError(f"{self.where}: {exc}", exitcodes.REFUSED) from None
        except (SQLAlchemyError, OSError) as exc:
            self.engine.dispose()
            raise BackendError(f"{self.where}: {exc}", exitcodes.USAGE) from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        store_method = STORE_METHODS.get(method)
        if store_method is None:
            raise RpcError(
                METHOD_NOT_FOUND, f"{method} needs the daemon; it is not available with --db"
            )
        try:
            with Session(self.engine) as session, session.begin():
                result = store_method.handler(session, self.actor, Params(dict(params or {})))
        except (SQLAlchemyError, OSError) as exc:
            raise BackendError(f"{self.where}: {exc}", exitcodes.USAGE) from None
        if store_method.writes and isinstance(result, dict) and result.get("changed"):
            self._warn_running_daemon()
        # What the daemon would have sent: the same JSON, whatever Python types built it.
        return json.loads(json.dumps(result, default=str))

    def _warn_running_daemon(self) -> None:
        if self.socket_path is not None and _is_socket(self.socket_path):
            print(
                f"sengadm: note: changed {self.where} directly; the daemon at "
                f"{self.socket_path} applies it on its next reload (`sengadm reload`)",
                file=sys.stderr,
            )

    def close(self) -> None:
        self.engine.dispose()


def open_backend(args: argparse.Namespace) -> Backend:
    """The backend sengadm's global options ask for: `--db URL` offline, else the daemon."""
    db: str | None = getattr(args, "db", None)
    socket_path: str = args.socket
    if db:
        return OfflineBackend(db, socket_path=socket_path)
    return OnlineBackend(socket_path)


def run_command(args: argparse.Namespace, body: Callable[[Backend], int]) -> int:
    """Open the backend, run `body` with it and turn every failure into a message on stderr
    and an exit code."""
    try:
        with open_backend(args) as backend:
            return body(backend)
    except BackendError as exc:
        print(f"sengadm: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except RpcError as exc:
        print(f"sengadm: {exc.message}", file=sys.stderr)
        data = exc.data if isinstance(exc.data, dict) else {}
        for problem in data.get("problems", []):
            print(f"  {problem}", file=sys.stderr)
        return exit_code_for(exc)


class ManPageFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text like a man page: prose paragraphs are wrapped to the terminal; paragraphs
    with indented lines (examples, file excerpts) are printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.strip("\n").split("\n\n")
        shown = []
        for paragraph in paragraphs:
            if any(line.startswith(" ") for line in paragraph.splitlines()):
                shown.append(textwrap.indent(paragraph, indent))
            else:
                flat = " ".join(paragraph.split())
                shown.append(
                    textwrap.fill(
                        flat,
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,  # never split an --option
                    )
                )
        return "\n\n".join(shown) + "\n"


def print_json(value: Any) -> None:
    """`--json` output: one indented JSON document."""
    print(json.dumps(value, indent=2, sort_keys=True))


# -- rendering changes ---------------------------------------------------------------------

_DEFAULTED = {"allow_debug", "quote_statuses", "tcb_statuses"}


def show_value(key: str, value: Any) -> str:
    """A field of an entry or subnet snapshot as one short human string."""
    if value is None:
        return "(global default)" if key in _DEFAULTED else "-"
    if key == "host_routes":
        return ", ".join(route_text(r) for r in value) or "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def route_text(route: dict[str, Any]) -> str:
    """`HOST -> SUBNET (CIDR)` for one host route of an entry snapshot."""
    return f"{route['host_subnet']} -> {route['enclave_subnet']} ({route['enclave_cidr']})"


def _identity(entry: dict[str, Any]) -> str:
    if entry.get("mr_enclave"):
        return f"MRENCLAVE {entry['mr_enclave']}"
    return f"MRSIGNER {entry['mr_signer']} product {entry['isv_prod_id']}"


def change_lines(change: dict[str, Any]) -> list[str]:
    """One change of a write result as diff lines (`+` created, `-` deleted, `~` changed)."""
    kind, action, name = change["object"], change["action"], change["name"]
    before, after = change.get("before") or {}, change.get("after") or {}
    if action == "create":
        if kind == "subnet":
            mark = ", default" if after.get("marked_default") else ""
            return [f"+ subnet {name}: {after['network']} gateway {after['gateway']}{mark}"]
        if kind == "entry":
            lines = [f"+ entry {name}: {_identity(after)}"]
            lines += [f"    host {route_text(r)}" for r in after.get("host_routes", [])]
            if after.get("categories"):
                lines.append(f"    categories {', '.join(after['categories'])}")
            if after.get("enabled") is False:
                lines.append("    disabled")
            return lines
        return [f"+ {kind} {name}"]
    if action == "delete":
        what = f" {before['network']}" if kind == "subnet" else ""
        return [f"- {kind} {name}{what}"]
    lines = [f"~ {kind} {name}:"]
    for key in change.get("fields", []):
        lines += field_lines(key, before.get(key), after.get(key))
    return lines


def field_lines(key: str, old: Any, new: Any) -> list[str]:
    """How one field changed: `old -> new`, or for two lists the items added and removed."""
    if isinstance(old, list) and isinstance(new, list) and (old or new):
        shown_old = [show_value(key, [item]) for item in old]
        shown_new = [show_value(key, [item]) for item in new]
        lines = [f"    {key}: - {item}" for item in shown_old if item not in shown_new]
        return lines + [f"    {key}: + {item}" for item in shown_new if item not in shown_old]
    return [f"    {key}: {show_value(key, old)} -> {show_value(key, new)}"]


def print_diff(result: dict[str, Any]) -> None:
    """Print the diff of a write result and the sessions the daemon closed because of it."""
    for change in result.get("changes", []):
        for line in change_lines(change):
            print(line)
    for session in result.get("closed_sessions", []) or []:
        print(
            f"closed session {session.get('enclave_ip')} ({session.get('app')}, host "
            f"{session.get('host')})"
        )


def print_changes(result: dict[str, Any]) -> None:
    """`print_diff`, or "nothing changed" for a write that found nothing to do."""
    print_diff(result)
    if not result.get("changes"):
        print("nothing changed")
