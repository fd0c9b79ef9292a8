"""The audit journal: durable before the caller goes on, moved into the table, recovered after a crash;
migration 3."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cloudisense.core.audit import AuditRecord
from cloudisense.core.errors import Conflict
from cloudisense.store import audit as audit_store
from cloudisense.store.audit import INTERRUPTED, MIGRATIONS, AuditLog, journal_folder
from cloudisense.store.db import Database


def _record(rid: str, intent: str = "list_channels", **fields: object) -> AuditRecord:
    values: dict[str, object] = {"user": "u", "role": "viewer", "client_kind": "websocket", "client_id": "c",
                                 "requestid": rid, "intent": intent, "params": {"n": 1}, "outcome": "success",
                                 "code": 200, "message": None, "duration_ms": 0.1, **fields}
    return AuditRecord(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def _running(path: Path) -> AsyncIterator[tuple[Database, AuditLog]]:
    """A database and its audit log, started, and stopped cleanly at the end."""
    db, log = await _open(path)
    try:
        yield db, log
    finally:
        await log.stop()
        await db.close()


async def _open(path: Path) -> tuple[Database, AuditLog]:
    db = Database(path)
    await db.open()
    log = AuditLog(db)
    await log.start()
    return db, log


def _table(path: Path, sql: str = "SELECT requestid, outcome FROM audit ORDER BY id") -> list[tuple[object, ...]]:
    reader = sqlite3.connect(path)
    try:
        return reader.execute(sql).fetchall()
    finally:
        reader.close()


def _crash(log: AuditLog) -> None:
    """What a SIGKILL leaves: the journal file as written, nothing moved, nothing closed cleanly."""
    if log._move_timer is not None:
        log._move_timer.cancel()
    log._loop = None
    assert log._thread is not None and log._conn is not None
    log._thread.submit(log._conn.close).result()
    log._thread.shutdown()
    os.close(log._fd)  # the kernel closes a dead process's files, and so drops its lock
    log._release_folder()


async def test_a_row_is_on_disk_before_record_returns_and_never_waits(tmp_path: Path) -> None:
    async with _running(tmp_path / "a.db") as (_db, log):
        call = log.record(_record("r1", params={"password": "hunter2", "n": 1}))
        with pytest.raises(StopIteration):
            call.send(None)  # done without a loop turn
        # Another reader of the disk sees the line at once (the kernel has it), not yet the table.
        text = b"".join(p.read_bytes() for p in journal_folder(tmp_path / "a.db").glob("*.jsonl"))
        assert b'"r1"' in text and b"hunter2" not in text
        assert _table(tmp_path / "a.db") == []
        # A read moves the journal first, so it sees every row.
        rows = await log.query()
        assert [(r["requestid"], r["params"]) for r in rows] == [("r1", {"password": "***", "n": 1})]
        assert _table(tmp_path / "a.db") == [("r1", "success")]


async def test_begin_and_finish_make_one_row_with_the_outcome(tmp_path: Path) -> None:
    async with _running(tmp_path / "a.db") as (_db, log):
        await log.record(_record("before"))
        row_id = await log.begin(_record("act", "restart_target"))
        assert [(r["requestid"], r["outcome"], r["code"]) for r in await log.query(limit=1)] == [
            ("act", "started", 102)]
        await log.finish(row_id, _record("act", "restart_target", outcome="error", code=500, message="boom"))
        rows = await log.query()
        assert [(r["id"], r["requestid"], r["outcome"], r["message"]) for r in rows] == [
            (row_id, "act", "error", "boom"), (row_id - 1, "before", "success", None)]


async def test_after_a_crash_every_written_row_is_there_and_a_started_one_is_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db, log = await _open(path)
    for i in range(5):
        await log.record(_record(f"r{i}"))
    await log.begin(_record("act", "restart_target"))
    _crash(log)
    await db.close()
    # A power loss can cut the last line short: it is skipped, the rest is kept.
    journal = sorted(journal_folder(path).glob("*.jsonl"))
    assert journal
    with journal[-1].open("ab") as fh:
        fh.write(b'["i", 99, 1.0, "u", "vie')
    async with _running(path) as (db, log):
        assert _table(path) == [*((f"r{i}", "success") for i in range(5)), ("act", INTERRUPTED)]
        assert not list(journal_folder(path).glob("*.jsonl"))[:-1]  # only the new, empty file is left
        await log.record(_record("after"))
        assert (await log.query(limit=1))[0]["id"] == 7  # ids go on after the recovered ones


async def _rows_after_move(path: Path, how: str) -> list[tuple[object, ...]]:
    """The table after writing the same records, moved ``how``: "kept" (the lines' items kept in
    memory, as a running node moves them), "read" (the file read back after a crash), "by line"
    (the same with a line cut short at the end)."""
    db, log = await _open(path)
    await log.record(_record("plain"))
    await log.record(_record("odd", params={"text": "ünï \"quoted\" \u2028", "n": 1e-7}, message="two\nlines",
                             duration_ms=12.5, decision="allow", rule="r-1", parent_requestid="parent"))
    row_id = await log.begin(_record("act", "restart_target"))
    await log.finish(row_id, _record("act", "restart_target", outcome="error", code=500, message="boom",
                                     decision="confirm", rule="ask"))
    if how == "kept":
        await log.stop()
        await db.close()
    else:
        _crash(log)
        await db.close()
    if how == "by line":
        with sorted(journal_folder(path).glob("*.jsonl"))[-1].open("ab") as fh:
            fh.write(b'["i", 99, 1.0, "u", "vie')
    async with _running(path):
        return _table(path, "SELECT id, user, role, client_kind, client_id, requestid, parent_requestid, intent, "
                            "params, outcome, code, message, duration_ms, decision, rule, typeof(code), "
                            "typeof(duration_ms) FROM audit ORDER BY id")


async def test_a_whole_file_and_one_moved_line_by_line_give_the_same_rows(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal file is moved with a statement per 500 rows, from what its lines hold as kept in
    memory or as read back, and one with a line cut short line by line: all three give every column
    of every row the same, types included."""
    by_line_calls: list[Path] = []
    real_by_line = audit_store._move_by_line

    def counted(conn: sqlite3.Connection, path: Path) -> None:
        by_line_calls.append(path)
        real_by_line(conn, path)

    monkeypatch.setattr(audit_store, "_move_by_line", counted)
    kept = await _rows_after_move(tmp_path / "kept.db", "kept")
    whole = await _rows_after_move(tmp_path / "whole.db", "read")
    assert by_line_calls == []
    by_line = await _rows_after_move(tmp_path / "by-line.db", "by line")
    assert len(by_line_calls) == 1
    assert kept == whole == by_line
    assert [row[5] for row in whole] == ["plain", "odd", "act"]
    odd, act = whole[1], whole[2]
    assert odd[6] == "parent" and odd[11] == "two\nlines" and odd[12] == 12.5 and odd[13:15] == ("allow", "r-1")
    assert odd[8] == '{"text":"ünï \\"quoted\\" \u2028","n":1e-7}'
    assert act[9:12] == ("error", 500, "boom") and act[13:15] == ("confirm", "ask")
    assert whole[0][15:] == ("integer", "real")


