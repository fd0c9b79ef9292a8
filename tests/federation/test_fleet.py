"""Across nodes, over a real mosquitto broker: each node's agent answers for its node; the fleet's alerts.

node-a and node-b each run the assistant, targets, logs and alerts. On node-b the target ``web``
is stopped (a real process target, not started), so its ``service-down`` alert fires there.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, make_settings, start_server, until
from tests.federation.conftest import Broker, bridge, eventually

pytest.importorskip("aiomqtt", reason="the federation extra is not installed (pip install -e '.[federation]')")

MODULES = ["pubsub", "system", "audit", "targets", "logs", "alerts", "assistant", "federation"]
SLEEPER = ["{python}", "-c", "import time\nwhile True: time.sleep(1)"]
DEMO_POLICY = Path(__file__).resolve().parents[2] / "examples" / "demo" / "policy.toml"


def fleet_settings(tmp_path: Path, identity: str, broker: Broker, prefix: str, *, web_up: bool) -> Any:
    """A federated node with targets web and api, an app log and a service-down alert rule."""
    folder = tmp_path / identity
    (folder / "logs").mkdir(parents=True)
    app = folder / "logs" / "app.log"
    app.write_text(f"INFO {identity} started\n")
    return make_settings(
        folder, identity=identity, modules=MODULES,
        federation={"enabled": True, "broker_port": broker.port, "topic_prefix": prefix, "request_timeout": 20.0},
        targets={"web": {"command": SLEEPER, "autostart": web_up, "stop_timeout": 1},
                 "api": {"command": SLEEPER, "autostart": True, "stop_timeout": 1}},
        logs={"files": {"app": str(app)}},
        alerts={"targets": [{"name": "service-down", "target": "*", "condition": "stopped"}]},
        agent={"policy_file": str(DEMO_POLICY)})


@pytest.fixture
async def fleet(tmp_path: Path, broker: Broker) -> AsyncIterator[tuple[Running, Running]]:
    """node-a (everything up) and node-b (web stopped, its alert firing), seeing each other."""
    prefix = f"t{uuid.uuid4().hex[:8]}/cs"
    a = await start_server(fleet_settings(tmp_path, "node-a", broker, prefix, web_up=True))
    b = await start_server(fleet_settings(tmp_path, "node-b", broker, prefix, web_up=False))
    try:
        await eventually(lambda: bridge(a).knows("node-b") and bridge(b).knows("node-a"), what="nodes to meet")
        await until(lambda: any(x.subject == "web" for x in b.node.module("alerts").book.active.values()))
        yield a, b
    finally:
        for r in (a, b):
            await r.server.stop()


async def test_a_question_about_another_node_is_answered_by_that_nodes_agent(fleet: tuple[Running, Running]) -> None:
    a, b = fleet
    conn = await a.connect("oper")
    data = await conn.call("query_assist", {"query": "what's wrong on node-b?"})
    assert data["node"] == "node-b" and data["strategy"] == "diagnose"
    answer = data["answer"]
    assert answer.startswith("Node node-b answered (its assistant checked it):")
    assert "Something is wrong: web." in answer and "web is stopped" in answer
    # node-b's own agent investigated, as oper arriving from node-a; node-a checked nothing itself.
    asked = await b.node.audit.query(intent="query_assist")
    assert [(r["user"], r["client_kind"]) for r in asked] == [("oper", "federation")]
    assert await b.node.audit.query(intent="list_targets")
    assert await a.node.audit.query(intent="list_targets") == []
    # Its fix waits for approval on node-b, and the answer says where to decide it.
    assert data["outcome"] == "awaiting_approval" and "decide it there" in answer
    approval = data["approval"]["approval_id"]
    decided = await conn.call("confirm_action", {"approval_id": approval, "approve": True}, serviceId="node-b")
    assert decided["decided"]["status"] in ("approved", "consumed")
    await until(lambda: (b.node.module("targets").states.get("web") or {}).get("state") == "running")

    # The same words without a node stay on this node, where nothing is wrong.
    here = await conn.call("query_assist", {"query": "what's wrong?"})
    assert "node" not in here and here["answer"].startswith("I found nothing wrong")
    # A node nobody knows is not guessed at: the request stays here.
    assert "node" not in await conn.call("query_assist", {"query": "what's wrong on node-zz?"})
    conn.close()


async def test_fleet_alerts_lists_every_nodes_alerts_under_its_name(fleet: tuple[Running, Running]) -> None:
    a, b = fleet
    viewer = await a.connect("viewer")
    data = await viewer.call("fleet_alerts", {})
    by_node = {n["node"]: n for n in data["nodes"]}
    assert list(by_node) == ["node-a", "node-b"] and data["reachable"] == 2
    assert by_node["node-a"]["ok"] and by_node["node-a"]["alerts"] == []
    assert [x["subject"] for x in by_node["node-b"]["alerts"]] == ["web"] and data["count"] == 1
    # Each node answered its own part, for the viewer from node-a.
    rows = await b.node.audit.query(intent="list_alerts")
    assert [(r["user"], r["role"], r["client_kind"]) for r in rows] == [("viewer", "viewer", "federation")]

    # In plain words, under each node's name (through the assistant, as a person would ask).
    words = await viewer.call("query_assist", {"query": "fleet summary of alerts"})
    assert [s["intent"] for s in words["steps"]] == ["fleet_alerts"]
    assert "node-a: 0 alert(s)" in words["answer"] and "node-b: 1 alert(s):" in words["answer"]
    assert "(critical, target): target web is stopped" in words["answer"]

    # node-b's alert events can be followed from node-a under its name.
    await viewer.call("subscribe_channel", {"topic": "/node-b/alerts"})
    oper_b = await b.connect("oper")
    await oper_b.call("start_target", {"name": "web"})
    event = await viewer.next_event("/node-b/alerts", timeout=15)
    assert event["identity"] == "node-b" and event["meta"]["event"] == "alert_resolved"
    oper_b.close()
    viewer.close()
