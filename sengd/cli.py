"""`sengd`: argument parsing, exit codes and signal wiring of the gateway daemon; nothing else."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sengd import __version__

EXIT_OK = 0
EXIT_RUNTIME_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG_ERROR = 3

EPILOG = """\
signals:
  SIGTERM, SIGINT  close every tunnel (close_notify), end every lease, remove the TUN, exit 0
  SIGHUP           reload the config's policy knobs and the allowlist; close exactly the
                   sessions the new policy no longer admits

exit status:
  0  stopped cleanly (or --check-config: the configuration is valid)
  1  could not start or failed while running (the log says why)
  2  usage error
  3  the configuration is invalid (the message names the file, the key and the reason)
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the `sengd` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sengd",
        description=(
            "SGX-Enforcing Network Gateway daemon. Runs in the foreground and logs to stderr "
            "(systemd style); without --config it runs on its embedded defaults."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sengd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="appliance configuration (TOML); default: the embedded defaults",
    )
    parser.add_argument(
        "--check-config",
        nargs="?",
        const=True,
        metavar="PATH",
        help="validate the configuration (PATH, or --config's) and exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sengd` with `argv` and return its exit code."""
    args = build_parser().parse_args(argv)
    from sengd import config as config_mod

    path = args.check_config if isinstance(args.check_config, str) else args.config
    try:
        config = config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"sengd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    if args.check_config:
        print(f"sengd: configuration {config.source} is valid")
        return EXIT_OK

    from sengd import daemon, eventlog

    eventlog.setup(config.gateway.log_level)
    try:
        daemon.run(config)
    except daemon.StartupError as exc:
        logging.getLogger("sengd").error("event=start-failed reason=%s", exc)
        print(f"sengd: cannot start: {exc}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
