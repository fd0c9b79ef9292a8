"""MessageRouter without sockets: recording clients talk to a real node (real SQLite, no listener)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from cloudisense.core import protocol
from cloudisense.core.clients import Client, InProcessClient
from cloudisense.core.context import ActionContext
from cloudisense.core.errors import NotFound, Unavailable
from cloudisense.core.intents import Intent, NoParams, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role
from cloudisense.core.router import Call, Verdict
from cloudisense.node import Node
from tests.conftest import make_settings
from tests.core.helpers import CORE_MODULES, assert_error_shape, assert_success_shape


class Recorder(Client):
    """A client that keeps every response and event it is given."""

    kind = "recorder"

    def __init__(self, role: Role = Role.ADMIN, user: str = "alice", *, accept_events: bool = True) -> None:
        super().__init__(user, role)
        self.sent: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.accept_events = accept_events
        self.is_closed = False

    @property
    def closed(self) -> bool:
        return self.is_closed

    async def send(self, message: dict[str, Any]) -> None:
        # Round-trip through JSON: what a socket client would see.
        self.sent.append(json.loads(json.dumps(message)))

    def push_event(self, event: dict[str, Any]) -> bool:
        if self.accept_events:
            self.events.append(event)
        return self.accept_events


class CheckParams(Params):
    """A ``check`` flag that lowers the risk."""

    check: bool = False


class EchoParams(Params):
    """Something to echo."""

    text: str = Field(max_length=20)
    password: str | None = None


class ToyModule(Module):
    """Intents of every risk and failure mode."""

    name = "toy"

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.ran: list[str] = []

    def intents(self) -> list[Intent]:
        return [
            Intent("echo", "Echo", self.echo, EchoParams, Risk.READ),
            Intent("poke", "A write", self.mark("poke"), NoParams, Risk.WRITE),
            Intent("nuke", "A destructive one", self.mark("nuke"), CheckParams, Risk.DESTRUCTIVE,
                   read_when={"check": True}),
            Intent("manage", "Admins only", self.mark("manage"), NoParams, Risk.READ, admin_only=True),
            Intent("boom", "Fails with a bug", self.boom, NoParams, Risk.READ),
            Intent("lookup", "Fails with NotFound", self.lookup, NoParams, Risk.READ),
            Intent("nap", "Sleeps", self.nap, NoParams, Risk.READ, timeout=0.05),
            Intent("linger", "Takes a moment", self.linger, NoParams, Risk.WRITE),
        ]

    def mark(self, name: str) -> Any:
        async def handler(p: Any, ctx: ActionContext) -> dict[str, Any]:
            self.ran.append(name)
            return {"ran": name}
        return handler

    async def echo(self, p: EchoParams, ctx: ActionContext) -> dict[str, Any]:
        self.ran.append("echo")
        return {"text": p.text, "user": ctx.user}

    async def boom(self, p: NoParams, ctx: ActionContext) -> None:
        raise RuntimeError("a bug")

    async def lookup(self, p: NoParams, ctx: ActionContext) -> None:
        raise NotFound("no such thing; list things first")

    async def nap(self, p: NoParams, ctx: ActionContext) -> None:
        await asyncio.sleep(5)

    async def linger(self, p: NoParams, ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return {"ran": "linger"}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A started node (no HTTP server) with the core modules and the toy module."""
    n = Node(make_settings(tmp_path, server={"max_inflight_per_client": 4}), module_classes={**CORE_MODULES, "toy": ToyModule})
    await n.start()
    yield n
    await n.stop()


def rpc(intent: str, params: Any = None, rid: str = "r1", **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "rpc", "requestid": rid, "intent": intent, **extra}
    if params is not None:
        msg["params"] = params
    return msg


async def one(node: Node, message: Any, client: Recorder | None = None) -> dict[str, Any]:
    """Handle ``message`` and return the one response it got."""
    client = client or Recorder()
    before = len(client.sent)
    await node.router.handle_messages(message, client)
    assert len(client.sent) == before + 1, client.sent[before:]
    return client.sent[-1]


# -- classification -------------------------------------------------------------------------


