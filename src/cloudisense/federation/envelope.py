"""Federation messages on the broker: topic layout, envelopes and their validation (no I/O).

Everything that comes off the broker is untrusted input: :func:`decode` bounds the size,
refuses what is not a JSON object (or nests too deeply, or holds invalid Unicode), and the
pydantic models below check each envelope's shape before anything acts on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudisense.core import protocol
from cloudisense.core.errors import BadRequest
from cloudisense.core.pubsub import validate_topic
from cloudisense.core.roles import Role

VERSION: Final = 1
#: Identities are single MQTT topic levels: no ``/``, ``+``, ``#`` (and none of ``*``, the broadcast id).
IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.\-@:]{1,64}$")
_FID = r"^[A-Za-z0-9_\-]{1,64}$"
_KIND = r"^[A-Za-z0-9_\-]{1,32}$"
#: At most this many topics in a presence announcement.
MAX_ANNOUNCED_TOPICS = 64
_ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def valid_identity(identity: object) -> bool:
    """Whether ``identity`` can name a node on the broker."""
    return isinstance(identity, str) and bool(IDENTITY_RE.match(identity))


def cap_role(role: Role, ceiling: Role) -> Role:
    """The lower of ``role`` and ``ceiling``."""
    return role if _ROLE_RANK[role] <= _ROLE_RANK[ceiling] else ceiling


def topic_forwarded(topic: str, patterns: list[str]) -> bool:
    """Whether ``topic`` matches a ``forward_topics`` entry (exact, or under an entry ending in ``/``)."""
    return any(topic.startswith(p) and len(topic) > len(p) if p.endswith("/") else topic == p for p in patterns)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestEnvelope(_Wire):
    """A request for node ``<identity>``, published on ``<p>/<identity>/rpc``."""

    v: Literal[1] = VERSION
    fid: str = Field(pattern=_FID, description="federation-level id that the response carries back")
    origin: str = Field(pattern=IDENTITY_RE.pattern, description="node that asks (answers go to its response topic)")
    user: str = Field(min_length=1, max_length=128)
    role: Role
    kind: str = Field(pattern=_KIND, description="the origin client's kind (websocket, agent, ...)")
    reply: bool = Field(description="false for broadcasts: no response is published")
    rpc: dict[str, Any]


class RpcResponse(_Wire):
    """An ``rpc_response`` as protocol.md defines it."""

    type: Literal["rpc_response"]
    requestid: str | None = Field(None, max_length=protocol.MAX_REQUESTID_LEN)
    status: Literal["success", "error"]
    code: int = Field(ge=100, le=599)
    data: Any = None
    message: str | None = Field(None, max_length=10_000)
    timestamp: int | None = None


class ResponseEnvelope(_Wire):
    """An answer, published on ``<p>/<origin>/response``."""

    v: Literal[1] = VERSION
    fid: str = Field(pattern=_FID)
    node: str = Field(pattern=IDENTITY_RE.pattern, description="node that ran the request")
    response: RpcResponse


class EventMessage(_Wire):
    """A pub/sub event forwarded on ``<p>/<identity>/events/<topic>``."""

    type: Literal["event"]
    name: str = Field(min_length=1, max_length=128)
    topic: str = Field(min_length=1, max_length=256)
    data: Any = None
    meta: dict[str, Any] = Field(default_factory=dict)
    timestamp: int | None = None
    identity: str | None = Field(None, max_length=64)


class Presence(_Wire):
    """A node's retained announcement on ``<p>/presence/<identity>``."""

    status: Literal["online", "offline"]
    topics: list[str] = Field(default_factory=list, max_length=MAX_ANNOUNCED_TOPICS)
    ts: int | None = None


@dataclass(frozen=True)
class Parsed:
    """What an MQTT topic under the prefix addresses."""

    kind: Literal["presence", "rpc", "response", "events"]
    identity: str
    #: For events: the node's local topic (``/stats``).
    topic: str = ""


class Topics:
    """The topic layout under ``topic_prefix`` (see docs/federation.md)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip("/")

    def presence(self, identity: str) -> str:
        """Retained ``online``/``offline`` state of a node."""
        return f"{self.prefix}/presence/{identity}"

    @property
    def presence_all(self) -> str:
        """Filter for every node's presence."""
        return f"{self.prefix}/presence/+"

    def rpc(self, identity: str) -> str:
        """Requests that node ``identity`` runs."""
        return f"{self.prefix}/{identity}/rpc"

    def response(self, identity: str) -> str:
        """Answers to requests that node ``identity`` sent."""
        return f"{self.prefix}/{identity}/response"

    def events(self, identity: str, topic: str) -> str:
        """Events of node ``identity``'s local ``topic`` (``/stats`` → ``.../events/stats``)."""
        return f"{self.prefix}/{identity}/events{topic}"

    def parse(self, mqtt_topic: str) -> Parsed | None:
        """What ``mqtt_topic`` addresses, or ``None`` for anything outside the layout."""
        head = self.prefix + "/"
        if not mqtt_topic.startswith(head):
            return None
        parts = mqtt_topic[len(head):].split("/")
        if len(parts) == 2 and parts[0] == "presence" and valid_identity(parts[1]):
            return Parsed("presence", parts[1])
        if len(parts) < 2 or not valid_identity(parts[0]):
            return None
        if len(parts) == 2 and parts[1] in ("rpc", "response"):
            return Parsed(parts[1], parts[0])  # type: ignore[arg-type]
        if len(parts) >= 3 and parts[1] == "events":
            topic = "/" + "/".join(parts[2:])
            try:
                validate_topic(topic)
            except BadRequest:
                return None
            return Parsed("events", parts[0], topic)
        return None


def decode(payload: bytes | bytearray | str, max_bytes: int) -> dict[str, Any]:
    """A JSON object from a broker payload, else :class:`BadRequest` saying why."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    if len(payload) > max_bytes:
        raise BadRequest(f"payload of {len(payload)} bytes is over federation.max_payload_bytes ({max_bytes})")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("payload is not UTF-8") from None
    value = protocol.decode_frame(text)
    # Bounds nesting and refuses lone surrogates anywhere: the values travel on to browsers and the audit log.
    protocol.check_params(value)
    return value


def encode(message: dict[str, Any]) -> bytes:
    """The wire form of an envelope (compact JSON, UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def presence_payload(status: str, topics: list[str]) -> bytes:
    """A presence announcement."""
    return encode({"status": status, "topics": topics, "ts": protocol.now_ms()})


def read_presence(payload: bytes | bytearray | str, max_bytes: int) -> Presence | None:
    """A presence announcement; bare ``online``/``offline`` are accepted; ``None`` for an empty payload."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if not raw:
        return None
    if raw.strip() in (b"online", b"offline"):
        return Presence(status=raw.strip().decode())
    presence = Presence.model_validate(decode(raw, max_bytes))
    for topic in presence.topics:
        validate_topic(topic)
    return presence
