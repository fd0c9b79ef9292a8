"""The pub/sub hub: topics, subscribers, fan-out with explicit rules.

Fan-out rules: closed subscribers are skipped and removed; delivery to one
subscriber never waits on another (``push_event`` only enqueues, and a full
queue drops the event and counts it); in-process listeners see every event.

Event names on the wire are the existing CloudiSENSE client's (``data_generated``,
``text_notification``, ...: see docs/protocol.md); a module that has a more precise name for
what happened passes it as ``kind``, and it travels as ``meta.event`` (``log_line``,
``script_output``, ``stats_generated``) for our own dashboard, CLI and rules.

Dynamic topics: a client may create topics (``create_channel``, or by subscribing to a topic
that :meth:`PubSub.configure_dynamic` allows to be created on demand, such as the client's
``/ui/updates``), at most ``per_client`` of them per user at a time (topics that were removed
no longer count; reconnecting does not reset the count). A topic created on demand goes away when
its last subscriber leaves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cloudisense.core import protocol
from cloudisense.core.clients import Client
from cloudisense.core.errors import BadRequest, Conflict, NotFound, TooManyRequests

log = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^/[A-Za-z0-9_.\-/@:]{0,255}$")

Listener = Callable[[dict[str, Any]], None]

#: The names the existing CloudiSENSE client dispatches (anything else it drops).
DATA_EVENT = "data_generated"
ERROR_EVENT = "error_generated"
TEXT_NOTIFICATION = "text_notification"
TEXT_DATA_NOTIFICATION = "text_data_notification"
UI_UPDATE = "ui_update"
PING_EVENT = "ping_generated"
#: ``code`` of a ``text_notification``: how the client colours it.
NOTICE_INFO, NOTICE_SUCCESS, NOTICE_WARNING, NOTICE_ERROR = 1, 2, 3, 4


def covers(patterns: list[str], topic: str) -> bool:
    """Whether ``topic`` is one of ``patterns`` (an entry ending in ``/`` covers the topics under it)."""
    return any(topic == p or (p.endswith("/") and topic.startswith(p)) for p in patterns)


def validate_topic(topic: str) -> str:
    """Topics start with ``/`` and use letters, digits and ``_.-/@:`` (at most 256 characters)."""
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic) or "//" in topic or "/../" in topic + "/":
        raise BadRequest(f"invalid topic {topic!r}: topics start with / and use letters, digits and _.-/@:")
    return topic


@dataclass
class TopicProvider:
    """A module that serves a family of dynamic topics (``/logging/<name>``, ``/script/<id>``).

    ``accepts`` says whether a topic under ``prefix`` exists; ``on_first`` and
    ``on_last`` let the module start and stop producing (a live tail, say).
    """

    prefix: str
    accepts: Callable[[str], bool]
    on_first: Callable[[str], Awaitable[None]] | None = None
    on_last: Callable[[str], Awaitable[None]] | None = None


class PubSub:
    """Channels and their subscribers."""

    def __init__(self, identity: str, on_drop: Callable[[], None] | None = None) -> None:
        self.identity = identity
        self._channels: dict[str, set[Client]] = {}
        self._static: set[str] = set()
        self._providers: list[TopicProvider] = []
        self._listeners: list[Listener] = []
        self._on_drop = on_drop
        self.dropped = 0
        self.published = 0
        #: Topics that subscribing creates when they don't exist (see :meth:`configure_dynamic`).
        self._on_demand: list[str] = []
        self._per_client = 16
        #: Topics each user created that still exist, counted against the limit.
        self._created: dict[str, set[str]] = {}
        #: Topics created on demand: removed again when their last subscriber leaves.
        self._ephemeral: set[str] = set()

    def configure_dynamic(self, on_demand: list[str], per_client: int) -> None:
        """Which topics a subscription creates on demand, and how many topics one user may create."""
        self._on_demand = [validate_topic(t.rstrip("/")) + ("/" if t.endswith("/") else "") for t in on_demand]
        self._per_client = per_client

    # -- topics -----------------------------------------------------------

    def add_static(self, topic: str) -> None:
        """A topic that always exists and can't be removed (``/stats``)."""
        self._static.add(validate_topic(topic))
        self._channels.setdefault(topic, set())

    def add_provider(self, provider: TopicProvider) -> None:
        """Serve dynamic topics under ``provider.prefix``."""
        self._providers.append(provider)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every published event (reactions, federation, agent monitor)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _provider_for(self, topic: str) -> TopicProvider | None:
        for provider in self._providers:
            if topic.startswith(provider.prefix) and provider.accepts(topic):
                return provider
        return None

    def exists(self, topic: str) -> bool:
        """A created, static or provided topic."""
        return topic in self._channels or self._provider_for(topic) is not None

    def on_demand(self, topic: str) -> bool:
        """Whether ``topic`` is created on demand (publishing to it needs no create_channel either)."""
        return covers(self._on_demand, topic)

    def topics(self) -> list[str]:
        """Topics that exist now (not every topic a provider could serve)."""
        return sorted(self._channels)

    def create_channel(self, topic: str, client: Client | None = None) -> None:
        """Create a dynamic topic (counted against the limit of ``client``'s user when given)."""
        validate_topic(topic)
        if topic in self._channels or self._provider_for(topic) is not None:
            raise Conflict(f"topic {topic} already exists")
        self._count_creation(topic, client)
        self._channels[topic] = set()

    def _count_creation(self, topic: str, client: Client | None) -> None:
        if client is None:
            return
        mine = self._created.setdefault(client.user, set())
        mine &= set(self._channels)  # topics removed since no longer count
        if len(mine) >= self._per_client:
            raise TooManyRequests(f"user {client.user} created {len(mine)} topics that still exist (the limit is "
                                  f"{self._per_client}); remove one with remove_channel first")
        mine.add(topic)

    async def remove_channel(self, topic: str) -> None:
        """Remove a dynamic topic and drop its subscribers."""
        validate_topic(topic)
        if topic in self._static:
            raise BadRequest(f"topic {topic} is built in and can't be removed")
        if topic not in self._channels:
            raise NotFound(f"no topic {topic}")
        subscribers = self._channels.pop(topic)
        self._ephemeral.discard(topic)
        provider = self._provider_for(topic)
        if subscribers and provider and provider.on_last:
            await provider.on_last(topic)

    # -- subscriptions ----------------------------------------------------

    async def subscribe(self, topic: str, client: Client) -> None:
        """Add ``client`` to ``topic`` (idempotent); unknown topics are :class:`NotFound`
        unless they may be created on demand."""
        validate_topic(topic)
        provider = self._provider_for(topic)
        if topic not in self._channels and provider is None:
            if not covers(self._on_demand, topic):
                raise NotFound(f"no topic {topic}; create it with create_channel first")
            self._count_creation(topic, client)
            self._channels[topic] = set()
            self._ephemeral.add(topic)
        subscribers = self._channels.setdefault(topic, set())
        first = not subscribers
        subscribers.add(client)
        if first and provider and provider.on_first:
            await provider.on_first(topic)

    async def unsubscribe(self, topic: str, client: Client) -> None:
        """Remove ``client`` from ``topic``."""
        validate_topic(topic)
        subscribers = self._channels.get(topic)
        if not subscribers or client not in subscribers:
            raise NotFound(f"not subscribed to {topic}")
        subscribers.discard(client)
        await self._after_leave(topic)

    async def _after_leave(self, topic: str) -> None:
        subscribers = self._channels.get(topic)
        if subscribers:
            return
        if topic in self._ephemeral:
            self._ephemeral.discard(topic)
            self._channels.pop(topic, None)
            return
        provider = self._provider_for(topic)
        if provider is not None:
            if provider.on_last:
                await provider.on_last(topic)
            if topic not in self._static:
                self._channels.pop(topic, None)

    async def drop_client(self, client: Client) -> None:
        """Forget ``client`` everywhere (it disconnected)."""
        for topic in [t for t, subs in self._channels.items() if client in subs]:
            self._channels[topic].discard(client)
            await self._after_leave(topic)

    def subscribers(self, topic: str) -> int:
        """How many clients listen on ``topic``."""
        return len(self._channels.get(topic, ()))

    def subscriptions(self, client: Client) -> list[str]:
        """The topics ``client`` listens on."""
        return sorted(t for t, subs in self._channels.items() if client in subs)

    # -- publishing -------------------------------------------------------

    def publish(self, topic: str, name: str, data: Any, meta: dict[str, Any] | None = None,
                identity: str | None = None, kind: str | None = None) -> int:
        """Fan an event out to the topic's subscribers and to listeners; returns deliveries.

        ``name`` is the wire name (one the existing client knows, for its live features);
        ``kind`` is our precise name for the event, sent as ``meta.event``.
        """
        if kind is not None:
            meta = {**(meta or {}), "event": kind}
        message = protocol.event(name, topic, protocol.to_jsonable(data), meta, identity)
        return self.deliver(message)

    def deliver(self, message: dict[str, Any]) -> int:
        """Fan out an already built event message (also used for events from other nodes)."""
        self.published += 1
        delivered = 0
        subscribers = self._channels.get(message["topic"], set())
        for client in list(subscribers):
            if client.closed:
                subscribers.discard(client)
                continue
            if client.push_event(message):
                delivered += 1
            else:
                self.dropped += 1
                if self._on_drop:
                    self._on_drop()
        for listener in list(self._listeners):
            try:
                listener(message)
            except Exception:  # one faulty listener must not stop the others
                log.exception("pub/sub listener failed on %s", message.get("topic"))
        return delivered
