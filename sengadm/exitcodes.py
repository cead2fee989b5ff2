"""Exit codes shared by every `sengadm` subcommand (documented in `sengadm --help`)."""

OK = 0
"""The command did what was asked (for verification commands: the evidence is valid)."""
REFUSED = 1
"""Refused or not found: the daemon or the verifier said no, or the object does not exist."""
USAGE = 2
"""Usage error, unreadable input file or other local I/O error."""
UNREACHABLE = 3
"""The daemon's control socket could not be reached."""