async def test_a_journal_moved_twice_gives_the_same_rows(tmp_path: Path) -> None:
    """The node can stop after the table took a file and before the file was removed."""
    path = tmp_path / "a.db"
    db, log = await _open(path)
    row_id = await log.begin(_record("act", "restart_target"))
    await log.finish(row_id, _record("act", "restart_target", outcome="success", code=200))
    files = sorted(journal_folder(path).glob("*.jsonl"))
    kept = {p: p.read_bytes() for p in files}
    await log.query()  # moved and removed
    _crash(log)
    await db.close()
    for p, data in kept.items():  # as if the removal never happened
        p.write_bytes(data)
    async with _running(path) as (db, log):
        assert _table(path) == [("act", "success")]


async def test_journal_files_move_in_batches_and_while_the_table_is_locked_nothing_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_store, "MOVE_EVERY", 10)
    monkeypatch.setattr(audit_store, "KEPT_FILES", 1)
    path = tmp_path / "a.db"
    db, log = await _open(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # the writer thread waits for the lock (its busy timeout)
        for i in range(25):  # each call returns at once: the journal does not wait for the table
            await log.record(_record(f"r{i}"))
        assert len(list(journal_folder(path).glob("*.jsonl"))) == 3  # two full files and the open one
        # Memory stays bounded while the table is locked: past KEPT_FILES, a file is read back when moved.
        assert [kept is not None for _, kept in log._closed] == [True, False]
        other.execute("COMMIT")
        rows = await asyncio.wait_for(log.query(limit=100), 30)
        assert [r["requestid"] for r in rows] == [f"r{i}" for i in reversed(range(25))]
        assert len(list(journal_folder(path).glob("*.jsonl"))) == 1
    finally:
        other.close()
        await log.stop()
        await db.close()


async def test_the_open_file_moves_by_itself_after_a_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_store, "MOVE_AFTER", 0.05)
    path = tmp_path / "a.db"
    async with _running(path) as (_db, log):
        await log.record(_record("r1"))
        for _ in range(100):
            if _table(path):
                break
            await asyncio.sleep(0.05)
        assert _table(path) == [("r1", "success")]


async def test_text_sqlite_cannot_take_is_escaped_not_lost(tmp_path: Path) -> None:
    async with _running(tmp_path / "a.db") as (_db, log):
        await log.record(_record("bad\udc80text", message="lone \ud800 surrogate"))
        [row] = await log.query()
        assert row["requestid"] == "bad\\udc80text" and row["message"] == "lone \\ud800 surrogate"


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
    async with _running(path) as (db, log):
        rows = await log.query()
        assert [(r["id"], r["requestid"], r["parent_requestid"]) for r in rows] == [
            (3, "old2", "p"), (2, "old1", "p"), (1, "old0", "p")]
        await log.record(_record("new"))
        assert (await log.query(limit=1))[0]["id"] == 4  # ids go on from the old ones
        indexes = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "audit_intent" in indexes and "audit_ts" not in indexes
        assert await db.fetchall("SELECT * FROM sqlite_sequence WHERE name = 'audit'") == []


async def test_a_read_that_gives_up_while_the_table_is_locked_leaves_the_move_working(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db, log = await _open(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        await log.record(_record("r1"))
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(log.query(), 0.2)  # its caller gives up while the thread waits for the lock
        await log.record(_record("r2"))
        other.execute("COMMIT")
        rows = await asyncio.wait_for(log.query(), 30)
        assert [r["requestid"] for r in rows] == ["r2", "r1"]
        assert len(list(journal_folder(path).glob("*.jsonl"))) == 1
    finally:
        other.close()
        await log.stop()
        await db.close()


async def test_a_second_node_on_the_same_database_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db, log = await _open(path)
    other_db = Database(path)
    await other_db.open()
    try:
        await log.record(_record("r1"))
        with pytest.raises(Conflict, match="another node is running"):
            await AuditLog(other_db).start()
        assert [r["requestid"] for r in await log.query()] == ["r1"]  # the first one's journal untouched
    finally:
        await log.stop()
    second = AuditLog(other_db)
    await second.start()  # free again once the first stopped
    try:
        assert [r["requestid"] for r in await second.query()] == ["r1"]
    finally:
        await second.stop()
        await other_db.close()
        await db.close()
