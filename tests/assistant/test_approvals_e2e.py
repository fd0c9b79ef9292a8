"""End to end over the WebSocket: plans with a ``confirm`` step, approvals, restarts, expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudisense.client import Connection
from tests.assistant.conftest import agent_settings, audit_rows, running_pid, serving

PLAN = [
    {"id": "before", "intent": "target_status", "params": {"name": "web"}},
    {"id": "restart", "intent": "restart_target", "params": {"name": "web"}},
    {"id": "after", "intent": "target_status", "params": {"name": "web"}},
]


async def _start_plan(conn: Connection, plan: list[dict[str, Any]] = PLAN) -> dict[str, Any]:
    data = await conn.call("agent_execute", {"steps": plan})
    assert data["status"] == "paused", data
    return data


async def test_confirm_step_pauses_then_runs_once(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        data = await _start_plan(oper)
        session, approval = data["session"], data["approval"]
        # What ran and what did not: the first status ran, the restart waits, the last status is pending.
        assert [s["status"] for s in data["steps"]] == ["ok", "pending_approval"]
        assert data["not_run"] == [{"intent": "target_status", "id": "after"}]
        assert "did NOT run restart_target" in data["summary"]
        event = await oper.next_event(f"/assist/{session}")
        while event["name"] != "approval_required":
            event = await oper.next_event(f"/assist/{session}")
        assert event["data"]["approval_id"] == approval["approval_id"]
        assert event["data"]["description"].startswith("restart_target web on node test-node (risk write) — ")
        assert event["data"]["expires"] > event["data"]["created"]
        pending = await audit_rows(running, "restart_target")
        assert [(r["outcome"], r["decision"], r["rule"]) for r in pending] == \
            [("pending_approval", "confirm", "restart-demo-targets-confirm")]
        assert await running_pid(running) == old_pid  # nothing restarted yet

        # A viewer may not decide someone else's approval.
        viewer = await running.connect("viewer")
        refused = await viewer.request("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
        assert refused["code"] == 403
        listed = await oper.call("list_approvals", {"status": "pending"})
        assert [a["approval_id"] for a in listed["approvals"]] == [approval["approval_id"]]

        done = await oper.call("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
        assert done["status"] == "completed"
        assert [s["intent"] for s in done["steps"]] == ["target_status", "restart_target", "target_status"]
        assert [s["status"] for s in done["steps"]] == ["ok", "ok", "ok"]
        assert done["decided"]["status"] == "consumed"
        assert done["steps"][2]["data"]["pid"] != old_pid
        assert "ran restart_target (restart)" in done["summary"]
        # Confirming again runs nothing.
        again = await oper.request("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
        assert again["code"] == 409 and "already consumed" in again["message"]
        rows = await audit_rows(running, "restart_target")
        ran = [r for r in rows if r["outcome"] == "success"]
        assert len(ran) == 1 and ran[0]["rule"] == f"approval:{approval['approval_id']}"
        assert ran[0]["client_kind"] == "agent" and ran[0]["user"] == "oper"
        for conn in (oper, viewer):
            conn.close()


async def test_rejected_runs_nothing(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        data = await _start_plan(oper)
        admin = await running.connect("admin")  # an admin may decide on the requester's behalf
        out = await admin.call("confirm_action", {"approval_id": data["approval"]["approval_id"], "approve": False,
                                                   "reason": "not during the demo"})
        assert out["status"] == "rejected"
        assert out["steps"][-1]["status"] == "rejected" and "not during the demo" in out["steps"][-1]["message"]
        assert out["not_run"] == [{"intent": "target_status", "id": "after"}]
        assert "did NOT run restart_target" in out["summary"]
        assert not [r for r in await audit_rows(running, "restart_target") if r["outcome"] == "success"]
        assert await running_pid(running) == old_pid
        again = await oper.request("confirm_action", {"approval_id": data["approval"]["approval_id"], "approve": True})
        assert again["code"] == 409
        oper.close()
        admin.close()


async def test_approval_survives_restart(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path)
    async with serving(settings) as running:
        oper = await running.connect("oper")
        data = await _start_plan(oper)
        approval_id = data["approval"]["approval_id"]
        oper.close()
    # A new server process on the same data dir: the approval and the rest of the plan are in SQLite.
    async with serving(settings) as running:
        old_pid = await running_pid(running)
        oper = await running.connect("oper")
        listed = await oper.call("list_approvals", {"status": "pending"})
        assert [a["approval_id"] for a in listed["approvals"]] == [approval_id]
        done = await oper.call("confirm_action", {"approval_id": approval_id, "approve": True})
        assert done["status"] == "completed"
        assert [s["status"] for s in done["steps"]] == ["ok", "ok", "ok"]
        assert done["steps"][2]["data"]["pid"] != old_pid
        history = await running.node.module("assistant").memory.turns(done["session"])
        assert any(t.kind == "step" and "restart_target -> ok" in t.content for t in history)
        oper.close()


async def test_expired_approval_is_reported_and_never_runs(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        await oper.call("subscribe_channel", {"topic": "/approvals"})
        data = await _start_plan(oper)
        approval_id = data["approval"]["approval_id"]
        agent = running.node.module("assistant")
        ttl = running.node.settings.agent.approval_ttl
        real_clock = agent.approvals._clock
        agent.approvals._clock = lambda: real_clock() + ttl + 1  # jump past the expiry instead of waiting
        assert await agent.report_expired() == [approval_id]
        event = await oper.next_event("/approvals")
        while event["name"] != "approval_expired":
            event = await oper.next_event("/approvals")
        assert event["data"]["approval_id"] == approval_id and event["data"]["status"] == "expired"
        refused = await oper.request("confirm_action", {"approval_id": approval_id, "approve": True})
        assert refused["code"] == 409 and "expired" in refused["message"]
        resumed = await agent.executor.resume(approval_id)
        assert resumed.status == "expired" and resumed.steps[-1].status == "expired"
        assert not [r for r in await audit_rows(running, "restart_target") if r["outcome"] == "success"]
        oper.close()


async def test_policy_deny_and_human_only(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        data = await oper.call("agent_execute", {"steps": [{"intent": "stop_target", "params": {"name": "nginx"}},
                                                           {"intent": "read_log", "params": {"name": "app"}}],
                                                 "on_error": "continue"})
        assert data["status"] == "failed"
        assert [s["status"] for s in data["steps"]] == ["denied", "ok"]
        assert "stop-target-deny" in data["steps"][0]["message"]
        row = (await audit_rows(running, "stop_target"))[0]
        assert (row["outcome"], row["decision"], row["rule"]) == ("denied", "deny", "stop-target-deny")
        # The same intent from a person is not the assistant's business: roles alone apply.
        assert (await oper.call("target_status", {"name": "nginx"}))["state"] == "running"
        # The assistant can never decide approvals, even when a plan tries to.
        agent = running.node.module("assistant")
        response = await agent.executor.call("confirm_action", {"approval_id": "ap_x", "approve": True},
                                             user="admin", role="admin")
        assert response["code"] == 403 and "person" in response["message"]
        oper.close()
