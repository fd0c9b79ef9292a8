"""Runbooks: fixes for kinds of alerts, declared in ``[[agent.runbooks]]`` (no model needed).

A runbook matches an alert by globs on its ``source``, ``rule``, ``subject`` and ``severity``
(first match wins). Its steps are intents whose string params may name the alert's fields:
``{subject}``, ``{rule}``, ``{id}``, ``{severity}``, ``{source}`` and ``{labels.<name>}`` (an
Alertmanager label). A param that is exactly one placeholder takes the field's value as it is
(``id = "{id}"`` gives the number). Values from an alert are data from outside when the alert came
from Alertmanager or a log: a value put into a param must be a plain name (letters, digits and
``_.:-``, at most 128 characters) or the runbook is not used, so no label can smuggle a path, an
option or a sentence into an action. Whatever a step becomes, the intent's params model validates
it and the policy decides it, as for any call of the agent.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from cloudisense.assistant.settings import Runbook, RunbookCheck

_PLACEHOLDER = re.compile(r"\{(subject|rule|id|severity|source|labels\.[A-Za-z_][A-Za-z0-9_]{0,63})\}")
#: What a value from an alert must look like to go into an action's params.
PLAIN_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


class TemplateError(ValueError):
    """A runbook's placeholder has no value, or its value is not a plain name."""


def matches(runbook: Runbook, alert: dict[str, Any]) -> bool:
    """Whether ``runbook`` is for ``alert`` (every glob that is set matches the alert's field)."""
    when = runbook.when
    for field, pattern in (("source", when.source), ("rule", when.rule), ("subject", when.subject),
                           ("severity", when.severity)):
        if pattern is not None and not fnmatch.fnmatchcase(str(alert.get(field, "")), pattern):
            return False
    return True


def find(runbooks: list[Runbook], alert: dict[str, Any]) -> Runbook | None:
    """The first runbook for ``alert``."""
    return next((r for r in runbooks if matches(r, alert)), None)


def _value(name: str, alert: dict[str, Any]) -> Any:
    if name.startswith("labels."):
        labels = (alert.get("details") or {}).get("labels") or {}
        value = labels.get(name.removeprefix("labels."))
    else:
        value = alert.get(name)
    if value is None:
        raise TemplateError(f"the alert has no {name}")
    if not isinstance(value, int) and not PLAIN_VALUE.match(str(value)):
        raise TemplateError(f"the alert's {name} is not a plain name, so it is not put into an action")
    return value


def fill(value: Any, alert: dict[str, Any]) -> Any:
    """``value`` with the alert's fields in place of its placeholders (lists and tables too)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return _value(whole.group(1), alert)
        return _PLACEHOLDER.sub(lambda m: str(_value(m.group(1), alert)), value)
    if isinstance(value, list):
        return [fill(v, alert) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, alert) for k, v in value.items()}
    return value


@dataclass
class Fix:
    """What the agent will do for an alert: steps (``{"intent", "params"}``), how to check, and why."""

    steps: list[dict[str, Any]]
    verify: RunbookCheck | None
    #: Where the fix comes from, in words ("runbook restart-down-service").
    reason: str
    confidence: str = "high"
    #: The target a check looks at, filled in.
    verify_target: str | None = None
    #: Whether the only evidence for it is text from outside (log lines): then a person decides.
    outside_evidence_only: bool = False

    def words(self) -> str:
        """``restart_target web, then check that web keeps running``."""
        steps = ", then ".join(f"{s['intent']} " + " ".join(_word(v) for v in s.get("params", {}).values())
                               for s in self.steps)
        return steps.replace(" ,", ",").strip() + (f", then {check_words(self.verify, self.verify_target)}"
                                                   if self.verify else "")


def _word(value: Any) -> str:
    """A param value as it reads in a sentence (a list of arguments as they would be typed)."""
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def check_words(check: RunbookCheck, target: str | None) -> str:
    """The check in words."""
    if check.check == "target_running":
        return f"check that {target} keeps running for {check.settle:g} s"
    if check.check == "target_healthy":
        return f"check that {target} runs and answers its health check"
    below = f"{check.below:g} %" if check.below is not None else "the alert's clear level"
    return f"check that {check.metric or 'the figure'} falls below {below}"


def runbook_fix(runbook: Runbook, alert: dict[str, Any]) -> Fix:
    """The runbook's steps and check for ``alert`` (:class:`TemplateError` when a value does not fit)."""
    steps = [{"intent": s.intent, "params": fill(s.params, alert)} for s in runbook.steps]
    target = str(fill(runbook.verify.target, alert)) if runbook.verify is not None else None
    return Fix(steps, runbook.verify, f"runbook {runbook.name}", "high", target)
