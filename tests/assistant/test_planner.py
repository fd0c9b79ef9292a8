"""Planners: grounding, multi-step split, clarify/escalate, model-output validation, hybrid, eval plumbing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bench.planner import EVAL, demo_context, run_strategy

from cloudisense.assistant.evaluation import evaluate, load_cases, score_case, significant_params
from cloudisense.assistant.offline import OfflinePlanner
from cloudisense.assistant.plan import Plan, PlanningContext, PlanStep
from cloudisense.assistant.plan_cli import plan_command, planning_context
from cloudisense.assistant.planner import (
    HybridPlanner,
    JsonSchemaPlanner,
    ToolCallingPlanner,
    choose_planner,
    plan_json_schema,
)
from cloudisense.config import load_settings
from cloudisense.llm.testing import ScriptedModel, tool_call

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "demo" / "cloudisense.toml"


@pytest.fixture(scope="module")
def demo() -> tuple[PlanningContext, Any]:
    context, registry = demo_context()
    return context, registry


@pytest.fixture(scope="module")
def ctx(demo: tuple[PlanningContext, Any]) -> PlanningContext:
    return demo[0]


async def steps_of(text: str, context: PlanningContext) -> list[tuple[str, dict[str, Any]]]:
    plan = await OfflinePlanner().plan(text, context)
    assert plan.outcome == "execute", (text, plan)
    tools = {t["name"]: t for t in context.tools}
    return [(s.intent, significant_params(s.params, tools[s.intent])) for s in plan.steps]


@pytest.mark.parametrize("text, expected", [
    ("show me the nginx error log", [("read_log", {"name": "nginx-error"})]),
    ("bounce the web service", [("restart_target", {"name": "web"})]),
    ("last 20 lines of the app log", [("read_log", {"name": "app", "lines": 20})]),
    ("errors in syslog from the last hour", [("search_logs", {"name": "syslog", "pattern": "error", "since_minutes": 60})]),
    ("list processes sorted by memory", [("list_processes", {"sort_by": "memory"})]),
    ("run the cleanup script", [("start_script_execution", {"name": "cleanup.sh"})]),
    ("run the nginx playbook in check mode", [("run_playbook", {"name": "nginx.yml", "check": True})]),
    ("dry-run the web role", [("run_playbook", {"name": "nginx.yml", "check": True})]),
    ("is the wroker up?", [("target_status", {"name": "worker"})]),
    # A log's entries are its lines, never a text to look for.
    ("the latest 40 entries of the app log", [("read_log", {"name": "app", "lines": 40})]),
    ("run the nginx playbook, trial mode", [("run_playbook", {"name": "nginx.yml", "check": True})]),
    # A bound said before a count makes it the count.
    ("up to 25 lines of the app log", [("read_log", {"name": "app", "lines": 25})]),
    # Arguments said as such are all of them, to the end of their clause.
    ("start cleanup.sh passing --older-than week and --quiet",
     [("start_script_execution", {"name": "cleanup.sh", "args": ["--older-than", "week", "--quiet"]})]),
])
async def test_offline_grounds_params_in_configured_entities(ctx: PlanningContext, text: str,
                                                              expected: list[tuple[str, dict[str, Any]]]) -> None:
    assert await steps_of(text, ctx) == expected


async def test_multi_step_requests_are_split_in_order(ctx: PlanningContext) -> None:
    plan = await OfflinePlanner().plan("restart the worker and tell me when it's healthy", ctx)
    assert [(s.id, s.intent, s.params) for s in plan.steps] == [
        ("s1", "restart_target", {"name": "worker"}), ("s2", "target_status", {"name": "worker"})]
    steps = await steps_of("check disk usage and then notify the team", ctx)
    assert [name for name, _ in steps] == ["get_disk_usage", "simple_http_notify"]
    assert steps[1][1]["message"]  # a message is composed when the user gave none
    assert await steps_of("restart the web service and nginx", ctx) == [
        ("restart_target", {"name": "web"}), ("restart_target", {"name": "nginx"})]


@pytest.mark.parametrize("text, words", [
    ("restart it", ["web", "worker", "nginx", "redis"]),
    ("restart", ["web", "worker"]),
    ("show me the log", ["app", "nginx-error"]),
    ("show me the nginx log", ["nginx-access", "nginx-error"]),
    ("run a playbook", ["nginx.yml", "users.yml"]),
])
async def test_clarify_asks_a_concrete_question(ctx: PlanningContext, text: str, words: list[str]) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "clarify" and not plan.steps
    assert plan.question and all(w in plan.question for w in words), plan.question


async def test_it_refers_to_the_conversation(ctx: PlanningContext) -> None:
    context = ctx.model_copy(update={"history": [{"role": "user", "content": "is redis ok?"},
                                                 {"role": "assistant", "content": "redis is running"}]})
    plan = await OfflinePlanner().plan("restart it", context)
    assert plan.outcome == "execute" and plan.steps[0].params == {"name": "redis"}


@pytest.mark.parametrize("text", ["delete all the servers", "run rm -rf on the box", "drop the prod database",
                                  "what's the weather in paris", "give me root access"])
async def test_escalate_what_no_intent_should_do(ctx: PlanningContext, text: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "escalate" and not plan.steps and plan.reason


async def test_viewer_plans_never_contain_writes(demo: tuple[PlanningContext, Any]) -> None:
    _, registry = demo
    from cloudisense.core.intents import Risk

    viewer = planning_context_for(registry, "viewer")
    for text in ("restart nginx", "stop redis", "run the cleanup script", "show me the app log"):
        plan = await OfflinePlanner().plan(text, viewer)
        assert all(registry.get(s.intent).risk == Risk.READ for s in plan.steps), (text, plan)


def planning_context_for(registry: Any, role: str) -> PlanningContext:
    context, _ = demo_context(role)
    return context


async def test_offline_is_deterministic(ctx: PlanningContext) -> None:
    cases = load_cases(EVAL / "dev.jsonl")
    planner, other = OfflinePlanner(), OfflinePlanner()
    first = [(await planner.plan(c["text"], ctx)).as_record(c["text"]) for c in cases]
    second = [(await other.plan(c["text"], ctx)).as_record(c["text"]) for c in reversed(cases)][::-1]
    assert first == second


# --- model planners: output is untrusted --------------------------------------------------------

async def test_tool_calling_planner_valid_call(demo: tuple[PlanningContext, Any]) -> None:
    ctx, registry = demo
    model = ScriptedModel([tool_call("read_log", {"name": "nginx-error", "lines": 20})])
    plan = await ToolCallingPlanner(model, registry).plan("20 nginx errors pls", ctx)
    assert plan.outcome == "execute" and plan.strategy == "tools"
    assert [(s.intent, s.params) for s in plan.steps] == [("read_log", {"name": "nginx-error", "lines": 20})]
    offered = {t.name for t in model.requests[0].tools}
    assert "read_log" in offered and {"ask_user", "escalate"} <= offered and len(offered) <= 16
    model.assert_all_used()


@pytest.mark.parametrize("text, call, why", [
    ("restart the web service", tool_call("format_disk", {"device": "/dev/sda"}), "not offered"),
    ("restart the web service", tool_call("read_log", {"name": "app"}), "not offered"),
    ("show the app log", tool_call("read_log", {"name": "app", "lines": "lots"}), "lines"),
    ("restart the web service", tool_call("restart_target", {"name": "web", "run_as": "root"}), "run_as"),
    ("restart the web service", tool_call("restart_target", {"name": "database"}), "not a configured target"),
    ("restart the web service", tool_call("restart_target", "{not json"), "not valid JSON"),
])
async def test_tool_calling_planner_rejects_bad_calls(demo: tuple[PlanningContext, Any], text: str, call: Any,
                                                      why: str) -> None:
    ctx, registry = demo
    plan = await ToolCallingPlanner(ScriptedModel([call]), registry).plan(text, ctx)
    assert plan.outcome == "clarify" and not plan.steps and plan.confidence <= 0.2
    assert why in (plan.reason or ""), plan.reason


async def test_tool_calling_planner_refuses_intents_the_role_may_not_run(demo: tuple[PlanningContext, Any]) -> None:
    _, registry = demo
    viewer = planning_context_for(registry, "viewer")
    plan = await ToolCallingPlanner(ScriptedModel([tool_call("stop_target", {"name": "web"})]), registry).plan(
        "stop web", viewer)
    assert plan.outcome == "clarify" and not plan.steps


async def test_tool_calling_planner_meta_tools(ctx: PlanningContext) -> None:
    ask = ScriptedModel([tool_call("ask_user", {"question": "Which log?"})])
    plan = await ToolCallingPlanner(ask).plan("show the log", ctx)
    assert (plan.outcome, plan.question) == ("clarify", "Which log?")
    esc = ScriptedModel([tool_call("escalate", {"reason": "outside scope"})])
    assert (await ToolCallingPlanner(esc).plan("order pizza", ctx)).outcome == "escalate"


async def test_json_schema_planner(demo: tuple[PlanningContext, Any]) -> None:
    ctx, registry = demo
    good = json.dumps({"outcome": "execute", "confidence": 0.8,
                       "steps": [{"intent": "restart_target", "params": {"name": "worker"}},
                                 {"intent": "target_status", "params": {"name": "worker"}}]})
    model = ScriptedModel([good])
    plan = await JsonSchemaPlanner(model, registry).plan("restart the worker and check it", ctx)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == ["restart_target", "target_status"]
    schema = model.requests[0].response_schema
    offered = [option["properties"]["intent"]["const"] for option in schema["properties"]["steps"]["items"]["anyOf"]]
    assert "restart_target" in offered and "chat_llm" not in offered and len(offered) <= 6
    restart = next(o for o in schema["properties"]["steps"]["items"]["anyOf"]
                   if o["properties"]["intent"]["const"] == "restart_target")
    assert restart["properties"]["params"]["properties"]["name"]["enum"] == sorted(ctx.entities["target"])


@pytest.mark.parametrize("answer, why", [
    ("sure! restarting now", "not valid JSON"),
    (json.dumps({"outcome": "execute", "steps": [{"intent": "restart_target", "params": {"name": "web"}}],
                 "execute_now": True}), "execute_now"),
    (json.dumps({"outcome": "execute", "steps": [{"intent": "delete_everything", "params": {}}]}), "not offered"),
    (json.dumps({"outcome": "execute", "steps": [{"intent": "read_log", "params": {"name": "app", "lines": -5}}]}), "lines"),
    (json.dumps({"outcome": "execute", "steps": [{"intent": "read_log", "params": {"name": "app"},
                                                  "sudo": True}]}), "sudo"),
    (json.dumps({"outcome": "execute", "steps": []}), "no steps"),
    (json.dumps([1, 2]), "not a JSON object"),
])
async def test_json_schema_planner_rejects_bad_plans(demo: tuple[PlanningContext, Any], answer: str, why: str) -> None:
    ctx, registry = demo
    plan = await JsonSchemaPlanner(ScriptedModel([answer]), registry).plan("show the app log", ctx)
    assert plan.outcome == "clarify" and not plan.steps and plan.confidence <= 0.2
    assert why in (plan.reason or ""), plan.reason


async def test_model_failure_does_not_raise(ctx: PlanningContext) -> None:
    plan = await JsonSchemaPlanner(ScriptedModel([ConnectionError("down")])).plan("show the app log", ctx)
    assert plan.outcome == "clarify" and "could not be reached" in (plan.reason or "")


def test_plan_schema_restricts_intents_and_names(ctx: PlanningContext) -> None:
    tools = [t for t in ctx.tools if t["name"] in ("read_log", "list_logs")]
    schema = plan_json_schema(tools, ctx.entities)
    options = schema["properties"]["steps"]["items"]["anyOf"]
    assert sorted(o["properties"]["intent"]["const"] for o in options) == ["list_logs", "read_log"]
    read_log = next(o for o in options if o["properties"]["intent"]["const"] == "read_log")
    params = read_log["properties"]["params"]
    assert params["additionalProperties"] is False and params["required"] == ["name"]
    assert params["properties"]["name"]["enum"] == sorted(ctx.entities["log"])
    assert params["properties"]["lines"] == {"type": "integer"}
    assert schema["additionalProperties"] is False


# --- hybrid and choice --------------------------------------------------------------------------

async def test_hybrid_skips_the_model_when_offline_is_confident(ctx: PlanningContext) -> None:
    model = ScriptedModel([])
    plan = await HybridPlanner(JsonSchemaPlanner(model)).plan("restart nginx", ctx)
    assert plan.strategy == "offline" and plan.steps[0].params == {"name": "nginx"}
    assert model.requests == []


async def test_hybrid_asks_the_model_when_unsure_and_keeps_offline_on_bad_output(ctx: PlanningContext) -> None:
    read = json.dumps({"outcome": "execute", "steps": [{"intent": "target_status", "params": {"name": "redis"}}]})
    change = json.dumps({"outcome": "execute", "steps": [{"intent": "restart_target", "params": {"name": "redis"}}]})
    model = ScriptedModel([read, change, "garbage"])
    hybrid = HybridPlanner(JsonSchemaPlanner(model))
    plan = await hybrid.plan("meh, redis", ctx)
    assert plan.strategy == "json" and plan.steps[0].params == {"name": "redis"}
    # A reading that changes something, of a request the offline planner could not read, is asked, never run.
    asked = await hybrid.plan("meh, redis", ctx)
    assert asked.outcome == "clarify" and not asked.steps
    assert "Did you mean: restart target (name=redis)?" in (asked.question or "")
    fallback = await hybrid.plan("meh, redis", ctx)
    assert fallback.strategy == "offline" and "model plan not used" in (fallback.reason or "")
    model.assert_all_used()


async def test_model_values_the_request_does_not_give_become_a_question(demo: tuple[PlanningContext, Any]) -> None:
    ctx, registry = demo
    guessed = json.dumps({"outcome": "execute", "steps": [{"intent": "restart_target", "params": {"name": "worker"}}]})
    plan = await JsonSchemaPlanner(ScriptedModel([guessed]), registry).plan("restart it", ctx)
    assert plan.outcome == "clarify" and not plan.steps and "Which target" in (plan.question or "")
    # The same answer after the operator named the worker is the plan.
    named = ctx.model_copy(update={"history": [{"role": "user", "content": "is the worker up?"}]})
    plan = await JsonSchemaPlanner(ScriptedModel([guessed]), registry).plan("restart it", named)
    assert plan.outcome == "execute" and plan.steps[0].params == {"name": "worker"}
    # An optional name the model picked is dropped: the intent's default (every log) applies.
    picked = json.dumps({"outcome": "execute", "steps": [{"intent": "search_logs",
                                                          "params": {"pattern": "timeout", "name": "syslog"}}]})
    plan = await JsonSchemaPlanner(ScriptedModel([picked]), registry).plan("any timeouts lately?", ctx)
    assert plan.outcome == "execute" and plan.steps[0].params == {"pattern": "timeout"}


async def test_hybrid_keeps_a_typo_hold_away_from_the_model(ctx: PlanningContext) -> None:
    model = ScriptedModel([])
    plan = await HybridPlanner(JsonSchemaPlanner(model)).plan("restat redis", ctx)
    assert plan.outcome == "clarify" and plan.held and model.requests == []


async def test_hybrid_never_sends_dangerous_requests_to_the_model(ctx: PlanningContext) -> None:
    model = ScriptedModel([])
    plan = await HybridPlanner(JsonSchemaPlanner(model)).plan("rm -rf / on every host", ctx)
    assert plan.outcome == "escalate" and model.requests == []


def test_choose_planner_offline_by_default(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, overrides={"data_dir": str(tmp_path)})
    assert isinstance(choose_planner(settings), OfflinePlanner)


# --- evaluation plumbing ------------------------------------------------------------------------

def test_scoring_rule_drops_defaults_and_matches_wildcards(ctx: PlanningContext) -> None:
    tools = {t["name"]: t for t in ctx.tools}
    case = {"text": "x", "expected": {"outcome": "execute", "steps": [
        {"intent": "list_processes", "params": {"sort_by": "memory"}},
        {"intent": "simple_http_notify", "params": {"message": "*"}}]}}
    good = Plan(steps=[PlanStep(intent="list_processes", params={"sort_by": "memory", "limit": 10}),
                       PlanStep(intent="simple_http_notify", params={"message": "disk is fine"})])
    result = score_case(case, good, tools)
    assert result.intent_ok and result.params_ok
    extra = Plan(steps=[PlanStep(intent="list_processes", params={"sort_by": "memory", "limit": 3}),
                        PlanStep(intent="simple_http_notify", params={"message": "x"})])
    result = score_case(case, extra, tools)
    assert result.intent_ok and not result.params_ok
    assert not score_case(case, Plan(outcome="clarify", question="?"), tools).intent_ok
    clar = {"text": "x", "expected": {"outcome": "clarify", "steps": []}}
    assert score_case(clar, Plan(outcome="clarify", question="which?"), tools).params_ok


async def test_bench_and_tests_share_the_evaluation_code(ctx: PlanningContext) -> None:
    heldout = load_cases(EVAL / "heldout.jsonl")
    dev = load_cases(EVAL / "dev.jsonl")
    assert len(heldout) >= 40 and len(dev) >= 60
    bench_report = await run_strategy("offline", heldout, ctx, None)
    direct = await evaluate(OfflinePlanner(), heldout, ctx)
    roles = {"viewer": demo_context("viewer")[0]}
    # Same code, same figures (no threshold on the held-out part: it is never tuned on).
    assert bench_report.intent_accuracy == direct.intent_accuracy
    assert [r.params_ok for r in bench_report.results] == [r.params_ok for r in direct.results]
    dev_report = await evaluate(OfflinePlanner(), dev, ctx, roles)
    assert dev_report.intent_accuracy >= 0.8 and dev_report.params_accuracy >= 0.7


def test_plan_command_batch_prints_one_json_plan_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDISENSE_DATA_DIR", str(tmp_path / "data"))
    batch = tmp_path / "requests.txt"
    batch.write_text("restart nginx\n\nshow me the log\ndelete all the servers\n")
    assert plan_command(DEMO_CONFIG, None, batch, as_json=True) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["outcome"] for r in lines] == ["execute", "clarify", "escalate"]
    assert lines[0] == {"text": "restart nginx", "steps": [{"intent": "restart_target", "params": {"name": "nginx"}}],
                        "confidence": lines[0]["confidence"], "outcome": "execute"}
    assert not (tmp_path / "data").exists()  # planning writes nothing
    assert plan_command(DEMO_CONFIG, "tail the app log", None, as_json=True) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["steps"][0] == {"intent": "read_log", "params": {"name": "app"}}


def test_planning_context_from_a_real_node(demo: tuple[PlanningContext, Any]) -> None:
    _, registry = demo
    from cloudisense.assistant.plan_cli import planning_node

    node = planning_node(DEMO_CONFIG, settings=load_settings(DEMO_CONFIG, environ={}, overrides={
        "auth": {"jwt_secret": "t" * 40}, "modules": ["system", "logs", "targets"]}))
    context = planning_context(node, "viewer")
    assert context.entities["target"] and "read_log" in {t["name"] for t in context.tools}
    assert "restart_target" not in {t["name"] for t in context.tools}


# --- the rules of issue 8, on the demo's own modules (the plugin's tests check them on an unseen one) ------

@pytest.mark.parametrize("text", ["is nginx up?", "did the worker crash?", "is ngnix runing?", "when did redis start?",
                                  "is the web service healthy?", "has the backup script run?"])
async def test_questions_never_plan_a_write(demo: tuple[PlanningContext, Any], text: str) -> None:
    ctx, registry = demo
    plan = await OfflinePlanner().plan(text, ctx)
    assert all(registry.get(s.intent).risk.value == "read" for s in plan.steps), (text, plan)


async def test_conditions_become_when_over_declared_result_fields(demo: tuple[PlanningContext, Any]) -> None:
    from cloudisense.assistant.conditions import result_fields

    ctx, registry = demo
    plan = await OfflinePlanner().plan("check redis and restart it if it's down", ctx)
    check, restart = plan.steps
    assert (check.intent, restart.intent) == ("target_status", "restart_target") and check.when is None
    assert restart.when == '${s1.data.state} != "running"'
    # The field is one the intent declares for its result.
    fields = {f.path for f in result_fields(registry.get("target_status").describe()["result"])}
    assert "state" in fields
    unless = await OfflinePlanner().plan("restart redis unless it's running", ctx)
    assert [s.intent for s in unless.steps] == ["target_status", "restart_target"]
    assert unless.steps[1].when == '${s1.data.state} != "running"'
    # A condition nothing can check is a question, never an unconditional action.
    vague = await OfflinePlanner().plan("restart redis if it feels sluggish", ctx)
    assert vague.outcome == "clarify" and not vague.steps


@pytest.mark.parametrize("text, intents, when", [
    # A yes/no question said first guards every action after it, not only the last one.
    ("disk over 92%? run rotate-logs.sh and email the team",
     ["get_disk_usage", "start_script_execution", "simple_email_notify"], "${s1.data.percent} > 92"),
    ("is redis up? if not, restart it", ["target_status", "restart_target"], '${s1.data.state} != "running"'),
    ("check whether haproxy is running and let the webhook know if not",
     ["check_process", "simple_http_notify"], "${s1.data.running} == false"),
    # A bound said first is a condition on what was read before it.
    ("check the disk; at 90% or more, run cleanup.sh", ["get_disk_usage", "start_script_execution"],
     "${s1.data.percent} >= 90"),
    # "unless ... at least" is "if ... less than".
    ("restart redis unless it's been up for at least an hour", ["target_status", "restart_target"],
     "${s1.data.uptime} < 3600"),
])
async def test_every_guarded_action_keeps_its_condition(ctx: PlanningContext, text: str, intents: list[str],
                                                        when: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == intents, plan
    assert plan.steps[0].when is None and all(s.when == when for s in plan.steps[1:]), plan


async def test_a_condition_on_it_checks_what_the_step_before_acted_on(ctx: PlanningContext) -> None:
    """"it" in a condition that names nothing is the thing of the step before; a later event ("if it crashes")
    is nothing a read can test now, so it is asked about, never run unconditionally."""
    plan = await OfflinePlanner().plan("stop redis and if it is still running, tell the team", ctx)
    assert [(s.intent, s.params) for s in plan.steps[:2]] == [("stop_target", {"name": "redis"}),
                                                             ("target_status", {"name": "redis"})], plan
    assert plan.steps[2].intent == "simple_http_notify" and plan.steps[2].when == '${s2.data.state} == "running"'
    later = await OfflinePlanner().plan("start nginx and if it crashes page the team", ctx)
    assert later.outcome == "clarify" and not later.steps
    other = await OfflinePlanner().plan("if the worker is anything other than running, start it", ctx)
    assert other.steps[-1].when == '${s1.data.state} != "running"', other


@pytest.mark.parametrize("text, steps", [
    # What is so, then what to do about it: the statement's words ("reboot") choose no action, "isn't" names
    # no process, and a step after the order is still a step.
    ("the worker died after the reboot, start it", [("start_target", {"name": "worker"})]),
    ("redis isn't answering — stop it", [("stop_target", {"name": "redis"})]),
    ("the worker has been off since the upgrade; power it back on", [("start_target", {"name": "worker"})]),
    ("we're rotating certificates by hand, so stop nginx", [("stop_target", {"name": "nginx"})]),
    ("the web app is serving stale pages, give it a fresh start", [("restart_target", {"name": "web"})]),
    ("nginx crashed, restart it and tell the team",
     [("restart_target", {"name": "nginx"}), ("simple_http_notify", None)]),
])
async def test_what_is_so_then_what_to_do(ctx: PlanningContext, text: str,
                                          steps: list[tuple[str, dict[str, Any] | None]]) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == [i for i, _ in steps], plan
    assert all(p is None or s.params == p for s, (_, p) in zip(plan.steps, steps, strict=True)), plan


@pytest.mark.parametrize("text, intents", [
    # A second question after "and", and a second thing of another kind, are steps of their own.
    ("is redis up, and when did nginx last restart?", ["target_status", "target_status"]),
    ("the nginx status and the app log", ["target_status", "read_log"]),
    # What two owners share is said once: "nginx's and redis's uptime".
    ("compare nginx's and redis's uptime", ["target_status", "target_status"]),
])
async def test_each_thing_asked_about_is_a_step(ctx: PlanningContext, text: str, intents: list[str]) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "execute" and [s.intent for s in plan.steps] == intents, plan


async def test_amounts_said_as_quarters_and_ranks(ctx: PlanningContext) -> None:
    assert await steps_of("search the app log for 500 responses in the past three quarters of an hour", ctx) == [
        ("search_logs", {"pattern": "500", "name": "app", "since_minutes": 45})]
    assert await steps_of("the 4 worst memory hogs", ctx) == [("list_processes", {"sort_by": "memory", "limit": 4})]


async def test_it_is_the_id_of_the_step_before(ctx: PlanningContext) -> None:
    plan = await OfflinePlanner().plan("ack alert 12 and then silence it for 45 minutes", ctx)
    assert [(s.intent, s.params) for s in plan.steps] == [("ack_alert", {"id": 12}),
                                                         ("silence_alert", {"minutes": 45, "id": 12})]
    alone = await OfflinePlanner().plan("silence it for 45 minutes", ctx)
    assert alone.outcome == "clarify" and not alone.steps  # nothing said before: which alert is asked


async def test_aliases_are_configuration(ctx: PlanningContext) -> None:
    assert await steps_of("restart the kv store", ctx) == [("restart_target", {"name": "redis"})]
    without = ctx.model_copy(update={"aliases": {}})
    plan = await OfflinePlanner().plan("restart the kv store", without)
    assert not any(s.params.get("name") == "redis" for s in plan.steps)


@pytest.mark.parametrize("text", ["help", "thanks", "thank you!", "hello", "quit", "exit", "hi there",
                                  "that's all, thank you", "great, that's all for now",
                                  "afternoon! just checking in", "nice one, heading home now", "afk, be right back",
                                  "cheers buddy, you're the best", "must dash, bye", "describe your skills",
                                  "hi, quick question coming up", "stepping out for lunch, back soon",
                                  "do you understand plain english?", "I owe you one for that",
                                  "perfect, just what I needed", "no worries, I'll take it from here",
                                  "where's the list of what you can do here?", "how do I ask you for several things?",
                                  "can you deal with alerts as well, or only logs?",
                                  "evening, on-call team here, all calm so far", "thanks mate, disaster averted",
                                  "never mind, false alarm", "morning, infra crew checking in"])
async def test_small_talk_is_answered(ctx: PlanningContext, text: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "answer" and plan.message and not plan.steps


@pytest.mark.parametrize("text, intent, name", [
    ("don't stop redis, just show me its status", "target_status", "redis"),
    ("I'd rather not restart nginx, just check its status", "target_status", "nginx"),
    # Politeness said as a condition is no condition.
    ("restart nginx if you can", "restart_target", "nginx"),
    ("when you get a chance, stop redis", "stop_target", "redis"),
    ("alright, restart nginx", "restart_target", "nginx"),
    # "stopped" is "stop" with its ending, not a typo to ask about.
    ("redis: stop it, and keep it stopped", "stop_target", "redis"),
])
async def test_what_not_to_do_and_openings_are_no_steps(ctx: PlanningContext, text: str, intent: str,
                                                         name: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == "execute" and [(s.intent, s.params) for s in plan.steps] == [(intent, {"name": name})]


@pytest.mark.parametrize("text, intent, params", [
    # The text to look for is what search_logs requires; reading the last lines only filters by it as an option.
    ("show syslog lines that contain 'fan failure'", "search_logs", {"pattern": "fan failure", "name": "syslog"}),
    # ... unless the request says what only the read takes (how many of the last lines).
    ("read the last 100 lines of the app log containing timeout", "read_log",
     {"name": "app", "lines": 100, "grep": "timeout"}),
    # A field of hosts takes a host said the way hosts are named, or a pattern of them.
    ("rehearse nginx.yml against web2", "run_playbook", {"name": "nginx.yml", "check": True, "limit": "web2"}),
    ("apply users.yml to db1 only", "run_playbook", {"name": "users.yml", "limit": "db1"}),
    ("push nginx.yml to the hosts matching web*", "run_playbook", {"name": "nginx.yml", "limit": "web*"}),
])
async def test_the_intent_made_for_the_text_said(ctx: PlanningContext, text: str, intent: str,
                                                 params: dict[str, Any]) -> None:
    assert await steps_of(text, ctx) == [(intent, params)]


async def test_role_refusal_is_said_as_such(demo: tuple[PlanningContext, Any]) -> None:
    viewer = demo_context("viewer")[0]
    plan = await OfflinePlanner().plan("restart the worker", viewer)
    assert plan.outcome == "refuse" and not plan.steps
    assert "Viewers can't" in (plan.message or "") and "operator" in (plan.message or "")


async def test_a_viewer_may_ask_for_exactly_the_read_an_action_allows() -> None:
    """The catalogue, the planner and the router read one fact (``read_when``): a viewer's check-mode
    playbook run is planned (and the router lets it run), a real one is refused and says what is allowed."""
    viewer = demo_context("viewer")[0]
    plan = await OfflinePlanner().plan("dry run nginx.yml", viewer)
    assert plan.outcome == "execute" and [(s.intent, s.params) for s in plan.steps] == [
        ("run_playbook", {"name": "nginx.yml", "check": True})]
    refused = await OfflinePlanner().plan("run nginx.yml", viewer)
    assert refused.outcome == "refuse" and not refused.steps
    assert "only as a read (check=true)" in (refused.message or "") and "operator" in (refused.message or "")


@pytest.mark.parametrize("text", ["restart nginx... actually no", "stop the worker? no wait, don't",
                                  "run cleanup.sh, scratch that", "can you not restart nginx?",
                                  "could you please not stop redis", "I'd rather not restart nginx",
                                  "let's not stop the worker", "nobody should stop redis",
                                  "restart the worker? no way", "we shouldn't restart nginx"])
async def test_a_request_taken_back_or_asked_not_to_runs_nothing(ctx: PlanningContext, text: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert not plan.steps and plan.outcome in ("answer", "clarify"), plan


@pytest.mark.parametrize("text", ["someone deleted demo/a.txt", "I restarted redis already",
                                  "we stopped the worker for maintenance", "cleanup.sh ran twice yesterday",
                                  "the worker restarted twice overnight", "i just ran backup.sh",
                                  "list the processes older than 2 days", "nginx was stopped by someone",
                                  "redis got restarted by mistake", "stopping nginx is a bad idea",
                                  "restarting the worker fixed it", "we needed to restart nginx yesterday",
                                  "they tried to stop the worker", "the alert says 'restart nginx'",
                                  "the runbook suggested stopping redis"])
async def test_a_report_of_what_was_done_is_never_done_again(ctx: PlanningContext, text: str) -> None:
    """A subject and a verb of doing in the past is a report, and "stopping X is a bad idea" a statement about
    doing it: whatever the plan, it changes nothing."""
    plan = await OfflinePlanner().plan(text, ctx)
    risks = {t["name"]: t.get("risk") for t in ctx.tools}
    assert all(risks[s.intent] == "read" for s in plan.steps), plan


@pytest.mark.parametrize("text, outcome", [("restrat nginx", "clarify"), ("stopp nginx", "clarify"),
                                           ("is the wroker up?", "execute"), ("stp the worker", "clarify"),
                                           # ... and after a remark, where it is not the first word.
                                           ("the worker config changed, restatr it", "clarify")])
async def test_typos_never_become_confident_writes(ctx: PlanningContext, text: str, outcome: str) -> None:
    plan = await OfflinePlanner().plan(text, ctx)
    assert plan.outcome == outcome, plan
    assert all(s.intent == "target_status" for s in plan.steps)  # a typo'd request only ever reads here
    if outcome == "clarify":
        # "stp" is too short to be read as "stop": a verb no intent knows, so the planner asks what to do.
        assert plan.confidence < 0.5
        assert "Did you mean" in (plan.question or "") or "What should I do" in (plan.question or "")


def test_planner_tables_keyed_to_built_in_intents_are_gone() -> None:
    from cloudisense.assistant import extract, offline, offline_segment

    for name in ("HINTS", "PLANNER_EXCLUDED", "LIST_KIND", "KIND_DEFAULT_INTENT"):
        assert not hasattr(offline, name)
    for name in ("ALIASES", "PATTERN_WORDS", "KIND_WORDS"):
        assert not hasattr(extract, name)
    assert not hasattr(offline_segment, "_fix_log_intent")


def test_answers_are_words_not_json() -> None:
    from cloudisense.assistant.answer import compose_answer

    text = compose_answer({"steps": [{"intent": "list_widgets", "status": "ok", "params": {},
                                      "data": {"widgets": [{"id": "w-1", "size": 3}, {"id": "w-2", "size": 5}],
                                               "total": 2}}]})
    assert "{" not in text and "w-1" in text and "w-2" in text and "size" in text


@pytest.mark.parametrize("plugin", [False, True], ids=["demo", "plugin"])
def test_every_eval_set_is_well_formed(plugin: bool) -> None:
    """Each case of every set (dev and each held-out round) names real intents with params their models
    accept, conditions over earlier steps, a known role and outcome: a mislabelled held-out case would
    otherwise only show up as a planner miss."""
    from bench.planner import case_sets, contexts

    _, roles, registry = contexts(plugin)
    sets = case_sets(EVAL / "plugin" if plugin else EVAL)
    assert list(sets)[:3] == ["dev", "heldout", "heldout2"]
    for name, cases in sets.items():
        assert cases, name
        for case in cases:
            where = f"{name}: {case['text']!r}"
            expected = case["expected"]
            assert expected["outcome"] in {"execute", "clarify", "escalate", "refuse", "answer"}, where
            role = case.get("role", "operator")
            allowed = {t["name"] for t in roles[role].tools}
            # What the role may run only as a read ("check": true for a viewer's playbook run).
            as_read = {t["name"]: t["allowed_when"] for t in roles[role].refused if t.get("allowed_when")}
            steps = expected.get("steps") or []
            assert bool(steps) == (expected["outcome"] == "execute"), where
            for i, step in enumerate(steps, 1):
                assert step["intent"] in allowed or (
                    step["intent"] in as_read
                    and all(step["params"].get(k) == v for k, v in as_read[step["intent"]].items())), where
                params = {k: ("a text" if v == "*" else v) for k, v in step["params"].items()}
                model = registry.get(step["intent"]).params
                assert set(params) <= set(model.model_fields), where
                model.model_validate(params)  # raises on a bad label
                for ref in re.findall(r"\$\{s(\d+)\.data\.", step.get("when") or ""):
                    assert 1 <= int(ref) < i, where


@pytest.mark.parametrize("text, expected", [
    # Two letters of a word of grammar swapped are a slip ("teh", "waht"), never a text to look for; "three" stays.
    ("show teh last 20 lines of syslog", [("read_log", {"name": "syslog", "lines": 20})]),
    ("waht is teh load right now", [("get_system_stats", {})]),
    ("top three processes by cpu", [("list_processes", {"limit": 3})]),
    # A configured name mistyped so that its stem is two letters off ("acces" stems to "acce") is still it.
    ("last 30 lines of nginx-acess", [("read_log", {"name": "nginx-access", "lines": 30})]),
    ("gimme the end of nginx-acces, 150 lines", [("read_log", {"name": "nginx-access", "lines": 150})]),
])
async def test_slips_of_the_fingers_in_small_words_and_names(ctx: PlanningContext, text: str,
                                                               expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


async def test_a_mistyped_word_of_an_alias_is_a_typo_before_a_change(ctx: PlanningContext) -> None:
    """"kv" names redis, and "stoer" is "store" of the alias "kv store" mistyped: a change is asked about."""
    plan = await OfflinePlanner().plan("restart the kv stoer", ctx)
    assert plan.outcome == "clarify" and "restart" in (plan.question or ""), plan
    assert (await OfflinePlanner().plan("restart the kv store", ctx)).outcome == "execute"


@pytest.mark.parametrize("text, expected", [
    # A sentence about the speaker or the day, before the request, is no part of it.
    ("long night here. restart nginx", [("restart_target", {"name": "nginx"})]),
    ("I haven't slept since the deploy. what's the load like?", [("get_system_stats", {})]),
    ("been on call all week. last 20 lines of syslog", [("read_log", {"name": "syslog", "lines": 20})]),
])
async def test_a_remark_before_the_request_is_no_part_of_it(ctx: PlanningContext, text: str,
                                                             expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


async def test_a_flag_that_keeps_only_some_fields_is_asked_for_by_naming_them(ctx: PlanningContext) -> None:
    """list_rules' ``head`` is described as "only id, description and enabled"."""
    assert await steps_of("list the rules, just id and description", ctx) == [("list_rules", {"head": True})]
    assert await steps_of("list the rules", ctx) == [("list_rules", {})]


