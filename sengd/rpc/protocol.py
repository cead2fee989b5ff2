"""The control protocol: newline-delimited JSON-RPC 2.0 over a Unix socket (pure, no I/O).

One request per line, one response per line; notifications (no `id`) from the server carry
subscribed events. `docs/rpc.md` documents every method. The protocol version is reported by
`rpc.hello` and only changes when an existing method changes incompatibly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1024 * 1024
"""A request line longer than this is refused and the connection closed."""

# JSON-RPC 2.0 error codes, and ours (-32000..-32099 is the implementation-defined range).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
FORBIDDEN = -32001
NOT_FOUND = -32002
CONFLICT = -32003
TOO_LARGE = -32004
OVERLOADED = -32005

RequestId = int | str | None


class RpcError(Exception):
    """An error answer: a JSON-RPC code, a precise human message and optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request. `id` is None for a notification (which gets no answer)."""

    id: RequestId
    method: str
    params: dict[str, Any]
    is_notification: bool


def _reject_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_request(line: bytes) -> Request:
    """Parse one request line; raise RpcError (with the request id when it could be read)."""
    try:
        doc = json.loads(line, parse_constant=_reject_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcError(PARSE_ERROR, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RpcError(
            INVALID_REQUEST, "a request must be a JSON object (batches are not supported)"
        )
    raw_id = doc.get("id")
    request_id: RequestId = (
        raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
    )
    if "id" in doc and raw_id is not None and request_id is None:
        raise RpcError(INVALID_REQUEST, "id must be a string, an integer or null")
    if doc.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"', {"id": request_id})
    method = doc.get("method")
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "method must be a non-empty string", {"id": request_id})
    params = doc.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(
            INVALID_PARAMS, "params must be an object (named parameters)", {"id": request_id}
        )
    unknown = set(doc) - {"jsonrpc", "id", "method", "params"}
    if unknown:
        raise RpcError(
            INVALID_REQUEST, f"unknown member(s): {', '.join(sorted(unknown))}", {"id": request_id}
        )
    return Request(request_id, method, params, "id" not in doc)


def encode(doc: dict[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"


def result_line(request_id: RequestId, result: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_line(request_id: RequestId, error: RpcError) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "error": error.as_json()})


def notification_line(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


class Params:
    """Typed access to a request's named parameters; every problem is an INVALID_PARAMS error
    naming the parameter. `done()` refuses parameters the method does not know."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self._used: set[str] = set()

    def _get(self, name: str, kind: type | tuple[type, ...], label: str, default: Any) -> Any:
        self._used.add(name)
        if name not in self._params or self._params[name] is None:
            if default is _REQUIRED:
                raise RpcError(INVALID_PARAMS, f"missing parameter {name!r} ({label})")
            return default
        value = self._params[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise RpcError(INVALID_PARAMS, f"parameter {name!r} must be {label}, not a boolean")
        if not isinstance(value, kind):
            raise RpcError(
                INVALID_PARAMS, f"parameter {name!r} must be {label}, not {type(value).__name__}"
            )
        return value

    def get_str(self, name: str, default: Any = None) -> Any:
        return self._get(name, str, "a string", default)

    def required_str(self, name: str) -> str:
        value: str = self._get(name, str, "a string", _REQUIRED)
        return value

    def get_int(self, name: str, default: Any = None) -> Any:
        return self._get(name, int, "an integer", default)

    def get_bool(self, name: str, default: Any = None) -> Any:
        return self._get(name, bool, "true or false", default)

    def get_strs(self, name: str, default: Any = None) -> Any:
        value = self._get(name, list, "a list of strings", default)
        if value is not default and not all(isinstance(v, str) for v in value):
            raise RpcError(INVALID_PARAMS, f"parameter {name!r} must be a list of strings")
        return value

    def raw(self) -> dict[str, Any]:
        """All parameters, marking them used (for methods that validate them elsewhere)."""
        self._used.update(self._params)
        return dict(self._params)

    def done(self) -> None:
        unknown = set(self._params) - self._used
        if unknown:
            raise RpcError(INVALID_PARAMS, f"unknown parameter(s): {', '.join(sorted(unknown))}")


_REQUIRED = object()
