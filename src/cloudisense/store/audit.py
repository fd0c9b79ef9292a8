"""The audit log: every executed intent, durable before its response leaves.

Each row, and each update of a row, is appended to a journal as one JSON line with one
``write()`` before the caller goes on: durable against a crash of the process (the kernel
has the bytes), which is exactly what a SQLite commit in WAL mode with ``synchronous=NORMAL``
promises, at a tenth of its cost (no locks, no pages). A worker thread moves the journal
into the ``audit`` table in batches; reads move it first, so they always see every row.
Writes and destructive actions get a ``started`` row before they run
(:meth:`AuditLog.begin`), updated with the outcome after (:meth:`AuditLog.finish`): one row
per request.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from cloudisense.core.audit import AuditRecord
from cloudisense.core.errors import Conflict
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




_COLUMNS = ("id", "ts", "user", "role", "client_kind", "client_id", "requestid", "parent_requestid", "intent",
            "params", "outcome", "code", "message", "duration_ms", "decision", "rule")
# OR REPLACE: moving a journal again (the node stopped after the table took it, before the file
# was removed) rewrites the same rows, and the updates after them in the journal follow again.
_INSERT = f"INSERT OR REPLACE INTO audit ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
#: What an update of a ``started`` row sets, in the order of its journal line (then the row's id).
_FINISH_COLUMNS = ("outcome", "code", "message", "duration_ms", "decision", "rule")
_FINISH = f"UPDATE audit SET {', '.join(f'{column} = ?' for column in _FINISH_COLUMNS)} WHERE id = ?"

# A journal file is moved with a few statements of many rows each (see _move_items).
_CHUNK = 500

#: The first item of a journal line: a new row, or the outcome of a ``started`` one.
INSERT, FINISH = "i", "f"

#: The outcome of a row written before a write or destructive action runs; replaced by the
#: action's outcome after it. One still ``started`` when the node starts again is marked
#: :data:`INTERRUPTED`: the node stopped while the action ran, so its effect is unknown.
STARTED = "started"
STARTED_CODE = 102
INTERRUPTED = "interrupted"
INTERRUPTED_MESSAGE = ("the node stopped while this action ran: it may have been done in part; "
                       "check the state of what it acted on")

#: A journal file is closed and moved into the table after this many lines, or this many
#: seconds after its first line, whichever comes first (and before every read).
MOVE_EVERY = 1000
MOVE_AFTER = 1.0
#: Closed files waiting to be moved whose lines are also kept in memory (so read back none).
KEPT_FILES = 4

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


def journal_folder(db_path: Path) -> Path:
    """Where the journal files of the database at ``db_path`` live (beside it)."""
    return db_path.with_name(db_path.name + "-audit-journal")


def _line(item: list[Any]) -> tuple[bytes, list[Any]]:
    """One journal line and the item it holds; text SQLite can't take as UTF-8 (lone surrogates)
    is escaped first (in both)."""
    try:
        return orjson.dumps(item) + b"\n", item
    except TypeError:
        item = list(_printable(tuple(item)))
        return orjson.dumps(item) + b"\n", item


def _printable(row: Row) -> Row:
    """The row with text that SQLite can't take as UTF-8 (lone surrogates) escaped."""
    return tuple(v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v for v in row)


