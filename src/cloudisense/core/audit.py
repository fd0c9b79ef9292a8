"""What the router records about every request, and where it sends the record.

The record type lives in core so the router depends on no storage: the node
hands it an :class:`AuditSink` (``store/audit.py`` is the SQLite one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class AuditRecord:
    """One executed (or refused) intent."""

    user: str
    role: str
    client_kind: str
    client_id: str
    requestid: str | None
    intent: str
    params: dict[str, Any]
    #: "success" | "error" | "denied" | "pending_approval"; "started" while a write or destructive
    #: action runs, "interrupted" when the node stopped before it finished.
    outcome: str
    code: int
    message: str | None
    duration_ms: float
    decision: str | None = None
    rule: str | None = None
    ts: float = 0.0
    #: The request a sub-call ran for (``CallOrigin.requestid``), else ``None``.
    parent_requestid: str | None = None


class AuditSink(Protocol):
    """Where audit records go; every method returns once what it wrote is durable (survives a crash of
    the process), and a read made after it sees it."""

    async def record(self, record: AuditRecord) -> None:
        """Persist ``record`` (a request that changed nothing, or was refused)."""

    async def begin(self, record: AuditRecord) -> int:
        """Persist ``record`` as started, before its action runs; returns an id for :meth:`finish`."""

    async def finish(self, audit_id: int, record: AuditRecord) -> None:
        """Replace the started record ``audit_id`` with the outcome in ``record``."""
