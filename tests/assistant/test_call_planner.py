"""The local model's planner: call-syntax grammar, parsing untrusted answers, small prompts, grounding."""

from __future__ import annotations

from typing import Any

import pytest
from bench.planner import contexts, demo_context

from cloudisense.assistant.call_grammar import (
    CallSyntaxError,
    parse_plan,
    plan_grammar,
    render_call,
    signature,
)
from cloudisense.assistant.plan import PlanningContext
from cloudisense.assistant.planner import CallPlanner, HybridPlanner, choose_planner
from cloudisense.llm.testing import ScriptedModel


@pytest.fixture(scope="module")
def demo() -> tuple[PlanningContext, Any]:
    return demo_context()


@pytest.fixture(scope="module")
def plugin() -> tuple[PlanningContext, Any]:
    context, _roles, registry = contexts(plugin=True)
    return context, registry


def test_grammar_is_valid_gbnf_for_every_tool_of_both_nodes(demo: tuple[PlanningContext, Any],
                                                           plugin: tuple[PlanningContext, Any]) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for context, _ in (demo, plugin):
        grammar = plan_grammar(context.tools, context.entities)
        llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)  # raises on a bad grammar
        assert '"restart_target(" ' in grammar and '"\\"redis\\""' in grammar


def test_grammar_limits_names_and_params_to_the_offered_tools(demo: tuple[PlanningContext, Any]) -> None:
    context, _ = demo
    tools = [t for t in context.tools if t["name"] in ("restart_target", "read_log")]
    grammar = plan_grammar(tools, context.entities)
    assert "stop_target" not in grammar and "delete_file" not in grammar
    assert 'a-read-log ::= "name=" ("\\"app\\"" |' in grammar and '"lines=" int' in grammar


