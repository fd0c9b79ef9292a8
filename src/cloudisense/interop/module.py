"""The interop module: ``list_intents``, so remote agents (``cloudisense mcp``) learn what they may call."""

from __future__ import annotations

from typing import Any

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import AgentUse, Intent, NoParams, Risk
from cloudisense.core.modules import Module
from cloudisense.interop.backends import intents_for


class InteropModule(Module):
    """Describes the node's intents to outside agents (MCP, LangChain over the WebSocket)."""

    name = "interop"

    def intents(self) -> list[Intent]:
        return [
            Intent("list_intents", "The intents you may run on this node, with their params schemas and risks",
                   self.list_intents, NoParams, Risk.READ,
                   ("what intents are there", "list the tools", "which actions may I run"),
                   # The assistant has its catalogue already; this is for clients building theirs.
                   agent_use=AgentUse.MANUAL),
        ]

    async def list_intents(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        role = ctx.client.role
        return {"role": role.value,
                "intents": intents_for(self.node.registry, role)}
