"""Nested calls under load: 300 concurrent assistant and chain requests never deadlock the node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.conftest import make_settings, start_server

QUERY = "get system stats and then list the logs"
CASES: list[tuple[str, dict[str, Any]]] = [
    ("query_assist", {"query": QUERY}),
    ("intent_chain", {"steps": [{"intent": "get_system_stats"}, {"intent": "list_logs"}]}),
    ("agent_ask", {"query": QUERY}),
]


async def _flood(tmp_path: Path, cases: list[tuple[str, dict[str, Any]]], total: int, **server: Any) -> None:
    running = await start_server(make_settings(tmp_path, server={"port": 0, "dashboard": False, **server}))
    try:
        conns = [await running.connect("admin") for _ in range(10)]
        calls = [conns[i % 10].request(*cases[i % len(cases)], timeout=240) for i in range(total)]
        flood = asyncio.gather(*calls)
        # While they run, a new connection is still served (the node is not stuck).
        probe = await running.connect("viewer")
        assert "topics" in await probe.call("list_channels", timeout=240)
        answers = await flood
        failed = [a for a in answers if a["status"] != "success"]
        assert not failed, f"{len(failed)} of {total} failed, e.g. {failed[:2]}"
        for conn in (*conns, probe):
            conn.close()
    finally:
        await running.server.stop()


async def test_300_concurrent_query_assist(tmp_path: Path) -> None:
    """The issue's case as it was reported: default settings, 300 over 10 connections."""
    await _flood(tmp_path, CASES[:1], 300)


async def test_300_mixed_nested_calls_with_few_permits(tmp_path: Path) -> None:
    """16 node-wide permits and 16 in flight per connection for 300 outer calls that each make sub-calls:
    the sub-calls take no permit, and a connection over its bound is simply read later."""
    await _flood(tmp_path, CASES, 300, max_inflight_per_client=16)
