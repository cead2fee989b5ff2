"""A thin ctypes binding of libnftables, the library behind the `nft` command.

Why this and not `nft -j -f -` in a subprocess or a package from PyPI:
- The official Python binding (`nftables.py`, Debian's python3-nftables) is not published on
  PyPI; the PyPI packages that carry it (pip-nftables, oxl-libnftables, ansibleguy-nftables)
  are third-party copies, not maintained by the netfilter project. The part sengd needs is five
  C functions, so we bind them ourselves.
- In-process calls cost about 0.1 ms per element change, where forking `nft` costs several
  milliseconds of the event loop per session (measured in tests/integration/test_firewall.py).
- The input is what `nft -j` reads: the JSON schema of libnftables-json(5), so sengd never
  builds nft command strings from names. The only native-syntax input is the fixed `include`
  of the administrator's rules file (`sengd.net.nft`), which nft's JSON has no form for.

The context is opened in the calling thread's network namespace and keeps its netlink socket,
so one `Nftables` works on the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

_OUTPUT_JSON = 1 << 4
_OUTPUT_HANDLE = 1 << 3
LIBRARY = "libnftables.so.1"


class NftError(Exception):
    """libnftables is missing, or the kernel refused a command (message: nft's own words)."""


def _load() -> ctypes.CDLL:
    candidates = [LIBRARY]
    found = ctypes.util.find_library("nftables")
    if found is not None and found != LIBRARY:
        candidates.append(found)
    problems = []
    for candidate in candidates:
        try:
            lib = ctypes.CDLL(candidate, use_errno=True)
            break
        except OSError as exc:
            problems.append(str(exc))
    else:
        raise NftError(
            f"cannot load {LIBRARY} ({'; '.join(problems)}): install the nftables package "
            "(Debian: nftables, which brings libnftables1)"
        )
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.restype = None
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


class Nftables:
    """One libnftables context. Not thread-safe; close it when done."""

    def __init__(self) -> None:
        self._lib = _load()
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        self._ctx: int | None = ctx
        if self._lib.nft_ctx_buffer_output(ctx) or self._lib.nft_ctx_buffer_error(ctx):
            self.close()
            raise NftError("cannot buffer libnftables output")

    def _run(self, text: str, flags: int) -> str:
        if self._ctx is None:
            raise NftError("the nftables context is closed")
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        errors = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftError(_tidy(errors) or f"nft failed with code {rc}")
        return output

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run a JSON batch (one kernel transaction: all or nothing); return listed objects."""
        output = self._run(json.dumps({"nftables": commands}), _OUTPUT_JSON | _OUTPUT_HANDLE)
        if not output.strip():
            return []
        document = json.loads(output)
        items: list[dict[str, Any]] = document.get("nftables", [])
        return [item for item in items if "metainfo" not in item]

    def run_native(self, script: str) -> None:
        """Run nft's own language (one transaction). Used only for `include`."""
        self._run(script, 0)

    def close(self) -> None:
        """Free the context (and its netlink socket)."""
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


def _tidy(errors: str) -> str:
    """nft's error text without the empty lines and the `internal:0:0-0:` location of JSON."""
    lines = [line.replace("internal:0:0-0: ", "") for line in errors.splitlines()]
    return "\n".join(line for line in lines if line.strip())
