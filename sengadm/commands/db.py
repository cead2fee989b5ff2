"""`sengadm db`: the database itself: schema upgrade and status, import of legacy SENG files.

These commands work on the database directly (not through the daemon), so they also work
while the daemon is stopped, e.g. before its first start or when it refuses an outdated schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from sengadm import exitcodes
from sengd.store.db import (
    DEFAULT_DATABASE_URL,
    SchemaState,
    create_store_engine,
    database_url,
    display_url,
    migrate,
    schema_status,
)
from sengd.store.errors import LegacyImportError, StoreError
from sengd.store.legacy import ImportReport, import_legacy_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `db` command group."""
    db = subparsers.add_parser(
        "db",
        help="database schema and legacy import",
        description="Manage the gateway database (SQLite file or PostgreSQL).",
    )
    commands = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND")

    def add_db_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--db",
            metavar="URL",
            default=argparse.SUPPRESS,  # so that sengadm's global --db is not overridden
            help="SQLAlchemy URL (sqlite:////path or postgresql+psycopg://user@host/db) or the "
            f"path of an SQLite file (default: {DEFAULT_DATABASE_URL})",
        )

    upgrade = commands.add_parser(
        "upgrade",
        help="upgrade the schema to this release",
        description="Upgrade the database schema to this release's revision (creating it in an "
        "empty database). Exit 0 when done or already current, 1 when the database belongs to "
        "a newer release, 2 when it cannot be reached.",
    )
    add_db_option(upgrade)
    upgrade.set_defaults(handler=cmd_upgrade)

    status = commands.add_parser(
        "status",
        help="show the schema revision",
        description="Show the database's schema revision and this release's. Exit 0 when "
        "current, 1 when empty, outdated or newer, 2 when it cannot be reached.",
    )
    add_db_option(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=cmd_status)

    legacy = commands.add_parser(
        "import-legacy",
        help="import an original SENG server database",
        description="Import the enclave subnets, applications, host-subnet mappings and "
        "categories of an original SENG server SQLite file (vanilla or netfilter schema). "
        "An empty database gets the schema first; an outdated one must be upgraded with "
        "`sengadm db upgrade`. Existing data is never overwritten; differences are reported "
        "as conflicts. Importing twice changes nothing. Exit 0 when imported without "
        "conflicts, 1 when some rows were not imported (see the conflicts) or the database "
        "needs an upgrade, 2 when the file is not a SENG database or the database cannot be "
        "reached.",
    )
    legacy.add_argument("file", metavar="FILE.db", type=Path, help="the legacy SQLite file")
    add_db_option(legacy)
    legacy.add_argument("--dry-run", action="store_true", help="report, change nothing")
    legacy.add_argument("--json", action="store_true", help="print the report as JSON")
    legacy.set_defaults(handler=cmd_import_legacy)

    db.set_defaults(handler=lambda _args: _usage(db))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _engine(args: argparse.Namespace) -> Engine | None:
    try:
        return create_store_engine(database_url(args.db or DEFAULT_DATABASE_URL))
    except (ValueError, OSError, SQLAlchemyError) as exc:
        print(f"sengadm db: cannot use database {args.db!r}: {exc}", file=sys.stderr)
        return None


def _fail(engine: Engine, exc: Exception) -> int:
    print(f"sengadm db: {display_url(engine.url)}: {exc}", file=sys.stderr)
    return exitcodes.USAGE


def cmd_upgrade(args: argparse.Namespace) -> int:
    """`sengadm db upgrade`: migrate to head."""
    engine = _engine(args)
    if engine is None:
        return exitcodes.USAGE
    try:
        before, after = migrate(engine)
    except StoreError as exc:
        print(f"sengadm db upgrade: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    except (SQLAlchemyError, OSError) as exc:
        return _fail(engine, exc)
    finally:
        engine.dispose()
    where = display_url(engine.url)
    if before == after:
        print(f"{where}: already at revision {after}")
    else:
        print(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")
    return exitcodes.OK


def cmd_status(args: argparse.Namespace) -> int:
    """`sengadm db status`: the revision and whether an upgrade is needed."""
    engine = _engine(args)
    if engine is None:
        return exitcodes.USAGE
    try:
        status = schema_status(engine)
    except (SQLAlchemyError, OSError) as exc:
        return _fail(engine, exc)
    finally:
        engine.dispose()
    where = display_url(engine.url)
    if args.json:
        print(
            json.dumps(
                {
                    "database": where,
                    "current": status.current,
                    "head": status.head,
                    "state": str(status.state),
                }
            )
        )
    else:
        explanation = {
            SchemaState.CURRENT: "up to date",
            SchemaState.EMPTY: "no schema yet: run `sengadm db upgrade`",
            SchemaState.OUTDATED: "older than this release: run `sengadm db upgrade`",
            SchemaState.TOO_NEW: "written by a newer release: upgrade seng-gateway",
        }[status.state]
        print(f"database: {where}")
        print(f"revision: {status.current or '-'} (this release: {status.head})")
        print(f"state:    {status.state} ({explanation})")
    return exitcodes.OK if status.state is SchemaState.CURRENT else exitcodes.REFUSED


def _print_report(report: ImportReport) -> None:
    mode = "dry run, nothing changed: " if report.dry_run else ""
    print(f"{report.source}: {report.schema} SENG database")
    sections: list[tuple[str, list[str]]] = [
        ("would change" if report.dry_run else "changed", report.changes),
        ("already present", report.unchanged),
        ("conflicts (not imported)", report.conflicts),
        ("notes", report.notes),
    ]
    for title, lines in sections:
        if lines:
            print(f"{title}:")
            for line in lines:
                print(f"  {line}")
    counts: dict[str, Any] = {
        "subnets created": report.subnets_created,
        "entries created": report.entries_created,
        "entries updated": report.entries_updated,
        "host routes added": report.routes_added,
        "categories created": report.categories_created,
        "category links added": report.category_links_added,
        "conflicts": len(report.conflicts),
    }
    print(mode + ", ".join(f"{name}: {value}" for name, value in counts.items()))


def cmd_import_legacy(args: argparse.Namespace) -> int:
    """`sengadm db import-legacy`: import an original SENG database."""
    engine = _engine(args)
    if engine is None:
        return exitcodes.USAGE
    try:
        report = import_legacy_file(engine, args.file, dry_run=args.dry_run)
    except LegacyImportError as exc:
        print(f"sengadm db import-legacy: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except StoreError as exc:
        print(f"sengadm db import-legacy: {exc}", file=sys.stderr)
        return exitcodes.REFUSED
    except (SQLAlchemyError, OSError) as exc:
        return _fail(engine, exc)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        _print_report(report)
    return exitcodes.REFUSED if report.conflicts else exitcodes.OK