@pytest.mark.parametrize("message, code, rid", [
    ("{not json", 400, None),
    ("[]", 400, None),
    ('{"requestid": "x"}', 400, "x"),
    ({"type": "event", "requestid": "y"}, 400, "y"),
    ({"type": {"nested": "x" * 1000}, "requestid": "z"}, 400, "z"),
    ({"type": "rpc", "requestid": ""}, 400, None),
    ({"type": "rpc", "requestid": "q" * 129, "intent": "echo"}, 400, None),
    ({"type": "rpc", "requestid": "p", "intent": "echo", "params": "text"}, 400, "p"),
    ('{"type": "rpc", "requestid": "n", "intent": "echo", "params": {"text": NaN}}', 400, None),
    ({"type": "rpc", "requestid": "s", "intent": "echo", "params": {"text": "\ud800"}}, 400, "s"),
    ({"type": "rpc", "requestid": "u", "intent": "no_such_intent"}, 404, "u"),
])
async def test_bad_messages_get_one_error(node: Node, message: Any, code: int, rid: str | None) -> None:
    resp = await one(node, message)
    assert_error_shape(resp, code)
    assert resp["requestid"] == rid
    assert len(resp["message"]) < 300


async def test_deep_params_refused_without_recursion(node: Node) -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    resp = await one(node, rpc("publish_channel", {"topic": "/stats", "message": deep}))
    assert_error_shape(resp, 400)
    assert "nest" in resp["message"]
    text = '{"type": "rpc", "requestid": "d", "intent": "echo", "params": {"text": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    assert_error_shape(await one(node, text), 400)


async def test_local_rpc_prefix_and_missing_params(node: Node) -> None:
    resp = await one(node, rpc("intent_list_channels"))
    assert_success_shape(resp)
    assert resp["requestid"] == "r1"
    resp = await one(node, rpc("echo"))
    assert_error_shape(resp, 400)
    assert resp["message"] == "params.text: field required"
    resp = await one(node, rpc("echo", {"text": "x" * 21, "a": 1, "b": 2}))
    assert "params.text" in resp["message"] and "params.a" in resp["message"]
    many = await one(node, rpc("echo", {f"k{i}": i for i in range(50)}))
    assert "more problems" in many["message"] and len(many["message"]) < 600


async def test_service_id_routing_without_federation(node: Node) -> None:
    assert_success_shape(await one(node, rpc("echo", {"text": "hi"}, serviceId="test-node")))
    resp = await one(node, rpc("echo", {"text": "hi"}, serviceId="elsewhere"))
    assert_error_shape(resp, 404)
    assert "federation is off" in resp["message"]
    assert_success_shape(await one(node, rpc("echo", {"text": "hi"}, serviceId="*")))


# -- one response, errors, audit -----------------------------------------------------------


async def test_handler_bug_is_500_once_and_audited(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="cloudisense.core.router"):
        resp = await one(node, rpc("boom", rid="b1"))
    assert_error_shape(resp, 500)
    assert "a bug" not in resp["message"]  # internals stay in the log
    assert any("boom" in r.getMessage() for r in caplog.records)
    rows = await node.audit.query(intent="boom")
    assert rows[0]["requestid"] == "b1" and rows[0]["outcome"] == "error" and rows[0]["code"] == 500


async def test_not_found_from_handler_is_audited_unknown_intent_is_not(node: Node) -> None:
    assert_error_shape(await one(node, rpc("lookup", rid="l1")), 404)
    assert_error_shape(await one(node, rpc("lookups", rid="l2")), 404)
    rids = {row["requestid"] for row in await node.audit.query(limit=100)}
    assert "l1" in rids and "l2" not in rids


async def test_audit_redacts_and_records_client(node: Node) -> None:
    client = Recorder(Role.OPERATOR, "bob")
    assert_success_shape(await one(node, rpc("echo", {"text": "hi", "password": "pw-123"}, rid="a1"), client))
    row = (await node.audit.query(intent="echo"))[0]
    assert row["params"] == {"text": "hi", "password": "***"}
    assert (row["user"], row["role"], row["client_kind"], row["client_id"]) == ("bob", "operator", "recorder", client.id)


