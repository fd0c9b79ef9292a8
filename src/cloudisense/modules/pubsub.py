"""Channel intents of protocol.md: subscribe, unsubscribe, publish, create, remove; and the ``/ping``.

``publish_channel`` sends what the existing client can dispatch: ``ui_update`` on the ``/ui/``
topics, ``data_generated`` elsewhere (``meta.event = "message"``, ``meta.from`` = the sender).
Topics listed in ``[pubsub] on_demand_topics`` are created by subscribing to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import Field, field_validator

from cloudisense.config import Section
from cloudisense.core.context import ActionContext
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import DATA_EVENT, PING_EVENT, UI_UPDATE, validate_topic

log = logging.getLogger(__name__)

PING_TOPIC = "/ping"
#: Topics whose events are the client's UI data (``ui_update``).
UI_PREFIX = "/ui/"


class PubSubSettings(Section):
    """Topics clients may create, and the liveness ping."""

    #: Topics a subscription creates when they don't exist yet (an entry ending in ``/`` covers
    #: the topics under it); the existing client subscribes to ``/ui/updates`` without creating it.
    on_demand_topics: list[str] = Field(default_factory=lambda: ["/ui/updates", "/ui/guide"])
    #: Topics one user may create (``create_channel`` or on demand) that exist at the same time.
    max_topics_per_client: int = Field(16, ge=0, le=10_000)
    #: Seconds between ``ping_generated`` events on ``/ping``; 0 turns the ping off.
    ping_interval: float = Field(10.0, ge=0)

    @field_validator("on_demand_topics")
    @classmethod
    def _topics(cls, topics: list[str]) -> list[str]:
        from cloudisense.core.pubsub import validate_topic

        for topic in topics:
            try:
                validate_topic(topic.rstrip("/") or "/")
            except Exception:
                raise ValueError(f"{topic!r} is not a topic: start with / and use letters, digits and _.-/@:") from None
        return topics


class TopicParams(Params):
    """A topic name."""

    topic: str = Field(description="topic, e.g. /stats or /logging/app")


class PublishParams(TopicParams):
    """A topic and a message for it."""

    message: Any = Field(description="any JSON value")


class PubSubModule(Module):
    """The hub's channel intents."""

    name = "pubsub"
    settings_model = PubSubSettings

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self._ping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        self.node.pubsub.configure_dynamic(s.on_demand_topics, s.max_topics_per_client)
        self.node.pubsub.add_static(PING_TOPIC)
        if s.ping_interval > 0:
            self._ping = asyncio.create_task(self._pinger(s.ping_interval), name="pubsub-ping")

    async def stop(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            try:
                await self._ping
            except asyncio.CancelledError:
                pass

    async def _pinger(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.node.pubsub.publish(PING_TOPIC, PING_EVENT, {"node": self.node.identity,
                                                              "timestamp": int(time.time() * 1000)})

    def intents(self) -> list[Intent]:
        return [
            Intent("subscribe_channel", "Receive the events published on a topic", self.subscribe, TopicParams,
                   Risk.READ, ("subscribe to /stats", "stream the app log", "follow live stats"),
                   agent_use=AgentUse.MANUAL),
            Intent("unsubscribe_channel", "Stop receiving a topic's events", self.unsubscribe, TopicParams,
                   Risk.READ, ("unsubscribe from /stats", "stop following the app log"), agent_use=AgentUse.MANUAL),
            Intent("publish_channel", "Publish a message on a topic", self.publish, PublishParams, Risk.WRITE,
                   ("publish hello on /chat",)),
            Intent("create_channel", "Create a dynamic topic", self.create, TopicParams, Risk.WRITE,
                   ("create a channel /team",)),
            Intent("remove_channel", "Remove a dynamic topic", self.remove, TopicParams, Risk.WRITE,
                   ("remove the channel /team",)),
            Intent("list_channels", "List the topics that exist and the ones this client follows", self.list,
                   NoParams, Risk.READ, ("which channels are there", "list topics")),
        ]

    async def subscribe(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        await self.node.pubsub.subscribe(p.topic, ctx.client)
        return {"topic": p.topic, "subscribed": True}

    async def unsubscribe(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        await self.node.pubsub.unsubscribe(p.topic, ctx.client)
        return {"topic": p.topic, "subscribed": False}

    async def publish(self, p: PublishParams, ctx: ActionContext) -> dict[str, Any]:
        validate_topic(p.topic)
        if not self.node.pubsub.exists(p.topic) and not self.node.pubsub.on_demand(p.topic):
            from cloudisense.core.errors import NotFound

            raise NotFound(f"no topic {p.topic}; create it with create_channel first")
        name = UI_UPDATE if p.topic.startswith(UI_PREFIX) else DATA_EVENT
        delivered = self.node.pubsub.publish(p.topic, name, p.message, {"from": ctx.user}, kind="message")
        return {"topic": p.topic, "delivered": delivered}

    async def create(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        self.node.pubsub.create_channel(p.topic, ctx.client)
        return {"topic": p.topic, "created": True}

    async def remove(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        await self.node.pubsub.remove_channel(p.topic)
        return {"topic": p.topic, "removed": True}

    async def list(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        return {"topics": self.node.pubsub.topics(), "subscribed": self.node.pubsub.subscriptions(ctx.client)}
