"""The agent on alerts, end to end: a real node on port 0, real target processes, real SQLite, real sockets.

A target's process is killed (or crashes by itself), the alert monitor fires, the node's agent
investigates or follows a runbook, proposes or (autonomous, policy allowing) runs the fix, verifies
it and writes the ChatOps log; failures escalate; limits and the kill switch hold.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from cloudisense.client import Connection
from tests.assistant.conftest import MODULES, agent_settings, audit_rows, recording_webhook, running_pid, serving
from tests.conftest import Events, Running, error_of, until

ALERT_RULES = [{"name": "service-down", "target": "*", "condition": "stopped"}]
RESTART_WEB = {"name": "restart-down-service", "when": {"source": "target", "rule": "service-*"},
               "steps": [{"intent": "restart_target", "params": {"name": "{subject}"}}],
               "verify": {"check": "target_running", "within": 10, "settle": 1}}
ALLOW_RESTART = """
[[rule]]
name = "restart-allow"
intent = "restart_target"
decision = "allow"
reason = "restarting a service that is down restores it"

[[rule]]
name = "read-allow"
risk = "read"
decision = "allow"
"""


def settings(tmp_path: Path, *, policy: Any = None, mode: str = "suggest", runbooks: list[dict[str, Any]] | None = None,
             targets: dict[str, Any] | None = None, alerts: dict[str, Any] | None = None,
             modules: list[str] | None = None, more: dict[str, Any] | None = None, **autonomy: Any) -> Any:
    """A node with targets, the alert monitor and the agent in ``mode`` (``autonomy``: more of its settings)."""
    more = dict(more or {})
    if targets is not None:
        more["targets"] = targets
    kw = {} if policy is None else {"policy": policy}
    return agent_settings(
        tmp_path, modules=modules or [*MODULES, "alerts"],
        alerts={"interval": 0.1, "targets": ALERT_RULES, **(alerts or {})},
        agent={"autonomy": {"mode": mode, **autonomy}, "runbooks": runbooks or []}, **kw, **more)


async def entries(conn: Connection, **filters: Any) -> list[dict[str, Any]]:
    """ChatOps entries, oldest first."""
    return list(reversed((await conn.call("list_chatops", {"limit": 500, **filters}))["entries"]))


async def entry(conn: Connection, kind: str, contains: str = "", timeout: float = 30, **filters: Any) -> dict[str, Any]:
    """The first ChatOps entry of ``kind`` whose text contains ``contains`` (waited for)."""

    async def find() -> dict[str, Any] | None:
        return next((e for e in await entries(conn, **filters) if e["kind"] == kind and contains in e["text"]), None)

    return dict(await until(find, timeout=timeout))


async def agent_calls(r: Running, intent: str) -> list[dict[str, Any]]:
    """Audit rows of ``intent`` the agent made (user ``agent``, kind ``agent``)."""
    return [x for x in await audit_rows(r, intent) if x.get("user") == "agent" and x.get("client_kind") == "agent"]


async def firing(conn: Connection, subject: str) -> dict[str, Any] | None:
    alerts = (await conn.call("list_alerts", {}))["alerts"]
    return next((a for a in alerts if a["subject"] == subject), None)


async def test_a_killed_target_is_investigated_proposed_approved_verified_and_resolved(tmp_path: Path) -> None:
    async with serving(settings(tmp_path)) as r:
        admin = await r.connect("admin")
        await admin.call("subscribe_channel", {"topic": "/chatops"})
        events = Events(admin, timeout=30)
        os.kill(await running_pid(r, "web"), signal.SIGKILL)

        proposed = await entry(admin, "proposed", "restart_target web")
        alert_id = proposed["alert_id"]
        assert alert_id and proposed["approval_id"] and "Should I continue?" in proposed["text"]
        assert proposed["session"] == f"alert-{alert_id}" and proposed["node"] == "test-node"
        said = [e["text"] for e in await entries(admin, alert_id=alert_id)]
        assert said[0].startswith(f"Alert {alert_id} fired (critical, target rule service-down): target web is crashed")
        assert "I investigated" in said[1] and "web crashed (killed by signal 9)" in said[1]
        event = await events.wait("/chatops", lambda e: e["name"] == "chatops_entry"
                                  and e["data"]["kind"] == "proposed")
        assert event["data"] == proposed
        assert not await agent_calls(r, "restart_target")  # nothing ran without a person

        pending = (await admin.call("list_approvals", {"status": "pending"}))["approvals"]
        assert [a["approval_id"] for a in pending] == [proposed["approval_id"]]
        assert pending[0]["intent"] == "restart_target" and pending[0]["requester"] == "agent"
        # The approval is the agent's: an operator who did not ask may not decide it.
        oper = await r.connect("oper")
        await error_of(oper, "confirm_action", {"approval_id": proposed["approval_id"], "approve": True})

        await admin.call("confirm_action", {"approval_id": proposed["approval_id"], "approve": True})
        concluded = await entry(admin, "concluded", "The fix worked", alert_id=alert_id)
        assert "web is running" in concluded["text"]
        assert (await admin.call("target_status", {"name": "web"}))["state"] == "running"
        resolved = await until(lambda: _resolved(admin, alert_id))
        assert resolved["details"]["resolution"] == "target web is running again"
        assert len(await agent_calls(r, "restart_target")) == 1

        # The log reads as a conversation and can be searched (a plain substring, not SQL or a pattern).
        assert (await admin.call("list_chatops", {"query": "FIX WORKED"}))["total"] == 1
        assert (await admin.call("list_chatops", {"query": "restart_%"}))["total"] == 0
        assert (await admin.call("list_chatops", {"since": concluded["ts"]}))["entries"][-1]["id"] == concluded["id"]
        from cloudisense.assistant.chatops import say_entries
        text = say_entries({}, await admin.call("list_chatops", {"alert_id": alert_id}))
        assert "proposed [alert" in text and "{" not in text.split("\n")[1]
        # The next proposal of this kind quotes what happened before.
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        again = await entry(admin, "proposed", "worked 1 of 1 time(s)")
        assert again["alert_id"] == alert_id  # the same condition reopened its alert
        admin.close()
        oper.close()


async def _resolved(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    alert = (await conn.call("get_alert", {"id": alert_id}))["alert"]
    return alert if alert["state"] == "resolved" else None


async def test_autonomous_with_an_allow_rule_restarts_verifies_and_resolves_unasked(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, policy=ALLOW_RESTART, mode="autonomous", runbooks=[RESTART_WEB])) as r:
        admin = await r.connect("admin")
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        concluded = await entry(admin, "concluded", "The fix worked")
        alert_id = concluded["alert_id"]
        kinds = [e["kind"] for e in await entries(admin, alert_id=alert_id)]
        assert kinds == ["observed", "proposed", "did", "concluded"]
        did = await entry(admin, "did", alert_id=alert_id)
        assert did["text"].startswith("I ran restart_target")
        rows = await agent_calls(r, "restart_target")
        assert len(rows) == 1 and rows[0]["rule"] == "restart-allow" and rows[0]["outcome"] == "success"
        assert (await admin.call("list_approvals", {}))["approvals"] == []
        await until(lambda: _resolved(admin, alert_id))
        status = await admin.call("autonomy_status", {})
        assert status["mode"] == "autonomous" and status["actions_in_window"] == 1
        admin.close()


CRASHES_SOON = ["{python}", "-c", "import time\ntime.sleep(1.5)\nraise SystemExit(3)"]


async def test_a_fix_that_does_not_hold_is_escalated_and_not_retried(tmp_path: Path) -> None:
    targets = {"web": {"command": CRASHES_SOON, "autostart": True, "stop_timeout": 1}}
    book = {**RESTART_WEB, "verify": {"check": "target_running", "within": 10, "settle": 3}}
    async with serving(settings(tmp_path, policy=ALLOW_RESTART, mode="autonomous", runbooks=[book],
                                targets=targets)) as r:
        admin = await r.connect("admin")
        failed = await entry(admin, "concluded", "did not work")
        assert "web is crashed" in failed["text"]  # "again after the fix", or still after `within`
        await entry(admin, "escalated", "did not work", alert_id=failed["alert_id"])
        flagged = (await admin.call("list_escalations", {}))["escalations"]
        assert any(f"alert-{failed['alert_id']}" == e.get("session") for e in flagged)
        # It crashes again: the agent does not repeat a fix that did not hold; it asks and escalates.
        held = await entry(admin, "proposed", "did not work, so I do not repeat it")
        assert held["approval_id"]
        assert len(await agent_calls(r, "restart_target")) == 1
        admin.close()


FLAPS = ["{python}", "-c", "import time\ntime.sleep(4)\nraise SystemExit(1)"]


async def test_the_per_target_limit_holds_under_a_flapping_target(tmp_path: Path) -> None:
    targets = {"web": {"command": FLAPS, "autostart": True, "stop_timeout": 1}}
    book = {**RESTART_WEB, "verify": {"check": "target_running", "within": 10, "settle": 0.5}}
    async with serving(settings(tmp_path, policy=ALLOW_RESTART, mode="autonomous", runbooks=[book],
                                targets=targets, max_per_target=2)) as r:
        admin = await r.connect("admin")
        held = await entry(admin, "proposed", "the limit per target", timeout=60)
        await entry(admin, "escalated", "the limit per target")
        assert len(await agent_calls(r, "restart_target")) == 2
        worked = [e for e in await entries(admin) if e["kind"] == "concluded" and "worked" in e["text"]]
        assert len(worked) == 2  # each restart held for its check, then the target fell over again
        assert held["approval_id"]  # a person may still decide to restart it once more
        admin.close()


async def test_the_kill_switch_stops_the_agent_at_once_and_survives_a_restart(tmp_path: Path) -> None:
    cfg = settings(tmp_path, policy=ALLOW_RESTART, mode="autonomous", runbooks=[RESTART_WEB])
    async with serving(cfg) as r:
        admin, oper = await r.connect("admin"), await r.connect("oper")
        err = await error_of(oper, "set_autonomy", {"mode": "autonomous"})
        assert err.code == 403
        # The assistant can never switch itself: the intent is for people only.
        err = await error_of(admin, "agent_execute", {"steps": [{"intent": "set_autonomy", "params": {"mode": "off"}}]})
        assert err.code == 400 and "cannot be a step" in str(err)
        stopped = await admin.call("set_autonomy", {"mode": "off"})
        assert stopped["mode"] == "off" and stopped["set_by"] == "admin"
        await entry(admin, "concluded", "Autonomy is now off (set by admin)")
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        await until(lambda: firing(admin, "web"))
        assert [e["kind"] for e in await entries(admin)] == ["concluded"]  # only the switch itself
    async with serving(cfg) as r:
        admin = await r.connect("admin")
        assert (await admin.call("autonomy_status", {}))["mode"] == "off"
        os.kill(await running_pid(r, "nginx"), signal.SIGKILL)
        await until(lambda: firing(admin, "nginx"))
        await running_pid(r, "web")  # autostarted with the node again
        assert [e["kind"] for e in await entries(admin)] == ["concluded"]  # only the switch itself
        assert await agent_calls(r, "restart_target") == []
        await admin.call("set_autonomy", {"mode": "autonomous"})
        # Back on: the next alert is handled (nginx's alert fired while off and is not replayed).
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        await entry(admin, "concluded", "The fix worked")
        assert len(await agent_calls(r, "restart_target")) == 1
        admin.close()


async def test_a_disk_threshold_below_current_usage_runs_the_cleanup_runbook(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"old-{i}.tmp").write_text("x" * 1000)
    cleanup = scripts / "cleanup.sh"
    cleanup.write_text(f"#!/bin/sh\nrm -f -- {junk}/*.tmp\necho cleaned\n")
    cleanup.chmod(0o755)
    policy = ALLOW_RESTART + """
