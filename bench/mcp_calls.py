"""Cost of calling an intent as an MCP tool, next to the same call as a plain WebSocket RPC.

Usage: ``.venv/bin/python bench/mcp_calls.py [--calls 200] [--rounds 3]``

One real node (port 0, modules pubsub, system, audit, interop) in this process. Each way
calls ``list_channels`` (a cheap ``read`` intent: the figure is the path's own cost) one at a
time, ``--calls`` times per round, alternating the ways each round; medians of the rounds:

- baseline: ``cloudisense.client.Connection`` over ``/ws`` (what the CLI and tests use);
- MCP over streamable HTTP on ``/mcp`` (the SDK's client; both protocol eras: the 2026
  per-request era and the 2025 handshake era with a session and SSE answers), through the
  bearer middleware and the Tornado-to-ASGI bridge, then the router in process;
- MCP over stdio: the SDK's client spawning ``cloudisense mcp``, which calls the node over ``/ws``.

The clients run in this process too, so a figure is the cost of both ends of the path (the
SDK's client and server, the HTTP stack, the bridge), as an agent on the same machine sees it.
Prints calls per second and the ratio to the baseline; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cloudisense.client import Connection, login
from cloudisense.config import load_settings
from cloudisense.core.roles import Role
from cloudisense.node import Node
from cloudisense.server.app import Server
from cloudisense.store.users import client_credential

INTENT = "list_channels"
USER, PASSWORD = "bench", "bench-password-1"


async def rate(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Calls per second of ``call``, one at a time (after one warm-up call)."""
    await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return calls / (time.perf_counter() - started)


async def run(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, environ={}, overrides={
            "data_dir": tmp, "identity": "bench", "server": {"port": 0},
            "modules": ["pubsub", "system", "audit", "interop"]})
        server = Server(Node(settings))
        port = await server.start(host="127.0.0.1", port=0)
        await server.node.users.add(USER, client_credential(PASSWORD), Role.OPERATOR)
        url = f"http://127.0.0.1:{port}"
        try:
            await measure(url, calls, rounds)
        finally:
            await server.stop()


async def measure(url: str, calls: int, rounds: int) -> None:
    token = (await login(url, USER, PASSWORD))["access"]["token"]
    ws = await Connection.open(url, token)
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    stdio = StdioServerParameters(command=str(Path(sys.executable).with_name("cloudisense")), args=["mcp"],
                                  env={"CLOUDISENSE_URL": url, "CLOUDISENSE_USER": USER,
                                       "CLOUDISENSE_PASSWORD": PASSWORD})
    async with http, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as modern, \
            Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as legacy, \
            Client(stdio, read_timeout_seconds=60) as piped:

        async def tool(client: Client) -> None:
            result = await client.call_tool(INTENT, {})
            if result.is_error:
                raise SystemExit(f"{INTENT} failed over MCP: {result.content}")

        ways: dict[str, Callable[[], Awaitable[Any]]] = {
            "WebSocket RPC (baseline)": lambda: ws.call(INTENT, {}),
            "MCP HTTP, 2026 era": lambda: tool(modern),
            "MCP HTTP, 2025 era (SSE)": lambda: tool(legacy),
            "MCP stdio (via /ws)": lambda: tool(piped),
        }
        figures: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for name in order:
                figures[name].append(await rate(ways[name], calls))
    ws.close()
    base = statistics.median(figures["WebSocket RPC (baseline)"])
    print(f"{INTENT} calls per second, one at a time (median of {rounds} alternating rounds of {calls} calls)")
    print(f"{'way':<26} | {'calls/s':>8} | {'vs WebSocket':>12}")
    print("-" * 52)
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:<26} | {median:>8,.0f} | {median / base:>12.2f}")


def main() -> None:
    """Parse the options and run the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.rounds))


if __name__ == "__main__":
    main()
