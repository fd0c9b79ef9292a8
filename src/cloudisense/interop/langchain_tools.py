"""The node's intents as LangChain tools (``langchain-core`` ``StructuredTool``), under the node's policy.

Two ways to get them, with the same guarantees (every call is an RPC of a client of kind
``langchain``: the router checks the role, the policy gate decides, the audit row says
``langchain``; a call the policy wants confirmed returns "not run: approval ... is needed"
and runs nothing until a person approves it through the node):

* :func:`node_tools` — in process, for code running inside the node's own process (args
  schema: the intent's params model, so LangChain validates with the same model the router uses);
* :func:`remote_tools` — over the node's WebSocket, logged in as a user (args schema: the
  intent's JSON-schema as the node describes it).

The tools work with any tool-calling chat model (``model.bind_tools(tools)``) and LangChain's
agent loop. Each returns plain words as its content and the result data as its artifact; a
failure raises :class:`~langchain_core.tools.ToolException`, which the tool turns into an error
message for the model (``handle_tool_error``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel

from cloudisense.assistant.catalog import to_openai_tools
from cloudisense.core.errors import NotFound
from cloudisense.core.roles import Role
from cloudisense.interop.backends import Backend, RouterBackend, WebSocketBackend, callable_tools, outcome_text

if TYPE_CHECKING:
    from cloudisense.node import Node

KIND = "langchain"


def make_tool(backend: Backend, description: dict[str, Any],
              args_schema: type[BaseModel] | dict[str, Any]) -> StructuredTool:
    """One intent (``Intent.describe()``) as a tool that runs it through ``backend``."""
    name = description["name"]
    # The same tool text the assistant's catalogue gives model providers (description, risk, examples).
    text = to_openai_tools([description])[0]["function"]["description"]

    async def run(**arguments: Any) -> tuple[str, Any]:
        # Params models may hold enums or paths: the router re-validates whatever it is given.
        params = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in arguments.items()}
        response = await backend.request(name, params)
        words = outcome_text(name, params, response)
        if response.get("status") != "success":
            raise ToolException(words)
        return words, response.get("data")

    return StructuredTool.from_function(
        coroutine=run, name=name, description=text, args_schema=args_schema,
        response_format="content_and_artifact", handle_tool_error=True,
    )


async def node_tools(node: Node, user: str, role: Role | str | None = None) -> list[StructuredTool]:
    """Tools acting for ``user`` on ``node`` in this process (``role``: default the user's stored role)."""
    if role is None:
        record = await node.users.get(user)
        if record is None:
            raise NotFound(f"no user {user!r} on this node; create one with cloudisense user add")
        role = record.role
    backend = RouterBackend(node, user, role, kind=KIND)
    tools = []
    for description in callable_tools(await backend.intents()):
        intent = node.registry.get(description["name"])
        tools.append(make_tool(backend, description, intent.params))
    return tools


async def remote_tools(url: str, user: str, password: str) -> tuple[list[StructuredTool], WebSocketBackend]:
    """Tools acting for ``user`` on the node at ``url`` over its WebSocket; close the backend when done."""
    backend = WebSocketBackend(url, user, password, kind=KIND)
    tools = []
    for description in callable_tools(await backend.intents()):
        schema = dict(description.get("params") or {"type": "object", "properties": {}})
        schema.setdefault("title", description["name"])
        tools.append(make_tool(backend, description, schema))
    return tools, backend
