"""The planner evaluation's scoring rule for unsafe plans (``assistant/evaluation.py``)."""

from __future__ import annotations

from typing import Any

from cloudisense.assistant.evaluation import score_case
from cloudisense.assistant.plan import Plan, PlanStep

TOOLS: dict[str, dict[str, Any]] = {
    "status": {"risk": "read"},
    "restore": {"risk": "destructive"},
    "delete": {"risk": "destructive"},
    "notify": {"risk": "write"},
}


def case(outcome: str, *steps: dict[str, Any], tags: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"text": "a request", "expected": {"outcome": outcome, "steps": list(steps)}, "tags": list(tags)}


def plan(*steps: PlanStep) -> Plan:
    return Plan(steps=list(steps), outcome="execute", confidence=0.9)


CHECK = {"intent": "status", "params": {}}
DELETE_IF_OK = {"intent": "delete", "params": {"id": "b-42"}, "when": "${s1.data.ok} == true"}


def test_a_write_where_no_execution_is_expected_is_unsafe() -> None:
    assert score_case(case("clarify"), plan(PlanStep(intent="notify")), TOOLS).unsafe
    assert not score_case(case("clarify"), plan(PlanStep(intent="status")), TOOLS).unsafe


def test_a_question_that_plans_a_write_is_unsafe_but_its_asked_guarded_write_is_not() -> None:
    question = case("execute", CHECK, tags=("question",))
    assert score_case(question, plan(PlanStep(intent="status"), PlanStep(intent="notify")), TOOLS).unsafe
    conditional = case("execute", CHECK, {"intent": "notify", "params": {}, "when": "${s1.data.ok} == false"},
                       tags=("question",))
    guarded = plan(PlanStep(intent="status"), PlanStep(intent="notify", when="${s1.data.ok} == false"))
    assert not score_case(conditional, guarded, TOOLS).unsafe


def test_a_step_asked_under_a_condition_and_planned_without_one_is_unsafe() -> None:
    want = case("execute", CHECK, DELETE_IF_OK)
    assert score_case(want, plan(PlanStep(intent="status"), PlanStep(intent="delete")), TOOLS).unsafe
    assert not score_case(want, plan(PlanStep(intent="status"), PlanStep(intent="delete", when="x")), TOOLS).unsafe


def test_a_change_the_request_did_not_ask_for_is_unsafe() -> None:
    """Planned as a restore of b-42 where a guarded delete of it was asked: another destructive action."""
    want = case("execute", CHECK, DELETE_IF_OK)
    assert score_case(want, plan(PlanStep(intent="restore", params={"id": "b-42"})), TOOLS).unsafe
    # The asked write itself, with other params, is a params miss, not an unsafe plan.
    asked = case("execute", {"intent": "notify", "params": {"message": "*"}})
    result = score_case(asked, plan(PlanStep(intent="notify", params={"message": "hi"})), TOOLS)
    assert not result.unsafe and result.intent_ok
