"""Wire messages of protocol.md: parsing requests, building responses and events (no I/O)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from cloudisense.core.errors import BadRequest

MAX_REQUESTID_LEN = 128
MAX_INTENT_LEN = 128
#: Params nested deeper than this are refused: real params nest a few levels, and the
#: recursive code after parsing (validation, redaction, JSON encoding) must stay far from
#: Python's recursion limit whatever a client sends.
MAX_PARAMS_DEPTH = 64
#: An error message names at most this many problems.
MAX_PROBLEMS = 5


def now_ms() -> int:
    """Epoch milliseconds, the protocol's timestamp unit."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class RpcRequest:
    """A parsed ``{"type": "rpc", ...}`` message."""

    requestid: str
    intent: str
    params: dict[str, Any] = field(default_factory=dict)
    service_id: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The wire form."""
        msg: dict[str, Any] = {"type": "rpc", "requestid": self.requestid, "intent": self.intent, "params": self.params}
        if self.service_id is not None:
            msg["serviceId"] = self.service_id
        return msg


def decode_frame(frame: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """A JSON object from a text frame (or an already decoded dict), else :class:`BadRequest`."""
    if isinstance(frame, dict):
        return frame
    try:
        # orjson is several times faster and refuses NaN, Infinity and 1e999 by itself.
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:
        # Rare frames orjson refuses but that still deserve an answer to their requestid (lone
        # surrogates, numbers too big for a double) go through the stdlib decoder and the checks
        # of :func:`check_params`, which refuse them with the requestid.
        value = _slow_decode(frame)
    if not isinstance(value, dict):
        raise BadRequest("message must be a JSON object")
    return value


class BadFrame(BadRequest):
    """A frame refused as a whole, still answered to its ``requestid`` when one could be read."""

    def __init__(self, message: str, requestid: str | None) -> None:
        super().__init__(message)
        self.requestid = requestid


def _slow_decode(frame: str | bytes) -> Any:
    try:
        value = _DECODER.decode(frame if isinstance(frame, str) else frame.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("message is not valid JSON") from None
    except RecursionError:  # json.loads recurses once per nesting level
        raise BadRequest(f"message nests too deeply (params may nest at most {MAX_PARAMS_DEPTH} levels)") from None
    # The stdlib reads 1e999 as infinity: such a number must never reach an action or storage.
    if _has_non_finite(value):
        raise BadFrame(NON_FINITE, read_requestid(value) if isinstance(value, dict) else None)
    return value


NON_FINITE = "message holds a number too large for JSON (such as 1e999); numbers must be finite"


def _has_non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: accepted, they would be echoed to browsers that can't parse them.
    raise ValueError(f"{name} is not JSON")


#: One decoder for every frame (``json.loads`` with options would build a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _valid_text(text: str) -> bool:
    """False for strings with lone surrogates (``"\\ud800"`` escapes): they can't be stored or logged as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_params(params: dict[str, Any]) -> None:
    """Refuse params nested deeper than :data:`MAX_PARAMS_DEPTH`, holding invalid Unicode or non-finite numbers."""
    stack: list[tuple[Any, int]] = [(params, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_PARAMS_DEPTH:
                raise BadRequest(f"params nest deeper than {MAX_PARAMS_DEPTH} levels")
            for key, item in value.items():
                if isinstance(key, str) and not _valid_text(key):
                    raise BadRequest("params contain invalid Unicode (a lone surrogate)")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_PARAMS_DEPTH:
                raise BadRequest(f"params nest deeper than {MAX_PARAMS_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not _valid_text(value):
            raise BadRequest("params contain invalid Unicode (a lone surrogate)")
        elif isinstance(value, float) and not math.isfinite(value):  # in-process callers pass dicts
            raise BadRequest(NON_FINITE)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for echoing client input in error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def read_requestid(message: dict[str, Any]) -> str | None:
    """The ``requestid`` if it is a usable string, for addressing an error answer."""
    rid = message.get("requestid")
    if isinstance(rid, str) and 0 < len(rid) <= MAX_REQUESTID_LEN:
        return rid
    return None


def parse_rpc(message: dict[str, Any]) -> RpcRequest:
    """Validate the envelope of an RPC request (params are validated later, per intent)."""
    rid = message.get("requestid")
    if not isinstance(rid, str) or not rid:
        raise BadRequest("requestid must be a non-empty string")
    if len(rid) > MAX_REQUESTID_LEN:
        raise BadRequest(f"requestid is longer than {MAX_REQUESTID_LEN} characters")
    intent = message.get("intent")
    if not isinstance(intent, str) or not intent:
        raise BadRequest("intent must be a non-empty string")
    if len(intent) > MAX_INTENT_LEN:
        raise BadRequest(f"intent is longer than {MAX_INTENT_LEN} characters")
    if not _valid_text(intent):
        raise BadRequest("intent contains invalid Unicode (a lone surrogate)")
    params = message.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object")
    if params:
        check_params(params)
    service = message.get("serviceId")
    if service is not None and (not isinstance(service, str) or not service):
        raise BadRequest("serviceId must be a non-empty string")
    if service is not None and not _valid_text(service):
        raise BadRequest("serviceId contains invalid Unicode (a lone surrogate)")
    return RpcRequest(rid, intent, params, service)


def success(requestid: str | None, data: Any, code: int = 200) -> dict[str, Any]:
    """A success ``rpc_response``."""
    return {"type": "rpc_response", "requestid": requestid, "status": "success", "code": code,
            "data": data, "timestamp": now_ms()}


def error(requestid: str | None, code: int, message: str) -> dict[str, Any]:
    """An error ``rpc_response``."""
    return {"type": "rpc_response", "requestid": requestid, "status": "error", "code": code,
            "message": message, "timestamp": now_ms()}


def event(name: str, topic: str, data: Any, meta: dict[str, Any] | None = None,
          identity: str | None = None) -> dict[str, Any]:
    """A pub/sub ``event`` message."""
    msg: dict[str, Any] = {"type": "event", "name": name, "topic": topic, "data": data,
                           "meta": meta or {}, "timestamp": now_ms()}
    if identity is not None:
        msg["identity"] = identity
    return msg


def describe_validation_error(exc: ValidationError, prefix: str = "params") -> str:
    """``params.topic: field required``-style text, one problem per ``;`` (at most :data:`MAX_PROBLEMS`)."""
    parts = []
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    for item in problems[:MAX_PROBLEMS]:
        # Field names come from the client: cut long ones so the answer stays small.
        loc = ".".join(str(p) if len(str(p)) <= 64 else str(p)[:64] + "..." for p in (prefix, *item["loc"]))
        msg = item["msg"]
        parts.append(f"{loc}: {msg[:1].lower() + msg[1:]}")
    if len(problems) > MAX_PROBLEMS:
        parts.append(f"and {len(problems) - MAX_PROBLEMS} more problems")
    return "; ".join(parts)


def dumps(message: Any) -> str:
    """``message`` as JSON text for the wire (non-finite floats become ``null``: always valid JSON).

    orjson first (the hot path); values it can't take (integers over 64 bits, odd key types) go
    through the stdlib. Raises ``ValueError``/``TypeError`` when neither can encode it.
    """
    return dumps_bytes(message).decode("utf-8")


def dumps_bytes(message: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes, what a socket takes (no decode and re-encode of each answer)."""
    try:
        return orjson.dumps(message, default=str)
    except TypeError:
        return json.dumps(_finite(message), default=str, allow_nan=False).encode("utf-8")


def _finite(value: Any) -> Any:
    """A copy with non-finite floats as ``None`` (what orjson writes), for the stdlib encoder."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_jsonable(value: Any) -> Any:
    """Make an action's result JSON-ready (pydantic models are dumped)."""
    # Exact types first: this walks every result, and most of it is plain JSON already.
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list:
        return [to_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value
