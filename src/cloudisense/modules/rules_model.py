"""The CloudiSENSE reaction rule format, as a pydantic model, and its matching logic.

A rule is one JSON file in the rules folder, named ``<id>.json``::

    {"id": "high-cpu", "description": "...", "listen-to": "/stats", "enabled": true,
     "trigger": {"on-payload-object": {"key": "data.system.cpu.percent", "content": 90,
                                       "condition": "greater-than"}},
     "response": {"intent": "simple_http_notify", "parameters": {"message": "CPU at {{data.system.cpu.percent}}%"}}}

A time-driven rule listens to ``"{time}"`` and has ``{"on-time-object": {"cron": "..."}}``: a
standard 5-field cron (minute resolution) or a 6-field one whose FIRST field is seconds
(``"*/2 * * * * *"`` fires every two seconds), evaluated in the node's local time.

CloudiSENSE's own format is accepted beside it and written back exactly as given::

    {"id": "rule-http-notify", "listen-to": "/httpcapture/path", "enabled": true,
     "trigger": {"on-payload-object": {"key": "data", "on-content": "*", "on-condition": "equals"},
                 "evaluator": null},
     "response": {"intent": "simple_http_notify",
                  "parameters": {"http": {"webhook": ["http://localhost/receiver"], "method": "GET"}}}}
    {"id": "every-5-minutes", "listen-to": "{time}",
     "trigger": {"on-time-object": {"recurring": true, "using-expression": "*/5 * * * *"}, "evaluator": null},
     "response": {"intent": "start_script_execution", "parameters": {"name": "cleanup.sh"}}}

- conditions: ``equals``, ``contains``, ``startswith``, ``endswith``, ``lessthan``,
  ``lessthanorequal``, ``greaterthan``, ``greaterthanorequal``, ``regex`` (and ours:
  ``not-equals``, ``greater-than``, ``less-than``, ``matches``); content ``"*"`` with ``equals``
  matches any value that is present;
- ``trigger.evaluator``: ``null`` adds no check (the trigger alone decides); a regular
  expression (``"regex-pattern"`` or ``{"regex": "..."}``) must also be found in the value at ``key``;
- ``on-time-object.recurring: false`` fires once, at the next matching time;
- ``response.behaviour``: ``normal`` (default), ``once`` (fires once until the rule is written or
  reloaded again) or ``sleepy`` (after firing, rests ``response.sleep`` milliseconds);
- ``response.cooldown`` (ours, seconds): after firing, matching events are suppressed (counted)
  for that long, so a lasting condition fires once per cooldown; without one, a data-driven rule
  of behaviour ``normal``/unset gets ``[rules] default_cooldown``.

``key`` is a dotted path into the published event message (``data.system.cpu.percent``, ``name``,
``topic``, ``meta.from``; list items by index: ``data.items.0``). String values of the response
``parameters`` may hold ``{{dotted.path}}`` placeholders filled from the triggering event.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from croniter import croniter
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cloudisense.core.pubsub import validate_topic

TIME_TOPIC = "{time}"
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_RULE_ID_RE = re.compile(RULE_ID_PATTERN)
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_MISSING = object()

Condition = Literal["equals", "not-equals", "contains", "greater-than", "less-than", "matches",
                    "startswith", "endswith", "lessthan", "lessthanorequal", "greaterthan", "greaterthanorequal",
                    "regex"]
#: Numeric comparisons, by condition name (ours and CloudiSENSE's).
_COMPARE = {"greater-than": float.__gt__, "greaterthan": float.__gt__, "greaterthanorequal": float.__ge__,
            "less-than": float.__lt__, "lessthan": float.__lt__, "lessthanorequal": float.__le__}
_REGEX_CONDITIONS = ("matches", "regex")
#: ``on-content`` that matches any present value (CloudiSENSE's wildcard).
WILDCARD = "*"
#: Keys only CloudiSENSE's format uses: a rule with any of them is written back as given.
_CLOUDISENSE_KEYS = {"on-content", "on-condition", "using-expression", "recurring", "evaluator"}


def valid_rule_id(rule_id: str) -> str:
    """A rule id is a safe file name: letters, digits, ``_.-``, no path parts, not ``..``."""
    if not isinstance(rule_id, str) or not _RULE_ID_RE.match(rule_id) or ".." in rule_id:
        raise ValueError(f"invalid rule id {rule_id!r}: use 1-64 letters, digits, '_', '.', '-' "
                         "(starting with a letter or digit, no '..' and no '/')")
    return rule_id


def validate_cron(expr: str) -> str:
    """Accept a 5-field cron, or a 6-field one whose first field is seconds."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"cron {expr!r} has {len(fields)} fields; use 5 (minute hour day month weekday) "
                         "or 6 (second minute hour day month weekday)")
    if not croniter.is_valid(expr, second_at_beginning=len(fields) == 6):
        raise ValueError(f"cron {expr!r} is not a valid cron expression")
    return " ".join(fields)


