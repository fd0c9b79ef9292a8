"""Drive a CloudiSENSE node from a LangChain tool-calling loop.

The node's intents become LangChain tools (over its WebSocket, as client kind ``langchain``), so the
node's roles, policy, approvals and audit apply to whatever the model decides. Run against the demo
node (``./scripts/demo.sh``)::

    export CLOUDISENSE_URL=http://127.0.0.1:8000 CLOUDISENSE_USER=admin CLOUDISENSE_PASSWORD='...'
    .venv/bin/python examples/langchain_agent.py "is the web service healthy?"

Without ``CHAT_MODEL`` a scripted model stands in (it checks ``web`` and reads the ``app`` log), so
the example runs offline. With the ``langchain`` package and a provider installed, set e.g.
``CHAT_MODEL=openai:gpt-4o-mini`` to let a real model choose the tools.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import BaseTool

from cloudisense.interop.langchain_tools import remote_tools


class ScriptedModel(FakeMessagesListChatModel):
    """A stand-in for a tool-calling model: answers with fixed messages in turn."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> "ScriptedModel":
        return self


def scripted() -> BaseChatModel:
    calls = [{"name": "target_status", "args": {"name": "web"}, "id": "1", "type": "tool_call"},
             {"name": "read_log", "args": {"name": "app", "lines": 5}, "id": "2", "type": "tool_call"}]
    return ScriptedModel(responses=[AIMessage("", tool_calls=calls), AIMessage("That is what the node reports.")])


def chat_model() -> BaseChatModel:
    spec = os.environ.get("CHAT_MODEL")
    if not spec:
        return scripted()
    from langchain.chat_models import init_chat_model  # the langchain package, not only langchain-core

    return init_chat_model(spec)


async def agent_loop(model: BaseChatModel, tools: list[BaseTool], question: str, max_turns: int = 8) -> str:
    """Ask, run the tools the model calls, feed their results back, until it answers in words."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(max_turns):
        reply = await bound.ainvoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return str(reply.content)
        for call in reply.tool_calls:
            tool = by_name.get(call["name"])
            if tool is None:
                raise SystemExit(f"the model asked for {call['name']}, which is not a tool here")
            result = await tool.ainvoke(call)
            print(f"- {call['name']}: {result.content}")
            messages.append(result)
    return "(stopped: too many turns)"


async def main(question: str) -> None:
    url = os.environ.get("CLOUDISENSE_URL", "http://127.0.0.1:8000")
    password = os.environ.get("CLOUDISENSE_PASSWORD")
    if not password:
        raise SystemExit("set CLOUDISENSE_PASSWORD (and CLOUDISENSE_URL, CLOUDISENSE_USER) first")
    tools, backend = await remote_tools(url, os.environ.get("CLOUDISENSE_USER", "admin"), password)
    try:
        print(await agent_loop(chat_model(), tools, question))
    finally:
        backend.close()


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "is the web service healthy?"))
