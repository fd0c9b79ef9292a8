"""The audit log's group commit: shared commits, a cancelled waiter, the worker fallback, migration 3."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from cloudisense.core.audit import AuditRecord
from cloudisense.store.audit import MIGRATIONS, AuditLog
from cloudisense.store.db import Database


def _record(rid: str, intent: str = "list_channels") -> AuditRecord:
    return AuditRecord(user="u", role="viewer", client_kind="websocket", client_id="c", requestid=rid,
                       intent=intent, params={"n": 1}, outcome="success", code=200, message=None, duration_ms=0.1)


async def _open(path: Path) -> tuple[Database, AuditLog]:
    db = Database(path)
    await db.open()
    log = AuditLog(db)
    await log.start()
    return db, log


async def test_requests_of_one_turn_share_a_commit_and_a_cancelled_waiter_fails_only_itself(tmp_path: Path) -> None:
    db, log = await _open(tmp_path / "a.db")
    try:
        waiters = [asyncio.create_task(log.record(_record(f"r{i}"))) for i in range(20)]
        await asyncio.sleep(0)  # every waiter has queued its row in this batch
        assert waiters[0].done() and not waiters[1].done()
        waiters[3].cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert [r for i, r in enumerate(results) if i != 3] == [None] * 19
        # The cancelled caller stopped waiting, but its row was in the shared commit, like the others'.
        rows = await log.query(limit=100)
        assert sorted(r["requestid"] for r in rows) == sorted(f"r{i}" for i in range(20))
        # The first row of the turn was committed at once, the 19 after it in one shared commit.
        assert log._commits == 2
        # The writer still works after the cancellation.
        await log.record(_record("after"))
        assert (await log.query(limit=1))[0]["requestid"] == "after"
    finally:
        await log.stop()
        await db.close()


async def test_a_batch_goes_to_the_worker_thread_while_another_connection_holds_the_lock(tmp_path: Path) -> None:
    db, log = await _open(tmp_path / "a.db")
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # the fast connection can't commit now
        first = asyncio.create_task(log.record(_record("held")))
        await asyncio.sleep(0.2)
        assert not first.done()  # waits on the worker thread (busy timeout), not refused
        queued = asyncio.create_task(log.record(_record("queued")))  # waits for the batch ahead of it
        await asyncio.sleep(0.05)
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(first, queued), 30)
        rows = await log.query()
        assert [r["requestid"] for r in rows] == ["queued", "held"]  # newest first, in commit order
    finally:
        other.close()
        await log.stop()
        await db.close()


async def test_migration_3_keeps_rows_and_ids_and_drops_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    # A database as version 2 left it (AUTOINCREMENT, two indexes), with rows.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE schema_versions (namespace TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    conn.executescript(MIGRATIONS[0] + MIGRATIONS[1])
    conn.execute("INSERT INTO schema_versions VALUES ('audit', 2)")
    for i in range(3):
        conn.execute("INSERT INTO audit (ts, user, role, client_kind, client_id, requestid, intent, params, outcome,"
                     " code, message, duration_ms, parent_requestid) VALUES (1, 'u', 'admin', 'websocket', 'c', ?,"
                     " 'get_audit_log', '{}', 'success', 200, NULL, 1.0, 'p')", (f"old{i}",))
    conn.close()
    db, log = await _open(path)
    try:
        rows = await log.query()
        assert [(r["id"], r["requestid"], r["parent_requestid"]) for r in rows] == [
            (3, "old2", "p"), (2, "old1", "p"), (1, "old0", "p")]
        await log.record(_record("new"))
        assert (await log.query(limit=1))[0]["id"] == 4  # ids go on from the old ones
        indexes = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "audit_intent" in indexes and "audit_ts" not in indexes
        assert await db.fetchall("SELECT * FROM sqlite_sequence WHERE name = 'audit'") == []
    finally:
        await log.stop()
        await db.close()


async def test_a_lone_row_is_committed_before_its_caller_ever_yields(tmp_path: Path) -> None:
    db, log = await _open(tmp_path / "a.db")
    try:
        call = log.record(_record("alone"), alone=True)
        try:
            call.send(None)
            raise AssertionError("record() waited although nothing else was queued")
        except StopIteration:
            pass  # done without a loop turn: committed, as a reader on another connection sees
        reader = sqlite3.connect(tmp_path / "a.db")
        assert reader.execute("SELECT requestid FROM audit").fetchall() == [("alone",)]
        reader.close()
    finally:
        await log.stop()
        await db.close()


async def test_a_lone_row_never_waits_and_sets_no_mark_for_the_turn(tmp_path: Path) -> None:
    db, log = await _open(tmp_path / "a.db")
    try:
        for name in ("one", "two"):  # alone twice in one turn: both committed on the spot
            call = log.record(_record(name), alone=True)
            try:
                call.send(None)
                raise AssertionError("a lone row waited")
            except StopIteration:
                pass
        assert log._commits == 2 and not log._committed_now
        assert [r["requestid"] for r in await log.query()] == ["two", "one"]
    finally:
        await log.stop()
        await db.close()
