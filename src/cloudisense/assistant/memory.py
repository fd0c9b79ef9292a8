"""Per-session memory of the assistant, in SQLite: turns, plans, step results, flags.

A session survives a server restart (it is just rows). :meth:`SessionMemory.context`
compacts long histories: the last ``keep_last`` turns verbatim, older ones
folded into one deterministic summary message (no model involved, so the same
history always yields the same context).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from cloudisense.core.errors import Forbidden, NotFound
from cloudisense.store.db import Database

MIGRATIONS = [
    """
    CREATE TABLE agent_sessions (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        flagged INTEGER NOT NULL DEFAULT 0,
        flag_reason TEXT,
        flagged_at REAL
    );
    CREATE TABLE agent_turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session TEXT NOT NULL REFERENCES agent_sessions(id) ON DELETE CASCADE,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX agent_turns_session ON agent_turns(session, id);
    """
]

#: Turn kinds: conversation messages, records the executor writes, and each request's whole answer
#: (``answer``: the wire form of the assistant's Turn, what a dashboard shows when it resumes a session).
KINDS = ("message", "plan", "step", "event", "answer")


@dataclass
class Turn:
    """One stored turn."""

    id: int
    session: str
    ts: float
    kind: str
    role: str
    content: str
    data: Any = None


def new_session_id() -> str:
    """A fresh, unguessable session id."""
    return "s_" + secrets.token_hex(8)


class SessionMemory:
    """Sessions and their turns."""

    def __init__(self, db: Database, clock: Any = time.time) -> None:
        self._db = db
        self._clock = clock

    async def start(self) -> None:
        """Create the tables if needed."""
        await self._db.migrate("agent_memory", MIGRATIONS)

    async def open(self, session: str | None, user: str, *, admin: bool = False) -> str:
        """The session id to use: ``session`` if it exists and belongs to ``user`` (or admin), else a new one."""
        now = self._clock()
        if session:
            row = await self._db.fetchone("SELECT user FROM agent_sessions WHERE id = ?", (session,))
            if row is not None:
                if row["user"] != user and not admin:
                    raise Forbidden(f"session {session} belongs to another user; start a new session")
                return session
            # Concurrent first requests of one session race here: the loser must not fail.
            await self._db.execute("INSERT INTO agent_sessions (id, user, created, updated) VALUES (?, ?, ?, ?)"
                                   " ON CONFLICT(id) DO NOTHING", (session, user, now, now))
            if await self.owner(session) != user and not admin:
                raise Forbidden(f"session {session} belongs to another user; start a new session")
            return session
        sid = new_session_id()
        await self._db.execute("INSERT INTO agent_sessions (id, user, created, updated) VALUES (?, ?, ?, ?)",
                               (sid, user, now, now))
        return sid

    async def owner(self, session: str) -> str:
        """Who the session belongs to."""
        row = await self._db.fetchone("SELECT user FROM agent_sessions WHERE id = ?", (session,))
        if row is None:
            raise NotFound(f"no assistant session {session!r}")
        return str(row["user"])

    async def add(self, session: str, kind: str, role: str, content: str, data: Any = None) -> int:
        """Append a turn."""
        if kind not in KINDS:
            raise ValueError(f"turn kind must be one of {KINDS}")
        now = self._clock()
        rid = await self._db.execute(
            "INSERT INTO agent_turns (session, ts, kind, role, content, data) VALUES (?, ?, ?, ?, ?, ?)",
            (session, now, kind, role, content, json.dumps(data, default=str) if data is not None else None))
        await self._db.execute("UPDATE agent_sessions SET updated = ? WHERE id = ?", (now, session))
        return rid

    async def add_message(self, session: str, role: str, content: str) -> int:
        """A conversation message (``user`` / ``assistant``)."""
        return await self.add(session, "message", role, content)

    async def add_plan(self, session: str, plan: dict[str, Any], text: str = "") -> int:
        """The plan proposed for a request."""
        return await self.add(session, "plan", "assistant", text or "plan", plan)

    async def add_step(self, session: str, step: dict[str, Any]) -> int:
        """One executed (or refused, or paused) step."""
        summary = f"{step.get('intent')} -> {step.get('status')}"
        return await self.add(session, "step", "tool", summary, step)

    async def turns(self, session: str, kinds: tuple[str, ...] = KINDS, limit: int = 1000) -> list[Turn]:
        """Turns of a session, oldest first (the newest ``limit``)."""
        marks = ",".join("?" for _ in kinds)
        rows = await self._db.fetchall(
            f"SELECT * FROM agent_turns WHERE session = ? AND kind IN ({marks}) ORDER BY id DESC LIMIT ?",
            (session, *kinds, limit))
        return [Turn(r["id"], r["session"], r["ts"], r["kind"], r["role"], r["content"],
                     json.loads(r["data"]) if r["data"] else None) for r in reversed(rows)]

    async def context(self, session: str, *, keep_last: int = 8, max_chars: int = 6000) -> list[dict[str, str]]:
        """Conversation for a prompt: a summary of older turns, then the last ``keep_last`` verbatim."""
        turns = await self.turns(session, ("message", "step"))
        recent, older = turns[-keep_last:] if keep_last else [], turns[:-keep_last] if keep_last else turns
        out: list[dict[str, str]] = []
        if older:
            out.append({"role": "system", "content": summarize_turns(older, max_chars // 3)})
        for turn in recent:
            role = turn.role if turn.role in ("user", "assistant") else "assistant"
            content = turn.content if turn.kind == "message" else f"[step] {turn.content}"
            out.append({"role": role, "content": content})
        # Still too long: shorten the oldest verbatim turns first; the newest matter most.
        total = sum(len(m["content"]) for m in out)
        for message in out:
            if total <= max_chars:
                break
            cut = min(len(message["content"]) - 80, total - max_chars)
            if cut > 0:
                message["content"] = message["content"][:len(message["content"]) - cut - 1] + "…"
                total -= cut
        return out

    async def clear(self, session: str) -> None:
        """Forget a session's turns (the session and its flag stay)."""
        await self._db.execute("DELETE FROM agent_turns WHERE session = ?", (session,))

    async def flag(self, session: str, reason: str) -> None:
        """Mark the session as needing a human."""
        await self._db.execute("UPDATE agent_sessions SET flagged = 1, flag_reason = ?, flagged_at = ? WHERE id = ?",
                               (reason, self._clock(), session))

    async def unflag(self, session: str) -> None:
        """Clear the flag (a human took over)."""
        await self._db.execute("UPDATE agent_sessions SET flagged = 0 WHERE id = ?", (session,))

    async def flagged(self, user: str | None = None) -> list[dict[str, Any]]:
        """Flagged sessions (of ``user`` when given), newest first."""
        sql = "SELECT id, user, flag_reason, flagged_at FROM agent_sessions WHERE flagged = 1"
        args: tuple[Any, ...] = ()
        if user is not None:
            sql += " AND user = ?"
            args = (user,)
        rows = await self._db.fetchall(sql + " ORDER BY flagged_at DESC", args)
        return [{"session": r["id"], "user": r["user"], "reason": r["flag_reason"],
                 "flagged_at": int((r["flagged_at"] or 0) * 1000)} for r in rows]

    async def session_info(self, session: str) -> dict[str, Any]:
        """Owner, flag and turn count of a session."""
        row = await self._db.fetchone("SELECT * FROM agent_sessions WHERE id = ?", (session,))
        if row is None:
            raise NotFound(f"no assistant session {session!r}")
        count = await self._db.fetchone("SELECT COUNT(*) AS n FROM agent_turns WHERE session = ?", (session,))
        return {"session": session, "user": row["user"], "flagged": bool(row["flagged"]),
                "flag_reason": row["flag_reason"], "turns": int(count["n"]) if count else 0}


def summarize_turns(turns: list[Turn], max_chars: int) -> str:
    """A deterministic digest of older turns: what was asked, which steps ran with what outcome."""
    asked = [t.content.strip().replace("\n", " ")[:120] for t in turns if t.kind == "message" and t.role == "user"]
    steps: dict[str, int] = {}
    for t in turns:
        if t.kind == "step":
            steps[t.content] = steps.get(t.content, 0) + 1
    parts = [f"Earlier in this session ({len(turns)} turns, summarised):"]
    if asked:
        parts.append("the user asked: " + "; ".join(asked))
    if steps:
        parts.append("steps: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in steps.items()))
    text = " ".join(parts)
    return text if len(text) <= max_chars else text[: max(0, max_chars - 1)] + "…"
