"""Planner benchmark: intent / exact-params accuracy, clarify/escalate correctness, latency.

Runs the case sets of ``eval/planner/`` (``dev.jsonl``, then each held-out round
``heldout.jsonl``, ``heldout2.jsonl``, ...) against a node built from the demo config (modules
loaded, nothing started), and those of ``eval/planner/plugin/`` against a node that also loads
the test-only plugin module of ``tests/plugin`` (backups and TLS certificates, which the
planner has never seen), and prints figures per module, strategy and set (one row per file):

    .venv/bin/python bench/planner.py                 # offline + scripted
    .venv/bin/python bench/planner.py --model qwen2.5-coder-1.5b   # also the hybrid with a pulled model
    .venv/bin/python bench/planner.py --failures      # list the offline planner's misses on dev
    .venv/bin/python bench/planner.py --failures heldout2   # ... on another set

Strategies: ``offline`` (no model); ``scripted`` (the JSON-schema planner fed by a scripted
model that answers each case with the expected plan: it measures the validation and plumbing
path, not a model's skill, so its accuracy is an upper bound); ``hybrid:MODEL`` (what a node
with ``provider = "local:MODEL"`` runs: the offline planner first, the local model through
llama-cpp-python, as function calls under a grammar, for what the offline planner is unsure
of; the model must have been pulled with ``cloudisense model pull MODEL``). For the hybrid the
bench also prints how many cases went to the model, the model calls' p50 / p95, and how many
final plans hold an invented value (a string that is neither in the request nor a configured
name).

``--model-alone MODEL`` times the model planner on its own (``CallPlanner``, no offline fast
path) on every ``--every``-th dev case of each node, twice in the same run: from a first use
(nothing kept; the baseline) and after ``CallPlanner.warm`` prepared each module's opening, as a
node with a local model does at start. Pure figures, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudisense.assistant.evaluation import Report, evaluate, load_cases  # noqa: E402
from cloudisense.assistant.offline import OfflinePlanner  # noqa: E402
from cloudisense.assistant.plan import PlanningContext  # noqa: E402
from cloudisense.assistant.plan_cli import planning_context, planning_node  # noqa: E402
from cloudisense.config import load_settings  # noqa: E402

DEMO = ROOT / "examples" / "demo" / "cloudisense.toml"
EVAL = ROOT / "eval" / "planner"
PLUGIN = ROOT / "tests" / "plugin"


def _node(plugin: bool) -> Any:
    logging.getLogger("cloudisense.core.modules").setLevel(logging.CRITICAL)
    settings = load_settings(DEMO, environ={}, overrides={"data_dir": tempfile.mkdtemp(prefix="plan-bench-"),
                                                          "auth": {"jwt_secret": "bench-only-secret-" + "x" * 16}})
    extra = None
    if plugin:
        sys.path.insert(0, str(PLUGIN))
        from cloudisense_backups import BackupsModule

        extra = {"backups": BackupsModule}
    return planning_node(settings=settings, extra_modules=extra)


def case_sets(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The case sets of one evaluation folder by name: ``dev`` first, then the held-out rounds in
    order (``heldout``, ``heldout2``, ...); each ``.jsonl`` file is one set, named after it."""
    def order(path: Path) -> tuple[int, int, str]:
        round_ = path.stem.removeprefix("heldout")
        if path.stem == "dev":
            return (0, 0, "")
        if path.stem.startswith("heldout") and (not round_ or round_.isdigit()):
            return (1, int(round_ or 1), "")  # "heldout" is round 1
        return (2, 0, path.stem)
    return {path.stem: load_cases(path) for path in sorted(folder.glob("*.jsonl"), key=order)}


def demo_context(role: str = "operator", plugin: bool = False) -> tuple[PlanningContext, Any]:
    """The demo node's planning context and its registry (the real modules, nothing stubbed)."""
    node = _node(plugin)
    return planning_context(node, role), node.registry


def contexts(plugin: bool) -> tuple[PlanningContext, dict[str, PlanningContext], Any]:
    """The operator's context, every role's context, and the registry."""
    node = _node(plugin)
    roles = {r: planning_context(node, r) for r in ("viewer", "operator", "admin")}
    return roles["operator"], roles, node.registry


