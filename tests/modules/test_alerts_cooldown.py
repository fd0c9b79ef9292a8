"""Reaction rules with a cooldown: a lasting condition fires once per cooldown, not once per event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudisense.client import Connection
from tests.conftest import Running, make_settings, start_server, until

DEMO_RULES = Path(__file__).resolve().parents[2] / "examples" / "demo" / "rules"
MODULES = ["pubsub", "system", "audit", "reactions"]


def cpu_rule(rule_id: str, **response: Any) -> dict[str, Any]:
    """A rule whose condition always holds on /stats (CPU above -1 %): a sustained condition."""
    return {"id": rule_id, "description": "sustained", "listen-to": "/stats", "enabled": True,
            "trigger": {"on-payload-object": {"key": "data.system.cpu.percent", "content": -1,
                                              "condition": "greater-than"}},
            "response": {"intent": "publish_channel", "parameters": {"topic": "/out", "message": "cpu"}, **response}}


async def stats_events(conn: Connection, count: int) -> None:
    """Wait for ``count`` more /stats events."""
    for _ in range(count):
        await conn.next_event("/stats")


async def test_a_sustained_condition_fires_once_per_cooldown(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "hot.json").write_text(json.dumps(cpu_rule("hot", cooldown=3600)))
    (folder / "hot-default.json").write_text(json.dumps(cpu_rule("hot-default")))
    (folder / "hot-normal.json").write_text(json.dumps(cpu_rule("hot-normal", cooldown=0)))
    settings = make_settings(tmp_path, modules=MODULES, rules={"folder": str(folder), "default_cooldown": 3600,
                                                               "max_firings_per_minute": 1000})
    r: Running = await start_server(settings)
    try:
        conn = await r.connect("oper")
        await conn.call("create_channel", {"topic": "/out"})
        await conn.call("subscribe_channel", {"topic": "/stats"})
        await stats_events(conn, 24)  # 24 samples with the CPU "high": the 24 firings
        engine = r.node.module("reactions")
        await until(lambda: engine.rules["hot-normal"].fired >= 24)
        for rule_id in ("hot", "hot-default"):  # its own cooldown, and [rules] default_cooldown
            status = (await conn.call("read_rule", {"rule_id": rule_id}))["status"]
            assert status["fired"] == 1, rule_id
            assert status["suppressed"] >= 23 and status["cooling_down_seconds"] > 3500
        conn.close()
    finally:
        await r.server.stop()


async def test_the_cooldown_ends_and_the_rule_fires_again(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "hot.json").write_text(json.dumps(cpu_rule("hot", cooldown=0.5)))
    r = await start_server(make_settings(tmp_path, modules=MODULES, rules={"folder": str(folder)}))
    try:
        conn = await r.connect("oper")
        await conn.call("create_channel", {"topic": "/out"})
        await conn.call("subscribe_channel", {"topic": "/stats"})
        state = r.node.module("reactions").rules["hot"]
        await until(lambda: state.fired >= 3)  # 0.5 s apart: each cooldown ends, the next event fires
        await stats_events(conn, 3)
        # Samples come every 0.2 s: some fell inside a cooldown and were let pass.
        assert state.suppressed >= 1
        conn.close()
    finally:
        await r.server.stop()


def test_every_demo_rule_that_listens_to_events_has_a_cooldown_or_rests() -> None:
    for path in sorted(DEMO_RULES.glob("*.json")):
        rule = json.loads(path.read_text())
        if rule["listen-to"] == "{time}":
            continue
        response = rule["response"]
        assert response.get("cooldown") or response.get("behaviour") in ("once", "sleepy"), path.name