class AuditLog:
    """Writer and reader of the audit log: a journal in front of the ``audit`` table.

    On the event loop, :meth:`record`, :meth:`begin` and :meth:`finish` each append one line
    to the open journal file (``<db>-audit-journal/<n>.jsonl``, one ``write()``, no lock and
    no loop turn) and return: the row is durable once the kernel has it. Row ids are given
    here, counting on from the table's highest, so :meth:`begin` returns the id its
    :meth:`finish` updates. After :data:`MOVE_EVERY` lines or :data:`MOVE_AFTER` seconds the
    file is closed, a new one opened, and a worker thread moves the closed one into the table
    in one transaction and removes it; files move one at a time, in order. :meth:`query`
    moves what is written first, so a read sees every row. At start, journal files left by a
    stopped or killed node are moved before anything else, a line cut short by a power loss
    is skipped with a warning, and rows still ``started`` become ``interrupted``. If the table
    can't take a file (the disk is full, the database locked), it stays on disk and is moved
    again later: a row is never lost once its caller went on.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._folder = journal_folder(db.path)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        #: The open journal file: its descriptor, number and line count.
        self._fd = -1
        self._lock_fd = -1
        self._number = 0
        self._lines = 0
        self._next_id = 1
        #: The items of the open file's lines, kept so that moving it needs no reading back.
        self._items: list[list[Any]] = []
        #: Closed journal files not yet in the table, oldest first, with their items (``None``:
        #: a file left by an earlier run, read from disk).
        self._closed: list[tuple[Path, list[list[Any]] | None]] = []
        self._move_timer: asyncio.TimerHandle | None = None
        self._moving: asyncio.Task[None] | None = None
        self._move_lock = asyncio.Lock()

    async def start(self) -> None:
        """Create or migrate the table, move journals left behind, mark rows left ``started``, open a journal."""
        await self._db.migrate("audit", MIGRATIONS)
        # The lock first: refused, this start leaves no thread or connection behind.
        self._folder.mkdir(mode=0o700, exist_ok=True)
        self._hold_folder()
        loop = asyncio.get_running_loop()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self._conn = await loop.run_in_executor(self._thread, self._connect)
        left = sorted(self._folder.glob("*.jsonl"), key=_number)
        for path in left:
            await loop.run_in_executor(self._thread, self._move, path)
        await self._db.execute("UPDATE audit SET outcome = ?, code = 500, message = ? WHERE outcome = ?",
                               (INTERRUPTED, INTERRUPTED_MESSAGE, STARTED))
        row = await self._db.fetchone("SELECT MAX(id) FROM audit")
        self._next_id = (row[0] or 0) + 1 if row else 1
        self._number = max((_number(p) for p in left), default=0)
        self._loop = loop
        self._open_next()

    def _hold_folder(self) -> None:
        """Lock the journal folder for this process: a second node on the same data would move (and
        remove) the journal the first one still writes. The kernel drops the lock when the process dies."""
        fd = os.open(self._folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(f"another node is running on the database {self._db.path} (its audit journal is "
                           "locked); stop it first, or give this one a data folder of its own") from None
        self._lock_fd = fd

    def _release_folder(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = -1

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._db.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA synchronous=NORMAL")  # as the main connection: durable against process crashes
        return conn

    async def stop(self) -> None:
        """Move what is written into the table, then stop the writer and close its connection."""
        if self._loop is None:
            self._release_folder()  # a start that failed half-way
            return
        await self._move_written()
        self._loop = None
        if self._move_timer is not None:
            self._move_timer.cancel()
        os.close(self._fd)
        self._fd = -1
        assert self._thread is not None and self._conn is not None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)
        self._thread, self._conn = None, None
        self._release_folder()

    async def record(self, rec: AuditRecord) -> None:
        """Store ``rec``; returns once it is durable."""
        self._insert(rec)

    async def begin(self, rec: AuditRecord) -> int:
        """Store ``rec`` as :data:`STARTED` before its action runs; returns the row id for :meth:`finish`."""
        rec.outcome, rec.code = STARTED, STARTED_CODE
        return self._insert(rec)

    async def finish(self, audit_id: int, rec: AuditRecord) -> None:
        """Replace the :data:`STARTED` row ``audit_id`` with the outcome in ``rec``; returns once durable."""
        self._append(*_line([FINISH, rec.outcome, rec.code, rec.message, rec.duration_ms, rec.decision, rec.rule,
                            audit_id]))

    def _insert(self, rec: AuditRecord) -> int:
        # Encoded here, so a record that can't be encoded fails only its own request.
        params = dumps(redact(rec.params)) if rec.params else "{}"
        row_id = self._next_id
        self._append(*_line([INSERT, row_id, rec.ts or time.time(), rec.user, rec.role, rec.client_kind,
                            rec.client_id, rec.requestid, rec.parent_requestid, rec.intent, params, rec.outcome,
                            rec.code, rec.message, rec.duration_ms, rec.decision, rec.rule]))
        self._next_id = row_id + 1
        return row_id

    def _append(self, line: bytes, item: list[Any]) -> None:
        """(Event loop) ``line`` (holding ``item``) on the open journal file; raises ``OSError`` when the
        disk refuses it."""
        if self._loop is None:
            raise RuntimeError("the audit writer is not running")
        written = 0
        try:
            while written < len(line):  # a regular file takes it whole unless the disk is full
                written += os.write(self._fd, line[written:])
        except OSError:
            if written:  # part of a line: the lines after it start in a new file, so only this one is lost
                self._lines += 1
                self._move_soon()
            raise
        self._lines += 1
        self._items.append(item)
        if self._lines == 1:
            self._move_timer = self._loop.call_later(MOVE_AFTER, self._move_soon)
        elif self._lines >= MOVE_EVERY:
            self._move_soon()

    def _open_next(self) -> None:
        """Close the open journal file (it waits in ``_closed`` to be moved) and open the next."""
        if self._fd >= 0:
            os.close(self._fd)
            # While the table can't take files (locked, disk full), the later ones are read back when
            # moved rather than kept: memory stays bounded however long that lasts.
            kept = self._items if len(self._closed) < KEPT_FILES else None
            self._closed.append((self._folder / f"{self._number}.jsonl", kept))
            self._items = []
        self._number += 1
        self._fd = os.open(self._folder / f"{self._number}.jsonl",
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._lines = 0

    def _move_soon(self) -> None:
        """(Event loop) close the open journal file and move it on the worker thread."""
        if self._move_timer is not None:
            self._move_timer.cancel()
            self._move_timer = None
        if self._loop is None or self._lines == 0:
            return
        self._open_next()
        if self._moving is None or self._moving.done():
            self._moving = self._loop.create_task(self._move_closed())

    async def _move_written(self) -> None:
        """Move every line written so far into the table (what reads and :meth:`stop` wait for)."""
        if self._lines:
            self._move_soon()
        await self._move_closed()

    async def _move_closed(self) -> None:
        """Move the closed journal files into the table, oldest first; one that fails stays for the next try."""
        async with self._move_lock:
            loop = asyncio.get_running_loop()
            while self._closed:
                try:
                    await loop.run_in_executor(self._thread, self._move, *self._closed[0])
                except Exception:
                    log.warning("audit: could not move %s into the table yet; it stays on disk",
                                self._closed[0][0], exc_info=True)
                    return
                self._closed.pop(0)

    def _move(self, path: Path, items: list[list[Any]] | None = None) -> None:
        """(Writer thread) the rows and updates of one journal file into the table, then remove the file.

        ``items``: what its lines hold, kept by :meth:`_append` (nothing to read back); ``None`` for a
        file an earlier run left, which is read."""
        conn = self._conn
        assert conn is not None
        if not path.exists():  # moved by an earlier try whose caller stopped waiting (one thread: it finished)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not (_move_items(conn, items) if items is not None else _move_whole(conn, path.read_bytes())):
                _move_by_line(conn, path)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        path.unlink()

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
        await self._move_written()
        rows = await self._db.fetchall(sql, (*args, limit))
        out = []
        for row in rows:
            item = dict(row)
            # Rows written before non-finite numbers were refused may hold Infinity: read it as text.
            item["params"] = json.loads(item["params"], parse_constant=str)
            out.append(item)
        return out


def _number(path: Path) -> int:
    """A journal file's number (``7.jsonl`` is 7); files are moved in that order."""
    try:
        return int(path.stem)
    except ValueError:
        return 0


