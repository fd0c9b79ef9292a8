"""End-to-end checks of protocol.md against the real server on port 0, over real sockets."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import Field
from tornado.httpclient import HTTPClientError
from tornado.websocket import WebSocketClosedError, websocket_connect

from cloudisense.core.context import ActionContext
from cloudisense.core.intents import Intent, Params, Risk
from cloudisense.core.modules import Module
from cloudisense.store.users import client_credential
from tests.conftest import PASSWORDS, Running, make_settings
from tests.core.helpers import (
    RawWs,
    access_token,
    assert_error_shape,
    assert_success_shape,
    get_text,
    post_form,
    start_core,
)

SECRET = "test-secret-0123456789-abcdefghijklmnop"


class SlowParams(Params):
    """How long to sleep, and a secret that must never reach the audit log."""

    seconds: float = Field(0.0, ge=0, le=60)
    password: str | None = None


class SlowModule(Module):
    """Test-only intents: a slow one (for the per-request timeout) and a quick one with a secret."""

    name = "slowtest"

    def intents(self) -> list[Intent]:
        return [
            Intent("slow_sleep", "Sleep for a while", self.sleep, SlowParams, Risk.READ, ("sleep",)),
        ]

    async def sleep(self, p: SlowParams, ctx: ActionContext) -> dict[str, Any]:
        await asyncio.sleep(p.seconds)
        return {"slept": p.seconds}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    """A core node with a known JWT secret, a small login limit and a short request timeout."""
    settings = make_settings(tmp_path, auth={"jwt_secret": SECRET, "login_max_failures": 3},
                             server={"request_timeout": 2.0, "ping_interval": 0.2})
    r = await start_core(settings, {"slowtest": SlowModule})
    yield r
    await r.server.stop()


# -- /authorize and /refresh --------------------------------------------------------------


@pytest.mark.parametrize("multipart", [False, True])
async def test_login_success_shape(node: Running, multipart: bool) -> None:
    before = int(time.time() * 1000)
    status, body = await post_form(f"{node.url}/authorize",
                                   {"username": "oper", "password": client_credential(PASSWORDS["oper"])},
                                   multipart=multipart)
    assert status == 200
    assert set(body) == {"status", "code", "data"} and body["status"] == "success" and body["code"] == 200
    assert set(body["data"]) == {"access", "refresh"}
    for kind in ("access", "refresh"):
        part = body["data"][kind]
        assert set(part) == {"token", "issued", "expires"}
        assert isinstance(part["issued"], int) and isinstance(part["expires"], int)
        assert before - 1000 <= part["issued"] < part["expires"]
        claims = jwt.decode(part["token"], SECRET, algorithms=["HS256"])
        assert claims["sub"] == "oper" and claims["typ"] == kind
    assert body["data"]["refresh"]["expires"] > body["data"]["access"]["expires"]


@pytest.mark.parametrize("fields", [
    {"username": "oper", "password": client_credential("wrong")},
    {"username": "oper", "password": PASSWORDS["oper"]},  # the plain password is not the credential
    {"username": "nobody", "password": client_credential("x")},
    {"username": "oper"},
    {},
])
async def test_login_failure_shape(node: Running, fields: dict[str, str]) -> None:
    status, body = await post_form(f"{node.url}/authorize", fields)
    assert status == 401
    assert set(body) == {"status", "code", "message"}
    assert body["status"] == "error" and body["code"] == 401 and isinstance(body["message"], str)


def _frozen_limiter(node: Running) -> list[float]:
    """Give the node a limiter on a clock the test moves (backoff must not pass by itself)."""
    from cloudisense.core.auth import LoginLimiter

    clock = [1000.0]
    auth = node.node.settings.auth
    node.node.login_limiter = LoginLimiter(auth.login_max_failures, auth.login_window, clock=lambda: clock[0])
    return clock


async def test_login_failures_from_other_addresses_never_lock_out_the_owner(node: Running) -> None:
    url = f"{node.url}/authorize"
    _frozen_limiter(node)
    good = {"username": "oper", "password": client_credential(PASSWORDS["oper"])}
    # Many failures for one user, from other addresses: the owner's own address is not slowed down.
    for i in range(6):
        status, _ = await post_form(url, {**good, "password": client_credential("bad")}, source_ip=f"127.0.0.{10 + i}")
        assert status == 401
    status, _ = await post_form(url, good, source_ip="127.0.0.20")
    assert status == 200


async def test_login_backoff_per_user_and_address(node: Running) -> None:
    url = f"{node.url}/authorize"
    clock = _frozen_limiter(node)
    admin = {"username": "admin", "password": client_credential(PASSWORDS["admin"])}
    bad = {**admin, "password": client_credential("x")}
    for _ in range(3):
        status, _ = await post_form(url, bad, source_ip="127.0.0.30")
        assert status == 401
    status, body = await post_form(url, admin, source_ip="127.0.0.30")
    assert status == 429 and body["code"] == 429 and "try again in 1 s" in body["message"]
    # Other users behind the same address, and the same user elsewhere, are unaffected.
    status, _ = await post_form(url, {"username": "oper", "password": client_credential(PASSWORDS["oper"])},
                                source_ip="127.0.0.30")
    assert status == 200
    status, _ = await post_form(url, admin, source_ip="127.0.0.31")
    assert status == 200
    # Backoff doubles with each further failure, and a good login clears it.
    clock[0] += 1.5
    status, _ = await post_form(url, bad, source_ip="127.0.0.30")
    assert status == 401
    status, body = await post_form(url, admin, source_ip="127.0.0.30")
    assert status == 429 and "try again in 2 s" in body["message"]
    clock[0] += 2.5
    status, _ = await post_form(url, admin, source_ip="127.0.0.30")
    assert status == 200
    status, _ = await post_form(url, bad, source_ip="127.0.0.30")
    assert status == 401  # counting starts over



async def test_refresh(node: Running) -> None:
    _, body = await post_form(f"{node.url}/authorize",
                              {"username": "viewer", "password": client_credential(PASSWORDS["viewer"])})
    status, fresh = await post_form(f"{node.url}/refresh", {"refresh": body["data"]["refresh"]["token"]})
    assert status == 200 and fresh["status"] == "success" and fresh["code"] == 200
    assert set(fresh["data"]["access"]) == {"token", "issued", "expires"}
    ws = await websocket_connect(node.url.replace("http", "ws") + f"/ws?token={fresh['data']['access']['token']}")
    raw = RawWs(ws)
    resp = await raw.rpc("list_channels")
    assert_success_shape(resp)
    raw.close()
    # An access token is not a refresh token, and junk is refused.
    for bad in (body["data"]["access"]["token"], "junk", ""):
        status, err = await post_form(f"{node.url}/refresh", {"refresh": bad})
        assert status == 401 and err["status"] == "error" and err["code"] == 401


# -- handshake ------------------------------------------------------------------------------


def _forge(secret: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "admin", "role": "admin", "typ": "access", "iat": now, "exp": now + 600,
               "jti": uuid.uuid4().hex, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


async def test_handshake_refused(node: Running) -> None:
    refresh = (await post_form(f"{node.url}/authorize",
                               {"username": "admin", "password": client_credential(PASSWORDS["admin"])}))[1]
    now = int(time.time())
    bad_tokens = {
        "missing": None,
        "empty": "",
        "malformed": "not.a.jwt",
        "forged": _forge("another-secret-another-secret-0123456789"),
        "expired": _forge(SECRET, iat=now - 100, exp=now - 50),
        "refresh-as-access": refresh["data"]["refresh"]["token"],
        "bad-role": _forge(SECRET, role="root"),
        "alg-none": jwt.encode({"sub": "admin", "role": "admin", "typ": "access", "exp": now + 600}, None,
                               algorithm="none"),
    }
    base = node.url.replace("http", "ws") + "/ws"
    for label, token in bad_tokens.items():
        url = base if token is None else f"{base}?token={token}"
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(url)
        assert info.value.code == 401, label
    # The same handshake with a valid token is upgraded.
    ws = await websocket_connect(f"{base}?token={_forge(SECRET)}")
    ws.close()


# -- RPC shapes -----------------------------------------------------------------------------


async def test_rpc_success_and_error_shapes(node: Running) -> None:
    ws = await RawWs.open(node, "admin")
    ok = await ws.rpc("intent_list_channels", {})
    assert_success_shape(ok)
    assert "/stats" in ok["data"]["topics"]
    # Without the prefix, and without params: the same intent.
    ok2 = await ws.rpc("list_channels")
    assert_success_shape(ok2)
    assert ok2["data"] == ok["data"]
    err = await ws.rpc("subscribe_channel")
    assert_error_shape(err, 400)
    assert err["message"] == "params.topic: field required"
    err = await ws.rpc("check_process", {"name": 5})
    assert_error_shape(err, 400)
    assert err["message"].startswith("params.name: ")
    err = await ws.rpc("subscribe_channel", {"topic": "/stats", "extra": 1})
    assert_error_shape(err, 400)
    assert "params.extra" in err["message"]
    err = await ws.rpc("subscribe_channel", {"topic": "/no-such-topic"})
    assert_error_shape(err, 404)
    # The exact bytes on the wire decode to the same keys: no extra fields, ints not floats.
    await ws.send({"type": "rpc", "requestid": "raw-1", "intent": "list_channels"})
    raw = await asyncio.wait_for(ws.conn.read_message(), 10)
    assert isinstance(raw, str)
    wire = json.loads(raw)
    assert wire["requestid"] == "raw-1" and type(wire["timestamp"]) is int and type(wire["code"]) is int
    ws.close()


async def test_unknown_intent_suggests(node: Running) -> None:
    ws = await RawWs.open(node)
    err = await ws.rpc("subscribe_chanel", {"topic": "/stats"})
    assert_error_shape(err, 404)
    assert "unknown intent" in err["message"] and "subscribe_channel" in err["message"]
    err = await ws.rpc("intent_get_system_stat")
    assert_error_shape(err, 404)
    assert "get_system_stats" in err["message"]
    ws.close()


async def test_bad_envelopes_keep_connection(node: Running) -> None:
    ws = await RawWs.open(node)
    cases: list[tuple[Any, int]] = [
        ("not json", 400),
        ("[1, 2]", 400),
        ({"requestid": "a"}, 400),
        ({"type": "bogus", "requestid": "b"}, 400),
        ({"type": "rpc", "requestid": "c"}, 400),
        ({"type": "rpc", "requestid": "d", "intent": "list_channels", "params": [1]}, 400),
        ({"type": "rpc", "requestid": 7, "intent": "list_channels"}, 400),
    ]
    for frame, code in cases:
        await ws.send(frame)
        resp = await ws.response()
        assert_error_shape({**resp, "requestid": resp["requestid"] or ""}, code)
        if isinstance(frame, dict) and isinstance(frame.get("requestid"), str):
            assert resp["requestid"] == frame["requestid"]
        else:
            assert resp["requestid"] is None
    assert_success_shape(await ws.rpc("list_channels"))
    ws.close()


# -- pub/sub --------------------------------------------------------------------------------


async def test_subscribe_stats_events(node: Running) -> None:
    ws = await RawWs.open(node, "viewer")
    assert_success_shape(await ws.rpc("subscribe_channel", {"topic": "/stats"}))
    ev = None
    while ev is None:
        frame = await ws.frame()
        for msg in frame if isinstance(frame, list) else [frame]:
            if msg.get("type") == "event":
                ev = msg
    assert set(ev) == {"type", "name", "topic", "data", "meta", "timestamp"}
    assert ev["name"] == "data_generated" and ev["topic"] == "/stats" and isinstance(ev["timestamp"], int)
    assert ev["meta"]["event"] == "stats_generated" and ev["data"]["system"]["memory"]["total"] > 0
    ws.close()


async def test_events_batched_in_one_array_frame(node: Running) -> None:
    ws = await RawWs.open(node, "admin")
    assert_success_shape(await ws.rpc("create_channel", {"topic": "/burst"}))
    assert_success_shape(await ws.rpc("subscribe_channel", {"topic": "/burst"}))
    for i in range(50):  # published in one go: the writer finds them queued together
        node.node.pubsub.publish("/burst", "tick", {"i": i})
    seen: list[int] = []
    array_frames = 0
    while len(seen) < 50:
        frame = await ws.frame()
        if isinstance(frame, list):
            array_frames += 1
            assert all(m["type"] == "event" and m["topic"] == "/burst" for m in frame)
            seen += [m["data"]["i"] for m in frame]
        elif frame.get("type") == "event" and frame["topic"] == "/burst":
            seen.append(frame["data"]["i"])
    assert seen == list(range(50))
    assert array_frames >= 1
    ws.close()


# -- roles ----------------------------------------------------------------------------------


async def test_viewer_refused_write_allowed_read(node: Running) -> None:
    ws = await RawWs.open(node, "viewer")
    err = await ws.rpc("create_channel", {"topic": "/viewer-made"})
    assert_error_shape(err, 403)
    assert "viewer" in err["message"] and "write" in err["message"]
    assert "/viewer-made" not in node.node.pubsub.topics()
    assert_success_shape(await ws.rpc("get_system_stats"))
    assert_success_shape(await ws.rpc("list_channels"))
    ws.close()
    oper = await RawWs.open(node, "oper")
    assert_success_shape(await oper.rpc("create_channel", {"topic": "/oper-made"}))
    oper.close()


# -- concurrency, time limits, size limits, backpressure ------------------------------------


async def test_hundred_concurrent_requests_answered_once(node: Running) -> None:
    ws = await RawWs.open(node)
    rids = [f"c-{i}" for i in range(100)]
    for i, rid in enumerate(rids):
        intent = ("list_channels", "check_process", "get_disk_usage", "slow_sleep")[i % 4]
        params = {"check_process": {"name": "python"}, "slow_sleep": {"seconds": 0.01}}.get(intent, {})
        await ws.send({"type": "rpc", "requestid": rid, "intent": intent, "params": params})
    answered: list[str] = []
    while len(answered) < 100:
        resp = await ws.response()
        assert resp["status"] == "success", resp
        answered.append(resp["requestid"])
    assert sorted(answered) == sorted(rids)
    # No extra responses: the next frame answers the next request.
    resp = await ws.rpc("list_channels")
    assert resp["requestid"] not in rids
    ws.close()


async def test_per_request_timeout(node: Running) -> None:
    ws = await RawWs.open(node)
    err = await ws.rpc("slow_sleep", {"seconds": 30})
    assert_error_shape(err, 504)
    assert "slow_sleep" in err["message"]
    assert_success_shape(await ws.rpc("slow_sleep", {"seconds": 0}))
    ws.close()


async def test_oversized_frame_closes_with_1009(tmp_path: Path) -> None:
    r = await start_core(make_settings(tmp_path, server={"max_message_bytes": 4096}))
    try:
        big = await RawWs.open(r)
        other = await RawWs.open(r)
        await big.send({"type": "rpc", "requestid": "big", "intent": "list_channels", "params": {"x": "y" * 8000}})
        assert await big.frame() is None
        assert big.conn.close_code == 1009
        with pytest.raises(WebSocketClosedError):
            await big.send({"type": "rpc", "requestid": "after", "intent": "list_channels"})
        assert_success_shape(await other.rpc("list_channels"))
        # Just under the limit is fine.
        resp = await other.rpc("check_process", {"name": "p" * 200})
        assert_success_shape(resp)
        other.close()
    finally:
        await r.server.stop()


async def test_slow_client_does_not_stall_others(tmp_path: Path) -> None:
    r = await start_core(make_settings(tmp_path, server={"client_queue_size": 20}))
    try:
        slow = await RawWs.open(r)
        fast = await RawWs.open(r)
        for ws in (slow, fast):
            await ws.send({"type": "rpc", "requestid": "s", "intent": "subscribe_channel", "params": {"topic": "/stats"}})
            assert (await ws.response())["status"] == "success"
        # The slow client never reads again: once the socket buffers are full, its queue overflows.
        blob = "x" * 131072
        published = 0
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while True:
                frame = await fast.frame()
                received += sum(1 for m in (frame if isinstance(frame, list) else [frame])
                                if m.get("type") == "event" and m.get("name") == "blob")

        reader = asyncio.create_task(read_fast())
        while r.node.pubsub.dropped == 0 and published < 2000:
            for _ in range(5):
                r.node.pubsub.publish("/stats", "blob", {"blob": blob})
                published += 1
            await asyncio.sleep(0.02)
        assert r.node.pubsub.dropped > 0
        # The fast client got every event and still answers RPCs.
        for _ in range(500):
            if received >= published:
                break
            await asyncio.sleep(0.02)
        assert received == published
        reader.cancel()
        resp = await fast.rpc("list_channels")
        assert_success_shape(resp)
        status, text = await get_text(f"{r.url}/metrics")
        assert status == 200
        dropped = [line for line in text.splitlines() if line.startswith("cloudisense_events_dropped_total ")]
        assert dropped and float(dropped[0].split()[1]) > 0
        slow.close()
        fast.close()
    finally:
        await r.server.stop()


# -- operations endpoints -------------------------------------------------------------------


async def test_healthz_and_metrics(node: Running) -> None:
    status, text = await get_text(f"{node.url}/healthz")
    assert status == 200
    health = json.loads(text)
    assert health["status"] == "ok" and health["identity"] == "test-node"
    ws = await RawWs.open(node)
    await ws.rpc("list_channels")
    await ws.rpc("subscribe_channel")  # an error
    status, text = await get_text(f"{node.url}/metrics")
    assert status == 200
    assert 'cloudisense_requests_total{intent="list_channels",status="success"}' in text
    assert 'cloudisense_request_errors_total{code="400",intent="subscribe_channel"}' in text
    assert 'cloudisense_request_seconds_bucket{intent="list_channels"' in text
    assert "cloudisense_connected_clients 1.0" in text
    assert "cloudisense_events_dropped_total" in text
    ws.close()


# -- audit ----------------------------------------------------------------------------------


async def test_audit_committed_before_response_and_redacted(node: Running) -> None:
    ws = await RawWs.open(node, "oper")
    assert_success_shape(await ws.rpc("create_channel", {"topic": "/audited"}))
    resp = await ws.rpc("publish_channel", {"topic": "/audited", "message": {"password": "hunter2", "n": 1}})
    assert_success_shape(resp)
    # The row is durable before the answer (the audit journal: tests/core/test_audit_commit.py and the
    # SIGKILL rounds check that); any read of the log moves the journal into the table first.
    await ws.rpc("get_audit_log", {"limit": 1})
    with sqlite3.connect(node.node.settings.db_path) as db:
        row = db.execute("SELECT user, role, client_kind, intent, params, outcome, code FROM audit"
                         " WHERE requestid = ?", (resp["requestid"],)).fetchone()
    assert row is not None
    user, role, kind, intent, params, outcome, code = row
    assert (user, role, kind, intent, outcome, code) == ("oper", "operator", "websocket", "publish_channel", "success", 200)
    assert "hunter2" not in params and json.loads(params)["message"] == {"password": "***", "n": 1}
    resp = await ws.rpc("slow_sleep", {"seconds": 0, "password": "s3cret"})
    await ws.rpc("get_audit_log", {"limit": 1})
    with sqlite3.connect(node.node.settings.db_path) as db:
        params = db.execute("SELECT params FROM audit WHERE requestid = ?", (resp["requestid"],)).fetchone()[0]
    assert "s3cret" not in params
    refused = await ws.rpc("subscribe_channel", {"topic": "/nope"})
    log = await ws.rpc("get_audit_log", {"limit": 10})
    assert_success_shape(log)
    records = log["data"]["records"]
    by_rid = {rec["requestid"]: rec for rec in records}
    assert by_rid[refused["requestid"]]["outcome"] == "error" and by_rid[refused["requestid"]]["code"] == 404
    assert all(rec["user"] == "oper" for rec in records)  # non-admins see their own records
    assert "hunter2" not in json.dumps(records) and "s3cret" not in json.dumps(records)
    ws.close()


async def test_ping_keepalive(node: Running) -> None:
    token = await access_token(node)
    conn = await websocket_connect(node.url.replace("http", "ws") + f"/ws?token={token}")
    pings: list[bytes] = []
    conn.on_ping = pings.append  # type: ignore[method-assign]
    for _ in range(100):
        if pings:
            break
        await asyncio.sleep(0.05)
    assert pings, "the server sent no ping within 5 s (ping_interval is 0.2 s)"
    conn.close()
