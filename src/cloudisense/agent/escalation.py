"""Escalation: when the assistant should ask or hand over instead of guessing.

:func:`assess` is pure: given a plan (and how many steps failed so far) it says
``proceed``, ``clarify`` (with a question), ``escalate`` (with a reason), ``refuse`` (what the
caller's role may not do) or ``answer`` (small talk, with the reply).
:class:`Escalator` carries out an escalation: it flags the session (visible via
the ``list_escalations`` intent) and sends a notification through the notify
module when that module is loaded (``[agent] escalate_via``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cloudisense.agent.memory import SessionMemory
from cloudisense.agent.plan import Plan

if TYPE_CHECKING:
    from cloudisense.node import Node

log = logging.getLogger(__name__)

#: This many failed steps in one request and the assistant stops trying on its own.
MAX_FAILURES = 2


@dataclass(frozen=True)
class Assessment:
    """What to do with a plan."""

    action: Literal["proceed", "clarify", "escalate", "refuse", "answer"]
    message: str = ""


def assess(plan: Plan, *, min_confidence: float, failures: int = 0) -> Assessment:
    """``proceed``, ``clarify``, ``escalate``, ``refuse`` or ``answer`` for ``plan`` (no I/O).

    ``refuse`` (the caller's role may not do it) and ``answer`` (help, thanks) never escalate."""
    if plan.outcome == "answer":
        return Assessment("answer", plan.message or "OK.")
    if plan.outcome == "refuse":
        return Assessment("refuse", plan.message or "Your role may not do that; ask an operator.")
    if failures >= MAX_FAILURES:
        return Assessment("escalate", f"{failures} steps failed; a person should look at this")
    if plan.outcome == "escalate":
        return Assessment("escalate", plan.reason or "the planner asked for a person")
    if plan.outcome == "clarify":
        return Assessment("clarify", plan.question or "Could you say more precisely what you want done?")
    if not plan.steps:
        return Assessment("clarify", plan.question or "I did not find an action for that. What should I do?")
    if plan.confidence < min_confidence:
        guess = ", ".join(s.intent for s in plan.steps[:3])
        question = plan.question or f"I am not sure I understood. Did you mean: {guess}? Please rephrase or confirm."
        return Assessment("clarify", question)
    return Assessment("proceed")


class Escalator:
    """Flags sessions and notifies humans."""

    def __init__(self, node: "Node", memory: SessionMemory) -> None:
        self.node = node
        self.memory = memory

    async def escalate(self, session: str, user: str, reason: str, request: str = "") -> dict[str, Any]:
        """Flag ``session`` and notify; returns what was done (``notified`` false when notify is absent)."""
        await self.memory.flag(session, reason)
        await self.memory.add(session, "event", "assistant", f"escalated: {reason}")
        self.node.pubsub.publish("/notification", "assistant_escalation",
                                 {"session": session, "user": user, "reason": reason, "request": request[:500]})
        via = self.node.settings.agent.escalate_via
        notified, error = False, None
        notify = self.node.module("notify")
        if via != "none" and notify is not None and hasattr(notify, "notify"):
            message = f"[cloudisense {self.node.identity}] assistant needs a person (session {session}, user {user}): " \
                      f"{reason}" + (f" — request: {request[:300]}" if request else "")
            try:
                await notify.notify(message, via=via)
                notified = True
            except Exception as exc:  # a failed notification must not hide the flag
                error = str(exc)[:300]
                log.warning("escalation notification failed: %s", error)
        elif via != "none":
            error = "notify module not loaded"
        return {"escalated": True, "session": session, "reason": reason, "notified": notified, "error": error}
