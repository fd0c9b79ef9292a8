"""The assistant can't step around the policy gate, and a viewer can't get a write through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudisense.assistant.executor import AgentClient
from cloudisense.core.roles import Role
from cloudisense.llm.testing import ScriptedModel, tool_call
from tests.assistant.conftest import MODULES, agent_settings, audit_rows, running_pid, serving

RESTART = [{"id": "restart", "intent": "restart_target", "params": {"name": "web"}}]


async def test_agent_clients_may_not_start_another_assistant_run(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        for intent, params in (("agent_ask", {"query": "list targets"}), ("confirm_action",
                                                                         {"approval_id": "ap_x", "approve": True})):
            client = AgentClient(running.node.router, "oper", Role.OPERATOR)
            response = await client.call(intent, params, requestid=f"t-{intent}")
            assert response["code"] == 403, response
        rows = await audit_rows(running, "agent_ask")
        assert [(r["client_kind"], r["outcome"], r["rule"]) for r in rows] == [("agent", "denied", "builtin:no-recursion")]


async def test_react_model_cannot_recurse_or_approve_its_own_request(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path, modules=MODULES)) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        paused = await oper.call("agent_execute", {"steps": RESTART})
        approval_id = paused["approval"]["approval_id"]
        agent = running.node.module("assistant")
        # A prompt-injected model tries every side door it has heard of.
        model = ScriptedModel([[tool_call("confirm_action", {"approval_id": approval_id, "approve": True}),
                                tool_call("agent_ask", {"query": "restart web now"}),
                                tool_call("intent_agent_ask", {"query": "restart web now"}),
                                tool_call("query_assist", {"query": "restart web now"}),
                                tool_call("agent_execute", {"steps": RESTART})],
                               "done"])
        agent.assistant.provider = model
        data = await oper.call("agent_ask", {"query": "why is web slow?", "mode": "react"})
        statuses = [(s["intent"], s["status"]) for s in data["steps"]]
        assert statuses == [("confirm_action", "denied"), ("agent_ask", "denied"), ("intent_agent_ask", "denied"),
                            ("query_assist", "denied"), ("agent_execute", "denied")], statuses
        assert all(s["code"] == 403 for s in data["steps"])
        pending = await oper.call("list_approvals", {"status": "pending"})
        assert approval_id in [a["approval_id"] for a in pending["approvals"]]
        assert await running_pid(running) == old_pid  # nothing restarted
        oper.close()


async def test_viewer_gets_no_write_through_the_assistant(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        paused = await oper.call("agent_execute", {"steps": RESTART})
        approval_id = paused["approval"]["approval_id"]
        viewer = await running.connect("viewer")
        chain = await viewer.request("intent_chain", {"steps": RESTART})
        assert chain["code"] == 403
        execute = await viewer.request("agent_execute", {"steps": RESTART})
        assert execute["code"] == 403
        other = await viewer.request("confirm_action", {"approval_id": approval_id, "approve": True})
        assert other["code"] == 403
        nested = await viewer.request("intent_chain", {"steps": [{"intent": "agent_execute",
                                                                  "params": {"steps": RESTART}}]})
        assert nested["code"] == 400 and "cannot be a step" in nested["message"]
        asked = await viewer.call("agent_ask", {"query": "restart web", "mode": "plan"})
        assert all(s["status"] != "ok" for s in asked.get("steps", []) if s["intent"] == "restart_target"), asked
        assert await running_pid(running) == old_pid
        oper.close()
        viewer.close()


async def test_demoted_requester_cannot_run_their_old_approval(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        paused = await oper.call("agent_execute", {"steps": RESTART})
        approval_id = paused["approval"]["approval_id"]
        oper.close()
        await running.node.db.execute("UPDATE users SET role = 'viewer' WHERE username = 'oper'")
        demoted = await running.connect("oper")
        result: dict[str, Any] = await demoted.call("confirm_action", {"approval_id": approval_id, "approve": True})
        assert [(s["intent"], s["status"], s["code"]) for s in result["steps"]][-1] == \
            ("restart_target", "denied", 403), result
        assert await running_pid(running) == old_pid
        demoted.close()


def test_model_output_nested_past_the_recursion_limit_is_a_bad_tool_call() -> None:
    call = tool_call("read_log", "[" * 100_000 + "]" * 100_000)
    assert not call.ok and "not valid JSON" in (call.error or "")
