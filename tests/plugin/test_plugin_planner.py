"""A third-party module the planner has never seen: installed through the entry point, planned and run.

The plugin (``tests/plugin/cloudisense_backups``: backups and TLS certificates) brings only its own
declarations: descriptions, examples, typed params, entities and result shapes. Nothing in
``cloudisense.assistant`` knows its intents; these tests check the planner rules hold on it anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudisense.assistant.catalog import planning_context
from cloudisense.assistant.chains import evaluate as evaluate_condition
from cloudisense.assistant.evaluation import evaluate, load_cases
from cloudisense.assistant.offline import OfflinePlanner
from cloudisense.assistant.plan import PlanningContext
from cloudisense.core.modules import discover_modules
from cloudisense.node import Node
from tests.conftest import make_settings, start_server

EVAL = Path(__file__).resolve().parents[2] / "eval" / "planner" / "plugin"
MODULES = ["pubsub", "audit", "system", "assistant"]


@pytest.fixture(scope="module")
def node(installed_plugin: str, tmp_path_factory: pytest.TempPathFactory) -> Node:
    settings = make_settings(tmp_path_factory.mktemp("plugin-node"), modules=[*MODULES, installed_plugin])
    node = Node(settings)
    node.load_modules()
    return node


def context(node: Node, role: str = "operator") -> PlanningContext:
    return planning_context(node.registry, role, node.entities())


def plan(node: Node, text: str, role: str = "operator") -> Any:
    return OfflinePlanner().plan_sync(text, context(node, role))


def test_the_entry_point_brings_the_module(installed_plugin: str) -> None:
    assert installed_plugin in discover_modules()
    import cloudisense.assistant as agent_package

    # Nothing about the plugin in the planner's code: its knowledge comes from the registry only.
    for source in Path(agent_package.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert "backup_status" not in text and "cert_expiry" not in text and "billing-db" not in text, source


@pytest.mark.parametrize("text, intent, params", [
    ("when did the last backup of orders run?", "backup_status", {"database": "orders"}),
    ("did the users-db backup succeed?", "backup_status", {"database": "users-db"}),
    ("when does the cert for www.example.com expire?", "cert_expiry", {"domain": "www.example.com"}),
    ("is the api.example.com certificate still valid?", "cert_expiry", {"domain": "api.example.com"}),
])
def test_questions_never_plan_a_write(node: Node, text: str, intent: str, params: dict[str, Any]) -> None:
    result = plan(node, text)
    assert result.outcome == "execute" and [(s.intent, s.params) for s in result.steps] == [(intent, params)]
    assert all(node.registry.get(s.intent).risk.value == "read" for s in result.steps)


@pytest.mark.parametrize("text, params", [
    ("restore orders from backup b-42", {"database": "orders", "backup_id": "b-42", "force": False}),
    ("force restore billing-db from b-41", {"database": "billing-db", "backup_id": "b-41", "force": True}),
])
def test_ids_and_modifiers_are_read_by_type(node: Node, text: str, params: dict[str, Any]) -> None:
    result = plan(node, text)
    assert result.outcome == "execute" and result.steps[0].intent == "restore_backup"
    assert {k: result.steps[0].params.get(k, False) for k in params} == params


def test_units_are_converted_to_the_field_unit(node: Node) -> None:
    assert plan(node, "back up users-db every 2 hours").steps[0].params["interval_minutes"] == 120
    assert plan(node, "prune orders backups older than 3 weeks").steps[0].params["older_than_days"] == 21


@pytest.mark.parametrize("text", ["restore orders", "restore from b-42", "renew the cert", "restore the database"])
def test_missing_details_are_asked_for(node: Node, text: str) -> None:
    result = plan(node, text)
    assert result.outcome == "clarify" and not result.steps and result.question


@pytest.mark.parametrize("text", ["restroe orders from b-42", "renw the api.example.com cert"])
def test_a_typo_never_becomes_a_confident_write(node: Node, text: str) -> None:
    result = plan(node, text)
    assert result.outcome == "clarify" and result.confidence < 0.5 and "Did you mean" in (result.question or "")


def test_viewer_refusal_is_said_as_such(node: Node) -> None:
    result = plan(node, "restore orders from backup b-42", role="viewer")
    assert result.outcome == "refuse" and not result.steps
    assert "Viewers can't" in (result.message or "") and "operator" in (result.message or "")
    assert plan(node, "when did the last backup of orders run?", role="viewer").outcome == "execute"


async def test_conditions_reference_real_result_fields(node: Node) -> None:
    result = plan(node, "renew the cert for shop.example.org if it expires within 30 days")
    assert [s.intent for s in result.steps] == ["cert_expiry", "renew_cert"]
    check, renew = result.steps
    assert renew.when and check.id and f"${{{check.id}.data." in renew.when
    # The condition evaluates on the real result the module returns.
    module = node.modules["backups"]
    from cloudisense_backups import DomainParams

    data = await module.cert_expiry(DomainParams(domain="shop.example.org"), None)
    assert evaluate_condition(renew.when, {check.id: {"status": "success", "data": data}}) is True
    assert plan(node, "renew shop.example.org's certificate if it's about to expire").outcome == "clarify"


async def test_plugin_runs_through_the_router_from_the_assistant(installed_plugin: str, tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, modules=[*MODULES, installed_plugin]))
    try:
        oper = await running.connect("oper")
        out = await oper.call("query_assist", {"query": "renew the cert for shop.example.org if it expires within 30 days"})
        assert [(s["intent"], s["status"]) for s in out["steps"]][0] == ("cert_expiry", "ok"), out
        assert "shop.example.org expires" in out["answer"] and "{" not in out["answer"]
        out = await oper.call("query_assist", {"query": "when did the last backup of billing-db run?"})
        assert [s["intent"] for s in out["steps"]] == ["backup_status"]
        assert "FAILED" in out["answer"]  # the module's own words for its result
        records = await running.node.audit.query(limit=50, intent="backup_status")
        assert records  # through the router: audited
        oper.close()
    finally:
        await running.server.stop()


async def test_dev_set_figures(node: Node) -> None:
    """The plugin's dev set (tuned on); the held-out set is only reported by bench/planner.py."""
    roles = {r: context(node, r) for r in ("viewer", "operator")}
    report = await evaluate(OfflinePlanner(), load_cases(EVAL / "dev.jsonl"), roles["operator"], roles)
    assert report.unsafe == 0
    assert report.intent_accuracy >= 0.9 and report.params_accuracy >= 0.85
