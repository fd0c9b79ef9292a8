"""Plans: what the planner proposes and the executor runs.

A plan is untrusted data (a model may have written it): it is validated here,
and every step still goes through the router, its params validation, the
caller's role and the policy gate before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: ``execute`` the steps; ``clarify``: ask ``question``; ``escalate`` to a person; ``refuse``: the
#: caller's role may not do it (``message`` says so and who can); ``answer``: reply ``message``
#: without acting (help, thanks, greetings).
Outcome = Literal["execute", "clarify", "escalate", "refuse", "answer"]
_STEP_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class PlanStep(BaseModel):
    """One intent call. ``params`` may reference earlier results: ``${check.data.percent}``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="step id, referenced by later steps as ${id.data...}")
    intent: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)
    #: Optional condition over earlier results, e.g. ``${check.data.running} == false``.
    when: str | None = Field(None, max_length=500)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not _STEP_ID.match(value):
            raise ValueError("step id must start with a letter and use letters, digits, _ or - (max 64)")
        return value


class Plan(BaseModel):
    """The planner's answer to one request."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep] = Field(default_factory=list, max_length=20)
    confidence: float = Field(0.0, ge=0.0, le=1.0)
    outcome: Outcome = "execute"
    #: For ``clarify``: the question to ask the user.
    question: str | None = None
    #: For ``refuse`` and ``answer``: what to tell the user.
    message: str | None = None
    #: Why this plan (shown to the user and in the audit trail).
    reason: str | None = None
    #: Which strategy produced it: ``offline``, ``tools``, ``json``, ``scripted``...
    strategy: str = ""
    #: The model's answer was invalid and this plan (clarify/escalate) stands in for it.
    rejected: bool = False
    #: The planner's question stands: it asks what only the operator can give (a required detail
    #: the request lacks: which service? which backup?), confirms a write with a typo, or answers
    #: a question no action answers (a diagnosis). A hybrid planner does not hand such a request
    #: to a model, which could only guess.
    held: bool = False

    def as_record(self, text: str) -> dict[str, Any]:
        """The ``--batch`` / evaluation line: ``{"text", "steps": [{"intent", "params"}], "confidence", "outcome"}``."""
        return {
            "text": text,
            "steps": [{"intent": s.intent, "params": s.params, **({"when": s.when} if s.when else {})}
                      for s in self.steps],
            "confidence": round(self.confidence, 3),
            "outcome": self.outcome,
        }


class Planner(Protocol):
    """Maps a request to a :class:`Plan`."""

    async def plan(self, text: str, context: PlanningContext) -> Plan:
        """Plan ``text`` given what the node offers and what was said before."""


class PlanningContext(BaseModel):
    """What a planner may look at: the tools the caller may use, entities, recent history."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    #: Intent descriptions (``Intent.describe()``) the caller's role may run.
    tools: list[dict[str, Any]] = Field(default_factory=list)
    #: Plannable intents the caller's role may NOT run (``describe()`` plus ``"refusal"``: why), so a
    #: request for one is answered "you can't" instead of being planned as something else.
    refused: list[dict[str, Any]] = Field(default_factory=list)
    #: What people call configured things: phrase -> entity name (``"kv store": "redis"``), from ``[agent] aliases``.
    aliases: dict[str, str] = Field(default_factory=dict)
    #: Configured names by kind: ``{"log": ["app", ...], "target": [...]}``.
    entities: dict[str, list[str]] = Field(default_factory=dict)
    #: Recent conversation turns ``{"role", "content"}``, oldest first.
    history: list[dict[str, str]] = Field(default_factory=list)
    #: Makes the summary of the node's state for a model's prompt (``None``: none); called only when a
    #: model is asked, so the offline planner costs nothing extra.
    summary: Callable[[], Awaitable[str | None]] | None = Field(None, exclude=True)
    role: str = "operator"