async def test_audit_failure_answers_500(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(record: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(node.audit, "record", broken)
    resp = await one(node, rpc("echo", {"text": "hi"}))
    assert_error_shape(resp, 500)
    assert "audit log unavailable" in resp["message"]


async def test_one_bad_audit_row_does_not_fail_its_batch(node: Node) -> None:
    clients = [Recorder() for _ in range(20)]
    messages = [rpc("echo", {"text": "ok"}, rid=f"ok{i}") for i in range(19)] + [rpc("echo", {"text": "ok"}, rid="\ud800")]
    await asyncio.gather(*(node.router.handle_messages(m, c) for m, c in zip(messages, clients)))
    # A lone surrogate in the requestid can't be stored as UTF-8: the group commit fails, and
    # the row-by-row retry stores it escaped instead of failing all twenty requests.
    assert all(len(c.sent) == 1 and c.sent[0]["status"] == "success" for c in clients)
    assert clients[19].sent[0]["requestid"] == "\ud800"
    rids = {row["requestid"] for row in await node.audit.query(limit=50)}
    assert {f"ok{i}" for i in range(19)} <= rids and "\\ud800" in rids


async def test_timeout_and_inflight_limit(node: Node) -> None:
    resp = await one(node, rpc("nap"))
    assert_error_shape(resp, 504)
    client = Recorder()
    await asyncio.gather(*(node.router.handle_messages(rpc("nap", rid=f"n{i}"), client) for i in range(6)))
    codes = sorted(m["code"] for m in client.sent)
    assert codes == [429, 429, 504, 504, 504, 504]
    assert client.inflight == 0


async def test_concurrent_requests_each_answered_once(node: Node) -> None:
    client = Recorder()
    node.settings.server.max_inflight_per_client = 1000
    await asyncio.gather(*(node.router.handle_messages(rpc("echo", {"text": str(i)}, rid=f"c{i}"), client)
                           for i in range(200)))
    assert sorted(m["requestid"] for m in client.sent) == sorted(f"c{i}" for i in range(200))
    assert all(m["data"]["text"] == m["requestid"][1:] for m in client.sent)


# -- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role, intent, params, code", [
    (Role.VIEWER, "echo", {"text": "x"}, 200),
    (Role.VIEWER, "poke", {}, 403),
    (Role.VIEWER, "nuke", {}, 403),
    (Role.VIEWER, "nuke", {"check": True}, 200),  # risk depends on params
    (Role.OPERATOR, "poke", {}, 200),
    (Role.OPERATOR, "nuke", {}, 200),
    (Role.OPERATOR, "manage", {}, 403),
    (Role.ADMIN, "manage", {}, 200),
])
async def test_roles(node: Node, role: Role, intent: str, params: dict[str, Any], code: int) -> None:
    resp = await one(node, rpc(intent, params), Recorder(role))
    assert resp["code"] == code, resp
    ran = node.module("toy").ran
    assert (intent in ran) == (code == 200)


# -- gates ----------------------------------------------------------------------------------


async def test_gates_deny_confirm_allow(node: Node) -> None:
    seen: list[Call] = []

    async def gate(call: Call) -> Verdict | None:
        seen.append(call)
        if call.intent.name == "poke":
            return Verdict.deny("pokes need a ticket", rule="no-pokes")
        if call.intent.name == "nuke":
            return Verdict("confirm", "ask-first", "destructive", {"approval_id": "ap-1"})
        return None

    node.router.add_gate(gate)
    operator = Recorder(Role.OPERATOR)
    resp = await one(node, rpc("poke", {}, rid="g1"), operator)
    assert_error_shape(resp, 403)
    assert "pokes need a ticket" in resp["message"]
    resp = await one(node, rpc("nuke", {}, rid="g2"), operator)
    assert_success_shape(resp, 202)
    assert resp["data"] == {"approval_id": "ap-1"}
    resp = await one(node, rpc("echo", {"text": "hi"}, rid="g3"), operator)
    assert_success_shape(resp)
    assert node.module("toy").ran == ["echo"]  # neither the denied nor the pending one ran
    assert [c.risk for c in seen] == [Risk.WRITE, Risk.DESTRUCTIVE, Risk.READ]
    rows = {r["requestid"]: r for r in await node.audit.query(limit=10)}
    assert (rows["g1"]["outcome"], rows["g1"]["decision"], rows["g1"]["rule"]) == ("denied", "deny", "no-pokes")
    assert (rows["g2"]["outcome"], rows["g2"]["decision"]) == ("pending_approval", "confirm")


async def test_gates_not_consulted_for_refused_roles(node: Node) -> None:
    calls: list[str] = []

    async def gate(call: Call) -> Verdict:
        calls.append(call.intent.name)
        return Verdict.allow()

    node.router.add_gate(gate)
    await one(node, rpc("poke", {}), Recorder(Role.VIEWER))
    await one(node, rpc("poke", {}), Recorder(Role.OPERATOR))
    assert calls == ["poke"]


# -- remote routing -------------------------------------------------------------------------


class FakeRemote:
    """A federation stub: knows node ``peer``, answers for it, records broadcasts."""

    def __init__(self) -> None:
        self.forwarded: list[protocol.RpcRequest] = []
        self.broadcasts: list[protocol.RpcRequest] = []

    async def forward(self, request: protocol.RpcRequest, client: Client) -> dict[str, Any]:
        self.forwarded.append(request)
        if request.service_id != "peer":
            raise Unavailable(f"node {request.service_id} is not connected")
        return protocol.success(request.requestid, {"from": "peer"})

    async def broadcast(self, request: protocol.RpcRequest, client: Client) -> None:
        self.broadcasts.append(request)

    def knows(self, identity: str) -> bool:
        return identity == "peer"


