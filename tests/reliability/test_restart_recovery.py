"""What a node finds at start-up after a crash at the worst moment: nothing stuck, nothing untracked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cloudisense.modules.target_backends import TARGET_MARKER
from tests.assistant.conftest import agent_settings, serving

SLEEP = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]


async def test_approved_but_not_run_is_expired_with_a_reason(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path)
    async with serving(settings) as running:
        oper = await running.connect("oper")
        paused = await oper.call("agent_execute", {"steps": [{"intent": "restart_target", "params": {"name": "web"}}]})
        approval = paused["approval"]["approval_id"]
        # The decision is committed, and the node dies before the gate consumes it.
        await running.node.module("assistant").approvals.decide(approval, approve=True, user="oper", role="operator")
        oper.close()
    async with serving(settings) as running:
        oper = await running.connect("oper")
        listed = await oper.call("list_approvals", {})
        (state,) = [a for a in listed["approvals"] if a["approval_id"] == approval]
        assert state["status"] == "expired" and "nothing ran" in state["reason"]
        # Confirming it now runs nothing and says why.
        again = await oper.request("confirm_action", {"approval_id": approval, "approve": True})
        assert again["code"] == 409
        rows = await running.node.audit.query(intent="restart_target", limit=100)
        assert all(r["outcome"] == "pending_approval" for r in rows)
        oper.close()


async def test_target_spawned_before_its_pid_file_is_adopted(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path, targets={"web": {"command": SLEEP, "autostart": False, "stop_timeout": 1},
                                                  "nginx": {"command": SLEEP, "autostart": False, "stop_timeout": 1}})
    pid_file = settings.data_dir / "targets" / "web.pid"
    # A node spawned "web" and was killed before writing the pid file: only the mark in the
    # process's environment (set before the fork) tells whose process it is.
    orphan = subprocess.Popen(SLEEP, env={**os.environ, TARGET_MARKER: str(pid_file.resolve())},
                              start_new_session=True)
    try:
        assert not pid_file.exists()
        async with serving(settings) as running:
            status = await running.node.module("targets").backends["web"].status()
            assert status["state"] == "running" and status["pid"] == orphan.pid and status["adopted"]
            assert pid_file.exists()
            other = await running.node.module("targets").backends["nginx"].status()
            assert other["state"] == "stopped"  # another target's mark is not mistaken for it
        # The node stopped: so did the adopted process (no untracked copy left behind).
        assert orphan.wait(10) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
