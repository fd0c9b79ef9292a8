"""Clients: whoever sends RPC messages into the router and receives answers and events.

A client knows who it acts for (user and role), what kind it is (``websocket``,
``inprocess``, ``agent``, ``reaction``, ``federation``, ...), how to deliver a
response, and how to take an event without ever blocking the publisher.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from cloudisense.core.roles import Role

_ids = itertools.count(1)

#: Kind of the assistant's own client: the policy gate decides on its calls, also on other nodes.
AGENT_KIND = "agent"
#: Kinds of automated callers: the node's policy gate decides on their calls. A WebSocket client
#: may declare one of these (``/ws?client=mcp``) so its audit rows say what it is.
AUTOMATED_KINDS = frozenset({"agent", "mcp", "langchain"})


class Client(ABC):
    """Anything that talks to the router."""

    kind: str = "client"
    #: Whether the node's policy (allow / confirm / deny) applies to this client's calls:
    #: true for automated callers (the assistant, MCP and LangChain agents), false for people
    #: and for reaction rules, whose author is a person.
    policy_applies: bool = False

    def __init__(self, user: str, role: Role, client_id: str | None = None) -> None:
        self.user = user
        self.role = Role(role)
        self.id = client_id or f"{self.kind}-{next(_ids)}"
        self.inflight = 0
        self.dropped_events = 0
        #: Assistant session id, when the client is bound to one.
        self.session: str | None = None

    @property
    def closed(self) -> bool:
        """True once nothing can be delivered any more."""
        return False

    @abstractmethod
    async def send(self, message: dict[str, Any]) -> None:
        """Deliver an RPC response (never dropped while the client is open)."""

    @abstractmethod
    def push_event(self, event: dict[str, Any]) -> bool:
        """Queue an event without blocking; ``False`` when it was dropped."""


class InProcessClient(Client):
    """A client living inside the server (agent, reactions, CLI tests).

    :meth:`call` sends an RPC through the router and waits for its response,
    exactly as a browser would; events go to ``on_event`` when given.
    """

    kind = "inprocess"

    def __init__(self, router: Any, user: str, role: Role, *, kind: str | None = None,
                 policy_applies: bool | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        if kind:
            self.kind = kind
        # A client of an automated kind is policy-gated unless its creator says otherwise.
        self.policy_applies = policy_applies if policy_applies is not None else self.kind in AUTOMATED_KINDS
        super().__init__(user, role)
        self._router = router
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._on_event = on_event
        self.responses: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.responses.append(message)
        del self.responses[:-100]  # keep only a short tail for inspection
        fut = self._pending.pop(str(message.get("requestid")), None)
        if fut is not None and not fut.done():
            fut.set_result(message)

    def push_event(self, event: dict[str, Any]) -> bool:
        if self._on_event is not None:
            self._on_event(event)
        return True

    async def call(self, intent: str, params: dict[str, Any] | None = None, *,
                   service_id: str | None = None, requestid: str | None = None,
                   origin: Any = None) -> dict[str, Any]:
        """Send one RPC through the router and return its ``rpc_response``.

        ``origin`` (a :class:`~cloudisense.core.context.CallOrigin`) marks a sub-call made on
        behalf of another request.
        """
        rid = requestid or uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        message: dict[str, Any] = {"type": "rpc", "requestid": rid, "intent": intent, "params": params or {}}
        if service_id is not None:
            message["serviceId"] = service_id
        try:
            await self._router.handle_messages(message, self, origin)
            return await fut
        finally:
            self._pending.pop(rid, None)
