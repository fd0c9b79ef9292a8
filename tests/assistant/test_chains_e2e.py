"""``intent_chain`` end to end: references, conditions, on_error, progress events, risk, agent chains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudisense.client import Connection
from tests.assistant.conftest import agent_settings, audit_rows, serving


async def _chain_events(conn: Connection, count: int) -> list[dict[str, Any]]:
    events = []
    while len(events) < count:
        ev = await conn.next_event()
        if ev["name"] == "chain_step":
            events.append(ev)
    return events


async def test_references_conditions_and_progress(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        conn = await running.connect("oper")
        steps = [
            {"id": "st", "intent": "target_status", "params": {"name": "web"}},
            {"id": "errors", "intent": "read_log", "params": {"name": "app", "grep": "ERROR", "lines": 5}},
            {"id": "restart", "intent": "restart_target", "params": {"name": "${st.data.name}"},
             "when": "${errors.data.count} > 0 and ${st.data.state} == 'running'"},
            {"id": "stop", "intent": "stop_target", "params": {"name": "nginx"}, "when": "${errors.data.count} > 100"},
            {"id": "echo", "intent": "check_process", "params": {"name": "no-such-${st.data.name}"}},
        ]
        data = await conn.call("intent_chain", {"steps": steps})
        assert data["status"] == "completed"
        by_id = {s["id"]: s for s in data["steps"]}
        assert by_id["errors"]["data"]["count"] == 1
        assert by_id["restart"]["status"] == "ok" and by_id["restart"]["params"] == {"name": "web"}
        assert by_id["stop"]["status"] == "skipped" and "is false" in by_id["stop"]["message"]
        assert by_id["echo"]["params"] == {"name": "no-such-web"} and by_id["echo"]["data"]["running"] is False
        events = await _chain_events(conn, 5)
        assert [e["data"]["id"] for e in events] == ["st", "errors", "restart", "stop", "echo"]
        assert [e["data"]["status"] for e in events] == ["ok", "ok", "ok", "skipped", "ok"]
        assert all(e["topic"].startswith("/chain/") and e["data"]["total"] == 5 for e in events)
        assert (await conn.call("target_status", {"name": "nginx"}))["state"] == "running"
        # A person's chain is not policy-gated (roles apply): the restart ran as oper from a "chain" client.
        row = [r for r in await audit_rows(running, "restart_target") if r["outcome"] == "success"][0]
        assert (row["client_kind"], row["user"], row["decision"]) == ("chain", "oper", None)
        conn.close()


async def test_on_error_stop_and_continue(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        conn = await running.connect("oper")
        steps = [{"id": "bad", "intent": "read_log", "params": {"name": "nope"}},
                 {"id": "disk", "intent": "get_disk_usage", "params": {}}]
        stopped = await conn.call("intent_chain", {"steps": steps})
        assert stopped["status"] == "failed" and len(stopped["steps"]) == 1
        assert stopped["steps"][0]["code"] == 404 and stopped["not_run"] == [{"intent": "get_disk_usage", "id": "disk"}]
        went_on = await conn.call("intent_chain", {"steps": steps, "on_error": "continue"})
        assert went_on["status"] == "failed"
        assert [s["status"] for s in went_on["steps"]] == ["error", "ok"]
        # A reference to a step that failed resolves to null; to an unknown step it is an error.
        refs = [{"id": "bad", "intent": "read_log", "params": {"name": "nope"}},
                {"id": "x", "intent": "get_disk_usage", "params": {}, "when": "${bad.data.count} == null"},
                {"id": "y", "intent": "get_disk_usage", "params": {}, "when": "${ghost.data.count} > 1"}]
        out = await conn.call("intent_chain", {"steps": refs, "on_error": "continue"})
        assert [s["status"] for s in out["steps"]] == ["error", "ok", "error"]
        assert "ghost" in out["steps"][2]["message"]
        conn.close()


async def test_chain_risk_is_the_highest_step_risk(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        viewer = await running.connect("viewer")
        read_only = [{"intent": "read_log", "params": {"name": "app"}}, {"intent": "list_targets"}]
        assert (await viewer.call("intent_chain", {"steps": read_only}))["status"] == "completed"
        mixed = read_only + [{"intent": "restart_target", "params": {"name": "web"}}]
        refused = await viewer.request("intent_chain", {"steps": mixed})
        assert refused["code"] == 403 and "write" in refused["message"]
        # Only the read-only chain's step ran; the refused chain ran none of its steps.
        runs = [r for r in await audit_rows(running, "read_log") if r["client_kind"] == "chain"]
        assert [(r["user"], r["outcome"]) for r in runs] == [("viewer", "success")]
        bad = await viewer.request("intent_chain", {"steps": [{"intent": "confirm_action",
                                                               "params": {"approval_id": "x", "approve": True}}]})
        assert bad["code"] == 400 and "cannot be a step" in bad["message"]
        unknown = await viewer.request("intent_chain", {"steps": [{"intent": "format_disk"}]})
        assert unknown["code"] == 400 and "format_disk" in unknown["message"]
        viewer.close()


async def test_agent_chain_is_gated_per_step(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        agent = running.node.module("assistant")
        response = await agent.executor.call("intent_chain", {"steps": [
            {"id": "log", "intent": "read_log", "params": {"name": "app"}},
            {"id": "stop", "intent": "stop_target", "params": {"name": "nginx"}},
        ], "on_error": "continue"}, user="oper", role="operator")
        data = response["data"]
        assert [s["status"] for s in data["steps"]] == ["ok", "denied"]
        chain_row = (await audit_rows(running, "intent_chain"))[0]
        assert (chain_row["decision"], chain_row["rule"]) == ("allow", "builtin:composite-steps-gated")
        stop_row = (await audit_rows(running, "stop_target"))[0]
        assert (stop_row["client_kind"], stop_row["rule"]) == ("agent", "stop-target-deny")
