"""Intent registry: the named actions that modules expose.

An :class:`Intent` couples a name with a typed params model (its JSON-schema is
generated from the model), a one-line description, a risk level and example
utterances. The registry is the single catalogue used by the router, the CLI and
the assistant's planner.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from cloudisense.core.errors import NotFound

if TYPE_CHECKING:
    from cloudisense.core.context import ActionContext

INTENT_PREFIX = "intent_"


class Risk(StrEnum):
    """How much an intent can change: ``read`` < ``write`` < ``destructive``."""

    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"

    @property
    def rank(self) -> int:
        """Order of severity, for comparisons."""
        return _RISK_RANK[self]


_RISK_RANK = {Risk.READ: 0, Risk.WRITE: 1, Risk.DESTRUCTIVE: 2}


def highest_risk(risks: Iterable[Risk]) -> Risk:
    """The most severe risk among ``risks`` (``read`` when empty)."""
    return max(risks, key=lambda r: r.rank, default=Risk.READ)


class AgentUse(StrEnum):
    """What the assistant may do with an intent (read by the planner, ReAct, the gate and the catalogue)."""

    #: The planner and ReAct may propose it as a step.
    TOOL = "tool"
    #: A person or a chain may run it, but the planner never proposes it (subscriptions, streams).
    MANUAL = "manual"
    #: An assistant entry point (``query_assist``, ``chat_llm``): never a step, never called by the assistant.
    ASSISTANT = "assistant"
    #: Runs other intents (``intent_chain``): never a step; each inner step is gated on its own.
    COMPOSITE = "composite"
    #: Only a person may call it (``confirm_action``): the assistant deciding would approve itself.
    HUMAN_ONLY = "human_only"


class Params(BaseModel):
    """Base for intent params models: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    """Params model of intents that take none."""


Handler = Callable[[Any, "ActionContext"], Awaitable[Any]]
#: Says a successful result in plain words: ``say(params, data) -> str``.
Sayer = Callable[[Any, Any], str]


@dataclass(frozen=True)
class Intent:
    """One named action: what it does, what it takes, how risky it is."""

    name: str
    description: str
    handler: Handler
    params: type[BaseModel] = NoParams
    risk: Risk = Risk.READ
    examples: tuple[str, ...] = ()
    module: str = ""
    #: Optional risk that depends on the params, computed (a chain is as risky as its riskiest step).
    risk_for: Callable[[Any], Risk] | None = None
    #: Params that make a run of it a read, declared (``run_playbook`` with ``{"check": True}``): the role
    #: check, the catalogue and the planner all read it, so a viewer may ask for exactly that run.
    read_when: dict[str, Any] = field(default_factory=dict)
    #: Only admins may run it (user management and similar), whatever its risk.
    admin_only: bool = False
    #: Seconds before the dispatcher gives up; ``None`` uses the server default.
    timeout: float | None = None
    #: Entity kind per param name, e.g. ``{"name": "log"}``: grounds the planner.
    entities: dict[str, str] = field(default_factory=dict)
    #: What the assistant may do with it (see :class:`AgentUse`).
    agent_use: AgentUse = AgentUse.TOOL
    #: How a successful result reads in words; ``None`` uses the generic renderer.
    say: Sayer | None = None
    #: Params the assistant adds to a planned step of this intent (what the planner left unsaid
    #: wins): e.g. the richer read of a result whose default shape is the existing client's.
    assistant_params: dict[str, Any] = field(default_factory=dict)
    #: The shape of a successful result's ``data`` (optional): lets a planner write ``when``
    #: conditions that reference fields the result really has.
    result: type[BaseModel] | None = None

    @property
    def plannable(self) -> bool:
        """Whether the planner and ReAct may propose it."""
        return self.agent_use is AgentUse.TOOL

    @property
    def may_be_step(self) -> bool:
        """Whether it may appear as a step of a chain or plan (no nesting of the assistant's own intents)."""
        return self.agent_use in (AgentUse.TOOL, AgentUse.MANUAL)

    def effective_risk(self, params: BaseModel | None) -> Risk:
        """The risk of running this intent with ``params``."""
        if self.read_when and params is not None and self.reads_with(params.model_dump()):
            return Risk.READ
        if self.risk_for is not None and params is not None:
            return self.risk_for(params)
        return self.risk

    def reads_with(self, params: dict[str, Any]) -> bool:
        """Whether a run with ``params`` (names to values) is a read by :attr:`read_when`."""
        return reads_with(self.read_when, params)

    def params_schema(self) -> dict[str, Any]:
        """JSON-schema of the params, generated from the params model."""
        return self.params.model_json_schema()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (CLI ``intents --json``, planner catalogue)."""
        return {
            "name": self.name,
            "module": self.module,
            "description": self.description,
            "risk": self.risk.value,
            "examples": list(self.examples),
            "params": self.params_schema(),
            "entities": dict(self.entities),
            "agent_use": self.agent_use.value,
            "result": self.result.model_json_schema() if self.result is not None else None,
            "read_when": dict(self.read_when),
        }


def reads_with(read_when: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether ``params`` hold every value of a non-empty ``read_when`` (see :attr:`Intent.read_when`)."""
    return bool(read_when) and all(params.get(k) == v for k, v in read_when.items())


def normalize_intent_name(name: str) -> str:
    """Strip the optional ``intent_`` prefix: ``intent_chat_llm`` and ``chat_llm`` are one."""
    if name.startswith(INTENT_PREFIX):
        return name[len(INTENT_PREFIX):]
    return name


class IntentRegistry:
    """All intents known to this node, by normalized name."""

    def __init__(self) -> None:
        self._intents: dict[str, Intent] = {}

    def add(self, intent: Intent) -> None:
        """Register ``intent``; a second intent with the same name is a programming error."""
        name = normalize_intent_name(intent.name)
        if name in self._intents:
            other = self._intents[name].module
            raise ValueError(f"intent {name!r} is registered twice (modules {other!r} and {intent.module!r})")
        self._intents[name] = intent

    def get(self, name: str) -> Intent:
        """The intent called ``name`` (with or without prefix), or :class:`NotFound` with suggestions."""
        intent = self.find(name)
        if intent is None:
            suggestions = self.suggest(name)
            hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
            raise NotFound(f"unknown intent {name!r}{hint}")
        return intent

    def find(self, name: str) -> Intent | None:
        """The intent called ``name``, or ``None``."""
        return self._intents.get(normalize_intent_name(name))

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Registered names closest to ``name``."""
        return difflib.get_close_matches(normalize_intent_name(name), list(self._intents), n=limit, cutoff=0.5)

    def all(self) -> list[Intent]:
        """Every intent, sorted by module then name."""
        return sorted(self._intents.values(), key=lambda i: (i.module, i.name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_intent_name(name) in self._intents

    def __len__(self) -> int:
        return len(self._intents)