def next_fire(expr: str, after: float) -> float:
    """Epoch seconds of the first time after ``after`` that ``expr`` matches (local time)."""
    from datetime import datetime

    start = datetime.fromtimestamp(after).astimezone()
    six = len(expr.split()) == 6
    return float(croniter(expr, start, second_at_beginning=six).get_next(float))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PayloadTrigger(_Strict):
    """Fire when the value at ``key`` in a published event meets ``condition`` against ``content``."""

    key: str = Field(min_length=1, max_length=256,
                     description="dotted path into the event, e.g. data.system.cpu.percent")
    content: Any = Field(validation_alias=AliasChoices("content", "on-content"),
                         description="the value to compare with")
    condition: Condition = Field("equals", validation_alias=AliasChoices("condition", "on-condition"))

    @model_validator(mode="after")
    def _check_content(self) -> PayloadTrigger:
        if self.condition in _COMPARE and _number(self.content) is None:
            raise ValueError(f"condition {self.condition} needs a numeric content, got {self.content!r}")
        if self.condition in ("startswith", "endswith") and not isinstance(self.content, str):
            raise ValueError(f"condition {self.condition} needs a text content, got {self.content!r}")
        if self.condition in _REGEX_CONDITIONS:
            if not isinstance(self.content, str):
                raise ValueError("condition matches needs a regular expression string as content")
            try:
                re.compile(self.content)
            except re.error as exc:
                raise ValueError(f"content is not a valid regular expression: {exc}") from None
        return self


class TimeTrigger(_Strict):
    """Fire on a cron schedule (``recurring: false``: only at the next matching time)."""

    cron: str = Field(validation_alias=AliasChoices("cron", "using-expression"),
                      description="5 fields, or 6 with seconds first")
    recurring: bool | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return validate_cron(value)


class Trigger(_Strict):
    """Exactly one of ``on-payload-object`` and ``on-time-object``."""

    on_payload_object: PayloadTrigger | None = Field(None, alias="on-payload-object")
    on_time_object: TimeTrigger | None = Field(None, alias="on-time-object")
    #: ``None``: no extra check; a regular expression the value at ``key`` must contain.
    evaluator: str | dict[str, str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if (self.on_payload_object is None) == (self.on_time_object is None):
            raise ValueError("trigger needs exactly one of on-payload-object and on-time-object")
        pattern = self.evaluator_pattern
        if isinstance(self.evaluator, dict) and pattern is None:
            raise ValueError('evaluator: give null, a regular expression, or {"regex": "<expression>"}')
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"evaluator is not a valid regular expression: {exc}") from None
        return self

    @property
    def evaluator_pattern(self) -> str | None:
        """The evaluator's regular expression, if it has one."""
        if isinstance(self.evaluator, str):
            return self.evaluator
        if isinstance(self.evaluator, dict):
            value = self.evaluator.get("regex") or self.evaluator.get("expression")
            return value if isinstance(value, str) and set(self.evaluator) <= {"regex", "expression", "type"} else None
        return None


