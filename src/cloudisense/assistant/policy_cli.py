"""``cloudisense policy check INTENT key=value --role R``: explain a policy decision offline.

It loads the node's config and modules (without starting them) to know the
intent's params model and risk, validates the params exactly as the router
would (defaults filled in, ``run_playbook check=true`` lowers the risk), and
prints the decision, the rule that made it, and why the rules before it did not
match.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cloudisense.assistant.escalation import notice_intents
from cloudisense.assistant.policy import Decision, assistant_policy
from cloudisense.assistant.settings import agent_settings
from cloudisense.config import load_settings
from cloudisense.core import protocol
from cloudisense.core.errors import BadRequest
from cloudisense.core.roles import Role


def parse_kv(pairs: Sequence[str]) -> dict[str, Any]:
    """``["name=web", "check=true", "limit=5"]`` → params; values are JSON when they parse, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise BadRequest(f"expected key=value, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def policy_check(config: Path | None, intent: str, kv_params: Sequence[str],
                 role: str = "operator") -> tuple[Decision, list[str]]:
    """The decision and explanation lines for calling ``intent`` with ``kv_params`` as ``role``."""
    from cloudisense.node import Node

    settings = load_settings(config)
    if role not in {r.value for r in Role}:
        raise BadRequest(f"unknown role {role!r}; use one of {', '.join(r.value for r in Role)}")
    role = Role(role).value
    node = Node(settings)
    node.load_modules()  # registry only: nothing is started, no database is opened
    found = node.registry.get(intent)
    raw = parse_kv(kv_params)
    try:
        params = found.params.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(protocol.describe_validation_error(exc)) from None
    risk = found.effective_risk(params)
    agent = agent_settings(settings)
    engine = assistant_policy(agent.policy_file, notice_intents(agent))
    dumped = params.model_dump(mode="json")
    decision = engine.decide(found.name, dumped, risk, role, settings.identity)
    lines = [
        f"{found.name} {json.dumps(dumped, sort_keys=True)} as {role} on node {settings.identity} (risk {risk.value})",
        f"decision: {decision.decision}",
        f"rule: {decision.rule}",
        f"reason: {decision.reason}",
        *engine.explain(found.name, dumped, risk, role, settings.identity),
    ]
    if decision.decision == "confirm":
        lines.append("the assistant would pause and ask for approval (confirm_action) before running it")
    lines.append("note: the policy applies to the assistant's calls; people are limited by their role only")
    return decision, lines


def policy_check_command(config: Path | None, intent: str, kv_params: Sequence[str], role: str = "operator",
                         echo: Callable[[str], None] = print) -> Decision:
    """Print the decision and the rule that made it, explained; returns the decision."""
    decision, lines = policy_check(config, intent, kv_params, role)
    for line in lines:
        echo(line)
    return decision
