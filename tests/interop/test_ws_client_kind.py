"""A WebSocket client declares its kind (``/ws?client=mcp``): a label for the audit log and the policy gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from cloudisense.client import Connection
from tests.interop.conftest import audit_rows, interop_settings, running_pid, serving, token_of


async def test_declared_automated_kind_is_audited_and_gated(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        pid = await running_pid(running)
        token = await token_of(running, "oper")
        agent = await Connection.open(running.url, token, client_kind="langchain")
        person = await Connection.open(running.url, token)
        try:
            gated = await agent.request("restart_target", {"name": "nginx"})
            assert gated["code"] == 202 and gated["data"]["approval_required"] is True
            assert await running_pid(running, "nginx") != 0
            # The same user as a plain client is governed by the role only: it runs.
            ran = await person.request("restart_target", {"name": "web"})
            assert ran["code"] == 200
            # An automated client may not decide an approval, even its own user's.
            refused = await agent.request("confirm_action", {"approval_id": gated["data"]["approval_id"],
                                                             "approve": True})
            assert refused["code"] == 403 and "person" in refused["message"]
        finally:
            agent.close()
            person.close()
        rows = await audit_rows(running, "restart_target")
        assert [(r["client_kind"], r["outcome"]) for r in rows] == \
            [("langchain", "pending_approval"), ("websocket", "success")]
        assert await running_pid(running) != pid


@pytest.mark.parametrize("kind", ["agent", "browser", "MCP", ""])
async def test_unknown_kind_is_refused_before_the_upgrade(tmp_path: Path, kind: str) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        token = await token_of(running, "oper")
        url = running.url.replace("http://", "ws://") + f"/ws?token={token}&client={kind}"
        with pytest.raises(HTTPClientError) as info:
            await websocket_connect(url)
        assert info.value.code == 400
