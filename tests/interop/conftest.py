"""Helpers of the interop tests: a real node (targets, a log, the demo policy, the interop module)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cloudisense.client import login
from cloudisense.config import Settings
from tests.assistant.conftest import MODULES, agent_settings, audit_rows, running_pid, serving
from tests.conftest import PASSWORDS, Running

__all__ = ["audit_rows", "interop_settings", "mcp_http", "running_pid", "serving", "token_of"]


def interop_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The agent tests' node plus the interop module (``list_intents``)."""
    return agent_settings(tmp_path, modules=[*MODULES, "interop"], **overrides)


async def token_of(running: Running, user: str) -> str:
    """A fresh access token of ``user``."""
    return str((await login(running.url, user, PASSWORDS[user]))["access"]["token"])


@asynccontextmanager
async def mcp_http(running: Running, token: str) -> AsyncIterator[Client]:
    """The MCP SDK's own client on the node's ``/mcp``, sending ``token`` as a bearer token."""
    http: httpx2.AsyncClient = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        async with Client(streamable_http_client(f"{running.url}/mcp", http_client=http)) as client:
            yield client
