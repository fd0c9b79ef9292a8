"""MqttBridge: the router's :class:`~cloudisense.core.router.Remote` over one MQTT connection.

One aiomqtt client per node, reconnected with exponential backoff. While the broker is
down, requests for other nodes answer 503 at once (and the outage is logged once, clearly).

Requests from other nodes run through the local ``MessageRouter.handle_messages()`` with an
in-process client of kind ``federation`` acting as the origin user, its role capped by
``[federation] max_remote_role``: roles, params validation, gates and the audit log apply
here exactly as for a local client. The topic layout and the trust model are in
docs/federation.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cloudisense.core import protocol
from cloudisense.core.clients import AUTOMATED_KINDS, Client, InProcessClient
from cloudisense.core.errors import (
    BadRequest,
    CloudisenseError,
    ConfigError,
    NotFound,
    RequestTimeout,
    TooManyRequests,
    Unavailable,
)
from cloudisense.core.pubsub import TopicProvider, validate_topic
from cloudisense.core.roles import Role
from cloudisense.federation.envelope import (
    EventMessage,
    RequestEnvelope,
    ResponseEnvelope,
    Topics,
    cap_role,
    decode,
    encode,
    presence_payload,
    read_presence,
    topic_forwarded,
    valid_identity,
)

if TYPE_CHECKING:
    from cloudisense.federation.settings import FederationSettings
    from cloudisense.node import Node

try:
    import aiomqtt
except ImportError:  # federation is an optional extra; the module says how to install it
    aiomqtt = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
#: paho's own logger: its socket errors repeat what the bridge's one outage line says, so they are
#: shown only when this logger's level is set explicitly (e.g. to DEBUG while diagnosing).
mqtt_log = logging.getLogger(__name__ + ".mqtt")
if mqtt_log.level == logging.NOTSET:
    mqtt_log.setLevel(logging.CRITICAL)

FEDERATION_KIND = "federation"
#: Requests from other nodes running here at once; more are answered 429.
MAX_REMOTE_INFLIGHT = 64
#: Requests this node may wait on at once; more are answered 429.
MAX_PENDING = 1024
#: Nodes remembered (presence messages are untrusted input: the table must stay bounded).
MAX_NODES = 1000
#: Events waiting to be published; when the broker is slow, newer events are dropped.
EVENT_QUEUE = 1000
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


@dataclass
class NodeInfo:
    """What this node knows about another one."""

    identity: str
    online: bool
    last_seen: int
    topics: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """JSON for ``list_nodes``."""
        return {"identity": self.identity, "online": self.online, "last_seen": self.last_seen,
                "forward_topics": list(self.topics)}


class MqttBridge:
    """Forwards requests and events between this node and the others on one broker."""

    def __init__(self, node: Node, settings: FederationSettings) -> None:
        if aiomqtt is None:
            raise ConfigError("[federation] enabled needs aiomqtt: pip install 'cloudisense[federation]'")
        if not valid_identity(node.identity):
            raise ConfigError(f"identity {node.identity!r} can't be used for federation: use 1-64 letters, "
                              "digits and _.-@: (it is one MQTT topic level)")
        for topic in settings.forward_topics:
            try:
                validate_topic(topic)
            except BadRequest as exc:
                raise ConfigError(f"[federation] forward_topics: {exc.message}") from None
        self.node = node
        self.settings = settings
        self.identity = node.identity
        self.topics = Topics(settings.topic_prefix)
        self.max_role = Role(settings.max_remote_role)
        self.broker = f"{settings.broker_host}:{settings.broker_port}"
        self.nodes: dict[str, NodeInfo] = {}
        self.connected = asyncio.Event()
        self._mqtt: Any = None
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], str]] = {}
        self._wanted: set[tuple[str, str]] = set()  # (identity, topic) of remote events someone here follows
        self._events: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(EVENT_QUEUE)
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    # -- life cycle -------------------------------------------------------

    async def start(self) -> None:
        """Serve ``/<identity>/<topic>`` remote topics, forward local events, connect in the background."""
        self.node.pubsub.add_provider(TopicProvider("/", self._accepts_remote, self._follow, self._unfollow))
        self.node.pubsub.add_listener(self._on_local_event)
        self._main = asyncio.create_task(self._run(), name="federation-mqtt")

    async def stop(self) -> None:
        """Announce ``offline``, disconnect, and answer whatever still waits with 503."""
        self._stopping = True
        self.node.pubsub.remove_listener(self._on_local_event)
        mqtt = self._mqtt
        if mqtt is not None:
            with contextlib.suppress(Exception):  # the broker may already be gone; the last will covers it
                await mqtt.publish(self.topics.presence(self.identity), presence_payload("offline", []),
                                   qos=1, retain=True, timeout=2)
        for task in [*self._tasks, *([self._main] if self._main else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._main] if self._main else [])]:
            with contextlib.suppress(BaseException):
                await task
        self._fail_pending(lambda target: Unavailable(f"node {self.identity} is shutting down; "
                                                      f"{target} was not waited for"))
        # The topic provider stays registered (pub/sub has no removal): with no nodes it accepts nothing.
        self.nodes.clear()
        self._wanted.clear()

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        outage_since: float | None = None
        loop = asyncio.get_running_loop()
        s = self.settings
        while not self._stopping:
            client = aiomqtt.Client(
                s.broker_host, s.broker_port, username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                identifier=f"cloudisense-{self.identity}-{uuid.uuid4().hex[:8]}",
                will=aiomqtt.Will(self.topics.presence(self.identity), presence_payload("offline", []),
                                  qos=1, retain=True),
                keepalive=s.keepalive, timeout=5, max_queued_incoming_messages=10_000, logger=mqtt_log)
            try:
                async with client:
                    await self._session(client, outage_since)
            except aiomqtt.MqttError as exc:
                was_connected = self.connected.is_set()
                self._disconnected()
                if self._stopping:
                    return
                if was_connected:  # a new outage: start again from the shortest wait
                    backoff, outage_since = BACKOFF_FIRST, None
                if outage_since is None:  # one clear line per outage; retries are logged at debug level
                    outage_since = loop.time()
                    what = "lost the connection to" if was_connected else "can't reach"
                    log.warning("federation: %s broker %s (%s); requests for other nodes answer 503 until it "
                                "is back; retrying every %g-%g s", what, self.broker, _why(exc),
                                BACKOFF_FIRST, BACKOFF_MAX)
                else:
                    log.debug("federation: broker %s still unreachable (%s)", self.broker, _why(exc))
            except Exception:  # a bug must not end federation for good: log it and reconnect
                log.exception("federation: the connection to broker %s failed unexpectedly; reconnecting",
                              self.broker)
            finally:
                self._disconnected()
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _session(self, client: Any, outage_since: float | None) -> None:
        """One connection: announce, subscribe, then read until it drops."""
        self._mqtt = client
        await client.subscribe(self.topics.presence_all, qos=1)
        await client.subscribe(self.topics.rpc(self.identity), qos=1)
        await client.subscribe(self.topics.response(self.identity), qos=1)
        for identity, topic in sorted(self._wanted):
            await client.subscribe(self.topics.events(identity, topic), qos=0)
        await client.publish(self.topics.presence(self.identity),
                             presence_payload("online", list(self.settings.forward_topics)), qos=1, retain=True)
        self.connected.set()
        if outage_since is None:
            log.info("federation: node %s connected to broker %s (topic prefix %s)", self.identity, self.broker,
                     self.topics.prefix)
        else:
            log.warning("federation: broker %s is back after %.1f s", self.broker,
                        asyncio.get_running_loop().time() - outage_since)
        sender = asyncio.create_task(self._send_events(client), name="federation-events")
        try:
            async for message in client.messages:
                self._on_message(str(message.topic), message.payload)
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender

    def _disconnected(self) -> None:
        self._mqtt = None
        self.connected.clear()
        self._fail_pending(lambda target: Unavailable(f"lost the federation broker {self.broker} before node "
                                                      f"{target!r} answered; the request may or may not have run"))

    def _fail_pending(self, error: Any) -> None:
        for fut, target in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(error(target))

    # -- Remote protocol --------------------------------------------------

    def knows(self, identity: str) -> bool:
        """Whether ``identity`` is another node seen online."""
        info = self.nodes.get(identity)
        return info is not None and info.online and identity != self.identity

    async def forward(self, request: protocol.RpcRequest, client: Client) -> dict[str, Any]:
        """Run ``request`` on node ``request.service_id`` and return its ``rpc_response``."""
        target = str(request.service_id)
        mqtt = self._require_broker()
        if not self.knows(target):
            online = sorted(n for n in self.nodes if self.knows(n))
            raise NotFound(f"unknown node {target!r}; online nodes: {', '.join(online) or 'none'} (see list_nodes)")
        if len(self._pending) >= MAX_PENDING:
            raise TooManyRequests(f"{MAX_PENDING} requests already wait on other nodes; retry later")
        fid = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[fid] = (fut, target)
        limit = self.settings.request_timeout
        try:
            async with asyncio.timeout(limit):  # one deadline for sending and for the answer
                await self._publish_request(mqtt, target, fid, request, client, reply=True)
                response = await fut
        except TimeoutError:
            raise RequestTimeout(f"node {target!r} did not answer {request.intent} within {limit:g} s "
                                 "([federation] request_timeout); it may be down, overloaded or still running it"
                                 ) from None
        finally:
            self._pending.pop(fid, None)
        response["requestid"] = request.requestid  # the caller's id, whatever the other node echoed
        return response

    async def broadcast(self, request: protocol.RpcRequest, client: Client) -> None:
        """Send ``request`` to every other online node; no answers are awaited."""
        mqtt = self._mqtt
        if mqtt is None:
            log.warning("federation: broadcast of %s not sent: broker %s unreachable", request.intent, self.broker)
            return
        for target in sorted(n for n in self.nodes if self.knows(n)):
            try:
                await self._publish_request(mqtt, target, uuid.uuid4().hex, request, client, reply=False)
            except CloudisenseError as exc:
                log.warning("federation: broadcast of %s to %s failed: %s", request.intent, target, exc.message)

    def _require_broker(self) -> Any:
        if self._mqtt is None:
            raise Unavailable(f"federation broker {self.broker} is unreachable; other nodes can't be reached "
                              "until it is back (this node keeps retrying)")
        return self._mqtt

    async def _publish_request(self, mqtt: Any, target: str, fid: str, request: protocol.RpcRequest,
                               client: Client, *, reply: bool) -> None:
        kind = client.kind if len(client.kind) <= 32 else client.kind[:32]
        envelope = {"v": 1, "fid": fid, "origin": self.identity, "user": client.user, "role": client.role.value,
                    "kind": kind, "reply": reply, "rpc": request.to_message()}
        payload = encode(envelope)
        if len(payload) > self.settings.max_payload_bytes:
            raise BadRequest(f"request of {len(payload)} bytes is over [federation] max_payload_bytes "
                             f"({self.settings.max_payload_bytes})")
        try:
            await mqtt.publish(self.topics.rpc(target), payload, qos=1, timeout=self.settings.request_timeout)
        except aiomqtt.MqttError as exc:
            raise Unavailable(f"could not send the request to node {target!r} through broker {self.broker}: "
                              f"{_why(exc)}") from None

    # -- incoming ---------------------------------------------------------

    def _on_message(self, mqtt_topic: str, payload: Any) -> None:
        """Dispatch one broker message; anything malformed is logged and dropped."""
        try:
            parsed = self.topics.parse(mqtt_topic)
            if parsed is None:
                return
            if parsed.kind == "presence":
                self._on_presence(parsed.identity, payload)
            elif parsed.kind == "rpc" and parsed.identity == self.identity:
                self._on_request(decode(payload, self.settings.max_payload_bytes))
            elif parsed.kind == "response" and parsed.identity == self.identity:
                self._on_response(decode(payload, self.settings.max_payload_bytes))
            elif parsed.kind == "events":
                self._on_remote_event(parsed.identity, parsed.topic, payload)
        except (CloudisenseError, ValidationError) as exc:
            self.dropped += 1
            log.warning("federation: dropped a malformed message on %s: %s", mqtt_topic[:200], _short(exc))
        except Exception:  # a bug here must not end the connection's read loop
            self.dropped += 1
            log.exception("federation: could not handle a message on %s", mqtt_topic[:200])

    def _on_presence(self, identity: str, payload: Any) -> None:
        if identity == self.identity:
            return  # our own retained announcement, echoed back
        presence = read_presence(payload, self.settings.max_payload_bytes)
        if presence is None:  # retained message cleared: the node was retired
            self.nodes.pop(identity, None)
            self._fail_node(identity)
            return
        info = self.nodes.get(identity)
        if info is None:
            if len(self.nodes) >= MAX_NODES:
                log.warning("federation: ignoring node %s: already %d nodes known", identity, MAX_NODES)
                return
            info = self.nodes[identity] = NodeInfo(identity, False, protocol.now_ms())
        online = presence.status == "online"
        if online != info.online:
            log.info("federation: node %s is %s", identity, presence.status)
        info.online = online
        info.last_seen = presence.ts if isinstance(presence.ts, int) and presence.ts > 0 else protocol.now_ms()
        info.topics = presence.topics if online else info.topics
        if not online:
            self._fail_node(identity)

    def _fail_node(self, identity: str) -> None:
        for fut, target in list(self._pending.values()):
            if target == identity and not fut.done():
                fut.set_exception(Unavailable(f"node {identity!r} went offline before answering; "
                                              "the request may or may not have run"))

    def _on_response(self, message: dict[str, Any]) -> None:
        envelope = ResponseEnvelope.model_validate(message)
        entry = self._pending.get(envelope.fid)
        if entry is None:
            log.debug("federation: response %s matches no waiting request (late or not ours)", envelope.fid)
            return
        fut, target = entry
        if envelope.node != target:
            raise BadRequest(f"response {envelope.fid} claims node {envelope.node!r}, the request went to {target!r}")
        self._seen(target)
        if not fut.done():
            fut.set_result(_rebuild(envelope))

    def _on_request(self, message: dict[str, Any]) -> None:
        envelope = RequestEnvelope.model_validate(message)
        if envelope.origin == self.identity:
            raise BadRequest("a request claims to come from this node itself")
        self._seen(envelope.origin)
        if self._running >= MAX_REMOTE_INFLIGHT:
            rid = protocol.read_requestid(envelope.rpc)
            self._spawn(self._reply(envelope, protocol.error(
                rid, 429, f"node {self.identity} already runs {MAX_REMOTE_INFLIGHT} requests of other nodes; "
                          "retry later")))
            return
        self._spawn(self._execute(envelope))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, envelope: RequestEnvelope) -> None:
        """Run a request of another node through the local router, as its user (role capped)."""
        self._running += 1
        role = cap_role(envelope.role, self.max_role)
        # Automated callers (the assistant, MCP, LangChain) keep their kind, so this node's policy
        # gate decides on them too.
        kind = envelope.kind if envelope.kind in AUTOMATED_KINDS else FEDERATION_KIND
        client = InProcessClient(self.node.router, envelope.user, role, kind=kind)
        client.id = f"{FEDERATION_KIND}:{envelope.origin}:{client.id}"
        rpc = {k: v for k, v in envelope.rpc.items() if k != "serviceId"}  # runs here, never forwarded again
        try:
            await self.node.router.handle_messages(rpc, client)
        finally:
            self._running -= 1
            # Only the response travels back: subscriptions this request made die with it.
            await self.node.pubsub.drop_client(client)
        if envelope.reply:
            response = client.responses[-1] if client.responses else protocol.error(
                protocol.read_requestid(rpc), 500, "no answer from the router; see the server log")
            await self._reply(envelope, response)

    async def _reply(self, envelope: RequestEnvelope, response: dict[str, Any]) -> None:
        if not envelope.reply:
            return
        payload = encode({"v": 1, "fid": envelope.fid, "node": self.identity, "response": response})
        if len(payload) > self.settings.max_payload_bytes:
            payload = encode({"v": 1, "fid": envelope.fid, "node": self.identity, "response": protocol.error(
                response.get("requestid"), 500,
                f"the answer from node {self.identity} is {len(payload)} bytes, over [federation] "
                f"max_payload_bytes ({self.settings.max_payload_bytes}); ask for less")})
        mqtt = self._mqtt
        if mqtt is None:
            log.warning("federation: answer to %s from %s lost: broker unreachable", envelope.fid, envelope.origin)
            return
        try:
            await mqtt.publish(self.topics.response(envelope.origin), payload, qos=1,
                               timeout=self.settings.request_timeout)
        except aiomqtt.MqttError as exc:
            log.warning("federation: could not answer %s to node %s: %s", envelope.fid, envelope.origin, _why(exc))

    def _seen(self, identity: str) -> None:
        info = self.nodes.get(identity)
        if info is not None:
            info.last_seen = protocol.now_ms()

    # -- events -----------------------------------------------------------

    def _on_local_event(self, message: dict[str, Any]) -> None:
        """Queue a local event of a forwarded topic for the broker (never events from other nodes)."""
        if message.get("identity") not in (None, self.identity) or self._mqtt is None:
            return
        topic = message.get("topic")
        if not isinstance(topic, str) or not topic_forwarded(topic, self.settings.forward_topics):
            return
        payload = encode({**message, "identity": self.identity})
        if len(payload) > self.settings.max_payload_bytes:
            self.dropped += 1
            return
        try:
            self._events.put_nowait((self.topics.events(self.identity, topic), payload))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _send_events(self, mqtt: Any) -> None:
        while True:
            mqtt_topic, payload = await self._events.get()
            try:
                await mqtt.publish(mqtt_topic, payload, qos=0, timeout=5)
            except aiomqtt.MqttError as exc:
                self.dropped += 1
                log.debug("federation: event on %s not sent: %s", mqtt_topic, _why(exc))

    def _split_remote(self, topic: str) -> tuple[str, str] | None:
        """``/node-b/stats`` → ``("node-b", "/stats")`` when node-b is online and forwards ``/stats``."""
        head, _, rest = topic[1:].partition("/")
        if not rest or not self.knows(head):
            return None
        local = "/" + rest
        if not topic_forwarded(local, self.nodes[head].topics):
            return None
        return head, local

    def _accepts_remote(self, topic: str) -> bool:
        return self._split_remote(topic) is not None

    async def _follow(self, topic: str) -> None:
        split = self._split_remote(topic)
        if split is None:
            return
        self._wanted.add(split)
        mqtt = self._mqtt
        if mqtt is not None:  # else subscribed when the connection is back
            try:
                await mqtt.subscribe(self.topics.events(*split), qos=0, timeout=5)
            except aiomqtt.MqttError as exc:
                log.warning("federation: could not follow %s yet (%s); retried on reconnect", topic, _why(exc))

    async def _unfollow(self, topic: str) -> None:
        head, _, rest = topic[1:].partition("/")
        key = (head, "/" + rest)
        if key not in self._wanted:
            return
        self._wanted.discard(key)
        mqtt = self._mqtt
        if mqtt is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await mqtt.unsubscribe(self.topics.events(*key), timeout=5)

    def _on_remote_event(self, identity: str, topic: str, payload: Any) -> None:
        if (identity, topic) not in self._wanted:
            return
        event = EventMessage.model_validate(decode(payload, self.settings.max_payload_bytes))
        if event.topic != topic:
            raise BadRequest(f"event names topic {event.topic!r} but came on {topic!r}")
        self._seen(identity)
        message = protocol.event(event.name, f"/{identity}{topic}", event.data, event.meta, identity)
        if event.timestamp is not None:
            message["timestamp"] = event.timestamp
        self.node.pubsub.deliver(message)

    # -- status -----------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Connection state and known nodes, for ``list_nodes``."""
        return {"identity": self.identity, "broker": self.broker, "connected": self.connected.is_set(),
                "nodes": [info.describe() for _, info in sorted(self.nodes.items())],
                "dropped_messages": self.dropped}


def _rebuild(envelope: ResponseEnvelope) -> dict[str, Any]:
    """A clean ``rpc_response`` from a checked envelope (only the fields protocol.md defines)."""
    r = envelope.response
    timestamp = r.timestamp if r.timestamp is not None else protocol.now_ms()
    if r.status == "success":
        message = protocol.success(r.requestid, r.data, code=r.code)
    else:
        message = protocol.error(r.requestid, r.code, r.message or f"node {envelope.node} answered {r.code}")
    message["timestamp"] = timestamp
    return message


def _why(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text[:300]


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return protocol.describe_validation_error(exc, prefix="message")
    if isinstance(exc, CloudisenseError):
        return exc.message[:300]
    return _why(exc)
