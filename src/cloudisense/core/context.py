"""What an action sees while it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudisense.core.clients import Client
from cloudisense.core.roles import Role

if TYPE_CHECKING:
    from cloudisense.node import Node


@dataclass(frozen=True)
class CallOrigin:
    """The request a sub-call is made on behalf of: who asked, in which session, under which approval.

    A step of a chain or of the assistant's plan carries it through the router, so the
    gate, the audit log and the concurrency rules can tell a sub-call from a new request
    (a sub-call never waits for a node-wide permit its parent already holds).
    """

    requestid: str
    user: str
    role: Role
    client_kind: str
    session: str | None = None
    approval_id: str | None = None


@dataclass
class ActionContext:
    """The node, the calling client and the request being served."""

    node: Node
    client: Client
    requestid: str
    intent: str
    #: Set when this request is itself a sub-call.
    origin: CallOrigin | None = None

    def as_origin(self, *, session: str | None = None, approval_id: str | None = None) -> CallOrigin:
        """The origin to give sub-calls made by this action (session and approval carried down)."""
        parent = self.origin
        return CallOrigin(
            requestid=self.requestid, user=self.client.user, role=self.client.role, client_kind=self.client.kind,
            session=session if session is not None else (parent.session if parent else None),
            approval_id=approval_id,
        )

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
