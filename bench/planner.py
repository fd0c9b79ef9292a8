"""Planner benchmark: intent / exact-params accuracy, clarify/escalate correctness, latency.

Runs ``eval/planner/{dev,heldout}.jsonl`` against a node built from the demo config (modules
loaded, nothing started) and prints figures per strategy, dev and heldout separately:

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

from cloudisense.agent.evaluation import Report, evaluate, load_cases  # noqa: E402
from cloudisense.agent.offline import OfflinePlanner  # noqa: E402
from cloudisense.agent.plan import PlanningContext  # noqa: E402
from cloudisense.agent.plan_cli import planning_context, planning_node  # noqa: E402
from cloudisense.config import load_settings  # noqa: E402

DEMO = ROOT / "examples" / "demo" / "cloudisense.toml"
EVAL = ROOT / "eval" / "planner"


def demo_context(role: str = "operator") -> tuple[PlanningContext, Any]:
    """The demo node's planning context and its registry (the real modules, nothing stubbed)."""
    logging.getLogger("cloudisense.core.modules").setLevel(logging.CRITICAL)
    settings = load_settings(DEMO, environ={}, overrides={"data_dir": tempfile.mkdtemp(prefix="plan-bench-"),
                                                          "auth": {"jwt_secret": "bench-only-secret-" + "x" * 16}})
    node = planning_node(settings=settings)
    return planning_context(node, role), node.registry


def expected_plan_json(case: dict[str, Any]) -> str:
    """What a perfect model would answer for ``case`` in the JSON-schema planner's format."""
    exp = case["expected"]
    steps = [{"intent": s["intent"], "params": {k: ("a message" if v == "*" else v) for k, v in s["params"].items()}}
             for s in exp.get("steps") or []]
    body = {"outcome": exp["outcome"], "steps": steps, "confidence": 0.9,
            "question": "which one?" if exp["outcome"] == "clarify" else None, "reason": "scripted"}
    return json.dumps(body)


async def run_strategy(name: str, cases: list[dict[str, Any]], context: PlanningContext, registry: Any) -> Report:
    """Evaluate one strategy on ``cases``."""
    if name == "offline":
        return await evaluate(OfflinePlanner(), cases, context)
    from cloudisense.agent.planner import JsonSchemaPlanner

    if name == "scripted":
        from cloudisense.llm.testing import ScriptedModel

        model = ScriptedModel([expected_plan_json(c) for c in cases])
        return await evaluate(JsonSchemaPlanner(model, registry), cases, context)
    if name == "local":
        from cloudisense.llm.registry import get_provider

        settings = load_settings(DEMO, environ={}, overrides={"llm": {"provider": "local", "max_tokens": 256,
                                                                       "temperature": 0.0}})
        provider = get_provider("local", settings.llm)
        return await evaluate(JsonSchemaPlanner(provider, registry), cases, context)
    raise ValueError(f"unknown strategy {name!r}")


def _row(strategy: str, part: str, report: Report) -> str:
    s = report.summary()
    return (f"{strategy:9} {part:8} {s['n']:4}  {s['intent_accuracy']:6.3f}  {s['exact_params_accuracy']:6.3f}  "
            f"{s['clarify_escalate_correct']:6.3f} ({s['clarify_escalate_n']:2})  {s['wrongly_not_executed']:3}  "
            f"{s['p50_ms']:9.2f}  {s['p95_ms']:9.2f}")


async def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--local", type=int, nargs="?", const=8, default=0,
                        help="also run the local gemma model on the first N cases of each set (default 8)")
    parser.add_argument("--no-scripted", action="store_true", help="skip the scripted-model strategy")
    parser.add_argument("--failures", action="store_true", help="list the offline planner's misses on dev")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON lines")
    args = parser.parse_args(argv)

    context, registry = demo_context()
    sets = {"dev": load_cases(EVAL / "dev.jsonl"), "heldout": load_cases(EVAL / "heldout.jsonl")}
    print(f"# demo node: {len(context.tools)} tools for role operator; entities: "
          + ", ".join(f"{k}={len(v)}" for k, v in sorted(context.entities.items())))
    strategies = ["offline"] + ([] if args.no_scripted else ["scripted"]) + (["local"] if args.local else [])
    print("strategy  set         n  intent  params  clar/esc (n)  !ex    p50 ms     p95 ms")
    for strategy in strategies:
        for part, cases in sets.items():
            subset = cases[: args.local] if strategy == "local" else cases
            try:
                report = await run_strategy(strategy, subset, context, registry)
            except Exception as exc:  # an unavailable strategy is reported, not fatal
                print(f"{strategy:9} {part:8} unavailable: {exc}")
                break
            print(json.dumps({"strategy": strategy, "set": part, **report.summary()}) if args.json
                  else _row(strategy, part, report))
            if args.failures and strategy == "offline" and part == "dev":
                for r in report.failures():
                    print(f"   MISS {r.text!r}: got {r.outcome} {r.predicted} want {r.expected_outcome} {r.expected}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
