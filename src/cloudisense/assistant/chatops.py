"""The ChatOps log: what the node's agent observed, proposed, did and concluded, as one conversation.

Each entry is ``{id, ts, node, kind, text, alert_id, session, approval_id, data}`` with ``kind`` one
of ``observed``, ``proposed``, ``did``, ``concluded``, ``escalated`` and ``text`` in plain words
(text from logs and alerts stays quoted data in it, never markup). Entries are kept in the node's
SQLite database (table ``chatops``, migrations namespace ``chatops``), published on ``/chatops``
as event ``chatops_entry`` (data = the entry) and listed by the ``list_chatops`` intent, newest
first, optionally filtered by a plain substring (never SQL or a pattern), a time and an alert.

Escalations of any assistant session are entries too: the log listens for the escalator's
``assistant_escalation`` notice on ``/notification``; an escalation of a session that belongs to
an alert (an earlier entry of that session names it) carries that alert's id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

from cloudisense.core.pubsub import PubSub
from cloudisense.store.db import Database

log = logging.getLogger(__name__)

CHATOPS_TOPIC = "/chatops"
CHATOPS_EVENT = "chatops_entry"
Kind = Literal["observed", "proposed", "did", "concluded", "escalated"]
KINDS: tuple[str, ...] = ("observed", "proposed", "did", "concluded", "escalated")
#: Longest text an entry keeps (a log excerpt in it is already cut by the alert monitor).
MAX_TEXT = 4000

_MIGRATIONS = [
    """
    CREATE TABLE chatops (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        alert_id INTEGER,
        session TEXT,
        approval_id TEXT,
        data TEXT
    );
    CREATE INDEX chatops_ts ON chatops (ts);
    CREATE INDEX chatops_alert ON chatops (alert_id, id);
    CREATE INDEX chatops_session ON chatops (session, id);
    """,
]
_COLUMNS = ("id", "ts", "node", "kind", "text", "alert_id", "session", "approval_id", "data")


def _entry(row: Any) -> dict[str, Any]:
    entry = dict(zip(_COLUMNS, tuple(row), strict=True))
    entry["data"] = json.loads(entry["data"]) if entry["data"] else None
    return entry


class ChatOpsLog:
    """The entries of one node, in SQLite, and their events on ``/chatops``."""

    def __init__(self, db: Database, pubsub: PubSub, identity: str) -> None:
        self.db = db
        self.pubsub = pubsub
        self.identity = identity
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Create the table and start listening for escalations."""
        await self.db.migrate("chatops", _MIGRATIONS)
        self.pubsub.add_static(CHATOPS_TOPIC)
        self.pubsub.add_listener(self._on_event)

    async def stop(self) -> None:
        """Stop listening; let entries being written finish."""
        self.pubsub.remove_listener(self._on_event)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def add(self, kind: Kind, text: str, *, alert_id: int | None = None, session: str | None = None,
                  approval_id: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store one entry and publish it; returns it as the wire shows it."""
        if kind not in KINDS:
            raise ValueError(f"chatops entry kind must be one of {', '.join(KINDS)}")
        text = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
        now = time.time()
        blob = json.dumps(data, default=str) if data is not None else None
        entry_id = await self.db.execute(
            "INSERT INTO chatops (ts, node, kind, text, alert_id, session, approval_id, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (now, self.identity, kind, text, alert_id, session, approval_id, blob))
        entry = {"id": entry_id, "ts": now, "node": self.identity, "kind": kind, "text": text, "alert_id": alert_id,
                 "session": session, "approval_id": approval_id, "data": json.loads(blob) if blob else None}
        self.pubsub.publish(CHATOPS_TOPIC, CHATOPS_EVENT, entry)
        return entry

    async def search(self, *, limit: int = 50, query: str | None = None, since: float | None = None,
                   alert_id: int | None = None, session: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Entries newest first and how many match in all; ``query`` is a plain, case-blind substring."""
        where: list[str] = []
        args: list[Any] = []
        if query:
            where.append("instr(lower(text), lower(?)) > 0")  # instr, not LIKE: % and _ are plain characters
            args.append(query)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        for column, value in (("alert_id", alert_id), ("session", session)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = await self.db.fetchone(f"SELECT COUNT(*) FROM chatops{clause}", args)
        rows = await self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM chatops{clause} ORDER BY id DESC LIMIT ?", [*args, limit])
        return [_entry(r) for r in rows], int(total[0]) if total else 0

    async def alert_of(self, session: str) -> int | None:
        """The alert an earlier entry of ``session`` names, if any."""
        row = await self.db.fetchone(
            "SELECT alert_id FROM chatops WHERE session = ? AND alert_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            (session,))
        return int(row[0]) if row is not None else None

    # -- escalations of any session --------------------------------------------------------

    def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("topic") != "/notification" or message.get("name") != "assistant_escalation" \
                or "identity" in message:  # another node's escalation is that node's entry
            return
        task = asyncio.get_running_loop().create_task(self._escalated(message.get("data") or {}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _escalated(self, data: dict[str, Any]) -> None:
        try:
            session = str(data.get("session") or "") or None
            alert_id = await self.alert_of(session) if session else None
            await self.add("escalated", f"Escalated to a person: {data.get('reason')}", alert_id=alert_id,
                           session=session, data={"user": data.get("user")})
        except Exception:  # the escalation itself has happened; only its log entry is lost
            log.exception("could not record an escalation in the ChatOps log")


def say_entries(p: Any, d: dict[str, Any]) -> str:
    """The entries as a conversation, oldest first (``Intent.say`` of ``list_chatops``)."""
    entries = list(reversed(d.get("entries", [])))
    if not entries:
        return "the ChatOps log has no entries" + (" that match" if d.get("filters") else "")
    more = f" (the newest {len(entries)} of {d.get('total')})" if d.get("total", 0) > len(entries) else ""
    lines = [f"ChatOps log{more}:"]
    for e in entries:
        when = time.strftime("%H:%M:%S", time.localtime(float(e.get("ts") or 0)))
        about = f" [alert {e['alert_id']}]" if e.get("alert_id") else ""
        text = str(e.get("text", "")).replace("\n", "\n" + " " * 14)
        lines.append(f"  {when} {e.get('kind', '?'):>9}{about}: {text}")
    return "\n".join(lines)