class RuleResponse(_Strict):
    """The intent a rule runs when it fires, with its parameters."""

    intent: str = Field(min_length=1, max_length=128)
    parameters: dict[str, Any] = Field(default_factory=dict)
    behaviour: Literal["normal", "once", "sleepy"] | None = Field(
        None, validation_alias=AliasChoices("behaviour", "behavior"))
    #: Milliseconds a ``sleepy`` rule rests after firing.
    sleep: int | None = Field(None, ge=0, le=7 * 24 * 3600 * 1000)
    #: Seconds after a firing during which the rule does not fire again (events that match meanwhile
    #: are counted as ``suppressed``): a condition that lasts fires once per cooldown.
    cooldown: float | None = Field(None, ge=0, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _sleep(self) -> RuleResponse:
        if self.behaviour == "sleepy" and not self.sleep:
            raise ValueError("a sleepy response needs sleep (milliseconds to rest after firing)")
        return self


class Rule(_Strict):
    """One reaction rule (the documented CloudiSENSE format)."""

    id: str
    description: str = Field("", max_length=1000)
    listen_to: str = Field(alias="listen-to", description="a topic, or {time} for cron rules")
    enabled: bool = True
    trigger: Trigger
    response: RuleResponse
    #: The rule as given, when it is in CloudiSENSE's format (written back unchanged).
    _source: dict[str, Any] | None = PrivateAttr(None)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Rule:
        """Validate ``data`` (either format) and remember CloudiSENSE's format to write it back as is."""
        rule = cls.model_validate(data)
        if _uses_cloudisense_keys(data.get("trigger")) or _uses_cloudisense_keys(data.get("response")):
            rule._source = data
        return rule

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return valid_rule_id(value)

    @field_validator("listen_to")
    @classmethod
    def _listen_to(cls, value: str) -> str:
        if value == TIME_TOPIC:
            return value
        try:
            return validate_topic(value)
        except Exception:
            raise ValueError(f"listen-to {value!r} must be a topic such as /stats, or {TIME_TOPIC}") from None

    @model_validator(mode="after")
    def _trigger_fits(self) -> Rule:
        timed = self.listen_to == TIME_TOPIC
        if timed and self.trigger.on_time_object is None:
            raise ValueError(f"a rule listening to {TIME_TOPIC} needs an on-time-object trigger")
        if not timed and self.trigger.on_payload_object is None:
            raise ValueError(f"an on-time-object trigger needs listen-to {TIME_TOPIC}")
        return self

    @property
    def timed(self) -> bool:
        """Whether the rule fires on a schedule rather than on events."""
        return self.listen_to == TIME_TOPIC

    def to_json(self) -> dict[str, Any]:
        """The rule in its file format (dashed keys), or as given when it is in CloudiSENSE's format."""
        if self._source is not None:
            import copy

            return copy.deepcopy(self._source)
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def summary(self) -> dict[str, Any]:
        """The existing client's ``list_rules`` item: id, description, enabled, subject, trigger."""
        full = self.to_json()
        return {"id": self.id, "description": self.description, "enabled": self.enabled,
                "subject": self.listen_to, "trigger": full.get("trigger")}

    def head(self) -> dict[str, Any]:
        """Only id, description and enabled."""
        return {"id": self.id, "description": self.description, "enabled": self.enabled}


def _uses_cloudisense_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in _CLOUDISENSE_KEYS or _uses_cloudisense_keys(v) for k, v in value.items()
                   if k != "parameters")
    return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def lookup(event: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``event`` (dict keys, list indexes), or ``_MISSING``."""
    node = event
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def matches(trigger: PayloadTrigger, event: dict[str, Any], evaluator: str | None = None) -> bool:
    """Whether ``event`` satisfies a payload trigger and its evaluator (a missing key never matches)."""
    value = lookup(event, trigger.key)
    if value is _MISSING:
        return False
    if evaluator is not None and re.search(evaluator, value if isinstance(value, str) else str(value)) is None:
        return False
    want = trigger.content
    cond = trigger.condition
    if cond in ("equals", "not-equals"):
        if want == WILDCARD:
            return cond == "equals"
        a, b = _number(value), _number(want)
        same = (a == b) if a is not None and b is not None and not isinstance(value, str) else value == want
        return same if cond == "equals" else not same
    if cond == "contains":
        if isinstance(value, str):
            return isinstance(want, str) and want in value
        if isinstance(value, (list, dict)):
            return want in value
        return False
    if cond in ("startswith", "endswith"):
        text = value if isinstance(value, str) else str(value)
        return text.startswith(want) if cond == "startswith" else text.endswith(want)
    if cond in _REGEX_CONDITIONS:
        return re.search(want, value if isinstance(value, str) else str(value)) is not None
    num, ref = _number(value), _number(want)
    if num is None or ref is None:
        return False
    return bool(_COMPARE[cond](num, ref))


def render(value: Any, event: dict[str, Any] | None) -> Any:
    """Fill ``{{path}}`` placeholders in string values from ``event`` (unknown paths stay as written).

    A string that is exactly one placeholder takes the value's own type (a number stays a number).
    """
    if event is None:
        return value
    if isinstance(value, dict):
        return {k: render(v, event) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, event) for v in value]
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER_RE.fullmatch(value.strip())
    if whole:
        found = lookup(event, whole.group(1))
        return value if found is _MISSING else found

    def one(m: re.Match[str]) -> str:
        found = lookup(event, m.group(1))
        return m.group(0) if found is _MISSING else str(found)

    return _PLACEHOLDER_RE.sub(one, value)


def sample_rule(intent: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A valid data-driven sample rule running ``intent`` (in the file format)."""
    return {
        "id": "sample-high-cpu",
        "description": "Notify when the CPU of this node is above 90 percent",
        "listen-to": "/stats",
        "enabled": False,
        "trigger": {"on-payload-object": {"key": "data.system.cpu.percent", "content": 90,
                                          "condition": "greater-than"}},
        "response": {"intent": intent, "parameters": parameters},
    }
