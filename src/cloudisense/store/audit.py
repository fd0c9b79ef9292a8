"""The audit log: every executed intent, committed before its response leaves.

Writes are group-committed: concurrent requests put their records in a batch,
one writer inserts whatever is waiting in a single transaction, and each
request's ``record()`` returns only after the commit that holds its row. Writes and
destructive actions get a ``started`` row before they run (:meth:`AuditLog.begin`),
updated with the outcome after (:meth:`AuditLog.finish`): one row per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from cloudisense.core.audit import AuditRecord
from cloudisense.core.protocol import dumps
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
    """,
    # Sub-calls (chain and assistant steps, approved actions) name the request they ran for.
    """
    ALTER TABLE audit ADD COLUMN parent_requestid TEXT;
    """,
    # Every commit writes each page it touches to the WAL: the ts index (no query uses it) and
    # AUTOINCREMENT's sqlite_sequence row were two of four pages per row, about 20 µs of each
    # request's commit. Rows are never deleted, so a plain rowid still never reuses an id.
    """
    CREATE TABLE audit_v3 (
        id INTEGER PRIMARY KEY,
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
        rule TEXT,
        parent_requestid TEXT
    );
    INSERT INTO audit_v3 SELECT id, ts, user, role, client_kind, client_id, requestid, intent, params, outcome,
        code, message, duration_ms, decision, rule, parent_requestid FROM audit;
    DROP TABLE audit;
    ALTER TABLE audit_v3 RENAME TO audit;
    CREATE INDEX audit_intent ON audit(intent);
    DELETE FROM sqlite_sequence WHERE name = 'audit';
    """,
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




_COLUMNS = ("ts", "user", "role", "client_kind", "client_id", "requestid", "parent_requestid", "intent",
            "params", "outcome", "code", "message", "duration_ms", "decision", "rule")
_INSERT = f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_FINISH = ("UPDATE audit SET outcome = ?, code = ?, message = ?, duration_ms = ?, decision = ?, rule = ?"
           " WHERE id = ?")

#: The outcome of a row written before a write or destructive action runs; replaced by the
#: action's outcome after it. One still ``started`` when the node starts again is marked
#: :data:`INTERRUPTED`: the node stopped while the action ran, so its effect is unknown.
STARTED = "started"
STARTED_CODE = 102
INTERRUPTED = "interrupted"
INTERRUPTED_MESSAGE = ("the node stopped while this action ran: it may have been done in part; "
                       "check the state of what it acted on")

#: Commits of the fast connection between two passive WAL checkpoints.
CHECKPOINT_EVERY = 500

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
#: One statement of a batch: the SQL (``_INSERT`` or ``_FINISH``) and its values.
Op = tuple[str, Row]


def _row(rec: AuditRecord) -> Row:
    return (rec.ts, rec.user, rec.role, rec.client_kind, rec.client_id, rec.requestid,
            rec.parent_requestid, rec.intent, dumps(rec.params) if rec.params else "{}", rec.outcome, rec.code,
            rec.message, rec.duration_ms, rec.decision, rec.rule)


def _printable(row: Row) -> Row:
    """The row with text that SQLite can't take as UTF-8 (lone surrogates) escaped."""
    return tuple(v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v for v in row)


