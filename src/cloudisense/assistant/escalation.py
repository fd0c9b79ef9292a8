"""Escalation: when the assistant should ask or hand over instead of guessing.

:func:`assess` is pure: given a plan (and how many steps failed so far) it says
``proceed``, ``clarify`` (with a question), ``escalate`` (with a reason), ``refuse`` (what the
caller's role may not do) or ``answer`` (small talk, with the reply).
:class:`Escalator` carries out an escalation: it flags the session (visible via
the ``list_escalations`` intent), publishes it on ``/notification``, and sends a
notice by running the intent named in ``[agent] escalate_via`` (default
``simple_http_notify``) through the router as a client of kind ``escalation``:
the notice is policy-checked and audited like every other action (the policy's
built-in rule ``builtin:escalation-notice`` allows exactly that intent for that
kind of client; a rule in the policy file can still deny it).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from cloudisense.assistant.memory import SessionMemory
from cloudisense.assistant.plan import Plan
from cloudisense.core.clients import InProcessClient
from cloudisense.core.roles import Role

if TYPE_CHECKING:
    from cloudisense.core.context import CallOrigin
    from cloudisense.core.pubsub import PubSub
    from cloudisense.core.router import MessageRouter

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


#: Client kind of escalation notices (what the policy's built-in escalation rule matches).
ESCALATION_KIND = "escalation"
#: The node's own identity for escalation notices: a system user, like the reaction engine's.
ESCALATION_USER = "assistant"


@dataclass(frozen=True)
class Escalation:
    """What an escalation did: the session is flagged; ``notified`` says whether the notice was sent."""

    session: str
    reason: str
    notified: bool
    error: str | None = None
    escalated: bool = True

    def to_wire(self) -> dict[str, Any]:
        """JSON for the wire."""
        return asdict(self)


class Escalator:
    """Flags sessions and notifies people, through the router."""

    def __init__(self, router: MessageRouter, pubsub: PubSub, memory: SessionMemory, *, identity: str,
                 via_intent: str | None) -> None:
        self.memory = memory
        self.identity = identity
        self.via_intent = via_intent
        self._pubsub = pubsub
        self._client = InProcessClient(router, ESCALATION_USER, Role.OPERATOR, kind=ESCALATION_KIND,
                                       policy_applies=True)

    async def escalate(self, session: str, user: str, reason: str, request: str = "",
                       origin: CallOrigin | None = None) -> Escalation:
        """Flag ``session``, publish it, and send the notice (a failed notice never hides the flag)."""
        await self.memory.flag(session, reason)
        await self.memory.add(session, "event", "assistant", f"escalated: {reason}")
        self._pubsub.publish("/notification", "assistant_escalation",
                             {"session": session, "user": user, "reason": reason, "request": request[:500]})
        if self.via_intent is None:
            return Escalation(session, reason, notified=False,
                              error="escalation notices are off ([agent] escalate_via)")
        message = (f"[cloudisense {self.identity}] assistant needs a person (session {session}, user {user}): "
                   f"{reason}" + (f" — request: {request[:300]}" if request else ""))
        response = await self._client.call(self.via_intent, {"message": message}, origin=origin)
        if response.get("status") == "success" and response.get("code") == 200:
            return Escalation(session, reason, notified=True)
        error = str(response.get("message") or "the notice is waiting for an approval")[:300]
        log.warning("escalation notice for session %s not sent: %s", session, error)
        return Escalation(session, reason, notified=False, error=error)
