"""``cloudisense plan``: plan a request on a node built from a config file, without executing it.

The node's modules are instantiated (intents and entities registered) but nothing is
started: no server, no database, no background work.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudisense.assistant.catalog import planning_context as context_for
from cloudisense.assistant.plan import Plan, Planner, PlanningContext
from cloudisense.assistant.settings import AgentSettings
from cloudisense.config import Settings, load_settings
from cloudisense.core.modules import Module, discover_modules
from cloudisense.node import Node


def planning_node(config: Path | None = None, *, settings: Settings | None = None,
                  extra_modules: Mapping[str, type[Module]] | None = None) -> Node:
    """A node with its modules loaded (intents, entities) and nothing started.

    ``extra_modules`` fills in modules that are not installed (the planner bench uses it);
    installed ones always win.
    """
    if settings is None:
        # A throwaway signing secret, so building the node writes nothing into its data folder.
        settings = load_settings(config, overrides={"auth": {"jwt_secret": secrets.token_hex(32)}})
    classes: dict[str, type[Module]] | None = None
    if extra_modules:
        classes = {**dict(extra_modules), **discover_modules()}
    node = Node(settings, module_classes=classes)
    node.load_modules()
    return node


def planning_context(node: Node, role: str = "operator",
                     history: list[dict[str, str]] | None = None) -> PlanningContext:
    """What a planner sees on ``node`` for a caller of ``role``."""
    aliases = node.settings.section("agent", AgentSettings).aliases
    return context_for(node.registry, role, node.entities(), aliases=aliases, history=history)


def _render(text: str, plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{text}[/bold]")
    console.print(f"outcome: [cyan]{plan.outcome}[/cyan]   confidence: {plan.confidence:.2f}   "
                  f"strategy: {plan.strategy}")
    if plan.question:
        console.print(f"question: {plan.question}", markup=False)
    if plan.message:
        console.print(f"message: {plan.message}", markup=False)
    if plan.reason:
        console.print(f"reason: {plan.reason}")
    if plan.steps:
        table = Table("#", "intent", "params", "when")
        for i, step in enumerate(plan.steps, 1):
            table.add_row(str(i), step.intent, json.dumps(step.params, ensure_ascii=False), step.when or "")
        console.print(table)


async def _plan_all(planner: Planner, context: PlanningContext, texts: list[str]) -> list[Plan]:
    return [await planner.plan(t, context) for t in texts]


def plan_command(config: Path | None, text: str | None, batch: Path | None, as_json: bool,
                 role: str = "operator") -> int:
    """Plan ``text`` (or each line of ``batch``) and print it; returns the exit code.

    ``--batch`` prints one JSON line per request (``Plan.as_record``); a single request is
    printed as a table, or as JSON with ``as_json``.
    """
    from cloudisense.assistant.planner import choose_planner

    if (text is None) == (batch is None):
        print("give either a request or --batch FILE", file=sys.stderr)
        return 2
    node = planning_node(config)
    context = planning_context(node, role)
    planner = choose_planner(node.settings, node.registry)
    if batch is not None:
        lines = [ln.strip() for ln in batch.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for line, plan in zip(lines, asyncio.run(_plan_all(planner, context, lines)), strict=True):
            print(json.dumps(plan.as_record(line), ensure_ascii=False))
        return 0
    assert text is not None
    plan = asyncio.run(_plan_all(planner, context, [text]))[0]
    if as_json:
        record: dict[str, Any] = plan.as_record(text)
        record.update({"question": plan.question, "reason": plan.reason, "strategy": plan.strategy})
        print(json.dumps(record, ensure_ascii=False))
    else:
        _render(text, plan)
    return 0