def expected_plan_json(case: dict[str, Any]) -> str:
    """What a perfect model would answer for ``case`` in the JSON-schema planner's format."""
    exp = case["expected"]
    steps = [{"intent": s["intent"], "params": {k: ("a message" if v == "*" else v) for k, v in s["params"].items()},
              **({"when": s["when"], "id": None} if s.get("when") else {})} for s in exp.get("steps") or []]
    if any(s.get("when") for s in steps):
        for i, s in enumerate(steps, 1):
            s["id"] = f"s{i}"
    body = {"outcome": exp["outcome"], "steps": steps, "confidence": 0.9,
            "question": "which one?" if exp["outcome"] == "clarify" else None, "reason": "scripted"}
    return json.dumps(body)


async def run_strategy(name: str, cases: list[dict[str, Any]], context: PlanningContext, registry: Any,
                       roles: dict[str, PlanningContext] | None = None) -> Report:
    """Evaluate one strategy on ``cases``."""
    if name == "offline":
        return await evaluate(OfflinePlanner(), cases, context, roles)
    from cloudisense.assistant.planner import JsonSchemaPlanner

    if name == "scripted":
        from cloudisense.llm.testing import ScriptedModel

        model = ScriptedModel([expected_plan_json(c) for c in cases])
        return await evaluate(JsonSchemaPlanner(model, registry), cases, context, roles)
    if name.startswith("hybrid:"):
        return await evaluate(model_planner(name.split(":", 1)[1], registry), cases, context, roles)
    raise ValueError(f"unknown strategy {name!r}")


class TimedModel:
    """The model half of the hybrid, timed: every call's seconds and plan are kept."""

    def __init__(self, planner: Any) -> None:
        self.planner = planner
        self.calls: list[tuple[float, Any]] = []

    async def plan(self, text: str, context: PlanningContext) -> Any:
        """Plan with the model and record how long it took."""
        started = time.perf_counter()
        plan = await self.planner.plan(text, context)
        self.calls.append((time.perf_counter() - started, plan))
        return plan


def model_planner(model: str, registry: Any) -> Any:
    """``HybridPlanner(CallPlanner(local:model))`` with the model timed (``planner.model.calls``)."""
    from cloudisense.assistant.planner import CallPlanner, HybridPlanner
    from cloudisense.llm.registry import get_provider

    settings = load_settings(None, environ={k: v for k, v in os.environ.items() if k == "XDG_DATA_HOME"},
                             overrides={"llm": {"provider": f"local:{model}", "temperature": 0.0}})
    provider = get_provider(f"local:{model}", settings.llm)
    return HybridPlanner(TimedModel(CallPlanner(provider, registry)))


async def model_alone(model: str, every: int) -> None:
    """Print the model planner's own figures from a first use and after warm-up (see the module docstring)."""
    from cloudisense.assistant.planner import CallPlanner
    from cloudisense.llm.registry import get_provider

    settings = load_settings(None, environ={k: v for k, v in os.environ.items() if k == "XDG_DATA_HOME"},
                             overrides={"llm": {"provider": f"local:{model}", "temperature": 0.0}})
    provider: Any = get_provider(f"local:{model}", settings.llm)
    print(f"module  {'model alone':34}   n  intent  params  outcome  unsafe   p50 s   p95 s")
    for module, folder, plugin in (("demo", EVAL, False), ("plugin", EVAL / "plugin", True)):
        context, roles, registry = contexts(plugin)
        cases = case_sets(folder)["dev"][::every]
        timed = TimedModel(CallPlanner(provider, registry))
        await provider.forget_prompts()
        await timed.plan("load the model", context)  # loading the file is not a plan's time
        await provider.forget_prompts()
        timed.calls.clear()
        rows = [("first use", await evaluate(timed, cases, context, roles), [t for t, _ in timed.calls])]
        await provider.forget_prompts()
        started = time.perf_counter()
        prepared = await timed.planner.warm(context)
        warm_up = time.perf_counter() - started
        timed.calls.clear()
        rows.append((f"after warm-up ({prepared} modules, {warm_up:.0f} s)",
                     await evaluate(timed, cases, context, roles), [t for t, _ in timed.calls]))
        for label, report, seconds in rows:
            s = report.summary()
            print(f"{module:7} {label:34} {s['n']:3}  {s['intent_accuracy']:6.3f}  {s['exact_params_accuracy']:6.3f}  "
                  f"{s['outcome_accuracy']:7.3f}  {s['unsafe']:6}  {_percentile(seconds, 0.5):6.2f}  "
                  f"{_percentile(seconds, 0.95):6.2f}", flush=True)


