"""How the interop layers reach a node: in process through its router, or over its WebSocket.

Both give the same guarantees: each call is an ordinary RPC of a client of an
automated kind (``mcp``, ``langchain``), so the router checks the role, the
policy gate decides (allow / confirm / deny), and the audit row names the kind.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from tornado.websocket import WebSocketClosedError

from cloudisense.assistant.answer import render_step
from cloudisense.client import Connection, login
from cloudisense.core import protocol
from cloudisense.core.clients import AUTOMATED_KINDS, InProcessClient
from cloudisense.core.errors import CloudisenseError
from cloudisense.core.intents import AgentUse, IntentRegistry
from cloudisense.core.roles import Role, may_run

if TYPE_CHECKING:
    from cloudisense.node import Node


class Backend(Protocol):
    """A node, as seen by one user through one kind of client."""

    user: str

    async def request(self, intent: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one intent; returns its ``rpc_response`` (never raises for an error answer)."""

    async def intents(self) -> list[dict[str, Any]]:
        """``Intent.describe()`` of every intent this user's role may run on the node."""


_described: weakref.WeakKeyDictionary[IntentRegistry, tuple[int, dict[str, dict[str, Any]]]] = \
    weakref.WeakKeyDictionary()


def described(registry: IntentRegistry) -> dict[str, dict[str, Any]]:
    """``Intent.describe()`` of every intent, by name, computed once per registry (treat as read-only).

    Generating ~50 params JSON-schemas takes tens of milliseconds; a tool list is asked for on
    every MCP request, and the registry only changes while modules load.
    """
    cached = _described.get(registry)
    if cached is None or cached[0] != len(registry):
        cached = (len(registry), {i.name: i.describe() for i in registry.all()})
        _described[registry] = cached
    return cached[1]


def intents_for(registry: IntentRegistry, role: Role) -> list[dict[str, Any]]:
    """The descriptions of the intents ``role`` may run (the one rule: :func:`may_run`)."""
    return [described(registry)[i.name] for i in registry.all() if may_run(role, i)]


def callable_tools(intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The intents an outside agent may call as tools: plain tools only.

    Assistant entry points (another assistant run), composites (their steps are gated one by
    one, an outside agent sequences tools itself), human-only ones (approving) and manual ones
    (subscriptions and streams, which a request/response tool can't carry) are left out.
    """
    return [i for i in intents if i.get("agent_use", AgentUse.TOOL.value) == AgentUse.TOOL.value]


def pending_approval(response: dict[str, Any]) -> dict[str, Any] | None:
    """The approval a 202 answer waits on (the policy said confirm: nothing ran), else ``None``."""
    data = response.get("data")
    if response.get("status") == "success" and int(response.get("code", 200)) == 202 \
            and isinstance(data, dict) and data.get("approval_required"):
        return data
    return None


def outcome_text(intent: str, params: dict[str, Any], response: dict[str, Any]) -> str:
    """What an ``rpc_response`` means, in plain words (what a person reading the agent's transcript sees)."""
    if response.get("status") != "success":
        return f"{intent} failed ({response.get('code')}): {response.get('message')}"
    approval = pending_approval(response)
    if approval is not None:
        ident = approval.get("approval_id")
        return (f"Not run: approval {ident} is needed for {approval.get('description')}. "
                f"Reason: {approval.get('reason') or 'the node policy asks for confirmation'}. A person must approve "
                f"it on the node (the dashboard, or cloudisense rpc confirm_action approval_id={ident} approve=true); "
                "it then runs once. Do not call it again meanwhile.")
    return render_step({"intent": intent, "status": "ok", "data": response.get("data"), "params": params})


class RouterBackend:
    """The node in this process: each call is a fresh in-process client of ``kind``."""

    def __init__(self, node: Node, user: str, role: Role | str, *, kind: str = "mcp") -> None:
        if kind not in AUTOMATED_KINDS:
            raise ValueError(f"kind must be one of {sorted(AUTOMATED_KINDS)}: the policy must apply to agents")
        self.node = node
        self.user = user
        self.role = Role(role)
        self.kind = kind

    async def request(self, intent: str, params: dict[str, Any]) -> dict[str, Any]:
        client = InProcessClient(self.node.router, self.user, self.role, kind=self.kind, policy_applies=True)
        return await client.call(intent, params, requestid=f"{self.kind}-{uuid.uuid4().hex[:16]}")

    async def intents(self) -> list[dict[str, Any]]:
        return intents_for(self.node.registry, self.role)


class WebSocketBackend:
    """A node over its WebSocket (``/ws?client=<kind>``), logged in as ``user``.

    Reconnects (logging in again) when the connection dropped, so a long-lived MCP
    server outlives access tokens and node restarts.
    """

    def __init__(self, url: str, user: str, password: str, *, kind: str = "mcp", timeout: float = 900) -> None:
        if kind not in AUTOMATED_KINDS:
            raise ValueError(f"kind must be one of {sorted(AUTOMATED_KINDS)}: the policy must apply to agents")
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self.kind = kind
        self.timeout = timeout
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        #: The intents of the open connection: its role is fixed when it opens, so they are too.
        self._intents: list[dict[str, Any]] | None = None

    async def connect(self) -> Connection:
        """The open connection (logs in and connects when there is none)."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._intents = None
                tokens = await login(self.url, self.user, self._password)
                self._conn = await Connection.open(self.url, tokens["access"]["token"], client_kind=self.kind)
            return self._conn

    async def request(self, intent: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            conn = await self.connect()
        except CloudisenseError as exc:
            return protocol.error(None, 503, f"could not log in to {self.url} as {self.user}: {exc.message}")
        except OSError as exc:
            return protocol.error(None, 503, f"could not reach the node at {self.url}: {exc.strerror or exc}")
        try:
            return await conn.request(intent, params, timeout=self.timeout)
        except (ConnectionError, WebSocketClosedError):
            # The socket closed under us: the call may or may not have run, so it is not retried
            # here; the next call connects again.
            self._conn = None
            return protocol.error(None, 503, f"the connection to {self.url} dropped during {intent}; it may or may "
                                  "not have run: check the audit log (get_audit_log) before trying again")
        except TimeoutError:
            return protocol.error(None, 504, f"no answer to {intent} within {self.timeout:g} s; it may still be "
                                  "running on the node: check the audit log before trying again")

    async def intents(self) -> list[dict[str, Any]]:
        conn = self._conn
        if self._intents is not None and conn is not None and not conn.closed:
            return self._intents
        response = await self.request("list_intents", {})
        if response.get("status") != "success":
            raise ConnectionError(f"the node did not list its intents: {response.get('message')} "
                                  "(is the interop module enabled on the node?)")
        self._intents = list(response["data"]["intents"])
        return self._intents

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