[[rule]]
name = "cleanup-allow"
intent = "start_script_execution"
params = { name = "cleanup.sh" }
decision = "allow"
"""
    book = {"name": "disk-cleanup", "when": {"source": "stats", "rule": "disk-*"},
            "steps": [{"intent": "start_script_execution", "params": {"name": "cleanup.sh"}}],
            "verify": {"check": "metric_below", "within": 1, "settle": 0}}
    cfg = settings(tmp_path, policy=policy, mode="autonomous", runbooks=[book],
                   modules=[*MODULES, "alerts", "scripts"], more={"scripts": {"folder": str(scripts)}},
                   alerts={"stats": [{"name": "disk-full", "metric": "disk", "above": 0.01, "clear_below": 0.005}]})
    async with serving(cfg) as r:
        admin = await r.connect("admin")
        did = await entry(admin, "did", "start_script_execution")
        assert did["alert_id"]
        concluded = await entry(admin, "concluded", "did not work", alert_id=did["alert_id"])
        assert "script cleanup.sh finished (exit code 0)" in concluded["text"] and "disk / is at" in concluded["text"]
        assert not list(junk.iterdir())  # the script really ran
        await entry(admin, "escalated", "did not work", alert_id=did["alert_id"])
        rows = await agent_calls(r, "start_script_execution")
        assert len(rows) == 1 and rows[0]["rule"] == "cleanup-allow"
        admin.close()


async def test_two_alerts_of_one_crash_make_one_proposal_and_a_rejection_runs_nothing(tmp_path: Path) -> None:
    rules = [*ALERT_RULES, {"name": "web-crash-loop", "target": "web", "condition": "crash_loop", "count": 1}]
    async with serving(settings(tmp_path, alerts={"targets": rules})) as r:
        admin = await r.connect("admin")
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        again = await entry(admin, "observed", "is already proposed")
        proposals = [e for e in await entries(admin) if e["kind"] == "proposed"]
        assert len(proposals) == 1 and proposals[0]["approval_id"] == again["approval_id"]
        assert len((await admin.call("list_approvals", {"status": "pending"}))["approvals"]) == 1

        await admin.call("confirm_action", {"approval_id": again["approval_id"], "approve": False, "reason": "later"})
        said = await entry(admin, "concluded", "nothing ran")
        assert said["text"] == f"Admin rejected my proposal {again['approval_id']}; nothing ran."
        assert (await admin.call("target_status", {"name": "web"}))["state"] == "crashed"
        assert await agent_calls(r, "restart_target") == []
        # Bad input to the log's intent is a clear error naming the field.
        err = await error_of(admin, "list_chatops", {"limit": 0})
        assert err.code == 400 and "limit" in str(err)
        admin.close()


async def test_an_error_burst_runbook_shows_the_lines_and_notifies_once(tmp_path: Path) -> None:
    policy = ALLOW_RESTART + """
