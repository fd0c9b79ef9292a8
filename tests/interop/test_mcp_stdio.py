"""``cloudisense mcp`` over stdio, spawned by the MCP SDK's own client against a real server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import PASSWORDS, Running
from tests.interop.conftest import audit_rows, interop_settings, running_pid, serving

CLOUDISENSE = str(Path(sys.executable).with_name("cloudisense"))


def _params(running: Running, user: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=CLOUDISENSE, args=["mcp"],
                                 env={"CLOUDISENSE_URL": running.url, "CLOUDISENSE_USER": user, **env})


@asynccontextmanager
async def mcp_stdio(running: Running, user: str, **env: str) -> AsyncIterator[Client]:
    """The SDK's client on a spawned ``cloudisense mcp`` logged in as ``user``."""
    env = env or {"CLOUDISENSE_PASSWORD": PASSWORDS[user]}
    async with Client(_params(running, user, **env), read_timeout_seconds=60) as client:
        yield client


async def test_viewer_over_stdio_lists_read_tools_and_calls_one(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        async with mcp_stdio(running, "viewer") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "read_log" in tools and "restart_target" not in tools
            assert all(t.annotations.read_only_hint for t in tools.values())
            result = await client.call_tool("target_status", {"name": "web"})
            assert result.is_error is False and result.structured_content["state"] == "running"
        rows = await audit_rows(running, "target_status")
        mcp_rows = [r for r in rows if r["user"] == "viewer"]
        assert [(r["client_kind"], r["outcome"]) for r in mcp_rows] == [("mcp", "success")]


async def test_confirm_over_stdio_then_approved_on_the_node(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        old_pid = await running_pid(running)
        secret = tmp_path / "oper.password"
        secret.write_text(PASSWORDS["oper"] + "\n")
        async with mcp_stdio(running, "oper", CLOUDISENSE_PASSWORD_FILE=str(secret)) as client:
            result = await client.call_tool("restart_target", {"name": "web"})
            approval = result.structured_content
            assert approval["approval_required"] is True
            assert result.content[0].text.startswith("Not run: approval")
            assert await running_pid(running) == old_pid

            oper = await running.connect("oper")
            try:
                done = await oper.call("confirm_action", {"approval_id": approval["approval_id"], "approve": True})
            finally:
                oper.close()
            assert done["status"] == "completed"
            # The MCP client sees what happened through its own resource.
            pending = await client.read_resource("cloudisense://approvals/pending")
            assert approval["approval_id"] not in pending.contents[0].text
        assert await running_pid(running) != old_pid
        rows = await audit_rows(running, "restart_target")
        assert [(r["client_kind"], r["outcome"]) for r in rows] == [("mcp", "pending_approval"), ("mcp", "success")]
        assert rows[1]["rule"] == f"approval:{approval['approval_id']}"


async def test_wrong_password_fails_in_words(tmp_path: Path) -> None:
    async with serving(interop_settings(tmp_path)) as running:
        proc = await asyncio.create_subprocess_exec(
            CLOUDISENSE, "mcp", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"CLOUDISENSE_URL": running.url, "CLOUDISENSE_USER": "oper", "CLOUDISENSE_PASSWORD": "wrong",
                 "PATH": "/usr/bin:/bin"})
        out, err = await asyncio.wait_for(proc.communicate(b""), 60)
        assert proc.returncode == 1
        assert out == b""  # nothing on the protocol channel
        assert b"could not log in to" in err and b"invalid username or password" in err
        assert b"wrong" not in err  # the password is never echoed


async def test_no_password_configured_says_what_to_set(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        CLOUDISENSE, "mcp", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"CLOUDISENSE_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"})
    out, err = await asyncio.wait_for(proc.communicate(b""), 60)
    assert proc.returncode == 1 and out == b""
    assert b"CLOUDISENSE_PASSWORD" in err and b"CLOUDISENSE_PASSWORD_FILE" in err
