"""Sans-IO tunnel protocol: DTLS endpoint, setup messages, IPv4 checks, session state machine.

Nothing in this package opens a socket, reads a clock or touches the kernel: callers pass bytes
and the current time in and take bytes and events out.
"""