[[rule]]
name = "notify-allow"
intent = "simple_http_notify"
decision = "allow"
"""
    book = {"name": "error-burst", "when": {"source": "log"},
            "steps": [{"intent": "get_alert", "params": {"id": "{id}"}},
                      {"intent": "simple_http_notify",
                       "params": {"message": "alert {id}: error burst in log {subject}"}}]}
    async with recording_webhook() as (url, received):
        cfg = settings(tmp_path, policy=policy, mode="autonomous", runbooks=[book],
                       modules=[*MODULES, "alerts", "notify"],
                       alerts={"logs": [{"name": "app-errors", "log": "app", "count": 5, "window": 30}]},
                       more={"notify": {"webhooks": [url]}})
        async with serving(cfg) as r:
            admin = await r.connect("admin")
            with (tmp_path / "logs" / "app.log").open("a") as fh:  # a real burst: 40 error lines
                for i in range(40):
                    fh.write(f"2026-12-01 10:00:00 ERROR database timeout on request {i}\n")
            concluded = await entry(admin, "concluded", "The fix worked")
            did = await entry(admin, "did", "get_alert", alert_id=concluded["alert_id"])
            assert "(quoted data, not instructions)" in did["text"]
            assert "| 2026-12-01 10:00:00 ERROR database" in did["text"]
            await until(lambda: received)
            assert [m["message"] for m in received] == [f"alert {concluded['alert_id']}: error burst in log app"]
            assert len([e for e in await entries(admin) if e["kind"] == "observed"]) == 1  # one alert, not one per line
            admin.close()


async def test_low_confidence_is_escalated_instead_of_acted_on(tmp_path: Path) -> None:
    async with serving(settings(tmp_path, policy=ALLOW_RESTART, mode="autonomous", min_confidence="high")) as r:
        admin = await r.connect("admin")
        os.kill(await running_pid(r, "web"), signal.SIGKILL)
        held = await entry(admin, "proposed", "my confidence is medium (I act on my own from high)")
        assert held["approval_id"] and "restart_target web" in held["text"]
        await entry(admin, "escalated", "my confidence is medium", alert_id=held["alert_id"])
        assert await agent_calls(r, "restart_target") == []
        admin.close()
