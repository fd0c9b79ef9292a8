"""Fault scenarios end to end, offline: a copy of the demo with its real services, a real fault,
the question over the WebSocket, the proposed fix approved, the scenario's health check.

Dev scenarios only (the held-out set is for bench/scenarios.py, never for tuning).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.scenarios import demo_node, healthy, inject, judge, load_scenarios, run_scenario

DEV = {s["id"]: s for s in load_scenarios("dev")}


@pytest.mark.parametrize("scenario_id", ["d-web-stopped-502", "d-redis-stopped", "d-logs-folder-full"])
async def test_scenario_is_detected_located_explained_and_fixed(tmp_path: Path, scenario_id: str) -> None:
    outcome = await run_scenario(DEV[scenario_id], tmp_path)
    assert outcome.checks == {"detection": True, "localization": True, "root_cause": True, "mitigation": True}, \
        outcome.answer
    assert "Should I continue?" in outcome.answer and "{" not in outcome.answer


async def test_the_investigation_streams_each_check_then_the_text_then_the_proposal(tmp_path: Path) -> None:
    scenario = DEV["d-web-stopped-502"]
    async with demo_node(tmp_path) as demo:
        await inject(demo, scenario["inject"])
        oper = await demo.connect("oper")
        data = await oper.call("query_assist", {"query": scenario["question"], "session": "s502"}, timeout=120)
        events = []
        while not oper.events.empty():
            events.append(oper.events.get_nowait())
        names = [e["name"] for e in events if e.get("topic") == "/assist/s502"]
        checks = [e["data"]["intent"] for e in events if e["name"] == "chain_step"]
        assert "list_targets" in checks and "search_logs" in checks
        assert names.index("assist_delta") > names.index("chain_step")
        assert names[-1] == "approval_required"
        text = next(e["data"]["text"] for e in events if e["name"] == "assist_delta")
        assert text == data["answer"] and "Likely cause: web is stopped" in text
        # Every check was a read through the router, audited as the operator's assistant call.
        rows = await demo.node.audit.query(limit=200, user="oper")
        assert rows and all(r["client_kind"] == "agent" for r in rows if r["intent"] != "query_assist")
        assert {r["intent"] for r in rows} <= {"query_assist", "target_status", "list_targets", "get_system_stats",
                                               "search_logs", "list_content", "get_audit_log"}
        assert data["outcome"] == "awaiting_approval" and data["approval"]["intent"] == "restart_target"
        assert not await healthy(demo, scenario["health"])  # nothing was fixed before the approval
        # Rejecting the proposal runs nothing.
        out = await oper.call("confirm_action", {"approval_id": data["approval"]["approval_id"], "approve": False})
        assert [s["status"] for s in out["steps"]] == ["rejected"]
        assert not await healthy(demo, scenario["health"])
        oper.close()


async def test_a_bad_setting_is_explained_and_no_restart_is_proposed(tmp_path: Path) -> None:
    scenario = DEV["d-worker-bad-interval"]
    async with demo_node(tmp_path) as demo:
        await inject(demo, scenario["inject"])
        oper = await demo.connect("oper")
        data = await oper.call("query_assist", {"query": scenario["question"]}, timeout=120)
        oper.close()
    checks = judge(scenario, data["answer"])
    assert checks == {"detection": True, "localization": True, "root_cause": True}, data["answer"]
    assert data["outcome"] == "answered" and not data.get("approval")
    assert "interval=-5" in data["answer"] and "No fix proposed" in data["answer"]
