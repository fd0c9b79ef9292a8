"""Two real nodes federated over a real mosquitto broker, driven by WebSocket clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudisense.client import Connection
from cloudisense.core.clients import InProcessClient
from cloudisense.core.roles import Role
from cloudisense.core.router import Call, Verdict
from tests.conftest import make_settings, start_server
from tests.federation.conftest import Broker, Pair, bridge, eventually, node_settings

aiomqtt = pytest.importorskip("aiomqtt", reason="the federation extra is not installed (pip install -e '.[federation]')")


async def channels(conn: Connection, node: str | None = None) -> list[str]:
    """Topics that exist on ``node`` (this one when ``None``)."""
    extra = {"serviceId": node} if node else {}
    data = await conn.call("list_channels", **extra)
    return list(data["topics"])


async def test_rpc_runs_on_the_named_node_as_the_calling_user(pair: Pair) -> None:
    conn = await pair.a.connect("oper")
    resp = await conn.request("create_channel", {"topic": "/only-on-b"}, serviceId="node-b")
    assert resp["status"] == "success" and resp["data"] == {"topic": "/only-on-b", "created": True}
    assert "/only-on-b" in await channels(conn, "node-b")
    assert "/only-on-b" not in await channels(conn)
    records = await pair.b.node.audit.query(intent="create_channel")
    assert len(records) == 1
    rec = records[0]
    assert (rec["client_kind"], rec["user"], rec["role"], rec["outcome"]) == ("federation", "oper", "operator",
                                                                              "success")
    assert rec["client_id"].startswith("federation:node-a:")
    assert rec["requestid"] == resp["requestid"]
    # Node A ran nothing itself: no audit record of it there.
    assert await pair.a.node.audit.query(intent="create_channel") == []
    conn.close()


async def test_role_travels_and_is_capped(pair: Pair) -> None:
    viewer = await pair.a.connect("viewer")
    resp = await viewer.request("create_channel", {"topic": "/viewer-made"}, serviceId="node-b")
    assert resp["status"] == "error" and resp["code"] == 403
    assert "role viewer" in resp["message"]
    assert not pair.b.node.pubsub.exists("/viewer-made")
    assert "/stats" in await channels(viewer, "node-b")  # reads are fine
    # An admin on A acts on B with at most [federation] max_remote_role (operator by default).
    admin = await pair.a.connect("admin")
    await admin.call("create_channel", {"topic": "/admin-made"}, serviceId="node-b")
    rec = (await pair.b.node.audit.query(intent="create_channel", user="admin"))[0]
    assert rec["role"] == "operator" and rec["client_kind"] == "federation"
    viewer.close()
    admin.close()


async def test_gates_of_the_executing_node_decide(pair: Pair) -> None:
    """B's gates (the assistant's policy gate among them) see the call; assistant calls keep kind agent."""
    seen: list[tuple[str, str, str]] = []

    async def gate(call: Call) -> Verdict | None:
        seen.append((call.intent.name, call.client.kind, call.client.user))
        if call.client.kind == "agent" and call.risk.value != "read":
            return Verdict.deny("the assistant only reads on this node", rule="test:agent-read-only")
        return None

    pair.b.node.router.add_gate(gate)
    agent = InProcessClient(pair.a.node.router, "oper", Role.OPERATOR, kind="agent")
    resp = await agent.call("create_channel", {"topic": "/by-agent"}, service_id="node-b")
    assert resp["code"] == 403 and "the assistant only reads" in resp["message"]
    assert not pair.b.node.pubsub.exists("/by-agent")
    rec = (await pair.b.node.audit.query(intent="create_channel"))[0]
    assert (rec["outcome"], rec["rule"], rec["client_kind"]) == ("denied", "test:agent-read-only", "agent")
    assert rec["client_id"].startswith("federation:node-a:")
    person = InProcessClient(pair.a.node.router, "oper", Role.OPERATOR)
    assert (await person.call("create_channel", {"topic": "/by-person"}, service_id="node-b"))["code"] == 200
    assert seen == [("create_channel", "agent", "oper"), ("create_channel", "federation", "oper")]


async def test_bad_params_are_checked_on_the_executing_node(pair: Pair) -> None:
    conn = await pair.a.connect("oper")
    resp = await conn.request("create_channel", {"topic": "no-slash", "extra": 1}, serviceId="node-b")
    assert resp["code"] == 400 and "params" in resp["message"]
    resp = await conn.request("no_such_intent", serviceId="node-b")
    assert resp["code"] == 404 and "unknown intent" in resp["message"]
    conn.close()


async def test_broadcast_runs_on_every_node(pair: Pair) -> None:
    conn = await pair.a.connect("oper")
    resp = await conn.request("create_channel", {"topic": "/everywhere"}, serviceId="*")
    assert resp["status"] == "success"
    assert pair.a.node.pubsub.exists("/everywhere")
    await eventually(lambda: pair.b.node.pubsub.exists("/everywhere"), what="the broadcast to run on node-b")
    rec = (await pair.b.node.audit.query(intent="create_channel"))[0]
    assert rec["client_kind"] == "federation" and rec["user"] == "oper"
    conn.close()


async def test_unknown_node_is_404(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    resp = await conn.request("list_channels", serviceId="node-x")
    assert resp["code"] == 404 and "unknown node 'node-x'" in resp["message"]
    assert "node-b" in resp["message"]  # says which nodes are online
    conn.close()


async def test_stopped_node_answers_without_hanging(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    await pair.stop(pair.b)
    # A clean stop announces "offline": A forgets B at once, so the answer is 404 (504 if the
    # announcement were lost); the request timeout bounds it either way.
    resp = await conn.request("list_channels", serviceId="node-b", timeout=10)
    assert resp["code"] in (404, 504), resp
    await eventually(lambda: not bridge(pair.a).knows("node-b"), what="node-b to be offline")
    nodes = {n["identity"]: n for n in (await conn.call("list_nodes"))["nodes"]}
    assert nodes["node-b"]["online"] is False
    conn.close()


async def test_silent_node_times_out_with_504(pair: Pair) -> None:
    """A node that announces itself but never answers (hung, or a stale retained presence)."""
    async with aiomqtt.Client("127.0.0.1", pair.broker.port) as mqtt:
        await mqtt.publish(f"{pair.prefix}/presence/ghost", b"online", qos=1, retain=True)
        await eventually(lambda: bridge(pair.a).knows("ghost"), what="ghost to be seen")
        conn = await pair.a.connect("viewer")
        resp = await conn.request("list_channels", serviceId="ghost", timeout=10)
        assert resp["code"] == 504 and "did not answer" in resp["message"] and "ghost" in resp["message"]
        await mqtt.publish(f"{pair.prefix}/presence/ghost", b"", qos=1, retain=True)
        await eventually(lambda: not bridge(pair.a).knows("ghost"), what="ghost to be forgotten")
        conn.close()


async def test_remote_topic_subscription(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    await conn.call("subscribe_channel", {"topic": "/node-b/stats"})
    ev = await conn.next_event("/node-b/stats")
    assert ev["identity"] == "node-b" and ev["name"] == "data_generated"
    assert ev["data"]["system"]["memory"]["total"] > 0
    # A topic node-b does not forward can't be followed.
    resp = await conn.request("subscribe_channel", {"topic": "/node-b/logging/app"})
    assert resp["code"] == 404
    await conn.call("unsubscribe_channel", {"topic": "/node-b/stats"})
    assert bridge(pair.a)._wanted == set()
    # Node A's own /stats still carries no identity of another node.
    await conn.call("subscribe_channel", {"topic": "/stats"})
    local = await conn.next_event("/stats")
    assert local.get("identity") in (None, "node-a")
    conn.close()


async def test_remote_events_stop_when_the_last_subscriber_leaves(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    await conn.call("subscribe_channel", {"topic": "/node-b/stats"})
    await conn.next_event("/node-b/stats")
    conn.close()
    await eventually(lambda: bridge(pair.a)._wanted == set(), what="the subscription to be dropped")


async def test_list_nodes(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    data = await conn.call("list_nodes")
    assert data["enabled"] is True and data["connected"] is True and data["identity"] == "node-a"
    nodes = {n["identity"]: n for n in data["nodes"]}
    assert nodes["node-b"]["online"] is True and nodes["node-b"]["last_seen"] > 0
    assert "/stats" in nodes["node-b"]["forward_topics"]
    conn.close()


async def test_garbage_on_the_broker_breaks_nothing(pair: Pair) -> None:
    p = pair.prefix
    valid_shape = {"v": 1, "fid": "f1", "origin": "node-a", "user": "oper", "role": "operator", "kind": "websocket",
                   "reply": True}
    garbage: list[tuple[str, bytes]] = [
        (f"{p}/node-b/rpc", b"not json"),
        (f"{p}/node-b/rpc", b"\xff\xfe\x00"),
        (f"{p}/node-b/rpc", b"[1, 2]"),
        (f"{p}/node-b/rpc", b"{}"),
        (f"{p}/node-b/rpc", b'{"v": 1, "fid": "x", "origin": "a/b", "user": "u", "role": "god"}'),
        (f"{p}/node-b/rpc", json.dumps({**valid_shape, "rpc": "not an object"}).encode()),
        (f"{p}/node-b/rpc", json.dumps({**valid_shape, "origin": "node-b", "rpc": {}}).encode()),
        (f"{p}/node-b/rpc", b"[" * 100_000 + b"]" * 100_000),
        (f"{p}/node-b/rpc", b'{"a": "' + b"x" * 1_100_000 + b'"}'),
        (f"{p}/node-b/rpc", b'{"v": 1, "s": "\\ud800"}'),
        (f"{p}/node-b/rpc", b'{"v": NaN}'),
        (f"{p}/node-a/response", b'{"v": 1, "fid": "nobody", "node": "node-b", "response": {}}'),
        (f"{p}/node-a/response", b"\x00"),
        (f"{p}/presence/node-c", b'{"status": "maybe"}'),
        (f"{p}/presence/node-c", b'{"status": "online", "topics": ["not a topic"]}'),
        (f"{p}/node-b/events/stats", b'{"type": "event"}'),
    ]
    async with aiomqtt.Client("127.0.0.1", pair.broker.port) as mqtt:
        for topic, payload in garbage:
            await mqtt.publish(topic, payload, qos=1)
        # A well-formed request with an invalid rpc inside gets an error answer, not a crash.
        await mqtt.subscribe(f"{p}/node-x/response", qos=1)
        bad_rpc = {**valid_shape, "origin": "node-x", "fid": "probe", "rpc": {"type": "rpc", "intent": "list_channels"}}
        await mqtt.publish(f"{p}/node-b/rpc", json.dumps(bad_rpc).encode(), qos=1)
        async for message in mqtt.messages:
            answer = json.loads(message.payload)
            break
    assert answer["fid"] == "probe" and answer["node"] == "node-b"
    assert answer["response"]["code"] == 400 and "requestid" in answer["response"]["message"]
    await eventually(lambda: bridge(pair.b).dropped >= 11, what="node-b to drop the garbage")
    assert not bridge(pair.a).knows("node-c")
    # Both nodes still work, both ways.
    conn = await pair.a.connect("oper")
    await conn.call("create_channel", {"topic": "/after-garbage"}, serviceId="node-b")
    assert pair.b.node.pubsub.exists("/after-garbage")
    conn_b = await pair.b.connect("viewer")
    assert "/stats" in await channels(conn_b, "node-a")
    conn.close()
    conn_b.close()


async def test_broker_outage_answers_503_then_recovers(pair: Pair) -> None:
    conn = await pair.a.connect("viewer")
    await conn.call("subscribe_channel", {"topic": "/node-b/stats"})
    await conn.next_event("/node-b/stats")
    await pair.broker.stop()
    await eventually(lambda: not bridge(pair.a).connected.is_set(), what="node-a to notice the outage")
    resp = await conn.request("list_channels", serviceId="node-b", timeout=10)
    assert resp["code"] == 503 and "unreachable" in resp["message"]
    assert (await conn.call("list_nodes"))["connected"] is False
    await pair.broker.start()
    await eventually(lambda: bridge(pair.a).knows("node-b") and bridge(pair.b).knows("node-a"), timeout=30,
                     what="both nodes to reconnect")
    assert "/stats" in await channels(conn, "node-b")
    # The remote subscription was renewed on the new connection.
    while not conn.events.empty():
        conn.events.get_nowait()
    ev = await conn.next_event("/node-b/stats")
    assert ev["identity"] == "node-b"
    conn.close()


async def test_federation_off_answers_clearly(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "federation"]))
    try:
        conn = await r.connect("viewer")
        data = await conn.call("list_nodes")
        assert data["enabled"] is False and data["nodes"] == [] and "enabled = true" in data["hint"]
        resp = await conn.request("list_channels", serviceId="node-b")
        assert resp["code"] == 404 and "federation is off" in resp["message"]
        conn.close()
    finally:
        await r.server.stop()


async def test_node_starts_while_the_broker_is_down(tmp_path: Path, broker: Broker) -> None:
    await broker.stop()
    r = await start_server(node_settings(tmp_path, "lonely", broker, "solo"))
    try:
        conn = await r.connect("viewer")
        resp = await conn.request("list_channels", serviceId="node-b", timeout=10)
        assert resp["code"] == 503
        await broker.start()
        await eventually(lambda: bridge(r).connected.is_set(), timeout=30, what="the node to connect")
        resp = await conn.request("list_channels", serviceId="node-b", timeout=10)
        assert resp["code"] == 404
        conn.close()
    finally:
        await r.server.stop()
