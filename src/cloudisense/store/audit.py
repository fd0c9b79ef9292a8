"""The audit log: every executed intent, committed before its response leaves.

Writes are group-committed: concurrent requests put their records on a queue,
one writer inserts whatever is waiting in a single transaction, and each
request's ``record()`` returns only after the commit that holds its row.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from cloudisense.core.audit import AuditRecord
from cloudisense.store.db import Database

MIGRATIONS = [
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,
        client_kind TEXT NOT NULL,
        client_id TEXT NOT NULL,
        requestid TEXT,
        intent TEXT NOT NULL,
        params TEXT NOT NULL,
        outcome TEXT NOT NULL,
        code INTEGER NOT NULL,
        message TEXT,
        duration_ms REAL NOT NULL,
        decision TEXT,
        rule TEXT
    );
    CREATE INDEX audit_intent ON audit(intent);
    CREATE INDEX audit_ts ON audit(ts);
    """
]

_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "api-key", "apikey", "authorization",
                 "credential", "private_key", "privatekey", "cookie")
REDACTED = "***"


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if any(w in str(k).lower() for w in _SECRET_WORDS) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value




_INSERT = (
    "INSERT INTO audit (ts, user, role, client_kind, client_id, requestid, intent, params,"
    " outcome, code, message, duration_ms, decision, rule)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Row = tuple[Any, ...]


def _row(rec: AuditRecord) -> Row:
    return (rec.ts, rec.user, rec.role, rec.client_kind, rec.client_id, rec.requestid, rec.intent,
            json.dumps(rec.params, default=str), rec.outcome, rec.code, rec.message, rec.duration_ms,
            rec.decision, rec.rule)


def _printable(row: Row) -> Row:
    """The row with text that SQLite can't take as UTF-8 (lone surrogates) escaped."""
    return tuple(v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v for v in row)


class AuditLog:
    """Group-committing writer and reader of the ``audit`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: asyncio.Queue[tuple[Row, asyncio.Future[None]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the table if needed and start the writer."""
        await self._db.migrate("audit", MIGRATIONS)
        self._writer = asyncio.create_task(self._write_loop(), name="audit-writer")

    async def stop(self) -> None:
        """Flush what is queued, then stop the writer."""
        if self._writer is None:
            return
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        self._writer.cancel()
        try:
            await self._writer
        except asyncio.CancelledError:
            pass
        self._writer = None

    async def record(self, rec: AuditRecord) -> None:
        """Store ``rec``; returns once it is committed."""
        rec.ts = rec.ts or time.time()
        rec.params = redact(rec.params)
        # Serialised here, so a record that can't be encoded fails only its own request.
        row = _row(rec)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((row, done))
        await done

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 500:
                batch.append(self._queue.get_nowait())
            try:
                await self._db.conn.executemany(_INSERT, [row for row, _ in batch])
                await self._db.conn.commit()
            except Exception:
                await self._db.conn.rollback()
                await self._write_one_by_one(batch)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _write_one_by_one(self, batch: list[tuple[Row, asyncio.Future[None]]]) -> None:
        """After a failed group commit: each row alone, so one bad row fails only its own request."""
        for row, fut in batch:
            try:
                try:
                    await self._db.conn.execute(_INSERT, row)
                except UnicodeEncodeError:
                    await self._db.conn.execute(_INSERT, _printable(row))
                await self._db.conn.commit()
            except Exception as exc:  # a failed commit must fail the request that waited on it
                if not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(None)

    async def query(self, limit: int = 50, intent: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
        """Newest records first, optionally for one intent or user."""
        where, args = [], []
        if intent:
            where.append("intent = ?")
            args.append(intent)
        if user:
            where.append("user = ?")
            args.append(user)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._db.fetchall(sql, (*args, limit))
        out = []
        for row in rows:
            item = dict(row)
            item["params"] = json.loads(item["params"])
            out.append(item)
        return out


def record_as_dict(rec: AuditRecord) -> dict[str, Any]:
    """Plain dict of a record (for tests and logs)."""
    return asdict(rec)
