"""The WebSocket backend of ``cloudisense mcp`` and the remote LangChain tools: reconnects, failures in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudisense.core.roles import Role
from cloudisense.interop.backends import RouterBackend, WebSocketBackend, callable_tools
from tests.conftest import PASSWORDS, until
from tests.interop.conftest import audit_rows, interop_settings, serving


async def test_reconnects_after_the_socket_dropped(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        backend = WebSocketBackend(running.url, "viewer", PASSWORDS["viewer"])
        try:
            first = await backend.request("target_status", {"name": "web"})
            assert first["status"] == "success"
            conn = await backend.connect()
            conn.ws.close()
            await until(lambda: conn.closed)
            second = await backend.request("target_status", {"name": "web"})
            assert second["status"] == "success"
            assert await backend.connect() is not conn
        finally:
            backend.close()
        rows = [r for r in await audit_rows(running, "target_status") if r["user"] == "viewer"]
        assert [r["client_kind"] for r in rows] == ["mcp", "mcp"]


async def test_unreachable_node_and_wrong_password_answer_in_words(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        wrong = WebSocketBackend(running.url, "viewer", "not-the-password")
        refused = await wrong.request("target_status", {"name": "web"})
        assert refused["code"] == 503 and "could not log in" in refused["message"]
        assert "not-the-password" not in refused["message"]
        url = running.url
    gone = WebSocketBackend(url, "viewer", PASSWORDS["viewer"])
    down = await gone.request("target_status", {"name": "web"})
    assert down["code"] == 503 and f"could not reach the node at {url}" in down["message"]
    with pytest.raises(ConnectionError, match="did not list its intents"):
        await gone.intents()


async def test_both_backends_list_the_same_tools(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        remote = WebSocketBackend(running.url, "oper", PASSWORDS["oper"])
        try:
            over_ws = callable_tools(await remote.intents())
        finally:
            remote.close()
        in_process = callable_tools(await RouterBackend(running.node, "oper", Role.OPERATOR).intents())
        assert over_ws == in_process
        assert {i["agent_use"] for i in in_process} == {"tool"}


def test_backends_refuse_kinds_the_policy_would_not_gate() -> None:
    with pytest.raises(ValueError, match="policy"):
        WebSocketBackend("http://127.0.0.1:1", "u", "p", kind="websocket")