async def test_what_to_leave_out_is_no_step(ctx: PlanningContext) -> None:
    assert await steps_of("skip the dry run, restart nginx", ctx) == [("restart_target", {"name": "nginx"})]
    plan = await OfflinePlanner().plan("skip the cleanup", ctx)
    assert plan.outcome == "clarify" and not plan.steps


@pytest.mark.parametrize("text, expected", [
    # Doing a named thing is running it; both words of a two-word name say it, in either order and form.
    ("do the cleanup", [("start_script_execution", {"name": "cleanup.sh"})]),
    ("carry out the log rotation", [("start_script_execution", {"name": "rotate-logs.sh"})]),
    ("run the log rotation", [("start_script_execution", {"name": "rotate-logs.sh"})]),
    ("do a dry run of the nginx playbook", [("run_playbook", {"name": "nginx.yml", "check": True})]),
])
async def test_doing_a_named_thing_runs_it(ctx: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


@pytest.mark.parametrize("text, expected", [
    # A value said with its kind: "the demo root" for a root, "the db1 host" / "host db1" for a host pattern.
    ("what is stored in the demo root?", [("list_content", {"root": "demo"})]),
    ("check-mode users.yml on host db1", [("run_playbook", {"name": "users.yml", "check": True, "limit": "db1"})]),
    ("run nginx.yml on the web2 box", [("run_playbook", {"name": "nginx.yml", "limit": "web2"})]),
])
async def test_a_value_said_with_its_kind(ctx: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


@pytest.mark.parametrize("text, expected", [
    # "the same text" / "that message" is the free text an earlier step took; broadcasting is publishing.
    ("write 'back at 9' to demo/motd.txt, then broadcast the same text on /team",
     [("write_file", {"path": "demo/motd.txt", "content": "back at 9"}),
      ("publish_channel", {"topic": "/team", "message": "back at 9"})]),
    ("email the team 'db is back', then post that message to telegram too",
     [("simple_email_notify", {"message": "db is back"}), ("simple_telegram_notify", {"message": "db is back"})]),
])
async def test_the_same_text_is_the_text_said_before(ctx: PlanningContext, text: str,
                                                     expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


@pytest.mark.parametrize("text, expected", [
    # Each absolute path listed is a step; a word of order at a piece's end ("first", "second") says only when.
    ("how full are /tmp, /var and /home?", [("get_disk_usage", {"path": "/tmp"}), ("get_disk_usage", {"path": "/var"}),
                                             ("get_disk_usage", {"path": "/home"})]),
    ("restart nginx first and the worker second", [("restart_target", {"name": "nginx"}),
                                                   ("restart_target", {"name": "worker"})]),
])
async def test_listed_paths_and_words_of_order(ctx: PlanningContext, text: str, expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


async def test_a_word_that_judges_is_no_text_to_look_for(ctx: PlanningContext) -> None:
    plan = await OfflinePlanner().plan("anything strange in the app log lately?", ctx)
    assert all(s.params.get("pattern") != "strange" for s in plan.steps), plan
    assert await steps_of("search the app log for 'strange'", ctx) == [
        ("search_logs", {"pattern": "strange", "name": "app"})]


async def test_who_is_there_before_a_request_is_a_greeting(ctx: PlanningContext) -> None:
    assert await steps_of("night shift here, restart nginx", ctx) == [("restart_target", {"name": "nginx"})]
    assert await steps_of("hi, on-call team here, is redis up?", ctx) == [("target_status", {"name": "redis"})]


@pytest.mark.parametrize("text, expected", [
    # "once that's done" orders the steps; it is no condition to check.
    ("restart redis; once that's done, restart the web app", [("restart_target", {"name": "redis"}),
                                                              ("restart_target", {"name": "web"})]),
    # What has to be done to a thing is an order.
    ("the frontend has to be restarted", [("restart_target", {"name": "nginx"})]),
    ("the worker needs to be stopped", [("stop_target", {"name": "worker"})]),
])
async def test_order_said_as_sequence_or_necessity(ctx: PlanningContext, text: str,
                                                   expected: list[tuple[str, Any]]) -> None:
    assert await steps_of(text, ctx) == expected


async def test_the_difference_between_two_actions_is_answered_from_their_declarations(ctx: PlanningContext) -> None:
    plan = await OfflinePlanner().plan("what's the difference between restarting a service and stopping it?", ctx)
    tools = {t["name"]: t for t in ctx.tools}
    assert plan.outcome == "answer" and not plan.steps, plan
    assert str(tools["restart_target"]["description"]).rstrip(".") in (plan.message or "")
    assert str(tools["stop_target"]["description"]).rstrip(".") in (plan.message or "")


async def test_for_real_is_no_value(ctx: PlanningContext) -> None:
    assert await steps_of("apply nginx.yml for real with listen_port=8088", ctx) == [
        ("run_playbook", {"name": "nginx.yml", "extra_vars": {"listen_port": 8088}})]


async def test_a_thing_by_its_id_then_what_it_is_then_the_order(ctx: PlanningContext) -> None:
    """"run <id> has been spinning forever, kill it": "run" names the thing there, it orders nothing."""
    assert await steps_of("run 0f1e2d3c4b5a6978 has been hanging for an hour, stop it", ctx) == [
        ("stop_script_execution", {"script_id": "0f1e2d3c4b5a6978"})]
