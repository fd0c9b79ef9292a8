"""Planner benchmark: intent / exact-params accuracy, clarify/escalate correctness, latency.

Runs ``eval/planner/{dev,heldout}.jsonl`` against a node built from the demo config (modules
loaded, nothing started), and ``eval/planner/plugin/{dev,heldout}.jsonl`` against a node that
also loads the test-only plugin module of ``tests/plugin`` (backups and TLS certificates, which
the planner has never seen), and prints figures per module, strategy and set:

    .venv/bin/python bench/planner.py                 # offline + scripted
    .venv/bin/python bench/planner.py --local 10      # also the real local model on 10 cases per set
    .venv/bin/python bench/planner.py --failures      # list the offline planner's misses on dev

Strategies: ``offline`` (no model); ``scripted`` (the JSON-schema planner fed by a scripted
model that answers each case with the expected plan: it measures the validation and plumbing
path, not a model's skill, so its accuracy is an upper bound); ``local`` (the JSON-schema
planner on the small shipped gemma model through llama-cpp-python: slow and weak; opt-in).
Pure figures, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
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
    if name == "local":
        from cloudisense.llm.registry import get_provider

        settings = load_settings(DEMO, environ={}, overrides={"llm": {"provider": "local", "max_tokens": 256,
                                                                       "temperature": 0.0}})
        provider = get_provider("local", settings.llm)
        return await evaluate(JsonSchemaPlanner(provider, registry), cases, context, roles)
    raise ValueError(f"unknown strategy {name!r}")


def _row(module: str, strategy: str, part: str, report: Report) -> str:
    s = report.summary()
    return (f"{module:7} {strategy:9} {part:8} {s['n']:4}  {s['intent_accuracy']:6.3f}  "
            f"{s['exact_params_accuracy']:6.3f}  {s['outcome_accuracy']:7.3f}  {s['unsafe']:6}  "
            f"{s['clarify_escalate_correct']:6.3f} ({s['clarify_escalate_n']:2})  {s['wrongly_not_executed']:3}  "
            f"{s['p50_ms']:8.2f}  {s['p95_ms']:8.2f}")


async def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--local", type=int, nargs="?", const=8, default=0,
                        help="also run the local gemma model on the first N cases of each set (default 8)")
    parser.add_argument("--no-scripted", action="store_true", help="skip the scripted-model strategy")
    parser.add_argument("--failures", action="store_true", help="list the offline planner's misses on dev")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    args = parser.parse_args(argv)

    strategies = ["offline"] + ([] if args.no_scripted else ["scripted"]) + (["local"] if args.local else [])
    header = False
    for module, folder, plugin in (("demo", EVAL, False), ("plugin", EVAL / "plugin", True)):
        context, roles, registry = contexts(plugin)
        sets = {"dev": load_cases(folder / "dev.jsonl"), "heldout": load_cases(folder / "heldout.jsonl")}
        print(f"# {module} node: {len(context.tools)} tools for role operator; entities: "
              + ", ".join(f"{k}={len(v)}" for k, v in sorted(context.entities.items())))
        if not header:
            print("module  strategy  set         n  intent  params  outcome  unsafe  clar/esc (n)  !ex"
                  "   p50 ms    p95 ms")
            header = True
        for strategy in strategies:
            for part, cases in sets.items():
                subset = cases[: args.local] if strategy == "local" else cases
                try:
                    report = await run_strategy(strategy, subset, context, registry, roles)
                except Exception as exc:  # an unavailable strategy is reported, not fatal
                    print(f"{module:7} {strategy:9} {part:8} unavailable: {exc}")
                    break
                print(json.dumps({"module": module, "strategy": strategy, "set": part, **report.summary()})
                      if args.json else _row(module, strategy, part, report))
                if args.failures and strategy == "offline" and part == "dev":
                    for r in report.failures():
                        print(f"   MISS {r.text!r}: got {r.outcome} {r.predicted} want {r.expected_outcome} "
                              f"{r.expected}{' UNSAFE' if r.unsafe else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
