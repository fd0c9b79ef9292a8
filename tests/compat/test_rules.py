"""CloudiSENSE's reaction rule format, from its documentation, through the existing client's wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.compat.client import ClientRejected, ExistingClient
from tests.conftest import PASSWORDS, Running, make_settings, start_server, until

TIME_RULE = {"id": "rule-script-exec-demo", "description": "Run a script every 5 minutes", "listen-to": "{time}",
             "enabled": True,
             "trigger": {"on-time-object": {"recurring": True, "using-expression": "*/5 * * * *"}, "evaluator": None},
             "response": {"intent": "start_script_execution", "parameters": {"name": "test.sh"}}}


def http_rule(hook: str) -> dict[str, Any]:
    return {"id": "rule-http-notify", "description": "Notify on new data", "listen-to": "/httpcapture/path",
            "enabled": True,
            "trigger": {"on-payload-object": {"key": "data", "on-content": "*", "on-condition": "equals"},
                        "evaluator": None},
            "response": {"intent": "simple_http_notify",
                         "parameters": {"http": {"webhook": [hook], "method": "GET"}}}}


def hit_rule(rule_id: str, key: str, content: Any, condition: str, evaluator: Any = None,
             **response: Any) -> dict[str, Any]:
    """A CloudiSENSE-format rule on /in that publishes its id on /hits."""
    return {"id": rule_id, "description": f"{condition} test", "listen-to": "/in", "enabled": True,
            "trigger": {"on-payload-object": {"key": key, "on-content": content, "on-condition": condition},
                        "evaluator": evaluator},
            "response": {"intent": "publish_channel", "parameters": {"topic": "/hits", "message": rule_id},
                         **response}}


class Hook(RequestHandler):
    calls: list[str] = []

    def get(self) -> None:
        Hook.calls.append("GET")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Running, str]]:
    sockets = bind_sockets(0, "127.0.0.1")
    hook_server = HTTPServer(Application([(r"/receiver", Hook)]))
    hook_server.add_sockets(sockets)
    hook = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/receiver"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "test.sh").write_text("echo ok\n")
    settings = make_settings(tmp_path, modules=["pubsub", "audit", "system", "scripts", "notify", "reactions"],
                             rules={"folder": str(tmp_path / "rules")}, scripts={"folder": str(scripts)},
                             notify={"webhooks": [hook], "retries": 0},
                             pubsub={"on_demand_topics": ["/ui/updates", "/in", "/hits", "/httpcapture/"]})
    r = await start_server(settings)
    yield r, hook
    await r.server.stop()
    hook_server.stop()


async def fired(r: Running, rule_id: str) -> int:
    return int(r.node.module("reactions").rules[rule_id].fired)


async def test_documented_rules_are_accepted_and_written_back_as_is(node: tuple[Running, str]) -> None:
    r, hook = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    for rule in (TIME_RULE, http_rule(hook)):
        # The client sends the rule as JSON text, with update=true for a new rule too.
        written = await c.execute("write_rule", {"rule_data": json.dumps(rule), "update": True})
        assert written["created"] is True
        on_disk = json.loads((r.node.settings.rules.folder / f"{rule['id']}.json").read_text())
        assert on_disk == rule
        assert (await c.execute("read_rule", {"rule_id": rule["id"]}))["rule"] == rule
    listed = await c.execute("list_rules", {"head": False})
    assert listed == [{"id": rule["id"], "description": rule["description"], "enabled": True,
                       "subject": rule["listen-to"], "trigger": rule["trigger"]}
                      for rule in sorted((TIME_RULE, http_rule(hook)), key=lambda x: x["id"])]
    # Reloaded from disk, they stay as written.
    await c.execute("reload_rules")
    assert (await c.execute("read_rule", {"rule_id": TIME_RULE["id"]}))["rule"] == TIME_RULE
    c.close()


async def test_http_notify_rule_fires_with_a_null_evaluator(node: tuple[Running, str]) -> None:
    r, hook = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    await c.execute("write_rule", {"rule_data": json.dumps(http_rule(hook)), "update": True})
    await c.execute("subscribe_channel", {"topic": "/httpcapture/path"})
    before = len(Hook.calls)
    await c.execute("publish_channel", {"topic": "/httpcapture/path", "message": {"anything": 1}})
    await until(lambda: len(Hook.calls) > before)
    # A webhook that is not configured is refused when the rule is written.
    bad = {**http_rule("http://127.0.0.1:1/elsewhere"), "id": "rule-bad-hook"}
    with pytest.raises(ClientRejected) as info:
        await c.execute("write_rule", {"rule_data": json.dumps(bad), "update": True})
    assert info.value.code == 400 and "configured" in str(info.value) and "elsewhere" not in str(info.value)
    # ... and when the configuration changed under a rule on disk, each firing is refused: nothing is called.
    r.node.settings.notify.webhooks = ["http://127.0.0.1:1/other"]
    calls = len(Hook.calls)
    await c.execute("publish_channel", {"topic": "/httpcapture/path", "message": "x"})
    state = r.node.module("reactions").rules["rule-http-notify"]
    await until(lambda: state.last_result is not None and state.last_result["code"] == 400)
    assert "configured" in state.last_result["message"] and len(Hook.calls) == calls
    c.close()


async def test_conditions_and_the_regex_evaluator(node: tuple[Running, str]) -> None:
    r, _ = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    cases = {  # rule id -> (rule, fires for the event {"level": "ERROR disk full", "n": 5})
        "eq": (hit_rule("eq", "data.n", 5, "equals"), True),
        "eq-no": (hit_rule("eq-no", "data.n", 6, "equals"), False),
        "contains": (hit_rule("contains", "data.level", "disk", "contains"), True),
        "starts": (hit_rule("starts", "data.level", "ERROR", "startswith"), True),
        "starts-no": (hit_rule("starts-no", "data.level", "INFO", "startswith"), False),
        "ends": (hit_rule("ends", "data.level", "full", "endswith"), True),
        "lt": (hit_rule("lt", "data.n", 6, "lessthan"), True),
        "le": (hit_rule("le", "data.n", 5, "lessthanorequal"), True),
        "gt-no": (hit_rule("gt-no", "data.n", 5, "greaterthan"), False),
        "ge": (hit_rule("ge", "data.n", "5", "greaterthanorequal"), True),
        "regex": (hit_rule("regex", "data.level", "^ERROR .* full$", "regex"), True),
        "evaluator": (hit_rule("evaluator", "data.level", "*", "equals", evaluator="^ERROR"), True),
        "evaluator-no": (hit_rule("evaluator-no", "data.level", "*", "equals", evaluator={"regex": "^INFO"}), False),
        "missing-key": (hit_rule("missing-key", "data.nothere", "*", "equals"), False),
    }
    for rule, _ in cases.values():
        await c.execute("write_rule", {"rule_data": json.dumps(rule), "update": True})
    await c.execute("subscribe_channel", {"topic": "/hits"})
    await c.execute("publish_channel", {"topic": "/in", "message": {"level": "ERROR disk full", "n": 5}})
    expected = {rid for rid, (_, fires) in cases.items() if fires}
    engine = r.node.module("reactions")
    await until(lambda: sum(engine.rules[rid].fired for rid in cases) == len(expected)
                and all(engine.rules[rid].last_result is not None for rid in expected))
    assert {rid for rid in cases if engine.rules[rid].fired} == expected
    c.close()


async def test_behaviours_once_sleepy_normal(node: tuple[Running, str]) -> None:
    r, _ = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    rules = [hit_rule("normal", "data", "*", "equals", behaviour="normal"),
             hit_rule("once", "data", "*", "equals", behaviour="once"),
             hit_rule("sleepy", "data", "*", "equals", behaviour="sleepy", sleep=3_600_000)]
    for rule in rules:
        await c.execute("write_rule", {"rule_data": json.dumps(rule), "update": True})
    for i in range(3):
        await c.execute("publish_channel", {"topic": "/in", "message": i})
    engine = r.node.module("reactions")
    await until(lambda: engine.rules["normal"].fired == 3)
    assert engine.rules["once"].fired == 1 and engine.rules["sleepy"].fired == 1
    # Writing a once rule again lets it fire again.
    await c.execute("write_rule", {"rule_data": json.dumps(rules[1]), "update": True})
    await c.execute("publish_channel", {"topic": "/in", "message": "again"})
    await until(lambda: engine.rules["normal"].fired == 4)
    await until(lambda: engine.rules["once"].fired == 2 and engine.rules["once"].done)
    assert engine.rules["sleepy"].fired == 1  # still resting
    c.close()


async def test_a_time_rule_that_does_not_recur_fires_once(node: tuple[Running, str]) -> None:
    r, _ = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    rule = {**TIME_RULE, "id": "one-shot", "response": {"intent": "publish_channel",
                                                        "parameters": {"topic": "/hits", "message": "tick"}},
            "trigger": {"on-time-object": {"recurring": False, "using-expression": "* * * * * *"}, "evaluator": None}}
    await c.execute("write_rule", {"rule_data": json.dumps(rule), "update": True})
    state = r.node.module("reactions").rules["one-shot"]
    await until(lambda: state.fired == 1)
    assert state.next_time is None  # nothing more is scheduled
    c.close()


async def test_bad_rules_in_cloudisense_format_are_refused(node: tuple[Running, str]) -> None:
    r, _ = node
    c = ExistingClient(r.url)
    await c.login("oper", PASSWORDS["oper"])
    bad = [
        (hit_rule("b1", "data", "*", "equals", behaviour="sleepy"), "sleep"),
        (hit_rule("b2", "data", "*", "equals", evaluator="(unclosed"), "regular expression"),
        (hit_rule("b3", "data", "*", "almost"), "on-condition"),
        (hit_rule("b4", "data", "abc", "greaterthan"), "numeric"),
        ({**TIME_RULE, "id": "b5", "trigger": {"on-time-object": {"using-expression": "every day"}}}, "cron"),
    ]
    for rule, reason in bad:
        with pytest.raises(ClientRejected) as info:
            await c.execute("write_rule", {"rule_data": json.dumps(rule), "update": True})
        assert info.value.code == 400 and reason in str(info.value), (rule["id"], str(info.value))
    assert not list(r.node.settings.rules.folder.glob("b*.json"))
    c.close()
