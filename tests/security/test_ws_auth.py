"""The WebSocket handshake re-reads the user; hostile frames get clear errors and the server stays up."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient
from tornado.websocket import websocket_connect

from cloudisense.client import Connection, login
from cloudisense.core.intents import Intent
from tests.conftest import PASSWORDS, Running, make_settings, start_server, until


async def test_deleted_user_access_token_is_refused_at_the_handshake(running: Running) -> None:
    tokens = await login(running.url, "oper", PASSWORDS["oper"])
    access = tokens["access"]["token"]
    conn = await Connection.open(running.url, access)
    assert await conn.call("list_channels") is not None
    conn.close()
    await running.node.db.execute("DELETE FROM users WHERE username = 'oper'")
    resp = await AsyncHTTPClient().fetch(running.url + "/ws?token=" + access, raise_error=False)
    assert resp.code == 401 and "no longer exists" in json.loads(resp.body)["message"]
    refresh = await AsyncHTTPClient().fetch(running.url + "/refresh", method="POST", raise_error=False,
                                            body=f"refresh={tokens['refresh']['token']}")
    assert refresh.code == 401


async def test_password_change_ends_tokens_issued_before_it(running: Running) -> None:
    from cloudisense.store.users import client_credential

    old = await login(running.url, "oper", PASSWORDS["oper"])
    # Tokens carry whole seconds: let the change fall in a later second than the old login.
    await asyncio.sleep(1.1)
    await running.node.users.set_password("oper", client_credential("a-new-password"))
    resp = await AsyncHTTPClient().fetch(running.url + "/ws?token=" + old["access"]["token"], raise_error=False)
    assert resp.code == 401 and "password changed" in json.loads(resp.body)["message"]
    refresh = await AsyncHTTPClient().fetch(running.url + "/refresh", method="POST", raise_error=False,
                                            body=f"refresh={old['refresh']['token']}")
    assert refresh.code == 401
    new = await login(running.url, "oper", "a-new-password")
    conn = await Connection.open(running.url, new["access"]["token"])
    assert await conn.call("list_channels") is not None
    conn.close()


async def test_demoted_user_connects_with_the_stored_role(running: Running) -> None:
    tokens = await login(running.url, "oper", PASSWORDS["oper"])
    await running.node.db.execute("UPDATE users SET role = 'viewer' WHERE username = 'oper'")
    conn = await Connection.open(running.url, tokens["access"]["token"])
    refused = await conn.request("create_channel", {"topic": "/made-by-a-viewer"})
    assert refused["code"] == 403 and "viewer" in refused["message"]
    conn.close()


async def test_hostile_frames_get_errors_and_the_connection_survives(running: Running) -> None:
    tokens = await login(running.url, "admin", PASSWORDS["admin"])
    ws = await websocket_connect(running.url.replace("http", "ws") + "/ws?token=" + tokens["access"]["token"])
    frames = [
        '{"type": "rpc", "requestid": "n1", "intent": "list_channels", "params": {"x": NaN}}',
        '{"type": "rpc", "requestid": "n2", "intent": "list_channels", "params": {"x": Infinity}}',
        '{"type": "rpc", "requestid": "big", "intent": "get_audit_log", "params": {"limit": 1' + "0" * 5000 + "}}",
        '{"type": "rpc", "requestid": "deep", "intent": "list_channels", "params": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
        '{"type": "rpc", "requestid": "dup", "intent": "list_channels", "intent": "list_channels", '
        '"params": {"extra": 1}, "params": {}}',
        '{"type": "rpc", "requestid": "float", "intent": "get_audit_log", "params": {"limit": 1e308}}',
        '{"type": "rpc", "requestid": "neg", "intent": "get_audit_log", "params": {"limit": -1}}',
        '{"type": "rpc", "requestid": "sur", "intent": "list_channels", "params": {"x": "\\ud800"}}',
    ]
    for frame in frames:
        await ws.write_message(frame)
    # One answer per frame; frames that are not JSON at all are answered without a requestid.
    answers = [json.loads(await ws.read_message()) for _ in frames]
    by_id = {a["requestid"]: a for a in answers}
    assert sum(1 for a in answers if a["requestid"] is None) == 4  # NaN, Infinity, 5001 digits, too deep
    assert all(a["status"] == "error" and a["code"] == 400 for a in answers if a["requestid"] != "dup"), answers
    assert by_id["dup"]["status"] == "success"  # the last duplicate wins, as in any JSON parser
    await ws.write_message(json.dumps({"type": "rpc", "requestid": "ok", "intent": "list_channels", "params": {}}))
    assert json.loads(await ws.read_message())["status"] == "success"
    ws.close()


async def test_inflight_limit_per_connection(tmp_path: Path) -> None:
    """Over its in-flight bound a connection is not read: later requests wait, none is lost or refused."""
    running = await start_server(make_settings(tmp_path, server={"max_inflight_per_client": 2}))
    release = asyncio.Event()
    now = {"running": 0, "most": 0}

    async def hold(params: object, ctx: object) -> str:
        now["running"] += 1
        now["most"] = max(now["most"], now["running"])
        await release.wait()
        now["running"] -= 1
        return "done"

    running.node.registry.add(Intent("test_hold", "waits until released", hold))
    try:
        tokens = await login(running.url, "admin", PASSWORDS["admin"])
        ws = await websocket_connect(running.url.replace("http", "ws") + "/ws?token=" + tokens["access"]["token"])
        for i in range(5):
            await ws.write_message(json.dumps({"type": "rpc", "requestid": f"r{i}", "intent": "test_hold"}))
        await until(lambda: now["running"] == 2)
        await asyncio.sleep(0.2)  # time for the server to (wrongly) read and start more
        assert now["running"] == 2
        release.set()
        done = [json.loads(await ws.read_message()) for _ in range(5)]
        assert sorted(d["requestid"] for d in done) == [f"r{i}" for i in range(5)]
        assert [d["data"] for d in done] == ["done"] * 5
        assert now["most"] == 2
        ws.close()
    finally:
        await running.server.stop()
