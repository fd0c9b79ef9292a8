"""The assistant's policy: declarative rules that decide allow / confirm / deny.

Rules live in a TOML file (``[agent] policy_file``)::

    [[rule]]
    name = "restart-demo-targets"
    intent = "restart_*"            # glob on the intent name (default "*")
    risk = "write"                  # optional: read | write | destructive
    params = { name = "web" }       # optional: equality, or a glob for string values
    role = "operator"               # optional glob on the caller's role
    node = "demo"                   # optional glob on the node identity
    decision = "confirm"            # allow | confirm | deny
    reason = "restarts drop in-flight requests"

The first matching rule wins; when none matches the defaults apply: ``read`` →
allow, ``write`` → confirm, ``destructive`` → deny (overridable in a
``[defaults]`` table). :meth:`PolicyEngine.decide` is pure: no I/O, no clock.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloudisense.core.errors import ConfigError
from cloudisense.core.intents import Risk, normalize_intent_name

DecisionKind = Literal["allow", "confirm", "deny"]
_GLOB_CHARS = set("*?[")


class Rule(BaseModel):
    """One policy rule (every condition that is set must match)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    intent: str = Field("*", min_length=1, max_length=128, description="glob on the intent name")
    risk: Risk | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    role: str | None = Field(None, description="glob on the caller's role")
    node: str | None = Field(None, description="glob on the node identity")
    client: str | None = Field(None, description="glob on the client kind: agent, mcp, langchain, escalation")
    decision: DecisionKind
    reason: str | None = Field(None, max_length=500)

    @field_validator("intent")
    @classmethod
    def _strip_prefix(cls, value: str) -> str:
        return normalize_intent_name(value)

    def matches(self, intent: str, params: dict[str, Any], risk: Risk, role: str, node: str,
                client: str = "agent") -> bool:
        """Whether this rule applies to the call."""
        if not fnmatch.fnmatchcase(intent, self.intent):
            return False
        if self.client is not None and not fnmatch.fnmatchcase(client, self.client):
            return False
        if self.risk is not None and self.risk != risk:
            return False
        if self.role is not None and not fnmatch.fnmatchcase(role, self.role):
            return False
        if self.node is not None and not fnmatch.fnmatchcase(node, self.node):
            return False
        return all(key in params and _value_matches(params[key], want) for key, want in self.params.items())


def _value_matches(actual: Any, want: Any) -> bool:
    """Equality; a string pattern with glob characters matches string values by glob."""
    if isinstance(want, str) and _GLOB_CHARS & set(want):
        return isinstance(actual, str) and fnmatch.fnmatchcase(actual, want)
    if isinstance(want, bool) or isinstance(actual, bool):
        # True == 1 in Python; a policy about ``check = true`` must not match ``check = 1``.
        return type(want) is type(actual) and want == actual
    return bool(actual == want)


class Defaults(BaseModel):
    """The decision per risk when no rule matches."""

    model_config = ConfigDict(extra="forbid")

    read: DecisionKind = "allow"
    write: DecisionKind = "confirm"
    destructive: DecisionKind = "deny"


class PolicyFile(BaseModel):
    """The whole file: ``[[rule]]`` entries and optional ``[defaults]``."""

    model_config = ConfigDict(extra="forbid")

    rule: list[Rule] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)


@dataclass(frozen=True)
class Decision:
    """What the policy decided, which rule made it (``default:<risk>`` when none) and why."""

    decision: DecisionKind
    rule: str
    reason: str
    #: True when no rule matched and the risk level's default decided.
    is_default: bool = False

    @property
    def allowed(self) -> bool:
        """True for ``allow``."""
        return self.decision == "allow"


