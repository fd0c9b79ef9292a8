"""get_configuration, restart_self (a real `cloudisense serve` process), CORS, and real CPU figures."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from cloudisense.assistant.approvals import ApprovalStore
from cloudisense.core.roles import Role
from cloudisense.store.db import Database
from cloudisense.store.users import UserStore, client_credential
from tests.compat.client import ClientRejected, ExistingClient
from tests.conftest import PASSWORDS, make_settings, start_server, until

CLI = Path(sys.executable).parent / "cloudisense"


async def test_get_configuration_is_for_admins_and_hides_secrets(tmp_path: Path) -> None:
    secret_hook = "http://127.0.0.1:9/hooks/T000/B000/very-secret-path"
    r = await start_server(make_settings(
        tmp_path, modules=["pubsub", "audit", "system", "targets", "notify"],
        auth={"jwt_secret": "j" * 40}, notify={"webhooks": [secret_hook], "telegram_bot_token": "123:bot-token-x"},
        targets={"svc": {"command": ["/bin/true"], "env": {"DB_URL": "postgres://u:pw-in-env@db/x"}}},
        llm={"providers": {"openai_api_key": "sk-should-not-show"}}))
    try:
        viewer = ExistingClient(r.url)
        await viewer.login("viewer", PASSWORDS["viewer"])
        with pytest.raises(ClientRejected) as info:
            await viewer.execute("get_configuration")
        assert info.value.code == 403
        admin = ExistingClient(r.url)
        await admin.login("admin", PASSWORDS["admin"])
        config = await admin.execute("get_configuration")
        assert config["identity"] == "test-node" and config["targets"]["svc"]["command"] == ["/bin/true"]
        assert config["notify"]["webhooks"] == ["http://127.0.0.1:9/***"]
        text = json.dumps(config)
        for secret in ("j" * 40, "very-secret-path", "bot-token-x", "pw-in-env", "sk-should-not-show"):
            assert secret not in text
        viewer.close()
        admin.close()
    finally:
        await r.server.stop()


async def test_restart_self_refused_when_embedded_and_for_non_admins(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "system"]))
    try:
        oper = ExistingClient(r.url)
        await oper.login("oper", PASSWORDS["oper"])
        with pytest.raises(ClientRejected) as info:
            await oper.execute("restart_self")
        assert info.value.code == 403
        admin = ExistingClient(r.url)
        await admin.login("admin", PASSWORDS["admin"])
        with pytest.raises(ClientRejected) as info:
            await admin.execute("restart_self")
        assert info.value.code == 503 and "cloudisense serve" in str(info.value)
        risk = r.node.registry.get("restart_self")
        assert risk.risk.value == "destructive" and risk.admin_only
        oper.close()
        admin.close()
    finally:
        await r.server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def prepare(data_dir: Path) -> str:
    """An admin and one pending approval in the node's database, before the server ever runs."""
    db = Database(data_dir / "cloudisense.db")
    data_dir.mkdir(parents=True)
    await db.open()
    try:
        users = UserStore(db)
        await users.start()
        await users.add("admin", client_credential(PASSWORDS["admin"]), Role.ADMIN)
        approvals = ApprovalStore(db, 3600)
        await approvals.start()
        approval = await approvals.create(requester="admin", requester_role="admin", intent="get_system_stats",
                                          params={}, risk="read", description="kept across restarts")
        return approval.id
    finally:
        await db.close()


async def test_restart_self_restarts_a_real_server_and_keeps_sessions_and_approvals(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'identity = "restarter"\ndata_dir = "data"\nmodules = ["pubsub", "audit", "system", "assistant"]\n'
                      f'[server]\nport = {port}\n[auth]\njwt_secret = "{"s" * 40}"\n')
    approval_id = await prepare(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDISENSE_")}
    proc = subprocess.Popen([str(CLI), "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        async def up() -> bool:
            try:
                resp = await AsyncHTTPClient().fetch(url + "/healthz", raise_error=False, request_timeout=2)
            except (OSError, HTTPClientError):  # not listening (yet, or again), or still shutting down
                return False
            return resp.code == 200
        await until(up, timeout=60)
        admin = ExistingClient(url)
        await admin.login("admin", PASSWORDS["admin"])
        before = await admin.execute("list_approvals")
        assert [a["approval_id"] for a in before["approvals"]] == [approval_id]
        pid = proc.pid
        answer = await admin.execute("restart_self")
        assert answer["restarting"] is True
        # The same process (exec), stopped cleanly, then listening again.
        await until(lambda: admin.ws is not None and admin._reader is not None and admin._reader.done(), timeout=30)
        await until(up, timeout=60)
        assert proc.poll() is None and proc.pid == pid
        again = ExistingClient(url)
        again.tokens = admin.tokens  # the session's tokens stay valid: no new login
        from tornado.websocket import websocket_connect

        again.ws = await websocket_connect(url.replace("http", "ws") + f"/ws?token={admin.token}")
        again._reader = asyncio.create_task(again._read())
        after = await again.execute("list_approvals")
        assert [a["approval_id"] for a in after["approvals"]] == [approval_id]
        records = (await again.execute("get_audit_log", {"intent": "restart_self"}))["records"]
        assert records and records[0]["user"] == "admin"  # written before the restart, read after it
        again.close()
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    text = out.decode(errors="replace")
    assert text.count("listening on") == 2 and "restarting..." in text, text


async def test_cors_for_configured_origins(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=["pubsub", "audit"],
                                         cors={"origins": ["https://console.example.com"]}))
    http = AsyncHTTPClient()
    try:
        pre = await http.fetch(HTTPRequest(r.url + "/authorize", method="OPTIONS", headers={
            "Origin": "https://console.example.com", "Access-Control-Request-Method": "POST"}), raise_error=False)
        assert pre.code == 204 and pre.headers["Access-Control-Allow-Origin"] == "https://console.example.com"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        other = await http.fetch(HTTPRequest(r.url + "/authorize", method="OPTIONS", headers={
            "Origin": "https://evil.example"}), raise_error=False)
        assert "Access-Control-Allow-Origin" not in other.headers
        failed = await http.fetch(HTTPRequest(r.url + "/authorize", method="POST", body="username=x&password=y",
                                              headers={"Origin": "https://console.example.com"}), raise_error=False)
        assert failed.code == 401 and failed.headers["Access-Control-Allow-Origin"] == "https://console.example.com"
        pre_file = await http.fetch(HTTPRequest(r.url + "/file/read", method="OPTIONS", headers={
            "Origin": "https://console.example.com"}), raise_error=False)
        assert pre_file.code == 204
    finally:
        await r.server.stop()


async def test_list_processes_reports_real_cpu(tmp_path: Path) -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    r = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "system"]))
    try:
        c = ExistingClient(r.url)
        await c.login("viewer", PASSWORDS["viewer"])
        listed = await c.execute("list_processes", {"sort_by": "cpu", "limit": 500})
        mine = [p for p in listed["processes"] if p["pid"] == busy.pid]
        assert mine and mine[0]["cpu_percent"] > 0
        assert listed["sampled_seconds"] > 0
        c.close()
    finally:
        busy.kill()
        busy.wait()
        await r.server.stop()
