"""The dashboard's screens: its places (sessions, events, allowlist, subnets) and dialogs."""
