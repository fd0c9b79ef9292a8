"""MCP over streamable HTTP on the node's own server, driven by the MCP SDK's own client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.interop.conftest import audit_rows, interop_settings, mcp_http, running_pid, serving, token_of

#: Intents an outside agent must never get as tools (assistant runs, composites, approving, streams).
NOT_TOOLS = {"agent_ask", "query_assist", "chat_llm", "intent_chain", "agent_execute", "confirm_action",
             "subscribe_channel", "list_intents"}


async def test_viewer_sees_only_read_tools_and_reads_a_log(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        async with mcp_http(running, await token_of(running, "viewer")) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert {"read_log", "target_status", "get_system_stats"} <= set(tools)
            assert not tools.keys() & {"restart_target", "stop_target", "start_target"}
            assert not tools.keys() & NOT_TOOLS
            assert all(t.annotations.read_only_hint is True for t in tools.values())
            # The params JSON-schema comes from the intent's params model.
            assert tools["read_log"].input_schema["properties"]["lines"]["maximum"] == 5000
            assert tools["read_log"].input_schema["required"] == ["name"]

            result = await client.call_tool("read_log", {"name": "app", "lines": 5})
            assert result.is_error is False
            assert result.structured_content["lines"][-1] == "2024-05-01 10:00:01 ERROR upstream timeout"
            assert "ERROR upstream timeout" in result.content[0].text

            # A tool the role may not run is not callable either, whatever the client sends.
            refused = await client.call_tool("restart_target", {"name": "web"})
            assert refused.is_error is True and "not a tool here" in refused.content[0].text
            bad = await client.call_tool("read_log", {"name": "app", "lines": 0})
            assert bad.is_error is True and "lines" in bad.content[0].text
        rows = await audit_rows(running, "read_log")
        assert [(r["user"], r["client_kind"], r["outcome"]) for r in rows] == \
            [("viewer", "mcp", "success"), ("viewer", "mcp", "error")]
        assert await audit_rows(running, "restart_target") == []


async def test_operator_tools_carry_risk_annotations(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        async with mcp_http(running, await token_of(running, "oper")) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["restart_target"].annotations.read_only_hint is False
        assert tools["restart_target"].annotations.destructive_hint is False
        assert tools["stop_target"].annotations.destructive_hint is True
        assert "(risk: destructive)" in (tools["stop_target"].description or "")
        assert not tools.keys() & NOT_TOOLS


async def test_confirm_tool_waits_for_a_person_then_runs_once(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        async with mcp_http(running, await token_of(running, "oper")) as client:
            result = await client.call_tool("restart_target", {"name": "web"})
        assert result.is_error is False
        approval = result.structured_content
        assert approval["approval_required"] is True and approval["rule"] == "restart-demo-targets-confirm"
        assert result.content[0].text.startswith(f"Not run: approval {approval['approval_id']} is needed for "
                                                 "restart_target web on node test-node")
        # Nothing ran: same process, and the audit row says so (and names the MCP client).
        assert await running_pid(running) == old_pid
        rows = await audit_rows(running, "restart_target")
        assert [(r["client_kind"], r["outcome"], r["decision"]) for r in rows] == \
            [("mcp", "pending_approval", "confirm")]

        # A person approves it through the node, over the WebSocket.
        oper = await running.connect("oper")
        try:
            done = await oper.call("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
            assert done["status"] == "completed" and done["decided"]["status"] == "consumed"
            again = await oper.request("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
            assert again["code"] == 409
        finally:
            oper.close()
        assert await running_pid(running) != old_pid
        ran = [r for r in await audit_rows(running, "restart_target") if r["outcome"] == "success"]
        assert len(ran) == 1
        assert (ran[0]["client_kind"], ran[0]["user"], ran[0]["rule"]) == \
            ("mcp", "oper", f"approval:{approval['approval_id']}")


async def test_handshake_era_client_over_sse(tmp_path: Path) -> None:
    """The 2025 handshake protocol: a stateful session, answers streamed as SSE through the Tornado bridge."""
    async with serving(interop_settings(tmp_path)) as running:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {await token_of(running, 'oper')}"})
        async with http, Client(streamable_http_client(f"{running.url}/mcp", http_client=http),
                                mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "restart_target" in names
            stats = await client.call_tool("get_system_stats", {})
            assert stats.is_error is False and "cpu" in stats.structured_content
            log = await client.read_resource("cloudisense://logs/app")
            assert log.contents[0].text.endswith("ERROR upstream timeout")
        rows = await audit_rows(running, "get_system_stats")
        assert [r["client_kind"] for r in rows] == ["mcp"]


async def test_resources_and_prompts(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        async with mcp_http(running, await token_of(running, "viewer")) as client:
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            assert {"cloudisense://logs/app", "cloudisense://audit/recent", "cloudisense://approvals/pending"} <= uris
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["cloudisense://logs/{name}"]
            log = (await client.read_resource("cloudisense://logs/app")).contents[0]
            assert log.text.splitlines() == ["2024-05-01 10:00:00 INFO started",
                                             "2024-05-01 10:00:01 ERROR upstream timeout"]
            audit = (await client.read_resource("cloudisense://audit/recent")).contents[0]
            records = [json.loads(line) for line in audit.text.splitlines()]
            # A viewer's audit feed holds only the viewer's own rows (the intent's own rule).
            assert records and {r["user"] for r in records} == {"viewer"}
            assert "read_log" in {r["intent"] for r in records}
            with pytest.raises(Exception, match="missing"):
                await client.read_resource("cloudisense://logs/missing")

            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert prompts == {"investigate-service", "find-log-errors"}
            prompt = await client.get_prompt("investigate-service", {"service": "web"})
            assert "service web" in prompt.messages[0].content.text


async def _post_tools_list(url: str, authorization: str | None) -> httpx2.Response:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx2.AsyncClient() as http:
        return await http.post(f"{url}/mcp", json=body, headers=headers)


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic YWRtaW46YWRtaW4="])
async def test_bad_or_missing_token_is_refused(tmp_path: Path, header: str | None) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        response = await _post_tools_list(running.url, header)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer ")
        # The SDK's client gets no session either.
        with pytest.raises(Exception):
            async with mcp_http(running, "not-a-token") as client:
                await client.list_tools()


async def test_refresh_token_is_not_an_access_token(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        from cloudisense.client import login
        from tests.conftest import PASSWORDS

        tokens = await login(running.url, "oper", PASSWORDS["oper"])
        refused = await _post_tools_list(running.url, f"Bearer {tokens['refresh']['token']}")
        assert refused.status_code == 401
        # The same request with the access token of that login passes authentication and reaches MCP
        # (which wants a session first: a JSON-RPC error, not an auth error).
        served = await _post_tools_list(running.url, f"Bearer {tokens['access']['token']}")
        assert served.status_code == 400 and served.json()["jsonrpc"] == "2.0", served.text


async def test_policy_deny_and_self_approval_are_refused(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        pid = await running_pid(running)
        async with mcp_http(running, await token_of(running, "oper")) as client:
            # The demo policy never lets an automated caller stop a service for a non-admin.
            denied = await client.call_tool("stop_target", {"name": "web"})
            assert denied.is_error is True and "denied by policy" in denied.content[0].text
            pending = await client.call_tool("restart_target", {"name": "web"})
            approval_id = pending.structured_content["approval_id"]
            # The agent can't approve its own request: approving is not a tool, whatever it sends.
            own = await client.call_tool("confirm_action", {"approval_id": approval_id, "approve": True})
            assert own.is_error is True and "not a tool here" in own.content[0].text
            waiting = await client.read_resource("cloudisense://approvals/pending")
            assert approval_id in waiting.contents[0].text
        assert await running_pid(running) == pid
        rows = await audit_rows(running, "stop_target")
        assert [(r["client_kind"], r["outcome"], r["rule"]) for r in rows] == [("mcp", "denied", "stop-target-deny")]
        assert await audit_rows(running, "confirm_action") == []


async def test_every_http_request_checks_the_token_and_the_stored_role(tmp_path: Path) -> None:
    """The token is checked on each HTTP request of a session: a demotion counts at once, a password change ends it."""
    async with serving(interop_settings(tmp_path)) as running:
        db = running.node.db
        async with mcp_http(running, await token_of(running, "oper")) as client:
            assert "restart_target" in {t.name for t in (await client.list_tools()).tools}
            # An admin demotes oper (there is no CLI for roles yet, so straight in the store).
            await db.execute("UPDATE users SET role = 'viewer' WHERE username = 'oper'")
            assert "restart_target" not in {t.name for t in (await client.list_tools()).tools}
            refused = await client.call_tool("restart_target", {"name": "web"})
            assert refused.is_error is True and "not a tool here" in refused.content[0].text
            # A password change (as set_password records it, one second on so the token predates it).
            await db.execute("UPDATE users SET credentials_changed = ? WHERE username = 'oper'",
                             (int(time.time()) + 1,))
            with pytest.raises(Exception):
                await client.call_tool("target_status", {"name": "web"})
        assert await audit_rows(running, "restart_target") == []
        assert await audit_rows(running, "target_status") == []
