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
    outcome: str  # "success" | "error" | "denied" | "pending_approval"
    code: int
    message: str | None
    duration_ms: float
    decision: str | None = None
    rule: str | None = None
    ts: float = 0.0


class AuditSink(Protocol):
    """Where audit records go; ``record`` returns once the record is durable."""

    async def record(self, record: AuditRecord) -> None:
        """Persist ``record``."""
