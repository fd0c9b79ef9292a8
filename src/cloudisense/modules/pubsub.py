"""Channel intents of protocol.md: subscribe, unsubscribe, publish, create, remove."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import AgentUse, Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.pubsub import validate_topic


class TopicParams(Params):
    """A topic name."""

    topic: str = Field(description="topic, e.g. /stats or /logging/app")


class PublishParams(TopicParams):
    """A topic and a message for it."""

    message: Any = Field(description="any JSON value")


class PubSubModule(Module):
    """The hub's channel intents."""

    name = "pubsub"

    def intents(self) -> list[Intent]:
        return [
            Intent("subscribe_channel", "Receive the events published on a topic", self.subscribe, TopicParams,
                   Risk.READ, ("subscribe to /stats", "stream the app log", "follow live stats"), agent_use=AgentUse.MANUAL),
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
        if not self.node.pubsub.exists(p.topic):
            from cloudisense.core.errors import NotFound

            raise NotFound(f"no topic {p.topic}; create it with create_channel first")
        delivered = ctx.publish(p.topic, "message", p.message, {"from": ctx.user})
        return {"topic": p.topic, "delivered": delivered}

    async def create(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        self.node.pubsub.create_channel(p.topic)
        return {"topic": p.topic, "created": True}

    async def remove(self, p: TopicParams, ctx: ActionContext) -> dict[str, Any]:
        await self.node.pubsub.remove_channel(p.topic)
        return {"topic": p.topic, "removed": True}

    async def list(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        return {"topics": self.node.pubsub.topics(), "subscribed": self.node.pubsub.subscriptions(ctx.client)}
