"""LangChain tools on a real node, driven by a scripted tool-calling chat model (langchain-core's fake)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool

from cloudisense.interop.langchain_tools import node_tools, remote_tools
from tests.conftest import PASSWORDS
from tests.interop.conftest import audit_rows, interop_settings, running_pid, serving


class ScriptedToolModel(FakeMessagesListChatModel):
    """Answers with the scripted messages in turn; records the tools it was bound with."""

    bound: list[str] = []

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> "ScriptedToolModel":
        self.bound = [t.name for t in tools]
        return self


async def tool_loop(model: Any, tools: list[BaseTool], question: str, max_turns: int = 6) -> list[BaseMessage]:
    """The tool-calling agent loop: the model asks for tools, the tools answer, until it answers in words."""
    by_name = {t.name: t for t in tools}
    bound = model.bind_tools(tools)
    messages: list[BaseMessage] = [HumanMessage(question)]
    for _ in range(max_turns):
        reply = await bound.ainvoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            messages.append(await by_name[call["name"]].ainvoke(call))
    raise AssertionError("the model never answered")


def call(name: str, args: dict[str, Any], cid: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": cid, "type": "tool_call"}


SCRIPT = [
    AIMessage("", tool_calls=[call("target_status", {"name": "web"}, "c1")]),
    AIMessage("", tool_calls=[call("read_log", {"name": "app", "lines": 10}, "c2"),
                              call("restart_target", {"name": "web"}, "c3")]),
    AIMessage("web runs; the log shows an upstream timeout; the restart waits for approval"),
]


def tool_messages(messages: list[BaseMessage]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}


async def test_in_process_tools_in_a_tool_calling_loop(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        pid = await running_pid(running)
        tools = await node_tools(running.node, "oper")
        names = {t.name for t in tools}
        assert {"target_status", "read_log", "restart_target"} <= names
        assert not names & {"agent_ask", "confirm_action", "intent_chain", "subscribe_channel"}
        # The args schema is the intent's own params model.
        read_log = next(t for t in tools if t.name == "read_log")
        assert read_log.args_schema is running.node.registry.get("read_log").params

        model = ScriptedToolModel(responses=SCRIPT)
        messages = await tool_loop(model, tools, "is web healthy? restart it if needed")
        assert set(model.bound) == names
        answers = tool_messages(messages)
        # The results are the real node's: the running process and the log's real lines.
        assert answers["c1"].artifact["pid"] == pid and answers["c1"].status == "success"
        assert answers["c2"].artifact["lines"][-1] == "2024-05-01 10:00:01 ERROR upstream timeout"
        assert "ERROR upstream timeout" in answers["c2"].content
        # The policy applies: the restart did not run, it waits for a person.
        assert str(answers["c3"].content).startswith("Not run: approval ")
        assert answers["c3"].artifact["approval_required"] is True
        assert await running_pid(running) == pid
        for intent, outcome in (("target_status", "success"), ("read_log", "success"),
                                ("restart_target", "pending_approval")):
            rows = [r for r in await audit_rows(running, intent) if r["user"] == "oper"]
            assert [(r["client_kind"], r["outcome"]) for r in rows] == [("langchain", outcome)]


async def test_remote_tools_over_the_websocket(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        tools, backend = await remote_tools(running.url, "viewer", PASSWORDS["viewer"])
        try:
            names = {t.name for t in tools}
            assert "target_status" in names and "restart_target" not in names  # a viewer's tools
            script = [
                AIMessage("", tool_calls=[call("target_status", {"name": "nginx"}, "a"),
                                          call("read_log", {"name": "app", "lines": 1}, "b")]),
                AIMessage("", tool_calls=[call("read_log", {"name": "nope"}, "c")]),
                AIMessage("done"),
            ]
            messages = await tool_loop(ScriptedToolModel(responses=script), tools, "how is nginx?")
        finally:
            backend.close()
        answers = tool_messages(messages)
        assert answers["a"].artifact["state"] == "running"
        assert answers["b"].artifact["lines"] == ["2024-05-01 10:00:01 ERROR upstream timeout"]
        # A failure reaches the model as an error message in words, and the loop goes on.
        assert answers["c"].status == "error" and "read_log failed (" in answers["c"].content
        rows = [r for r in await audit_rows(running, "read_log") if r["user"] == "viewer"]
        assert [(r["client_kind"], r["outcome"]) for r in rows] == [("langchain", "success"), ("langchain", "error")]
