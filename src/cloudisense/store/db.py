"""The node's SQLite database (WAL) and per-component schema migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite


class Database:
    """One aiosqlite connection shared by the node's stores.

    Each store owns its tables and brings its migrations under a namespace
    (``await db.migrate("audit", [...])``); applied versions are kept in
    ``schema_versions`` so a store can evolve without touching the others.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open (creating the folder and file if needed) and switch to WAL."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own transaction, committed when it ends. The connection
        # is shared by every coroutine of the node, so a transaction spanning awaits would mix
        # unrelated requests anyway; autocommit holds the write lock only for one statement and
        # makes a write one hop to the database thread instead of two (execute, commit).
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable in WAL mode against process crashes; only power loss can drop the last commits.
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        await self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (namespace TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection."""
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def migrate(self, namespace: str, steps: Sequence[str]) -> None:
        """Apply the not yet applied ``steps`` (SQL scripts, in order) of ``namespace``."""
        row = await self.fetchone("SELECT version FROM schema_versions WHERE namespace = ?", (namespace,))
        current = row[0] if row else 0
        for version, script in enumerate(steps, start=1):
            if version <= current:
                continue
            # One transaction per step: a crash mid-migration leaves the previous version, not half of this one.
            name = namespace.replace("'", "''")
            await self.conn.executescript(
                f"BEGIN;\n{script}\n;INSERT INTO schema_versions (namespace, version) VALUES ('{name}', {int(version)})"
                " ON CONFLICT(namespace) DO UPDATE SET version = excluded.version;\nCOMMIT;")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (committed when it ends: autocommit); returns the last row id."""
        cur = await self.conn.execute(sql, params)
        return cur.lastrowid or 0

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """All rows of a query.

        Read in one step, so no statement stays open between two awaits: an open read would
        hold a snapshot, and a write of this connection queued meanwhile would then fail with
        "database is locked" (SQLITE_BUSY_SNAPSHOT, no waiting) whenever the audit writer's
        own connection had committed since.
        """
        return list(await self.conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a query, or ``None`` (read in one step, see :meth:`fetchall`)."""
        rows = await self.conn.execute_fetchall(sql, params)
        return next(iter(rows), None)