async def test_remote_routing(node: Node) -> None:
    remote = FakeRemote()
    node.router.remote = remote
    resp = await one(node, rpc("echo", {"text": "hi"}, rid="f1", serviceId="peer"))
    assert_success_shape(resp)
    assert resp["data"] == {"from": "peer"}
    assert remote.forwarded[0].intent == "echo" and remote.forwarded[0].params == {"text": "hi"}
    assert node.module("toy").ran == []
    resp = await one(node, rpc("echo", {"text": "hi"}, rid="f2", serviceId="gone"))
    assert_error_shape(resp, 503)
    resp = await one(node, rpc("echo", {"text": "hi"}, rid="f3", serviceId="test-node"))
    assert resp["data"]["text"] == "hi" and len(remote.forwarded) == 2
    resp = await one(node, rpc("echo", {"text": "all"}, rid="f4", serviceId="*"))
    assert_success_shape(resp)
    assert [r.requestid for r in remote.broadcasts] == ["f4"] and node.module("toy").ran == ["echo", "echo"]


# -- fan-out --------------------------------------------------------------------------------


async def test_pubsub_fan_out_rules(node: Node) -> None:
    hub = node.pubsub
    hub.create_channel("/fan")
    good, full, gone = Recorder(), Recorder(accept_events=False), Recorder()
    for c in (good, full, gone):
        await hub.subscribe("/fan", c)
    gone.is_closed = True
    heard: list[str] = []

    def bad_listener(event: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    hub.add_listener(bad_listener)
    hub.add_listener(lambda e: heard.append(e["name"]))
    drops_before = hub.dropped
    assert hub.publish("/fan", "tick", {"n": 1}) == 1
    assert [e["name"] for e in good.events] == ["tick"] and heard == ["tick"]
    assert set(good.events[0]) == {"type", "name", "topic", "data", "meta", "timestamp"}
    assert hub.dropped == drops_before + 1
    assert hub.subscribers("/fan") == 2  # the closed one was removed


async def test_inprocess_client_call(node: Node) -> None:
    events: list[dict[str, Any]] = []
    client = InProcessClient(node.router, "agent", Role.OPERATOR, kind="agent", on_event=events.append)
    resp = await client.call("subscribe_channel", {"topic": "/stats"})
    assert_success_shape(resp)
    node.pubsub.publish("/stats", "stats_generated", {"cpu": 1})
    assert events and events[-1]["name"] == "stats_generated"
    resp = await client.call("poke")
    assert resp["status"] == "success"
    row = (await node.audit.query(intent="poke"))[0]
    assert row["client_kind"] == "agent"


# -- shutdown ---------------------------------------------------------------------------------


async def test_stopping_refuses_new_requests_and_lets_running_ones_write_their_audit_row(tmp_path: Path) -> None:
    node = Node(make_settings(tmp_path), module_classes={**CORE_MODULES, "toy": ToyModule})
    await node.start()
    client = Recorder()
    running = asyncio.create_task(node.router.handle_messages(rpc("linger", rid="before"), client))
    while not node.router.active:
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(node.stop())
    await asyncio.sleep(0.05)
    late = await one(node, rpc("echo", {"text": "hi"}, rid="late"))
    assert_error_shape(late, 503)
    assert "shutting down" in late["message"]
    await running
    await stopping
    assert client.sent[-1]["code"] == 200 and client.sent[-1]["requestid"] == "before"

    again = Node(make_settings(tmp_path), module_classes={**CORE_MODULES, "toy": ToyModule})
    await again.start()
    try:
        rows = await again.audit.query(intent="linger")
    finally:
        await again.stop()
    assert [(r["requestid"], r["outcome"]) for r in rows] == [("before", "success")]


async def test_a_request_still_running_when_the_node_stops_is_named_in_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("cloudisense.node.DRAIN_SECONDS", 0.05)
    node = Node(make_settings(tmp_path), module_classes={**CORE_MODULES, "toy": ToyModule})
    await node.start()
    running = asyncio.create_task(node.router.handle_messages(rpc("linger"), Recorder()))
    while not node.router.active:
        await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="cloudisense.node"):
        await node.stop()
    assert "1 request(s) still running" in caplog.text
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