@pytest.mark.parametrize("answer, calls", [
    ('restart_target(name="redis")', [("restart_target", {"name": "redis"})]),
    ('search_logs(pattern="timeout", since_minutes=120)\nsimple_http_notify(message="found some")',
     [("search_logs", {"pattern": "timeout", "since_minutes": 120}), ("simple_http_notify", {"message": "found some"})]),
    ("list_targets()", [("list_targets", {})]),
    ('run_playbook(name="nginx.yml", check=True)', [("run_playbook", {"name": "nginx.yml", "check": True})]),
])
def test_parse_plan_reads_calls(answer: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    assert parse_plan(answer).calls == calls


def test_parse_plan_reads_questions_and_escalations() -> None:
    assert parse_plan('ask("Which backup should I restore?")').question == "Which backup should I restore?"
    assert parse_plan('escalate("nothing here can order food")').escalation == "nothing here can order food"


@pytest.mark.parametrize("answer", [
    "", "sure, restarting now", '__import__("os").system("id")', 'restart_target(name=open("x"))',
    'restart_target(name="a", name="b")', 'os.system(cmd="id")', 'restart_target("redis")',
    'ask("a")\nrestart_target(name="web")', "\n".join(['list_targets()'] * 5), "lambda: 1",
    'restart_target(name="x" * 10**9)',
])
def test_parse_plan_refuses_anything_else(answer: str) -> None:
    with pytest.raises(CallSyntaxError):
        parse_plan(answer)


def test_worked_examples_round_trip() -> None:
    text = render_call("search_logs", {"pattern": "error", "since_minutes": 60, "regex": False})
    assert text == 'search_logs(pattern="error", since_minutes=60, regex=False)'
    assert parse_plan(text).calls == [("search_logs", {"pattern": "error", "since_minutes": 60, "regex": False})]
    assert render_call("simple_http_notify", {"message": 'say "hi"'}) is None  # a quote the grammar can't write


def test_signature_is_one_short_line(demo: tuple[PlanningContext, Any]) -> None:
    context, _ = demo
    line = signature(next(t for t in context.tools if t["name"] == "read_log"))
    assert line.startswith("read_log(name: log, lines: int = ...") and "\n" not in line and len(line) < 200


async def test_call_planner_sends_a_small_prompt_and_a_grammar(demo: tuple[PlanningContext, Any]) -> None:
    context, registry = demo
    model = ScriptedModel(['restart_target(name="redis")'])
    plan = await CallPlanner(model, registry).plan("bounce the kv store", context)
    assert plan.outcome == "execute" and [(s.intent, s.params) for s in plan.steps] == [
        ("restart_target", {"name": "redis"})]
    request = model.requests[0]
    assert request.grammar is not None and request.response_schema is None and not request.tools
    system = request.messages[0].content or ""
    offered = [line.split("(")[0] for line in system.splitlines() if "(" in line and "  # " in line]
    # The intents of the module the request is about, none of another's that ranks far below.
    assert "restart_target" in offered and "list_approvals" not in offered and len(offered) <= 6
    assert "redis (also: cache, kv, kv store)" in system  # what people call it, from the config
    # Worked examples are earlier turns, planned offline from the intents' own examples.
    assert [m.role for m in request.messages[1:-1]][:2] == ["user", "assistant"]
    assert request.messages[-1].content == "bounce the kv store"


async def test_call_planner_questions_escalations_and_bad_answers(demo: tuple[PlanningContext, Any]) -> None:
    context, registry = demo
    model = ScriptedModel(['ask("Which service?")', 'escalate("no pizza here")', "garbage", 'stop_target(name="x")'])
    planner = CallPlanner(model, registry)
    asked = await planner.plan("restart the thing", context)
    assert (asked.outcome, asked.question) == ("clarify", "Which service?")
    assert (await planner.plan("order pizza", context)).outcome == "escalate"
    bad = await planner.plan("restart the thing", context)
    assert bad.outcome == "clarify" and bad.rejected and "not a call" in (bad.reason or "")
    wrong = await planner.plan("restart the thing", context)
    assert wrong.outcome == "clarify" and wrong.rejected


async def test_invented_ids_and_unknown_databases_become_questions(plugin: tuple[PlanningContext, Any]) -> None:
    context, registry = plugin
    databases = context.entities["database"]
    answers = [f'restore_backup(database="{databases[0]}", backup_id="b-17")',
               f'start_backup(database="{databases[0]}")']
    planner = CallPlanner(ScriptedModel(answers), registry)
    restore = await planner.plan(f"restore the {databases[0]} database", context)
    assert restore.outcome == "clarify" and not restore.steps and "backup id" in (restore.question or "")
    unknown = await planner.plan("back up the inventory database", context)
    assert unknown.outcome == "clarify" and "Which database" in (unknown.question or "")


def test_choose_planner_uses_the_call_planner_for_local(tmp_path: Any) -> None:
    from cloudisense.config import load_settings

    settings = load_settings(None, environ={}, overrides={"data_dir": str(tmp_path),
                                                          "llm": {"provider": "local"}})
    planner = choose_planner(settings, provider=ScriptedModel([]))
    assert isinstance(planner, HybridPlanner) and isinstance(planner.model, CallPlanner)


async def test_hybrid_keeps_the_offline_plan_where_a_model_plan_would_be_worse(
        demo: tuple[PlanningContext, Any]) -> None:
    context, registry = demo
    # Out of scope for the offline planner: escalated without asking the model.
    model = ScriptedModel([])
    assert (await HybridPlanner(CallPlanner(model, registry)).plan("what's the weather in paris", context)).outcome \
        == "escalate"
    assert model.requests == []
    # A required detail the request lacks: the offline question stands (held), no model guess.
    held = await HybridPlanner(CallPlanner(model, registry)).plan("restart it", context)
    assert held.outcome == "clarify" and held.held and model.requests == []
    # The model is asked, but its plan would write for a question / drop a condition / only ask.
    model = ScriptedModel(['restart_target(name="redis")', 'ask("Which?")', 'restart_target(name="redis")'])
    hybrid = HybridPlanner(CallPlanner(model, registry), threshold=1.01)
    question = await hybrid.plan("is redis healthy?", context)
    assert question.strategy == "offline" and "a question must not plan a write" in (question.reason or "")
    asked = await hybrid.plan("restart redis", context)
    assert asked.strategy == "offline" and asked.outcome == "execute"
    fewer = await hybrid.plan("restart redis and then tell the team", context)
    assert fewer.strategy == "offline" and "leaves out a step" in (fewer.reason or "")
    conditional = await hybrid.plan("restart redis if it is down", context)  # conditions: offline only
    assert conditional.strategy == "offline" and len(model.requests) == 3


async def test_optional_flags_and_numbers_the_request_does_not_give_are_dropped(
        plugin: tuple[PlanningContext, Any]) -> None:
    context, registry = plugin
    database = context.entities["database"][0]
    answers = [f'start_backup(database="{database}", full=True)', 'list_processes(sort_by="cpu", limit=1)',
               'list_processes(sort_by="cpu", limit=3)']
    planner = CallPlanner(ScriptedModel(answers), registry)
    fresh = await planner.plan(f"make a fresh backup of {database}", context)
    assert fresh.steps[0].params == {"database": database}
    hogging = await planner.plan("what's hogging the cpu", context)
    assert hogging.steps[0].params == {"sort_by": "cpu"}
    top3 = await planner.plan("the 3 busiest processes", context)
    assert top3.steps[0].params == {"sort_by": "cpu", "limit": 3}


async def test_hybrid_model_is_a_second_opinion_on_an_unsure_offline_plan(demo: tuple[PlanningContext, Any]) -> None:
    context, registry = demo
    text = "give redis a nudge"
    unsure = (await HybridPlanner(CallPlanner(ScriptedModel([]), registry)).offline.plan(text, context))
    assert unsure.outcome == "execute" and unsure.confidence < 1.0
    (intent,) = [s.intent for s in unsure.steps]
    other = "restart_target" if intent != "restart_target" else "start_target"
    model = ScriptedModel([f'{intent}(name="redis")', f'{other}(name="redis")'])
    hybrid = HybridPlanner(CallPlanner(model, registry), threshold=1.0)
    agreed = await hybrid.plan(text, context)
    assert agreed.strategy == "offline" and agreed.confidence == 1.0 and "the model agrees" in (agreed.reason or "")
    differs = await hybrid.plan(text, context)
    assert [s.intent for s in differs.steps] == [intent] and differs.confidence == unsure.confidence
    assert f"planned {other} instead" in (differs.reason or "")


async def test_requests_about_the_same_modules_begin_with_the_same_prompt(demo: tuple[PlanningContext, Any]) -> None:
    """What lets the local provider's kept prompt states compute a module's part of the prompt once."""
    context, registry = demo
    model = ScriptedModel(['restart_target(name="redis")', 'restart_target(name="nginx")',
                           'restart_target(name="worker")\nsimple_http_notify(message="worker restarted")'])
    planner = CallPlanner(model, registry)
    for text in ("bounce the kv store", "restart nginx", "restart the worker and notify the team"):
        await planner.plan(text, context)
    first, second, both = (r.messages[0].content or "" for r in model.requests)
    assert first == second  # the same module: the same opening, whatever the request
    offered = [line.split("(")[0] for line in both.splitlines() if "  # " in line]
    assert {"restart_target", "simple_http_notify"} <= set(offered)
    # Two modules: each module's intents together, in the catalogue's order, so the same pair
    # of modules is always the same text.
    assert offered == [t["name"] for t in planner.catalog(context).tools if t["name"] in offered]


def _sample_value(spec: Any) -> Any:
    if spec.kind == "choices":
        return spec.choices[-1]
    return {"int": "12", "num": "1.5", "bool": "True", "str": '"a, b) c"', "array": "[]"}[spec.kind]


def _sample_calls(tools: list[dict[str, Any]], entities: dict[str, list[str]]) -> list[str]:
    """One call per tool with no arguments, one with all of them (in the tool's order)."""
    from cloudisense.assistant.call_grammar import _calls

    calls = []
    for name, args in _calls(tools, entities).items():
        calls.append(f"{name}()")
        if args:
            calls.append(f"{name}(" + ", ".join(f"{p}={_sample_value(v)}" for p, v in args.items()) + ")")
    return calls


def test_forced_text_is_always_how_a_valid_plan_goes_on(demo: tuple[PlanningContext, Any],
                                                       plugin: tuple[PlanningContext, Any]) -> None:
    from cloudisense.assistant.call_grammar import Forcing

    for context, _ in (demo, plugin):
        by_module: dict[str, list[dict[str, Any]]] = {}
        for tool in context.tools:
            by_module.setdefault(tool.get("module") or "", []).append(tool)
        for tools in by_module.values():
            forcing = Forcing(tools, context.entities)
            calls = _sample_calls(tools, context.entities)
            plans = [*calls, "\n".join(calls[:2]), 'ask("which one, the web or the db?")', 'escalate("no")']
            for plan in plans:
                for i in range(len(plan)):
                    fixed = forcing(plan[:i])
                    assert plan[i:].startswith(fixed), (plan[:i], fixed)
                assert forcing(plan) == ""  # after a whole call: a new line or the end, the model's choice


def test_forcing_leaves_the_model_only_its_choices(demo: tuple[PlanningContext, Any]) -> None:
    from cloudisense.assistant.call_grammar import Forcing

    context, _ = demo
    tools = [t for t in context.tools if t.get("module") == "targets"]
    forcing = Forcing(tools, context.entities)
    plan, chosen, i = 'restart_target(name="redis")', [], 0
    while i < len(plan):
        fixed = forcing(plan[:i])
        if not fixed:
            chosen.append(plan[i])
            i += 1
        i += len(fixed)
    # The model writes "r" (which intent), "n" (which param) and "r" (which name); the grammar the rest.
    assert "".join(chosen) == "rnr"


class _Preparing(ScriptedModel):
    """A scripted model that records the prompts it is asked to prepare."""

    def __init__(self, turns: list[str]) -> None:
        super().__init__(turns)
        self.prepared: list[str] = []

    async def prepare(self, messages: Any) -> bool:
        self.prepared.append(messages[0].content)
        return True


@pytest.mark.parametrize("text", ["is redis up?", "show me the last 20 lines of the app log",
                                  "restart redis and then tell the team"])
async def test_warm_up_prepares_the_opening_a_request_about_a_module_begins_with(
        demo: tuple[PlanningContext, Any], text: str) -> None:
    context, registry = demo
    model = _Preparing(['target_status(name="redis")'])
    planner = CallPlanner(model, registry)
    prepared = await planner.warm(context)
    assert prepared == len({t["module"] for t in planner.catalog(context).tools}) == len(model.prepared)
    await planner.plan(text, context)
    system = model.requests[-1].messages[0].content
    instructions = planner.system_prompt(context, [])
    # The request's prompt begins with one module's prepared opening, intents included.
    assert any(system.startswith(opening) and len(opening) > len(instructions) for opening in model.prepared)


async def test_warm_up_is_nothing_for_a_provider_that_keeps_no_prompts(demo: tuple[PlanningContext, Any]) -> None:
    context, registry = demo
    assert await CallPlanner(ScriptedModel([]), registry).warm(context) == 0  # BaseProvider.prepare: False
