"""Runbooks without a node: matching, templating from an alert's fields, and what a value must look like."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cloudisense.assistant.runbooks import TemplateError, fill, find, runbook_fix
from cloudisense.assistant.settings import AgentSettings, Runbook

ALERT: dict[str, Any] = {"id": 7, "rule": "service-down", "source": "target", "subject": "web", "severity": "critical",
                         "details": {"labels": {"target": "nginx", "evil": "web; rm -rf /", "path": "../../etc"}}}


def book(**kw: Any) -> Runbook:
    base = {"name": "b", "when": {"source": "target"}, "steps": [{"intent": "restart_target",
                                                                  "params": {"name": "{subject}"}}]}
    return Runbook.model_validate({**base, **kw})


def test_the_first_matching_runbook_wins_by_globs_on_the_alert() -> None:
    books = [book(name="logs", when={"source": "log"}), book(name="down", when={"rule": "service-*"}),
             book(name="any", when={"severity": "*"})]
    assert find(books, ALERT).name == "down"  # type: ignore[union-attr]
    assert find(books, {**ALERT, "rule": "cpu-high", "source": "stats"}).name == "any"  # type: ignore[union-attr]
    assert find(books[:2], {**ALERT, "rule": "cpu-high"}) is None


def test_placeholders_take_the_alert_s_fields_and_a_lone_one_keeps_its_type() -> None:
    assert fill({"id": "{id}", "message": "alert {id} on {subject} ({labels.target})", "n": 3, "l": ["{rule}"]},
                ALERT) == {"id": 7, "message": "alert 7 on web (nginx)", "n": 3, "l": ["service-down"]}
    fix = runbook_fix(book(verify={"check": "target_running", "settle": 2}), ALERT)
    assert fix.steps == [{"intent": "restart_target", "params": {"name": "web"}}] and fix.verify_target == "web"
    assert fix.words() == "restart_target web, then check that web keeps running for 2 s"


@pytest.mark.parametrize("template, why", [
    ("{labels.evil}", "not a plain name"), ("{labels.path}", "not a plain name"), ("{labels.missing}", "has no"),
])
def test_a_value_that_is_not_a_plain_name_is_never_put_into_an_action(template: str, why: str) -> None:
    with pytest.raises(TemplateError, match=why):
        fill({"name": template}, ALERT)
    # Unknown placeholders stay text (no format-string access to anything else).
    assert fill("{__class__} {details}", ALERT) == "{__class__} {details}"


@pytest.mark.parametrize("agent, needle", [
    ({"runbooks": [{"name": "x", "when": {}, "steps": [{"intent": "a"}]}]}, "at least one of"),
    ({"runbooks": [{"name": "x", "when": {"rule": "r"}, "steps": []}]}, "steps"),
    ({"runbooks": [{"name": "x", "when": {"rule": "r"}, "steps": [{"intent": "a"}], "verify": {"check": "ping"}}]},
     "check"),
    ({"autonomy": {"mode": "yolo"}}, "mode"),
    ({"autonomy": {"name": "a b"}}, "name"),
    ({"autonomy": {"max_actions": -1}}, "max_actions"),
])
def test_bad_settings_name_the_field(agent: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        AgentSettings.model_validate(agent)