def _move_whole(conn: sqlite3.Connection, data: bytes) -> bool:
    """Move a journal file read from disk with :func:`_move_items`; ``False`` (nothing done) when a
    line does not read, for :func:`_move_by_line` to skip it."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    try:
        items = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:  # a line cut short
        return False
    if len(items) != len(lines):  # a line cut short that still read, joined with the next
        return False
    if not all(_readable(item) for item in items):
        return False
    return _move_items(conn, items)


def _readable(item: Any) -> bool:
    """Whether a parsed journal line is a row (its kind and every column) or an update (its kind,
    what it sets and the row's id)."""
    return type(item) is list and bool(item) and (
        (item[0] == INSERT and len(item) == len(_COLUMNS) + 1)
        or (item[0] == FINISH and len(item) == len(_FINISH_COLUMNS) + 2))


def _move_items(conn: sqlite3.Connection, items: list[list[Any]]) -> bool:
    """Move journal items (lines as written) with a statement per :data:`_CHUNK` rows; ``False`` when
    SQLite can't take a text, for :func:`_move_by_line` to escape it (the rows done are done again).

    One statement per row released the GIL and took it back per row, and each time the event
    loop's thread, which lets go of it on every journal ``write()``, waited to get it back:
    that churn was about half of what moving cost the requests (README, RPC). The rows go in
    first, then the updates: a row's update always comes after its row in the journal.
    """
    rows = [item[1:] for item in items if item[0] == INSERT]
    finishes = [item[1:] for item in items if item[0] == FINISH]
    # Within SQLite's limit on a statement's values (32,766 since 3.32, 999 before).
    size = max(1, min(_CHUNK, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(_COLUMNS)))
    try:
        for chunk in _chunks(rows, size):
            conn.execute(_insert_rows(len(chunk)), list(itertools.chain.from_iterable(chunk)))
        for chunk in _chunks(finishes, size):
            conn.execute(_finish_rows(len(chunk)), list(itertools.chain.from_iterable(chunk)))
    except UnicodeEncodeError:
        return False
    return True


def _chunks(items: list[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@functools.lru_cache(maxsize=8)
def _insert_rows(count: int) -> str:
    """``INSERT`` of ``count`` rows (a full chunk's text is built once, and sqlite3 keeps its prepared statement)."""
    row = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    return f"INSERT OR REPLACE INTO audit ({', '.join(_COLUMNS)}) VALUES " + ", ".join([row] * count)


@functools.lru_cache(maxsize=8)
def _finish_rows(count: int) -> str:
    """``UPDATE`` of ``count`` rows' outcomes; each row of values is a journal update's 7 values."""
    row = "(" + ", ".join("?" for _ in range(len(_FINISH_COLUMNS) + 1)) + ")"
    sets = ", ".join(f"{column} = v.column{n}" for n, column in enumerate(_FINISH_COLUMNS, start=1))
    last = len(_FINISH_COLUMNS) + 1
    return f"UPDATE audit SET {sets} FROM (VALUES {', '.join([row] * count)}) AS v WHERE audit.id = v.column{last}"


def _move_by_line(conn: sqlite3.Connection, path: Path) -> None:
    """Move a journal file's lines one statement each, skipping (with a warning) those that do not read."""
    for sql, row in _read_journal(path):
        try:
            conn.execute(sql, row)
        except UnicodeEncodeError:
            conn.execute(sql, _printable(row))


def _read_journal(path: Path) -> list[tuple[str, Row]]:
    """The statements of one journal file; a line that does not read (cut short) is skipped with a warning."""
    ops: list[tuple[str, Row]] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                item = None
            if _readable(item):
                ops.append((_INSERT if item[0] == INSERT else _FINISH, tuple(item[1:])))
                continue
            log.warning("audit: line %d of %s does not read (cut short by a crash?); skipped", number, path)
    return ops