class _Batch(asyncio.Future[list[int | BaseException]]):
    """The commit of one batch, awaited by every request in it.

    A waiter that is cancelled (its caller gave up) must not cancel the commit the others
    wait for: the task that awaits a future cancels that future, so this one refuses, and
    asyncio then cancels the waiting task only, once the commit is done.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


class AuditLog:
    """Group-committing writer and reader of the ``audit`` table.

    Rows and updates queued during one turn of the event loop are one batch, committed
    in one transaction in the next turn; each caller returns once the commit holding its
    row is done. When no batch waits, a row is committed at once instead, with no loop turn
    between the action and its answer: always when its caller says it is ``alone`` (no other
    request received and not yet answered, node-wide), else only the first of its turn.
    Writes use two connections of their own. The fast one commits on the event loop
    itself: a small WAL commit without fsync (``synchronous=NORMAL``) costs less than
    the hop to a thread and back, which is most of a request's latency. It never waits
    for a lock (busy timeout 0): when another connection holds the write lock, or a batch
    fails, the batch goes to the second connection on a worker thread, which waits for
    the lock and retries row by row, so one bad row fails only its own request. The fast
    connection does not checkpoint by itself (that can mean an fsync); the worker thread
    runs a passive checkpoint every :data:`CHECKPOINT_EVERY` commits. Reads use the
    node's shared connection (WAL: readers never wait for the writer). Each insert hands
    its row id back, so :meth:`begin` can return the id its :meth:`finish` updates.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._batch: list[Op] = []
        self._batch_done: _Batch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: A flush is scheduled (``call_soon``) for the batch now filling.
        self._flush_due = False
        #: The worker thread is writing a batch; the next waits for it (rows stay in order).
        self._on_thread = False
        #: A row that was not alone was committed at once during this loop turn (see :meth:`_submit`).
        self._committed_now = False
        self._thread: ThreadPoolExecutor | None = None
        self._fast: sqlite3.Connection | None = None
        self._conn: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpoint: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        """Create or migrate the table, mark rows left ``started`` as interrupted, start the writer."""
        await self._db.migrate("audit", MIGRATIONS)
        await self._db.execute("UPDATE audit SET outcome = ?, code = 500, message = ? WHERE outcome = ?",
                               (INTERRUPTED, INTERRUPTED_MESSAGE, STARTED))
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self._conn = await asyncio.get_running_loop().run_in_executor(self._thread, self._connect, 30.0)
        self._fast = self._connect(0.0)
        self._fast.execute("PRAGMA wal_autocheckpoint=0")
        self._loop = asyncio.get_running_loop()

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
        conn.execute("PRAGMA synchronous=NORMAL")  # as the main connection: durable against process crashes
        return conn

    async def stop(self) -> None:
        """Flush what is queued, then stop the writer and close its connections."""
        if self._loop is None:
            return
        while self._batch or self._flush_due or self._on_thread:
            await asyncio.sleep(0.01)
        self._loop = None
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        assert self._thread is not None and self._conn is not None and self._fast is not None
        self._fast.close()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)
        self._thread, self._conn, self._fast = None, None, None

    def _prepare(self, rec: AuditRecord) -> AuditRecord:
        rec.ts = rec.ts or time.time()
        if rec.params:
            rec.params = redact(rec.params)
        return rec

    async def record(self, rec: AuditRecord, *, alone: bool = False) -> None:
        """Store ``rec``; returns once it is committed (``alone``: see the class docstring)."""
        # Serialised here, so a record that can't be encoded fails only its own request.
        await self._submit((_INSERT, _row(self._prepare(rec))), alone)

    async def begin(self, rec: AuditRecord, *, alone: bool = False) -> int:
        """Store ``rec`` as :data:`STARTED` before its action runs; returns the row id for :meth:`finish`."""
        rec.outcome, rec.code = STARTED, STARTED_CODE
        return await self._submit((_INSERT, _row(self._prepare(rec))), alone)

    async def finish(self, audit_id: int, rec: AuditRecord, *, alone: bool = False) -> None:
        """Replace the :data:`STARTED` row ``audit_id`` with the outcome in ``rec``; returns once committed."""
        await self._submit((_FINISH, (rec.outcome, rec.code, rec.message, rec.duration_ms, rec.decision, rec.rule,
                                      audit_id)), alone)

    async def _submit(self, op: Op, alone: bool) -> int:
        """Queue ``op`` for the next batch; its row id once committed (or its error)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the audit writer is not running")
        if not self._batch and not self._flush_due and not self._on_thread and (alone or not self._committed_now):
            # Nothing is queued: commit this row now, with no loop turn before the answer. Under load
            # (not alone) only once per loop turn: the requests after it in the same turn share the
            # next commit, so that adds one small commit per turn, not one per row. A lone request
            # needs no such mark, nor the extra loop turn that clears it.
            results = self._write_fast([op])
            if results is not None:
                if not alone:
                    self._committed_now = True
                    loop.call_soon(self._next_turn)
                self._committed()
                if isinstance(results[0], BaseException):
                    raise results[0]
                return results[0]
            # The fast connection could not take it: the worker thread will, in a batch as usual.
        if self._batch_done is None:
            self._batch_done = _Batch(loop=loop)
        batch, done = self._batch, self._batch_done
        index = len(batch)
        batch.append(op)
        if not self._flush_due and not self._on_thread:
            # A plain callback in the next loop turn, after every request of this turn has queued
            # its row (cheaper than waking a writer task; one commit for all of them).
            self._flush_due = True
            loop.call_soon(self._flush)
        result = (await done)[index]
        if isinstance(result, BaseException):
            raise result
        return result

    def _next_turn(self) -> None:
        self._committed_now = False

    def _flush(self) -> None:
        """(Event loop) commit the waiting batch on the fast connection, else hand it to the worker thread."""
        self._flush_due = False
        batch, done = self._batch, self._batch_done
        self._batch, self._batch_done = [], None
        if done is None:
            return
        try:
            results = self._write_fast(batch)
        except Exception as exc:  # never leave a request waiting on a batch
            done.set_result([exc] * len(batch))
            return
        if results is not None:
            done.set_result(results)
            self._committed()
            return
        assert self._loop is not None
        self._on_thread = True
        self._loop.run_in_executor(self._thread, self._write, batch).add_done_callback(
            lambda written: self._thread_done(written, done, len(batch)))

    def _thread_done(self, written: asyncio.Future[list[int | BaseException]],
                     done: asyncio.Future[list[int | BaseException]], size: int) -> None:
        """(Event loop) the worker thread's batch is written: answer its requests, flush what queued meanwhile."""
        self._on_thread = False
        if written.cancelled():
            done.set_result([RuntimeError("the audit write was cancelled")] * size)
        elif (exc := written.exception()) is not None:
            done.set_result([exc] * size)
        else:
            done.set_result(written.result())
            self._committed()
        if self._batch and not self._flush_due and self._loop is not None:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (self._checkpoint is None or self._checkpoint.done()):
            assert self._loop is not None
            self._checkpoint = self._loop.run_in_executor(self._thread, self._run_checkpoint)

    def _write_fast(self, batch: list[Op]) -> list[int | BaseException] | None:
        """The batch in one transaction on the loop's connection (row ids); ``None`` when the worker must do it."""
        assert self._fast is not None
        # BEGIN IMMEDIATE fails at once here (busy timeout 0) if another connection writes.
        return _group_commit(self._fast, batch)

    def _run_checkpoint(self) -> None:
        """(Writer thread) copy the WAL back into the database without blocking anyone."""
        assert self._conn is not None
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.warning("audit: WAL checkpoint failed", exc_info=True)

    def _write(self, batch: list[Op]) -> list[int | BaseException]:
        """(Writer thread) the batch in one transaction, else op by op; a row id or an error per op."""
        conn = self._conn
        assert conn is not None
        ids = _group_commit(conn, batch)
        if ids is not None:
            return ids
        # After a failed group commit: each op alone, so one bad row fails only its own request.
        results: list[int | BaseException] = []
        for sql, row in batch:
            try:
                try:
                    results.append(conn.execute(sql, row).lastrowid or 0)
                except UnicodeEncodeError:
                    results.append(conn.execute(sql, _printable(row)).lastrowid or 0)
            except Exception as exc:
                results.append(exc)
        return results

    async def query(self, limit: int = 50, intent: str | None = None, user: str | None = None, *,
                    outcome: str | None = None, since: float | None = None, until: float | None = None,
                    exclude_intents: tuple[str, ...] | list[str] = ()) -> list[dict[str, Any]]:
        """Newest records first, optionally of one intent, user and outcome, within ``[since, until]``
        (epoch seconds), leaving out ``exclude_intents``."""
        where: list[str] = []
        args: list[str | float] = []
        for column, value in (("intent", intent), ("user", user), ("outcome", outcome)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts <= ?")
            args.append(until)
        if exclude_intents:
            where.append(f"intent NOT IN ({', '.join('?' for _ in exclude_intents)})")
            args.extend(exclude_intents)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._db.fetchall(sql, (*args, limit))
        out = []
        for row in rows:
            item = dict(row)
            # Rows written before non-finite numbers were refused may hold Infinity: read it as text.
            item["params"] = json.loads(item["params"], parse_constant=str)
            out.append(item)
        return out


def record_as_dict(rec: AuditRecord) -> dict[str, Any]:
    """Plain dict of a record (for tests and logs)."""
    return asdict(rec)


def _group_commit(conn: sqlite3.Connection, batch: list[Op]) -> list[int | BaseException] | None:
    """The batch in one transaction (a row id per op), or ``None`` after a rollback when any part failed."""
    if len(batch) == 1:
        # One statement is its own transaction (the connection is in autocommit mode): a lone
        # request's commit without the BEGIN and COMMIT statements, about a quarter of its cost.
        sql, row = batch[0]
        try:
            return [conn.execute(sql, row).lastrowid or 0]
        except Exception:
            return None
    try:
        conn.execute("BEGIN IMMEDIATE")
        ids: list[int | BaseException] = [conn.execute(sql, row).lastrowid or 0 for sql, row in batch]
        conn.execute("COMMIT")
        return ids
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return None
