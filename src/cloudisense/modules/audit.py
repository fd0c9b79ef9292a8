"""``get_audit_log``: read the audit trail."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role


class AuditParams(Params):
    """Which audit records to read."""

    limit: int = Field(50, ge=1, le=1000)
    intent: str | None = Field(None, description="only this intent")


class AuditModule(Module):
    """Exposes the audit log over RPC (non-admins see their own records only)."""

    name = "audit"

    def intents(self) -> list[Intent]:
        return [Intent("get_audit_log", "The newest audit records: who ran which intent, with what outcome",
                       self.get_audit_log, AuditParams, Risk.READ,
                       ("show the audit log", "who restarted the web service", "what actions were run recently",
                        "last 10 audit entries"))]

    async def get_audit_log(self, p: AuditParams, ctx: ActionContext) -> dict[str, Any]:
        user = None if ctx.client.role == Role.ADMIN else ctx.user
        from cloudisense.core.intents import normalize_intent_name

        intent = normalize_intent_name(p.intent) if p.intent else None
        return {"records": await self.node.audit.query(limit=p.limit, intent=intent, user=user)}
