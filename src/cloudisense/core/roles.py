"""Roles and the one rule of who may run what.

Used by the router before every action, and by everything that needs to know in
advance (the tool catalogue, the assistant's introduction, MCP tool lists,
dashboard buttons), so they can never disagree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from cloudisense.core.intents import Risk

if TYPE_CHECKING:
    from cloudisense.core.intents import Intent


class Role(StrEnum):
    """What a user may do: viewers read, operators act, admins also manage users."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Order of power, for capping one role by another."""
        return _ROLE_RANK[self]


_ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

#: The most severe risk each role may run.
ROLE_MAX_RISK = {Role.VIEWER: Risk.READ, Role.OPERATOR: Risk.DESTRUCTIVE, Role.ADMIN: Risk.DESTRUCTIVE}


def refusal(role: Role, intent: Intent, risk: Risk | None = None) -> str | None:
    """Why ``role`` may not run ``intent`` (at ``risk``, default its declared risk); ``None`` if it may."""
    risk = risk or intent.risk
    if intent.admin_only and role != Role.ADMIN:
        return f"{intent.name} needs the admin role"
    if risk.rank > ROLE_MAX_RISK[role].rank:
        return f"role {role.value} may not run {risk.value} intents such as {intent.name}"
    return None


def may_run(role: Role, intent: Intent, risk: Risk | None = None) -> bool:
    """Whether ``role`` may run ``intent`` at ``risk`` (default: its declared risk)."""
    return refusal(role, intent, risk) is None
