"""SIGKILL rounds against a real ``cloudisense serve``: around ``confirm_action`` and around plain writes.

After each kill the node starts again on the same data and must show: no action without its
audit row, no approval left ``approved`` (stuck), no approval run twice, no acknowledged write
missing, no ``started`` row left unexplained, no untracked copy of a target, and an intact
database. Kill delays come from a seeded generator, so every run kills at the same offsets.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path

from cloudisense.client import Connection
from tests.reliability.helpers import Served, add_users, marked_processes, rows, serve, write_config

CONFIRM_ROUNDS = 6
WRITE_ROUNDS = 3


async def _ensure_running(conn: Connection) -> None:
    status = await conn.call("target_status", {"name": "web"})
    if status["state"] != "running":
        await conn.call("start_target", {"name": "web"})


def _starts(folder: Path) -> int:
    log = folder / "starts.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _check_invariants(config: Path, folder: Path) -> None:
    """What must hold once a node has started again after a kill."""
    assert rows(config, "PRAGMA quick_check")[0][0] == "ok"
    stuck = rows(config, "SELECT id FROM approvals WHERE status = 'approved'")
    assert not stuck, f"approvals left approved after a restart: {[r['id'] for r in stuck]}"
    assert not rows(config, "SELECT id FROM audit WHERE outcome = 'started'"), "started rows not marked at start-up"
    # Every start of the target's process is an audited action (started, finished or interrupted).
    acts = rows(config, "SELECT COUNT(*) FROM audit WHERE intent IN ('start_target', 'restart_target')"
                        " AND outcome IN ('success', 'error', 'interrupted')")[0][0]
    assert _starts(folder) <= acts, f"{_starts(folder)} process starts but only {acts} audited actions"
    # Each approval ran at most once, and only as the approved call.
    for row in rows(config, "SELECT id, status FROM approvals"):
        ran = rows(config, "SELECT outcome FROM audit WHERE rule = ? AND intent = 'restart_target'"
                           " AND outcome != 'pending_approval'", (f"approval:{row['id']}",))
        assert len(ran) <= 1, f"approval {row['id']} ran {len(ran)} times"
        if ran:
            assert row["status"] == "consumed"


async def test_sigkill_around_confirm_action(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    await add_users(config)
    rng = random.Random(9)
    served: Served = await serve(config)
    try:
        for _ in range(CONFIRM_ROUNDS):
            oper = await served.connect("oper")
            await _ensure_running(oper)
            paused = await oper.call("agent_execute", {"steps": [{"intent": "restart_target",
                                                                   "params": {"name": "web"}}]})
            assert paused["status"] == "paused", paused
            approval = paused["approval"]["approval_id"]
            await oper.ws.write_message(json.dumps({"type": "rpc", "requestid": uuid.uuid4().hex,
                                                    "intent": "confirm_action",
                                                    "params": {"approval_id": approval, "approve": True}}))
            await asyncio.sleep(rng.uniform(0.002, 0.4))
            served.kill()
            await served.wait()
            oper.close()
            served = await serve(config)
            # The node adopted what still ran, and there is never more than one copy of the target.
            assert len(marked_processes(config)) <= 1
            _check_invariants(config, tmp_path)
            state = rows(config, "SELECT status, reason FROM approvals WHERE id = ?", (approval,))[0]
            assert state["status"] in ("consumed", "expired", "pending"), state["status"]
            if state["status"] == "expired":
                assert "nothing ran" in state["reason"]
            if state["status"] == "pending":
                # Killed before the node read the confirm frame: nobody approved it as far as the node
                # knows, and it is not stuck: it can still be decided (or expires at its deadline).
                again = await served.connect("oper")
                out = await again.call("confirm_action", {"approval_id": approval, "approve": False})
                assert [s["status"] for s in out["steps"]] == ["rejected"], out
                again.close()
        # The last node still works: a new approval runs to completion.
        oper = await served.connect("oper")
        await _ensure_running(oper)
        paused = await oper.call("agent_execute", {"steps": [{"intent": "restart_target", "params": {"name": "web"}}]})
        done = await oper.call("confirm_action", {"approval_id": paused["approval"]["approval_id"], "approve": True})
        assert done["status"] == "completed", done
        outcomes = rows(config, "SELECT status, COUNT(*) AS n FROM approvals GROUP BY status")
        interrupted = rows(config, "SELECT COUNT(*) FROM audit WHERE outcome = 'interrupted'")[0][0]
        print(f"approvals by state: { {r['status']: r['n'] for r in outcomes} }, interrupted actions: {interrupted}, "
              f"process starts: {_starts(tmp_path)}")
        records = await oper.call("get_audit_log", {"limit": 200})
        restart = [r for r in records["records"] if r["intent"] == "restart_target" and r["outcome"] == "success"]
        assert restart and restart[0]["parent_requestid"], "a sub-call names the request it ran for"
        oper.close()
    finally:
        await served.stop()
    assert marked_processes(config) == [], "a stopped node leaves no target process behind"


async def test_sigkill_around_plain_writes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    await add_users(config)
    rng = random.Random(7)
    acknowledged: list[str] = []
    for _ in range(WRITE_ROUNDS):
        served = await serve(config)
        conns = [await served.connect("oper") for _ in range(4)]
        stop = asyncio.Event()

        async def writer(conn: Connection, n: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    answer = await conn.request("create_channel", {"topic": f"/crash/{n}/{i}"}, timeout=30)
                except Exception:  # the kill: unacknowledged, so nothing is promised
                    return
                if answer.get("status") == "success":
                    acknowledged.append(answer["requestid"])
                i += 1

        tasks = [asyncio.create_task(writer(c, n)) for n, c in enumerate(conns)]
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        served.kill()
        await served.wait()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            c.close()
    served = await serve(config)
    try:
        assert acknowledged, "no write was acknowledged: the test measured nothing"
        stored = {r["requestid"]: r["outcome"] for r in rows(config, "SELECT requestid, outcome FROM audit"
                                                                     " WHERE intent = 'create_channel'")}
        missing = [rid for rid in acknowledged if stored.get(rid) != "success"]
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost, e.g. {missing[:3]}"
        assert rows(config, "PRAGMA quick_check")[0][0] == "ok"
        assert not rows(config, "SELECT id FROM audit WHERE outcome = 'started'")
    finally:
        await served.stop()
