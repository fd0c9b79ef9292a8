"""Approvals: a ``confirm`` decision persisted until a human decides.

An approval holds exactly one step (intent + validated params), a description
of what will run, who asked, and the rest of the plan so the executor can
continue after a restart. States::

    pending ──approve──► approved ──consume (once)──► consumed
       │ └──reject──► rejected        │
       └──ttl──► expired ◄────────────┘ node restarted before it ran, or ttl passed unconsumed

Consumption is one atomic ``UPDATE ... WHERE status = 'approved'``: an approval
confirmed twice still runs once. Approval and consumption are two commits (the
decision, then the gate's consume just before the action runs), so an approval can
be left ``approved`` by a crash between them: nothing ran then. :meth:`ApprovalStore.start`
marks such approvals ``expired`` with a reason that says so (they are never run later
by surprise), and :meth:`ApprovalStore.expire_due` expires an approved one not consumed
before its expiry. Once consumed, the action's own audit row (``started`` before it runs)
tells whether it finished.
"""

from __future__ import annotations

import builtins
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudisense.core.errors import Conflict, Forbidden, NotFound
from cloudisense.core.roles import Role
from cloudisense.store.db import Database

Status = Literal["pending", "approved", "rejected", "expired", "consumed"]

MIGRATIONS = [
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        session TEXT,
        requester TEXT NOT NULL,
        requester_role TEXT NOT NULL,
        intent TEXT NOT NULL,
        params TEXT NOT NULL,
        risk TEXT NOT NULL,
        rule TEXT,
        description TEXT NOT NULL,
        plan TEXT,
        status TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        decided_by TEXT,
        decided_at REAL,
        reason TEXT
    );
    CREATE INDEX approvals_status ON approvals(status);
    CREATE INDEX approvals_session ON approvals(session);
    """
]


#: Reasons given to approvals expired after they were approved (nothing ran in either case).
RESTARTED = "the node restarted after the approval and before the action ran; nothing ran: ask again"
UNCONSUMED = "approved but not run before the approval expired; nothing ran: ask again"


def canonical(params: dict[str, Any]) -> str:
    """Params as canonical JSON: the exact call an approval covers."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Approval:
    """One approval record."""

    id: str
    session: str | None
    requester: str
    requester_role: str
    intent: str
    params: dict[str, Any]
    risk: str
    rule: str | None
    description: str
    plan: dict[str, Any] | None
    status: Status
    created: float
    expires: float
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The JSON shown to clients (the stored plan is summarised, not dumped)."""
        remaining = (self.plan or {}).get("steps", [])
        index = int((self.plan or {}).get("index", 0))
        return {
            "approval_id": self.id, "session": self.session, "requester": self.requester,
            "intent": self.intent, "params": self.params, "risk": self.risk, "rule": self.rule,
            "description": self.description, "status": self.status,
            "created": int(self.created * 1000), "expires": int(self.expires * 1000),
            "decided_by": self.decided_by, "reason": self.reason,
            "remaining_steps": max(0, len(remaining) - index - 1),
        }


def _row(row: Any) -> Approval:
    d = dict(row)
    return Approval(
        id=d["id"], session=d["session"], requester=d["requester"], requester_role=d["requester_role"],
        intent=d["intent"], params=json.loads(d["params"]), risk=d["risk"], rule=d["rule"],
        description=d["description"], plan=json.loads(d["plan"]) if d["plan"] else None, status=d["status"],
        created=d["created"], expires=d["expires"], decided_by=d["decided_by"], decided_at=d["decided_at"],
        reason=d["reason"],
    )


class ApprovalStore:
    """Approvals in the node's SQLite database."""

    def __init__(self, db: Database, ttl: float, clock: Any = time.time) -> None:
        self._db = db
        self.ttl = ttl
        self._clock = clock

    async def start(self) -> list[str]:
        """Create the table if needed; expire approvals a stopped node left approved but not run (their ids)."""
        await self._db.migrate("approvals", MIGRATIONS)
        rows = await self._db.fetchall("SELECT id FROM approvals WHERE status = 'approved'")
        if rows:
            await self._db.execute(
                "UPDATE approvals SET status = 'expired', reason = ? WHERE status = 'approved'", (RESTARTED,))
        return [r["id"] for r in rows]

    async def create(self, *, requester: str, requester_role: str, intent: str, params: dict[str, Any],
                     risk: str, description: str, rule: str | None = None, session: str | None = None,
                     plan: dict[str, Any] | None = None) -> Approval:
        """Persist a pending approval for exactly this call."""
        now = self._clock()
        approval = Approval(
            id="ap_" + secrets.token_hex(8), session=session, requester=requester, requester_role=requester_role,
            intent=intent, params=params, risk=risk, rule=rule, description=description, plan=plan,
            status="pending", created=now, expires=now + self.ttl,
        )
        await self._db.execute(
            "INSERT INTO approvals (id, session, requester, requester_role, intent, params, risk, rule,"
            " description, plan, status, created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (approval.id, session, requester, requester_role, intent, canonical(params), risk, rule, description,
             json.dumps(plan, default=str) if plan is not None else None, "pending", now, approval.expires),
        )
        return approval

    async def get(self, approval_id: str) -> Approval:
        """The approval (expired ones are marked so first), or :class:`NotFound`."""
        await self.expire_due()
        row = await self._db.fetchone("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        if row is None:
            raise NotFound(f"no approval {approval_id!r}; list_approvals shows the pending ones")
        return _row(row)

    async def list(self, *, status: str | None = None, requester: str | None = None,
                   session: str | None = None, limit: int = 100) -> list[Approval]:
        """Approvals, newest first, optionally filtered."""
        await self.expire_due()
        where, args = [], []
        for column, value in (("status", status), ("requester", requester), ("session", session)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM approvals" + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self._db.fetchall(sql + " ORDER BY created DESC LIMIT ?", (*args, limit))
        return [_row(r) for r in rows]

    # builtins.list: in this class's annotations ``list`` is the method above.
    async def expire_due(self) -> builtins.list[str]:
        """Mark pending (and approved but never consumed) approvals past their expiry ``expired``; their ids."""
        now = self._clock()
        rows = await self._db.fetchall(
            "SELECT id FROM approvals WHERE status IN ('pending', 'approved') AND expires <= ?", (now,))
        if rows:
            await self._db.execute(
                "UPDATE approvals SET status = 'expired', decided_at = COALESCE(decided_at, ?),"
                " reason = CASE status WHEN 'approved' THEN ? ELSE reason END"
                " WHERE status IN ('pending', 'approved') AND expires <= ?",
                (now, UNCONSUMED, now))
        return [r["id"] for r in rows]

    async def decide(self, approval_id: str, *, approve: bool, user: str, role: Role | str,
                     reason: str | None = None) -> Approval:
        """Approve or reject a pending approval: only its requester or an admin may."""
        approval = await self.get(approval_id)
        if user != approval.requester and Role(role) != Role.ADMIN:
            raise Forbidden(f"only {approval.requester} (who asked) or an admin may decide approval {approval_id}")
        if approval.status == "expired":
            raise Conflict(f"approval {approval_id} expired before it was decided; ask the assistant again")
        if approval.status != "pending":
            raise Conflict(f"approval {approval_id} is already {approval.status} "
                           f"(by {approval.decided_by or 'nobody'})")
        status = "approved" if approve else "rejected"
        now = self._clock()
        # The status guard makes two concurrent decisions race safely: only one UPDATE changes the row.
        cur = await self._db.conn.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ?"
            " WHERE id = ? AND status = 'pending' AND expires > ?",
            (status, user, now, reason, approval_id, now))
        await self._db.conn.commit()
        if cur.rowcount != 1:
            latest = await self.get(approval_id)
            raise Conflict(f"approval {approval_id} is already {latest.status}")
        return await self.get(approval_id)

    async def consume(self, approval_id: str, intent: str, params: dict[str, Any]) -> bool:
        """Atomically mark an ``approved`` approval for exactly this call as ``consumed``.

        True for the one caller that consumed it; False if it is not approved, already
        consumed, or covers another call.
        """
        cur = await self._db.conn.execute(
            "UPDATE approvals SET status = 'consumed' WHERE id = ? AND status = 'approved'"
            " AND intent = ? AND params = ?",
            (approval_id, intent, canonical(params)))
        await self._db.conn.commit()
        return cur.rowcount == 1

    async def consumed_for(self, intent: str, params: dict[str, Any]) -> builtins.list[Approval]:
        """Consumed approvals covering this exact call (for audits and property tests)."""
        rows = await self._db.fetchall(
            "SELECT * FROM approvals WHERE status = 'consumed' AND intent = ? AND params = ?",
            (intent, canonical(params)))
        return [_row(r) for r in rows]
