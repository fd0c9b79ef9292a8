"""What an action sees while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudisense.core.clients import Client

if TYPE_CHECKING:
    from cloudisense.core.node import Node


@dataclass
class ActionContext:
    """The node, the calling client and the request being served."""

    node: "Node"
    client: Client
    requestid: str
    intent: str

    @property
    def user(self) -> str:
        """Who asked."""
        return self.client.user

    def publish(self, topic: str, name: str, data: Any, meta: dict[str, Any] | None = None) -> int:
        """Publish an event on the node's hub."""
        return self.node.pubsub.publish(topic, name, data, meta)

    def notify_client(self, name: str, topic: str, data: Any, meta: dict[str, Any] | None = None) -> None:
        """Send an event to the calling client only (streaming deltas, progress, approvals)."""
        from cloudisense.core import protocol

        self.client.push_event(protocol.event(name, topic, protocol.to_jsonable(data), meta))
