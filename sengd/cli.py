"""`sengd`: argument parsing, exit codes and signal wiring of the gateway daemon; nothing else."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sengd import __version__

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG_ERROR = 3


def build_parser() -> argparse.ArgumentParser:
    """Return the `sengd` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sengd",
        description="SGX-Enforcing Network Gateway daemon.",
    )
    parser.add_argument("--version", action="version", version=f"sengd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sengd` with `argv` and return its exit code."""
    build_parser().parse_args(argv)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
