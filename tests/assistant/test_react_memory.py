"""ReAct with a scripted model, session memory across restarts, compaction, escalation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudisense.assistant.escalation import assess
from cloudisense.assistant.memory import Turn, summarize_turns
from cloudisense.assistant.plan import Plan, PlanStep
from cloudisense.llm.base import Usage
from cloudisense.llm.testing import ScriptedModel, ScriptedTurn, tool_call
from tests.assistant.conftest import agent_settings, recording_webhook, serving


async def test_react_over_websocket_with_limits(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("".join(f"line {i} ERROR slow upstream {'x' * 200}\n" for i in range(50)))
    settings = agent_settings(tmp_path, agent={"max_observation_chars": 300, "max_steps": 3})
    async with serving(settings) as running:
        agent = running.node.module("assistant")
        model = ScriptedModel([tool_call("read_log", {"name": "app", "lines": 50}),
                               tool_call("restart_target", {"name": "web"}),
                               "The upstream is slow; I asked to restart web."])
        agent.assistant.provider = model
        conn = await running.connect("oper")
        data = await conn.call("agent_ask", {"query": "why is the site slow?", "mode": "react"})
        model.assert_all_used()
        assert data["stopped"] == "answer" and data["strategy"] == "react"
        assert [(s["intent"], s["status"]) for s in data["steps"]] == [("read_log", "ok"),
                                                                       ("restart_target", "pending_approval")]
        # The observation the model saw was capped; the reply states what did not run.
        tool_msgs = [m.content for m in model.requests[1].messages if m.role == "tool"]
        assert "[truncated" in tool_msgs[0] and len(tool_msgs[0]) < 400
        assert "did NOT run restart_target" in data["answer"]
        assert data["approvals"][0]["description"].startswith("restart_target web")
        # Tools offered are retrieved for the question and never include approval decisions.
        offered = {t.name for t in model.requests[0].tools}
        assert "read_log" in offered and not offered & {"confirm_action", "agent_ask", "agent_execute"}
        # Step limit: a model that never stops calling tools is cut off.
        agent.assistant.provider = ScriptedModel([tool_call("list_targets")] * 3)
        capped = await conn.call("agent_ask", {"query": "loop forever", "mode": "react", "session": data["session"]})
        assert capped["stopped"] == "max_steps" and len(capped["steps"]) == 3
        # Token budget.
        running.node.settings.llm.session_token_budget = 400
        agent.assistant.provider = ScriptedModel([ScriptedTurn(tool_calls=[tool_call("list_targets")], usage=Usage(300, 100)),
                                        "never reached"])
        budget = await conn.call("agent_ask", {"query": "budget", "mode": "react", "session": "fresh-budget"})
        assert budget["stopped"] == "token_budget" and len(budget["steps"]) == 1
        running.node.settings.llm.session_token_budget = 0
        conn.close()


async def test_memory_resumes_after_restart_and_compacts(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path)
    async with serving(settings) as running:
        running.node.module("assistant").assistant.provider = ScriptedModel(["first answer"])
        conn = await running.connect("oper")
        first = await conn.call("agent_ask", {"query": "hello there", "mode": "react"})
        session = first["session"]
        conn.close()
    async with serving(settings) as running:
        model = ScriptedModel(["second answer"])
        agent = running.node.module("assistant")
        agent.assistant.provider = model
        conn = await running.connect("oper")
        second = await conn.call("agent_ask", {"query": "and again", "mode": "react", "session": session})
        assert second["session"] == session
        contents = [m.content for m in model.requests[0].messages]
        assert "hello there" in contents and any(c and c.startswith("first answer") for c in contents)
        # Another user may not continue someone else's session.
        viewer = await running.connect("viewer")
        refused = await viewer.request("agent_ask", {"query": "x", "mode": "react", "session": session})
        assert refused["code"] == 403
        # Compaction: many turns become a summary plus the last few verbatim, within the size limit.
        for i in range(30):
            await agent.memory.add_message(session, "user", f"question {i} " + "y" * 100)
        context = await agent.memory.context(session, keep_last=4, max_chars=1500)
        assert context[0]["role"] == "system" and "summarised" in context[0]["content"]
        assert [m["content"][:11] for m in context[1:]] == ["question 26", "question 27", "question 28", "question 29"]
        assert sum(len(m["content"]) for m in context) <= 1500
        assert context == await agent.memory.context(session, keep_last=4, max_chars=1500)  # deterministic
        conn.close()
        viewer.close()


def test_summary_and_assessment_are_pure() -> None:
    turns = [Turn(1, "s", 0, "message", "user", "restart web"), Turn(2, "s", 0, "step", "tool", "restart_target -> ok"),
             Turn(3, "s", 0, "step", "tool", "restart_target -> ok")]
    assert summarize_turns(turns, 500) == ("Earlier in this session (3 turns, summarised): the user asked: restart web "
                                           "steps: restart_target -> ok x2")
    plan = Plan(steps=[PlanStep(intent="restart_target", params={"name": "web"})], confidence=0.3)
    assert assess(plan, min_confidence=0.5).action == "clarify"
    assert assess(plan.model_copy(update={"confidence": 0.9}), min_confidence=0.5).action == "proceed"
    assert assess(plan, min_confidence=0.5, failures=2).action == "escalate"
    assert assess(Plan(outcome="clarify", question="which log?"), min_confidence=0.5).message == "which log?"


class _Planner:
    """A planner that always returns the given plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan_ = plan

    async def plan(self, text: str, context: Any) -> Plan:
        return self.plan_


async def test_escalation_flags_session_and_notifies(tmp_path: Path) -> None:
    async with recording_webhook() as (url, received):
        settings = agent_settings(tmp_path, modules=["pubsub", "audit", "system", "targets", "logs", "notify",
                                                     "assistant"],
                                  notify={"webhooks": [url], "retries": 0})
        async with serving(settings) as running:
            agent = running.node.module("assistant")
            conn = await running.connect("oper")
            # Low confidence without a model: ask, do not guess.
            agent.assistant.planner = _Planner(Plan(steps=[PlanStep(intent="restart_target", params={"name": "web"})],
                                          confidence=0.2))
            asked = await conn.call("agent_ask", {"query": "do the thing with web"})
            assert asked["outcome"] == "clarify" and "restart_target" in asked["question"]
            # Two failed steps: escalate to people (flag + notification through the notify module).
            agent.assistant.planner = _Planner(Plan(steps=[PlanStep(intent="read_log", params={"name": "nope"}),
                                                 PlanStep(intent="read_log", params={"name": "gone"})],
                                          confidence=0.9))
            once = await conn.call("agent_ask", {"query": "read the nope and gone logs"})
            assert once["status"] == "failed" and "escalation" not in once  # one failure: just report it
            out = await conn.call("agent_ask", {"query": "try again", "session": once["session"]})
            assert out["status"] == "failed" and out["escalation"]["notified"] is True
            flagged = await conn.call("list_escalations")
            assert [e["session"] for e in flagged["escalations"]] == [out["session"]]
            assert received and "assistant needs a person" in received[0]["message"]
            # The planner itself may say: escalate.
            agent.assistant.planner = _Planner(Plan(outcome="escalate", reason="asks to wipe the database"))
            esc = await conn.call("agent_ask", {"query": "wipe the db"})
            assert esc["outcome"] == "escalated" and esc["escalation"]["escalated"] is True
            conn.close()
