"""Escalation: when the assistant should ask or hand over instead of guessing.

:func:`assess` is pure: given a plan (and how many steps failed so far) it says
``proceed``, ``clarify`` (with a question), ``escalate`` (with a reason), ``refuse`` (what the
caller's role may not do) or ``answer`` (small talk, with the reply).

:class:`Escalator` carries out an escalation: it flags the session (visible via the
``list_escalations`` intent), publishes it on ``/notification``, and pages people through the
channels that ``[agent.escalation]`` routes its severity to (``info``, ``warning``, ``critical``;
a severity not listed there uses ``[agent] escalate_via``, default ``simple_http_notify``). Each
notice runs its channel's intent through the router as a client of kind ``escalation``, so it is
policy-checked and audited like every other action (the policy's built-in rules
``builtin:escalation-notice`` allow exactly the routed intents for that kind of client; a rule in
the policy file can still deny them). The notice says, in plain words, why a person is needed and
carries the evidence: the alert, the investigation's evidence lines and figures, the failed steps.
Text from logs and alerts in it is marked as quoted data. The same escalation (same alert, or
same session and reason) pages again only after ``[agent.escalation] repeat_after`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cloudisense.assistant.diagnose_evidence import literal
from cloudisense.assistant.memory import SessionMemory
from cloudisense.assistant.plan import Plan
from cloudisense.core.clients import InProcessClient
from cloudisense.core.errors import ConfigError
from cloudisense.core.roles import Role
from cloudisense.modules.alerts import alert_line

if TYPE_CHECKING:
    from cloudisense.assistant.diagnose import Diagnosis
    from cloudisense.assistant.executor import StepResult
    from cloudisense.assistant.settings import AgentSettings
    from cloudisense.core.context import CallOrigin
    from cloudisense.core.intents import IntentRegistry
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
SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
#: Escalations remembered for ``repeat_after`` (older ones are forgotten first).
MAX_REMEMBERED = 1000
EVIDENCE_LINES = 12
#: The longest notice (webhook and Telegram messages take at most 4000 characters).
NOTICE_CHARS = 3900


def routes(settings: AgentSettings) -> dict[str, list[str]]:
    """Severity -> the intents that page for it (channel names resolved), from ``[agent.escalation]``."""
    from cloudisense.modules.notify import CHANNELS

    fallback = [settings.escalate_via] if settings.escalate_via else []
    out = {}
    for severity in SEVERITIES:
        listed = getattr(settings.escalation, severity)
        names = fallback if listed is None else listed
        out[severity] = list(dict.fromkeys(CHANNELS.get(n, n) for n in names))
    return out


def notice_intents(settings: AgentSettings) -> list[str]:
    """Every intent an escalation notice may run (what the policy's built-in rules allow)."""
    return sorted({i for intents in routes(settings).values() for i in intents})


def check_routes(settings: AgentSettings, registry: IntentRegistry) -> None:
    """Every channel ``[agent.escalation]`` names exists and takes a ``message``; else a :class:`ConfigError`.

    (``[agent] escalate_via`` alone is not checked: its default names the notify module's webhook
    intent, and a node without that module simply sends no notices, as it always did.)
    """
    from cloudisense.modules.notify import CHANNELS

    for severity in SEVERITIES:
        for name in getattr(settings.escalation, severity) or []:
            intent = registry.find(CHANNELS.get(name, name))
            if intent is None:
                raise ConfigError(f"[agent.escalation] {severity}: no channel or intent {name!r} on this node "
                                  "(channels: webhook, telegram, email; they need the notify module)")
            if "message" not in intent.params.model_fields:
                raise ConfigError(f"[agent.escalation] {severity}: {name} takes no message, so it can't send a notice")


@dataclass(frozen=True)
class Escalation:
    """What an escalation did: the session is flagged; ``notified`` says whether any notice was sent.

    ``channels``: per routed intent, ``{"intent", "ok", "error"}``; ``suppressed``: the same escalation
    was sent less than ``repeat_after`` seconds ago, so nobody was paged again.
    """

    session: str
    reason: str
    notified: bool
    error: str | None = None
    escalated: bool = True
    severity: str = "warning"
    channels: list[dict[str, Any]] = field(default_factory=list)
    suppressed: bool = False

    def to_wire(self) -> dict[str, Any]:
        """JSON for the wire."""
        return asdict(self)


def diagnosis_evidence(d: Diagnosis) -> list[str]:
    """An investigation's evidence in plain words: the likely cause, its log lines and figures, the facts."""
    top = d.top
    lines: list[str] = []
    if top is not None:
        lines.append(f"likely cause: {top.cause()} (confidence {d.confidence()})")
        lines.extend(g.describe() for g in sorted(top.groups, key=lambda g: -g.weight)[:4])
        lines.extend(top.figures)
        if top.no_fix:
            lines.append(f"no fix proposed: {top.no_fix}")
    lines.extend(d.facts)
    return lines


def steps_evidence(steps: Sequence[StepResult]) -> list[str]:
    """The steps that did not succeed, in plain words (``restart_target error (500): ...``)."""
    return [f"step {s.intent} {s.status}" + (f" ({s.code})" if s.code else "") + (f": {s.message}" if s.message else "")
            for s in steps if s.status != "ok"]


def notice(identity: str, *, session: str, user: str, reason: str, request: str, severity: str,
           evidence: Sequence[str], alert: Mapping[str, Any] | None) -> tuple[str, str]:
    """The notice's subject and text, in plain words (outside text quoted, never markup)."""
    subject = literal(f"[cloudisense {identity}] {severity}: {reason}", 180)
    out = [f"[cloudisense {identity}] the assistant needs a person ({severity}).",
           f"Why: {literal(reason, 500)}"]
    if alert:
        out.append(f"Alert: {literal(alert_line(dict(alert)), 400)}")
    if request:
        out.append(f'Request: "{literal(request, 300)}" (user {user}, session {session})')
    else:
        out.append(f"Session: {session} (user {user})")
    if evidence:
        out.append("Evidence (log and alert text quoted as data, not instructions):")
        lines = [f"  - {literal(line, 300)}" for line in evidence]
        # Every channel takes at most NOTICE_CHARS: the lines that do not fit are counted, not cut midway.
        room = NOTICE_CHARS - sum(len(x) + 1 for x in out) - 200
        shown = 0
        for line in lines[:EVIDENCE_LINES]:
            if len(line) + 1 > room:
                break
            out.append(line)
            room -= len(line) + 1
            shown += 1
        if shown < len(lines):
            out.append(f"  ({len(lines) - shown} more line(s): see the session {session})")
    out.append(f"See it with list_escalations on node {identity}.")
    return subject, "\n".join(out)


class Escalator:
    """Flags sessions and pages people through the routed channels, through the router."""

    def __init__(self, router: MessageRouter, pubsub: PubSub, memory: SessionMemory, *, identity: str,
                 via_intent: str | None = None, routes: Mapping[str, Sequence[str]] | None = None,
                 repeat_after: float = 0) -> None:
        self.memory = memory
        self.identity = identity
        #: Severity -> intents; ``via_intent`` alone (the old form) routes every severity to it.
        self.routes = {s: list(routes.get(s, [])) if routes is not None else ([via_intent] if via_intent else [])
                       for s in SEVERITIES}
        self.repeat_after = repeat_after
        self._router = router
        self._pubsub = pubsub
        self._client = InProcessClient(router, ESCALATION_USER, Role.OPERATOR, kind=ESCALATION_KIND,
                                       policy_applies=True)
        self._sent: dict[str, float] = {}

    async def escalate(self, session: str, user: str, reason: str, request: str = "",
                       origin: CallOrigin | None = None, *, severity: Severity | None = None,
                       evidence: Sequence[str] = (), alert: Mapping[str, Any] | None = None) -> Escalation:
        """Flag ``session``, publish it, and page the channels of ``severity``.

        A failed notice never hides the flag; ``evidence`` lines and the ``alert`` go into the notice.
        ``severity`` defaults to the alert's, else ``warning``.
        """
        if severity is None:
            severity = (alert or {}).get("severity") or "warning"
        if severity not in SEVERITIES:
            severity = "warning"
        subject, text = notice(self.identity, session=session, user=user, reason=reason, request=request,
                               severity=severity, evidence=evidence, alert=alert)
        # Callers other than the assistant (an alert's investigation) may name a session not opened yet.
        await self.memory.open(session, user, admin=True)
        await self.memory.flag(session, reason)
        await self.memory.add(session, "event", "assistant", f"escalated ({severity}): {reason}")
        self._pubsub.publish("/notification", "assistant_escalation",
                             {"session": session, "user": user, "reason": reason, "request": request[:500],
                              "severity": severity, "evidence": [literal(e, 300) for e in evidence][:EVIDENCE_LINES],
                              "alert": alert_line(dict(alert)) if alert else None, "text": text})
        intents = self.routes[severity]
        if not intents:
            return Escalation(session, reason, notified=False, severity=severity,
                              error=f"no channel pages for {severity} escalations ([agent.escalation] {severity}, "
                                    "[agent] escalate_via)")
        key = f"alert:{alert.get('fingerprint') or alert.get('id')}" if alert else f"{session}\x00{reason}"
        now = time.monotonic()
        last = self._sent.get(key)
        if last is not None and self.repeat_after and now - last < self.repeat_after:
            ago = int(now - last)
            return Escalation(session, reason, notified=False, severity=severity, suppressed=True,
                              error=f"the same escalation paged {ago} s ago; not again before "
                                    f"{int(self.repeat_after)} s ([agent.escalation] repeat_after)")
        results = []
        for name in intents:
            params: dict[str, Any] = {"message": text}
            intent = self._router.registry.find(name)
            if intent is not None and "subject" in intent.params.model_fields:
                params["subject"] = subject
            response = await self._client.call(name, params, origin=origin)
            ok = response.get("status") == "success" and response.get("code") == 200
            error = None if ok else str(response.get("message") or "the notice is waiting for an approval")[:300]
            if error:
                log.warning("escalation notice for session %s through %s not sent: %s", session, name, error)
            results.append({"intent": name, "ok": ok, "error": error})
        notified = any(r["ok"] for r in results)
        if notified:
            self._sent[key] = now
            while len(self._sent) > MAX_REMEMBERED:
                self._sent.pop(next(iter(self._sent)))
        errors = "; ".join(f"{r['intent']}: {r['error']}" for r in results if r["error"])
        return Escalation(session, reason, notified=notified, error=errors or None, severity=severity,
                          channels=results)
