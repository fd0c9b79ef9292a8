"""Property: thousands of generated plans, and no ``destructive`` step ever runs without an allow rule
or a consumed approval for exactly that call.

The plans go through the real executor, router, policy gate and SQLite audit/approvals of an
in-process node. Its operations module only records what actually ran (contract intent names and
risks, including ``run_playbook`` whose ``check`` mode is read), so a run is cheap and every
execution is observable.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from cloudisense.assistant.module import AssistantModule
from cloudisense.assistant.policy import load_policy
from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.modules.audit import AuditModule
from cloudisense.node import Node
from tests.assistant.conftest import DEMO_POLICY
from tests.conftest import make_settings


class NameParams(Params):
    """A target / rule name."""

    name: str = Field(min_length=1, max_length=64)


class PlaybookParams(Params):
    """A playbook run."""

    name: str = Field(min_length=1, max_length=64)
    check: bool = False
    extra_vars: dict[str, Any] = Field(default_factory=dict)


class NotifyParams(Params):
    """A message."""

    message: str = Field(min_length=1, max_length=200)
    webhook: str | None = None


class RuleParams(Params):
    """A rule id."""

    rule_id: str = Field(min_length=1, max_length=64)


class Recorder(Module):
    """Contract-named intents that only record that they ran."""

    name = "recorder"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.ran: list[tuple[str, dict[str, Any], str, str]] = []

    def _handler(self, name: str) -> Any:
        async def handler(p: Any, ctx: ActionContext) -> dict[str, Any]:
            self.ran.append((name, p.model_dump(mode="json"), ctx.client.kind, ctx.user))
            return {"ran": name}
        return handler

    def intents(self) -> list[Intent]:
        spec = [("target_status", NameParams, Risk.READ), ("list_targets", NoParams, Risk.READ),
                ("read_log", NameParams, Risk.READ), ("restart_target", NameParams, Risk.WRITE),
                ("start_target", NameParams, Risk.WRITE), ("simple_http_notify", NotifyParams, Risk.WRITE),
                ("write_rule", RuleParams, Risk.WRITE), ("stop_target", NameParams, Risk.DESTRUCTIVE),
                ("delete_rule", RuleParams, Risk.DESTRUCTIVE), ("run_playbook", PlaybookParams, Risk.DESTRUCTIVE)]
        out = []
        for name, model, risk in spec:
            read_when = {"check": True} if name == "run_playbook" else {}
            out.append(Intent(name, f"recorded {name}", self._handler(name), model, risk, read_when=read_when))
        return out


NAMES = st.sampled_from(["web", "nginx", "redis", "worker", "x", "nginx.yml", "*"])
PARAMS = {
    "target_status": st.fixed_dictionaries({"name": NAMES}),
    "list_targets": st.just({}),
    "read_log": st.fixed_dictionaries({"name": NAMES}),
    "restart_target": st.fixed_dictionaries({"name": NAMES}),
    "start_target": st.fixed_dictionaries({"name": NAMES}),
    "simple_http_notify": st.fixed_dictionaries({"message": st.sampled_from(["hi", "rm -rf /"])},
                                                optional={"webhook": st.sampled_from(
                                                    ["http://127.0.0.1:8081/hook", "http://evil.example/x", ""])}),
    "write_rule": st.fixed_dictionaries({"rule_id": NAMES}),
    "stop_target": st.fixed_dictionaries({"name": NAMES}),
    "delete_rule": st.fixed_dictionaries({"rule_id": NAMES}),
    "run_playbook": st.fixed_dictionaries({"name": NAMES}, optional={"check": st.booleans(),
                                                                    "extra_vars": st.just({"a": 1})}),
}


@st.composite
def steps(draw: Any, depth: int = 0) -> dict[str, Any]:
    """One step; sometimes a nested chain (composite intents are gated per step), sometimes bad params."""
    if depth == 0 and draw(st.integers(0, 9)) == 0:
        inner = draw(st.lists(steps(depth=1), min_size=1, max_size=3))
        return {"intent": "intent_chain", "params": {"steps": inner, "on_error": "continue"}}
    intent = draw(st.sampled_from(sorted(PARAMS)))
    params = draw(PARAMS[intent])
    if draw(st.integers(0, 19)) == 0:
        params = {**params, "unexpected": True}  # refused by params validation
    return {"intent": intent, "params": params}


PLAN = st.lists(steps(), min_size=1, max_size=5)
ROLES = st.sampled_from([("oper", "operator"), ("admin", "admin"), ("viewer", "viewer")])


def test_no_destructive_step_without_allow_rule_or_approval(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    node = Node(make_settings(tmp_path, modules=["audit", "assistant", "recorder"],
                              agent={"policy_file": str(DEMO_POLICY)}),
                module_classes={"audit": AuditModule, "assistant": AssistantModule, "recorder": Recorder})
    loop.run_until_complete(node.start())
    agent: AssistantModule = node.module("assistant")
    recorder: Recorder = node.module("recorder")
    policy = load_policy(DEMO_POLICY)
    stats = {"plans": 0, "destructive_ran": 0, "approved": 0}

    async def run(plan: list[dict[str, Any]], who: tuple[str, str], decisions: list[bool], on_error: str) -> None:
        user, role = who
        result = await agent.executor.run(plan, user=user, role=role, on_error=on_error)
        for approve in decisions:  # people decide; approving resumes the plan
            if result.status != "paused" or result.approval is None:
                break
            approval_id = result.approval["approval_id"]
            await agent.approvals.decide(approval_id, approve=approve, user=user, role=role)
            stats["approved"] += approve
            result = await agent.executor.resume(approval_id)

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(PLAN, ROLES, st.lists(st.booleans(), max_size=4), st.sampled_from(["stop", "continue"]))
    def check(plan: list[dict[str, Any]], who: tuple[str, str], decisions: list[bool], on_error: str) -> None:
        recorder.ran.clear()
        loop.run_until_complete(run(plan, who, decisions, on_error))
        stats["plans"] += 1
        for intent_name, params, kind, user in recorder.ran:
            intent = node.registry.get(intent_name)
            risk = intent.effective_risk(intent.params.model_validate(params))
            assert kind == "agent", "plans run only as the agent"
            if risk != Risk.DESTRUCTIVE:
                continue
            stats["destructive_ran"] += 1
            role = dict([("oper", "operator"), ("admin", "admin"), ("viewer", "viewer")])[user]
            allowed = policy.decide(intent_name, params, risk, role, node.identity).allowed
            approved = loop.run_until_complete(agent.approvals.consumed_for(intent_name, params))
            assert allowed or approved, f"{intent_name} {params} ran as {user} without an allow rule or approval"

    try:
        check()
        # The audit log tells the same story: every destructive success names an allow rule or an approval.
        rows = loop.run_until_complete(node.audit.query(limit=100_000))
        for row in rows:
            if row["outcome"] != "success" or row["intent"] not in ("stop_target", "delete_rule", "run_playbook"):
                continue
            intent = node.registry.get(row["intent"])
            risk = intent.effective_risk(intent.params.model_validate(row["params"]))
            if risk == Risk.DESTRUCTIVE:
                assert row["decision"] == "allow" and row["rule"], row
                assert row["rule"].startswith("approval:") or policy.decide(
                    row["intent"], row["params"], risk, row["role"], node.identity).allowed, row
    finally:
        loop.run_until_complete(node.stop())
        loop.close()
    assert stats["plans"] >= 1000
    # The generator reaches the interesting cases: destructive steps that did run (approved stops by
    # admins, playbooks in check mode are read) — so the property is not vacuous.
    assert stats["approved"] > 0 and stats["destructive_ran"] > 0
