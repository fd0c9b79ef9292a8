"""Intent to act is recorded before acting: one audit row per write, "started" then its outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cloudisense.core.audit import AuditRecord
from cloudisense.core.auth import LoginLimiter
from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.store.audit import INTERRUPTED, STARTED, AuditLog
from cloudisense.store.db import Database
from tests.conftest import make_settings, start_server


async def test_write_row_is_started_while_running_then_finished(tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, server={"port": 0, "dashboard": False}))
    release = asyncio.Event()
    seen: list[list[dict]] = []

    async def act(params: Params, ctx: ActionContext) -> str:
        seen.append(await running.node.audit.query(intent="test_act"))
        await release.wait()
        return "done"

    running.node.registry.add(Intent("test_act", "a write that waits", act, Params, Risk.WRITE))
    try:
        conn = await running.connect("admin")
        call = asyncio.create_task(conn.call("test_act"))
        while not seen:
            await asyncio.sleep(0.01)
        # While the action runs, its row is already committed as started.
        assert [(r["outcome"], r["code"]) for r in seen[0]] == [(STARTED, 102)]
        release.set()
        assert await call == "done"
        rows = await running.node.audit.query(intent="test_act")
        assert [(r["outcome"], r["code"]) for r in rows] == [("success", 200)]  # the same row, updated
        assert rows[0]["id"] == seen[0][0]["id"] and rows[0]["duration_ms"] > 0
        # A sub-call names its parent request.
        chain = await conn.request("intent_chain", {"steps": [{"intent": "test_act"}]})
        assert chain["status"] == "success"
        sub = (await running.node.audit.query(intent="test_act"))[0]
        assert sub["parent_requestid"] == chain["requestid"]
        # A read gets one row, written once, with no parent.
        await conn.call("list_channels")
        read = (await running.node.audit.query(intent="list_channels"))[0]
        assert read["outcome"] == "success" and read["parent_requestid"] is None
        conn.close()
    finally:
        await running.server.stop()


async def test_started_rows_become_interrupted_at_the_next_start(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db")
    await db.open()
    log = AuditLog(db)
    await log.start()
    rec = AuditRecord(user="u", role="admin", client_kind="websocket", client_id="c", requestid="r1",
                      intent="restart_target", params={"name": "web"}, outcome="", code=0, message=None,
                      duration_ms=0.0)
    await log.begin(rec)  # the node "dies" here: no finish
    await log.stop()
    await db.close()
    db = Database(tmp_path / "a.db")
    await db.open()
    log = AuditLog(db)
    await log.start()
    try:
        (row,) = await log.query()
        assert row["outcome"] == INTERRUPTED and row["code"] == 500 and "stopped while this action ran" in row["message"]
    finally:
        await log.stop()
        await db.close()


def _wait(limiter: LoginLimiter, user: str, address: str) -> int:
    """The seconds the limiter says to wait (0: may try now)."""
    try:
        limiter.check(user, address)
    except Exception as exc:
        return int(str(exc).split("try again in ")[1].split(" s")[0])
    return 0


def test_limiter_backoff_doubles_is_capped_and_unlock_forgives() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=2, window_seconds=100, clock=lambda: now[0])
    limiter.failed("admin", "a")
    limiter.failed("admin", "a")
    waits = []
    for _ in range(8):
        waits.append(_wait(limiter, "admin", "a"))
        now[0] += waits[-1] - 0.5  # not yet: still waiting, and the refused attempt is not counted
        assert _wait(limiter, "admin", "a") > 0
        now[0] += 0.51
        assert _wait(limiter, "admin", "a") == 0
        limiter.failed("admin", "a")
    assert waits == [1, 2, 4, 8, 16, 32, 64, 100]  # capped at the window
    assert _wait(limiter, "admin", "elsewhere") == 0  # the same user from another address
    limiter.failed("admin", "b")
    assert limiter.unlock("admin") == 2
    assert _wait(limiter, "admin", "a") == 0
