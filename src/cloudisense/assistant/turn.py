"""One assistant turn as a typed value: what happened, said once in words, sent once on the wire.

Every entry point (``query_assist``, ``agent_ask``, ``confirm_action``, the CLI) gets a
:class:`Turn`; callers branch on :class:`Outcome`, never on the wording of a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudisense.assistant.diagnose import Diagnosis
    from cloudisense.assistant.escalation import Escalation
    from cloudisense.assistant.executor import ExecutionResult
    from cloudisense.assistant.plan import Plan
    from cloudisense.assistant.react import ReactResult


class Outcome(StrEnum):
    """What a turn did."""

    #: The plan ran to its end (``run.status``: completed or failed).
    EXECUTED = "executed"
    #: A step waits for a person's decision (``run.approval``: what, where, at what risk, why).
    AWAITING_APPROVAL = "awaiting_approval"
    #: Nothing ran: the assistant asks ``question``.
    CLARIFY = "clarify"
    #: Nothing ran: a person was asked to look (``escalation``).
    ESCALATED = "escalated"
    #: A reply without acting (help, thanks, an answer from the model with no steps).
    ANSWERED = "answered"
    #: Nothing ran: the caller's role may not do it, and the answer says who can.
    REFUSED = "refused"


@dataclass
class Turn:
    """The result of one request to the assistant."""

    outcome: Outcome
    session: str
    #: What the person reads: plain words built from real results.
    answer: str
    #: Who produced it: ``offline``, ``hybrid``, ``react``, ``introduction``, ...
    strategy: str = ""
    plan: Plan | None = None
    run: ExecutionResult | None = None
    question: str | None = None
    escalation: Escalation | None = None
    react: ReactResult | None = None
    #: For an open question: what the investigation found.
    diagnosis: Diagnosis | None = None
    #: Model tokens (input, output) an investigation used, when a model added its reading.
    usage: tuple[int, int] | None = None
    #: The answer's text was already sent as an ``assist_delta`` event (an investigation sends it
    #: before its proposal); otherwise the module sends it just before the response.
    streamed: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The JSON answer of the assistant intents (``answer`` is what the existing client shows)."""
        out: dict[str, Any] = {"outcome": self.outcome.value, "session": self.session, "answer": self.answer,
                               "strategy": self.strategy, "steps": []}
        if self.plan is not None:
            out["plan"] = self.plan.model_dump()
        if self.react is not None:
            out.update(self.react.as_dict())
            out["answer"] = self.answer
        if self.run is not None:
            out.update(self.run.as_dict())
        if self.question is not None:
            out["question"] = self.question
        if self.escalation is not None:
            out["escalation"] = self.escalation.to_wire()
        if self.diagnosis is not None:
            top = self.diagnosis.top
            out["diagnosis"] = {"found": top is not None, "component": top.component if top else None,
                                "cause": top.cause() if top else None, "confidence": self.diagnosis.confidence(),
                                "fix": top.fix if top else [], "evidence": self.diagnosis.evidence_lines(),
                                "evidence_tokens": self.diagnosis.evidence_tokens}
            if self.usage is not None:
                out["usage"] = {"input": self.usage[0], "output": self.usage[1]}
        return out