def invented(report: Report, context: PlanningContext) -> int:
    """Final plans with a string value that is neither in the request, nor a configured name, nor one of
    its param's listed values (an enum such as ``sort_by: memory``)."""
    from cloudisense.assistant.planner import has_listed_values

    names = {n.lower() for values in context.entities.values() for n in values}
    props = {t["name"]: (t.get("params") or {}).get("properties") or {} for t in context.tools}
    count = 0
    for r in report.results:
        values = [v for s in r.predicted for k, v in (s.get("params") or {}).items()
                  if isinstance(v, str) and not has_listed_values(props.get(s["intent"], {}).get(k) or {})]
        count += any(v.strip() and " " not in v.strip() and v.lower() not in r.text.lower() and v.lower() not in names
                     for v in values)
    return count


def _percentile(values: list[float], share: float) -> float:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] if values else 0.0


def _row(module: str, strategy: str, part: str, report: Report) -> str:
    s = report.summary()
    return (f"{module:7} {strategy:9} {part:8} {s['n']:4}  {s['intent_accuracy']:6.3f}  "
            f"{s['exact_params_accuracy']:6.3f}  {s['outcome_accuracy']:7.3f}  {s['unsafe']:6}  "
            f"{s['clarify_escalate_correct']:6.3f} ({s['clarify_escalate_n']:2})  {s['wrongly_not_executed']:3}  "
            f"{s['p50_ms']:8.2f}  {s['p95_ms']:8.2f}")


async def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="also run the hybrid planner with this pulled local model (repeatable)")
    parser.add_argument("--no-scripted", action="store_true", help="skip the scripted-model strategy")
    parser.add_argument("--failures", nargs="?", const="dev", default=None, metavar="SET",
                        help="list the offline planner's misses on a set (default dev)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    parser.add_argument("--model-alone", metavar="NAME", default=None,
                        help="only time the model planner alone with this pulled model: first use, then after warm-up")
    parser.add_argument("--every", type=int, default=10, metavar="N",
                        help="with --model-alone: every N-th dev case (default 10: 37 demo, 17 plugin)")
    args = parser.parse_args(argv)
    if args.model_alone:
        await model_alone(args.model_alone, max(1, args.every))
        return 0

    strategies = ["offline"] + ([] if args.no_scripted else ["scripted"]) + [f"hybrid:{m}" for m in args.model]
    header = False
    for module, folder, plugin in (("demo", EVAL, False), ("plugin", EVAL / "plugin", True)):
        context, roles, registry = contexts(plugin)
        sets = case_sets(folder)
        print(f"# {module} node: {len(context.tools)} tools for role operator; entities: "
              + ", ".join(f"{k}={len(v)}" for k, v in sorted(context.entities.items())))
        if not header:
            print("module  strategy  set         n  intent  params  outcome  unsafe  clar/esc (n)  !ex"
                  "   p50 ms    p95 ms")
            header = True
        for strategy in strategies:
            for part, cases in sets.items():
                planner: Any = None
                try:
                    if strategy.startswith("hybrid:"):
                        planner = model_planner(strategy.split(":", 1)[1], registry)
                        report = await evaluate(planner, cases, context, roles)
                    else:
                        report = await run_strategy(strategy, cases, context, registry, roles)
                except Exception as exc:  # an unavailable strategy is reported, not fatal
                    print(f"{module:7} {strategy:9} {part:8} unavailable: {exc}")
                    break
                extra: dict[str, Any] = {"invented": invented(report, context)}
                if planner is not None:
                    seconds = [t for t, _ in planner.model.calls]
                    extra = {"model_calls": len(seconds), "model_p50_s": round(_percentile(seconds, 0.5), 2),
                             "model_p95_s": round(_percentile(seconds, 0.95), 2), **extra}
                print(json.dumps({"module": module, "strategy": strategy, "set": part, **report.summary(), **extra})
                      if args.json else _row(module, strategy, part, report)
                      + ("".join(f"  {k}={v}" for k, v in extra.items()) if extra else ""))
                if args.failures == part and strategy == "offline":
                    for r in report.failures():
                        print(f"   MISS {r.text!r}: got {r.outcome} {r.predicted} want {r.expected_outcome} "
                              f"{r.expected}{' UNSAFE' if r.unsafe else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