class PolicyEngine:
    """First-match-wins evaluation of a list of rules."""

    def __init__(self, rules: list[Rule] | None = None, defaults: Defaults | None = None,
                 source: str = "(built-in defaults)") -> None:
        self.rules = list(rules or [])
        self.defaults = defaults or Defaults()
        self.source = source

    def add_builtin(self, rule: Rule) -> None:
        """Append a rule the node itself needs (after the file's rules, so the file can override it)."""
        self.rules.append(rule)

    def decide(self, intent: str, params: dict[str, Any], risk: Risk | str, role: str, node: str,
               client: str = "agent") -> Decision:
        """The decision for ``client`` calling ``intent`` with ``params`` at ``risk`` as ``role`` on ``node``."""
        name = normalize_intent_name(intent)
        level = Risk(risk)
        for rule in self.rules:
            if rule.matches(name, params, level, str(role), node, client):
                return Decision(rule.decision, rule.name, rule.reason or f"rule {rule.name!r} matched")
        decision: DecisionKind = getattr(self.defaults, level.value)
        return Decision(decision, f"default:{level.value}",
                        f"no rule matched; {level.value} intents default to {decision}", is_default=True)

    def explain(self, intent: str, params: dict[str, Any], risk: Risk | str, role: str, node: str,
                client: str = "agent") -> list[str]:
        """Human-readable lines: which rules were tried and which one decided."""
        name = normalize_intent_name(intent)
        lines = [f"policy {self.source}: {len(self.rules)} rule(s)"]
        for index, rule in enumerate(self.rules):
            if rule.matches(name, params, Risk(risk), str(role), node, client):
                lines.append(f"  rule[{index}] {rule.name!r} matches -> {rule.decision}")
                return lines
            lines.append(f"  rule[{index}] {rule.name!r}: "
                         f"{self._mismatch(rule, name, params, Risk(risk), role, node, client)}")
        lines.append(f"  no rule matched -> default for {Risk(risk).value}")
        return lines

    @staticmethod
    def _mismatch(rule: Rule, intent: str, params: dict[str, Any], risk: Risk, role: str, node: str,
                  client: str) -> str:
        if not fnmatch.fnmatchcase(intent, rule.intent):
            return f"intent {intent!r} does not match {rule.intent!r}"
        if rule.client is not None and not fnmatch.fnmatchcase(client, rule.client):
            return f"client {client!r} does not match {rule.client!r}"
        if rule.risk is not None and rule.risk != risk:
            return f"risk {risk.value} is not {rule.risk.value}"
        if rule.role is not None and not fnmatch.fnmatchcase(str(role), rule.role):
            return f"role {role} does not match {rule.role!r}"
        if rule.node is not None and not fnmatch.fnmatchcase(node, rule.node):
            return f"node {node!r} does not match {rule.node!r}"
        for key, want in rule.params.items():
            if key not in params:
                return f"param {key} is not given"
            if not _value_matches(params[key], want):
                return f"param {key}={params[key]!r} does not match {want!r}"
        return "does not match"


def parse_policy(text: str, source: str = "policy") -> PolicyEngine:
    """A :class:`PolicyEngine` from TOML text; :class:`ConfigError` names the rule index and key."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"policy file {source} is not valid TOML: {exc}") from None
    try:
        parsed = PolicyFile.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    names = [r.name for r in parsed.rule]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"policy file {source}: rule names must be unique (the audit log cites them): "
                          f"{', '.join(dupes)}")
    return PolicyEngine(parsed.rule, parsed.defaults, source)


def assistant_policy(path: Path | None, notice_intents: str | Sequence[str] | None) -> PolicyEngine:
    """The node's policy: the file's rules (or the defaults), then the node's own built-in rules.

    The built-in rules let escalation notices (client kind ``escalation``) run each of
    ``notice_intents`` (the intents ``[agent.escalation]`` routes to) without waiting for an
    approval, since their point is to reach a person; a rule in the file that matches them first
    still decides.
    """
    engine = load_policy(path)
    intents = [notice_intents] if isinstance(notice_intents, str) else list(notice_intents or [])
    for intent in intents:
        engine.add_builtin(Rule(name="builtin:escalation-notice", intent=intent, client="escalation",
                                decision="allow", reason="escalation notices reach a person without waiting for one"))
    return engine


def load_policy(path: Path | None) -> PolicyEngine:
    """The policy of ``path``, or the built-in defaults when no file is configured."""
    if path is None:
        return PolicyEngine()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"policy file not found: {path} (set [agent] policy_file or remove it)") from None
    return parse_policy(text, str(path))


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for item in exc.errors():
        loc = list(item["loc"])
        if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
            where = f"rule[{loc[1]}]" + ("." + ".".join(str(p) for p in loc[2:]) if loc[2:] else "")
        else:
            where = ".".join(str(p) for p in loc) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return f"invalid policy file {source}:\n" + "\n".join(lines)
