"""`sengadm` subcommand groups. Each module exposes `register(subparsers)`.

A registered subcommand sets `handler` (a callable taking the parsed namespace and returning an
exit code from `sengadm.exitcodes`) with `parser.set_defaults(handler=...)`.
"""
