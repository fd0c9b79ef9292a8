"""End-to-end tests of the reaction engine over the WebSocket against the real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloudisense.client import RpcError
from cloudisense.core.modules import discover_modules
from cloudisense.modules.rules_model import Rule
from tests.conftest import Events, Running, make_settings, start_server

DEMO_RULES = Path(__file__).resolve().parents[2] / "examples" / "demo" / "rules"
CORE = ["pubsub", "system", "audit", "reactions"]


def rule(rule_id: str, listen_to: str, trigger: dict[str, Any], intent: str, parameters: dict[str, Any],
         **extra: Any) -> dict[str, Any]:
    """A rule in the file format."""
    return {"id": rule_id, "description": f"test rule {rule_id}", "listen-to": listen_to, "enabled": True,
            "trigger": trigger, "response": {"intent": intent, "parameters": parameters}, **extra}


def on_payload(key: str, content: Any, condition: str = "equals") -> dict[str, Any]:
    """An on-payload-object trigger."""
    return {"on-payload-object": {"key": key, "content": content, "condition": condition}}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (hidden ones too) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    """A server with the reactions module, a rules folder and a low loop guard."""
    folder = tmp_path / "rules"
    settings = make_settings(tmp_path, modules=CORE, rules={"folder": str(folder), "max_firings_per_minute": 3})
    r = await start_server(settings)
    yield r
    await r.server.stop()


async def test_rule_crud_cycle(node: Running) -> None:
    conn = await node.connect("oper")
    sample = (await conn.call("generate_sample"))["rule"]
    Rule.model_validate(sample)
    assert sample["response"]["intent"] == "publish_channel"  # notify is not loaded on this node

    sample["enabled"] = True
    written = await conn.call("write_rule", {"rule_data": sample})
    assert written == {"rule_id": "sample-high-cpu", "created": True, "updated": False, "rule": sample}
    on_disk = json.loads((node.node.settings.rules.folder / "sample-high-cpu.json").read_text())
    assert on_disk == sample

    with pytest.raises(RpcError) as exc:
        await conn.call("write_rule", {"rule_data": sample})
    assert exc.value.code == 409 and "update=true" in exc.value.message

    sample["trigger"]["on-payload-object"]["content"] = 80
    updated = await conn.call("intent_write_rule", {"rule_data": json.dumps(sample), "update": True})
    assert updated["updated"] is True

    plain = await conn.call("list_rules")  # the existing client's shape
    assert plain == [{"id": "sample-high-cpu", "description": sample["description"], "enabled": True,
                      "subject": "/stats", "trigger": sample["trigger"]}]
    full = await conn.call("list_rules", {"details": True})
    assert [r["id"] for r in full["rules"]] == ["sample-high-cpu"]
    assert full["rules"][0]["trigger"]["on-payload-object"]["content"] == 80
    assert full["rules"][0]["status"]["fired"] == 0 and full["errors"] == {}
    heads = await conn.call("list_rules", {"head": True})
    assert heads == [{"id": "sample-high-cpu", "description": sample["description"], "enabled": True}]

    read = await conn.call("read_rule", {"rule_id": "sample-high-cpu"})
    assert read["rule"] == sample
    assert node.node.entities()["rule"] == ["sample-high-cpu"]

    # Edit the file by hand, then reload one rule and all rules.
    path = node.node.settings.rules.folder / "sample-high-cpu.json"
    sample["description"] = "edited on disk"
    path.write_text(json.dumps(sample))
    reloaded = await conn.call("reload_rule", {"rule_id": "sample-high-cpu"})
    assert reloaded["rule"]["description"] == "edited on disk"
    (path.parent / "second.json").write_text(json.dumps({**sample, "id": "second"}))
    (path.parent / "broken.json").write_text("{oops")
    all_ = await conn.call("reload_rules")
    assert all_["loaded"] == ["sample-high-cpu", "second"]
    assert "not valid JSON" in all_["errors"]["broken.json"]

    assert await conn.call("delete_rule", {"rule_id": "second"}) == {"rule_id": "second", "deleted": True}
    assert not (path.parent / "second.json").exists()
    with pytest.raises(RpcError) as exc:
        await conn.call("read_rule", {"rule_id": "second"})
    assert exc.value.code == 404 and "sample-high-cpu" in exc.value.message
    # update=true (the existing client's default) creates a rule that does not exist yet.
    created = await conn.call("write_rule", {"rule_data": {**sample, "id": "nope"}, "update": True})
    assert created["created"] is True and (path.parent / "nope.json").exists()
    conn.close()


async def test_roles(node: Running) -> None:
    viewer = await node.connect("viewer")
    assert await viewer.call("list_rules") == []
    sample = (await viewer.call("generate_sample"))["rule"]
    with pytest.raises(RpcError) as exc:
        await viewer.call("write_rule", {"rule_data": sample})
    assert exc.value.code == 403
    viewer.close()


async def test_data_rule_fires_through_the_router(node: Running) -> None:
    conn = await node.connect("oper")
    events = Events(conn, timeout=10)
    for topic in ("/in", "/out"):
        await conn.call("create_channel", {"topic": topic})
    for topic in ("/out", "/reactions"):
        await conn.call("subscribe_channel", {"topic": topic})
    await conn.call("write_rule", {"rule_data": rule(
        "level-high", "/in", on_payload("data.level", "high"), "publish_channel",
        {"topic": "/out", "message": {"text": "level {{data.level}} from {{meta.from}}", "value": "{{data.value}}"}})})

    await conn.call("publish_channel", {"topic": "/in", "message": {"level": "low", "value": 1}})
    await conn.call("publish_channel", {"topic": "/in", "message": {"level": "high", "value": 7}})
    out = await events.wait("/out")
    assert out["data"] == {"text": "level high from oper", "value": 7}
    assert out["meta"]["from"] == "reactions"
    fired = await events.wait("/reactions", lambda e: e["name"] == "rule_fired")
    assert fired["data"]["rule_id"] == "level-high" and fired["data"]["status"] == "success"
    assert fired["data"]["cause"] == "event" and fired["data"]["topic"] == "/in"

    admin = await node.connect("admin")
    records = (await admin.call("get_audit_log", {"intent": "publish_channel"}))["records"]
    by_reaction = [r for r in records if r["client_kind"] == "reaction"]
    assert len(by_reaction) == 1
    assert by_reaction[0]["user"] == "reactions" and by_reaction[0]["role"] == "operator"
    assert by_reaction[0]["params"]["topic"] == "/out"
    status = (await conn.call("read_rule", {"rule_id": "level-high"}))["status"]
    assert status["fired"] == 1 and status["last_result"]["status"] == "success"
    assert len(events.on("/out")) == 1  # the "low" event did not match
    admin.close()
    conn.close()


async def test_conditions(node: Running) -> None:
    conn = await node.connect("oper")
    events = Events(conn, timeout=10)
    await conn.call("create_channel", {"topic": "/metrics"})
    await conn.call("create_channel", {"topic": "/hits"})
    await conn.call("subscribe_channel", {"topic": "/hits"})
    cases = {
        "gt": on_payload("data.cpu", 90, "greater-than"),
        "lt": on_payload("data.cpu", "10", "less-than"),
        "ne": on_payload("data.host", "web", "not-equals"),
        "has": on_payload("data.tags", "prod", "contains"),
        "re": on_payload("data.host", "^db-[0-9]+$", "matches"),
        "first": on_payload("data.tags.0", "prod"),
    }
    for rule_id, trig in cases.items():
        await conn.call("write_rule", {"rule_data": rule(rule_id, "/metrics", trig, "publish_channel",
                                                         {"topic": "/hits", "message": rule_id})})
    await conn.call("publish_channel", {"topic": "/metrics", "message": {"cpu": 95, "host": "db-12", "tags": ["prod"]}})
    await conn.call("publish_channel", {"topic": "/metrics", "message": {"cpu": 5, "host": "web", "tags": []}})
    hits: set[str] = set()
    while len(hits) < len(cases):
        hits.add((await events.wait("/hits", lambda e: e["data"] not in hits))["data"])
    assert hits == set(cases)
    # Each rule fired exactly once: wait until every firing is accounted for, then count.
    for _ in range(100):
        listed = (await conn.call("list_rules", {"details": True}))["rules"]
        if sum(r["status"]["fired"] for r in listed) == 6:
            break
        await asyncio.sleep(0.05)
    assert {r["id"]: r["status"]["fired"] for r in listed} == dict.fromkeys(cases, 1)
    conn.close()


async def test_time_rule_fires_on_a_seconds_cron(node: Running) -> None:
    conn = await node.connect("oper")
    events = Events(conn, timeout=10)
    await conn.call("create_channel", {"topic": "/tick"})
    await conn.call("subscribe_channel", {"topic": "/tick"})
    await conn.call("subscribe_channel", {"topic": "/reactions"})
    written = await conn.call("write_rule", {"rule_data": rule(
        "every-second", "{time}", {"on-time-object": {"cron": "* * * * * *"}}, "publish_channel",
        {"topic": "/tick", "message": "tick"})})
    assert written["created"]
    tick = await events.wait("/tick")
    assert tick["data"] == "tick" and tick["meta"]["from"] == "reactions"
    fired = await events.wait("/reactions", lambda e: e["name"] == "rule_fired")
    assert fired["data"]["cause"] == "time" and fired["data"]["rule_id"] == "every-second"
    status = (await conn.call("read_rule", {"rule_id": "every-second"}))["status"]
    assert status["next_time"] is not None and status["fired"] >= 1

    await conn.call("delete_rule", {"rule_id": "every-second"})
    conn.close()


async def test_loop_guard_rate_limits_a_self_triggering_rule(node: Running) -> None:
    conn = await node.connect("oper")
    events = Events(conn, timeout=10)
    await conn.call("create_channel", {"topic": "/loop"})
    await conn.call("subscribe_channel", {"topic": "/reactions"})
    # Its response publishes on the topic it listens to: without the guard it would never stop.
    await conn.call("write_rule", {"rule_data": rule("echo", "/loop", on_payload("meta.event", "message"),
                                                     "publish_channel", {"topic": "/loop", "message": "again"})})
    await conn.call("publish_channel", {"topic": "/loop", "message": "start"})
    skipped = await events.wait("/reactions", lambda e: e["name"] == "rule_skipped")
    assert skipped["data"]["rule_id"] == "echo" and "3 firings" in skipped["data"]["reason"]
    status = (await conn.call("read_rule", {"rule_id": "echo"}))["status"]
    assert status["fired"] == 3 and status["skipped"] == 1
    # The chain is over: another event in the same minute is skipped too, not run.
    await conn.call("publish_channel", {"topic": "/loop", "message": "more"})
    await events.wait("/reactions", lambda e: e["name"] == "rule_skipped" and e["data"]["skipped"] == 2)
    assert (await conn.call("read_rule", {"rule_id": "echo"}))["status"]["fired"] == 3
    conn.close()


async def test_bad_rules_are_refused_and_nothing_changes_on_disk(node: Running) -> None:
    conn = await node.connect("oper")
    good = rule("keep", "/stats", on_payload("data.cpu.percent", 99, "greater-than"), "publish_channel",
                {"topic": "/notification", "message": "hot"})
    await conn.call("write_rule", {"rule_data": good})
    folder = node.node.settings.rules.folder
    before = snapshot(folder)

    timed = {"on-time-object": {"cron": "61 * * * *"}}
    bad: list[tuple[Any, bool, str]] = [
        (rule("cron1", "{time}", timed, "get_system_stats", {}), False, "not a valid cron"),
        (rule("cron2", "{time}", {"on-time-object": {"cron": "* * *"}}, "get_system_stats", {}), False, "3 fields"),
        (rule("x", "/stats", on_payload("a", 1), "publsh_channel", {}), False, "did you mean publish_channel"),
        (rule("x", "/stats", on_payload("a", 1), "publish_channel", {"topic": "/x"}), False,
         "response.parameters.message: field required"),
        ("{not json", False, "not valid JSON"),
        ([1, 2], False, "params.rule_data"),
        ({**good, "color": "red"}, True, "rule.color: extra inputs are not permitted"),
        (rule("x", "{time}", on_payload("a", 1), "get_system_stats", {}), False, "needs an on-time-object"),
        (rule("x", "/stats", on_payload("a", "x", "greater-than"), "get_system_stats", {}), False, "numeric"),
        (rule("x", "/stats", on_payload("a", "(", "matches"), "get_system_stats", {}), False, "regular expression"),
        (rule("x", "stats", on_payload("a", 1), "get_system_stats", {}), False, "listen-to"),
        ({**good, "trigger": {**on_payload("a", 1), "on-time-object": {"cron": "* * * * *"}}}, True, "exactly one"),
        ({**good, "response": {"intent": "nope_intent"}}, True, "not an intent of this node"),
    ]
    for data, update, reason in bad:
        resp = await conn.request("write_rule", {"rule_data": data, "update": update})
        assert resp["status"] == "error" and resp["code"] == 400, (data, resp)
        assert reason in resp["message"], (reason, resp["message"])
        assert snapshot(folder) == before
    assert (await conn.call("read_rule", {"rule_id": "keep"}))["rule"] == good
    conn.close()


async def test_rule_ids_cannot_leave_the_folder(node: Running, tmp_path: Path) -> None:
    conn = await node.connect("admin")
    folder = node.node.settings.rules.folder
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(rule("outside", "/stats", on_payload("a", 1), "get_system_stats", {})))
    for rule_id in ("../outside", "/etc/passwd", "a/b", "..", ".hidden", "x" * 65):
        for intent in ("read_rule", "delete_rule", "reload_rule"):
            resp = await conn.request(intent, {"rule_id": rule_id})
            assert resp["code"] == 400 and "rule_id" in resp["message"], (intent, rule_id, resp)
        data = rule(rule_id, "/stats", on_payload("a", 1), "get_system_stats", {})
        resp = await conn.request("write_rule", {"rule_data": data})
        assert resp["code"] == 400 and "invalid rule id" in resp["message"]
    (folder / "outside.json").symlink_to(outside)
    resp = await conn.request("reload_rule", {"rule_id": "outside"})
    assert resp["code"] == 400 and "plain file" in resp["message"]
    reloaded = await conn.call("reload_rules")
    assert reloaded["loaded"] == [] and "symbolic link" in reloaded["errors"]["outside.json"]
    resp = await conn.request("delete_rule", {"rule_id": "outside"})
    assert resp["code"] == 400
    assert outside.exists() and (folder / "outside.json").is_symlink()
    conn.close()


async def test_rules_on_disk_load_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    good = rule("on-disk", "/stats", on_payload("data.cpu.percent", 101, "greater-than"), "get_system_stats", {})
    (folder / "on-disk.json").write_text(json.dumps(good))
    (folder / "wrong-name.json").write_text(json.dumps({**good, "id": "other"}))
    r = await start_server(make_settings(tmp_path, modules=CORE, rules={"folder": str(folder)}))
    try:
        conn = await r.connect("viewer")
        listed = await conn.call("list_rules", {"details": True})
        assert [x["id"] for x in listed["rules"]] == ["on-disk"]
        assert "name the file other.json" in listed["errors"]["wrong-name.json"]
        conn.close()
    finally:
        await r.server.stop()


async def test_without_a_folder_the_intents_say_what_to_configure(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=CORE))
    try:
        conn = await r.connect("admin")
        resp = await conn.request("list_rules")
        assert resp["code"] == 503 and "[rules] folder" in resp["message"]
        conn.close()
    finally:
        await r.server.stop()


def test_demo_rules_are_well_formed() -> None:
    files = sorted(DEMO_RULES.glob("*.json"))
    assert len(files) >= 2
    for path in files:
        parsed = Rule.model_validate_json(path.read_text())
        assert f"{parsed.id}.json" == path.name


async def test_demo_rules_validate_against_the_demo_intents(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, folder)
    wanted = [*CORE, "notify", "scripts"]
    missing = sorted(set(wanted) - set(discover_modules()))
    if missing:
        pytest.skip(f"modules {missing} (the demo rules' response intents) are not installed yet")
    from cloudisense.config import load_settings
    from cloudisense.modules.notify import NotifySettings

    demo = load_settings(DEMO_RULES.parent / "cloudisense.toml", environ={})  # the webhooks the rules name
    r = await start_server(make_settings(tmp_path, modules=wanted, rules={"folder": str(folder)},
                                         notify={"webhooks": demo.section("notify", NotifySettings).webhooks}))
    try:
        conn = await r.connect("admin")
        listed = await conn.call("list_rules", {"details": True})
        assert listed["errors"] == {}
        assert sorted(x["id"] for x in listed["rules"]) == sorted(p.stem for p in folder.glob("*.json"))
        conn.close()
    finally:
        await r.server.stop()
