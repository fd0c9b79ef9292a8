"""First end-to-end checks of the core server."""

from __future__ import annotations

import asyncio

from tests.conftest import Running


async def test_login_and_stats(running: Running) -> None:
    conn = await running.connect("admin")
    data = await conn.call("get_system_stats")
    assert data["memory"]["total"] > 0
    resp = await conn.request("intent_subscribe_channel", {"topic": "/stats"})
    assert resp["status"] == "success" and resp["code"] == 200
    ev = await conn.next_event("/stats")
    assert ev["name"] == "data_generated" and ev["meta"]["event"] == "stats_generated"
    conn.close()


async def test_concurrent(running: Running) -> None:
    conn = await running.connect("admin")
    results = await asyncio.gather(*(conn.request("check_process", {"name": "python"}) for _ in range(100)))
    assert all(r["status"] == "success" for r in results)
    assert len({r["requestid"] for r in results}) == 100
    conn.close()
