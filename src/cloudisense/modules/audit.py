"""``get_audit_log``: read the audit trail, filtered by user, intent, outcome and time."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cloudisense.core.context import ActionContext
from cloudisense.core.errors import Forbidden
from cloudisense.core.intents import Intent, Params, Risk, normalize_intent_name
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role

#: What a record's ``outcome`` can be (the router's words; ``started`` while a write runs).
Outcome = Literal["success", "error", "denied", "pending_approval", "started", "interrupted"]


class AuditParams(Params):
    """Which audit records to read; every filter is optional and they combine with AND.

    ``user``: one user's records (non-admins: only their own); ``outcome``: success, error, denied,
    pending_approval, started or interrupted; ``since`` / ``until``: a time range as Unix
    timestamps (epoch seconds, inclusive); ``exclude_intents``: intents to leave out (a
    dashboard's own reads).
    """

    limit: int = Field(50, ge=1, le=1000)
    intent: str | None = Field(None, max_length=128, description="only this intent")
    # The filters below carry no description on purpose: the planner indexes param descriptions
    # (they moved its choices), and a description naming seconds made "the last hour" read as
    # ``since = 3600``. They are for the dashboard's filters; the docstring says what they mean.
    user: str | None = Field(None, min_length=1, max_length=128)
    outcome: Outcome | None = None
    since: float | None = Field(None, ge=0)
    until: float | None = Field(None, ge=0)
    exclude_intents: list[str] = Field(default_factory=list, max_length=50)

    @field_validator("exclude_intents")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name or len(name) > 128 for name in value):
            raise ValueError("each intent name must be 1 to 128 characters")
        return [normalize_intent_name(name) for name in value]

    @model_validator(mode="after")
    def _range(self) -> AuditParams:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since must not be after until")
        return self


class AuditModule(Module):
    """Exposes the audit log over RPC (non-admins see their own records only)."""

    name = "audit"

    def intents(self) -> list[Intent]:
        # Description and examples as before the filters: the planner matches requests on them.
        return [Intent("get_audit_log", "The newest audit records: who ran which intent, with what outcome",
                       self.get_audit_log, AuditParams, Risk.READ,
                       ("show the audit log", "who restarted the web service", "what actions were run recently",
                        "last 10 audit entries"))]

    async def get_audit_log(self, p: AuditParams, ctx: ActionContext) -> dict[str, Any]:
        user = p.user
        if ctx.client.role != Role.ADMIN:
            # Asking for someone else's records is refused, not silently answered with one's own.
            if user is not None and user != ctx.user:
                raise Forbidden(f"only admins may read other users' audit records; you may read {ctx.user}'s")
            user = ctx.user
        intent = normalize_intent_name(p.intent) if p.intent else None
        records = await self.node.audit.query(limit=p.limit, intent=intent, user=user, outcome=p.outcome,
                                              since=p.since, until=p.until, exclude_intents=p.exclude_intents)
        return {"records": records, "count": len(records)}
