"""A client that sends and never reads: the server's memory stays bounded and others stay served.

Bounds asserted (documented in docs/protocol.md, "Backpressure and memory per connection"):
the server process grows by less than :data:`MEMORY_BOUND` while one connection floods it,
the flooding connection stops being read, every request of the other clients completes, and
their median latency stays within :data:`LATENCY_FACTOR` of the median before the flood
(plus a floor, since a busy CI machine makes small medians jumpy).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import statistics
import time
from pathlib import Path

import psutil
import pytest

from cloudisense.client import login
from tests.conftest import PASSWORDS, Running, make_settings, start_server

MEMORY_BOUND = 64 * 1024 * 1024
LATENCY_FACTOR = 25
LATENCY_FLOOR = 0.5  # seconds
FRAMES = 100_000


async def _raw_ws(running: Running, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, with tiny socket buffers, whose reads the test never does."""
    host, port = running.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write((f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _frame(payload: dict[str, object]) -> bytes:
    """A masked client text frame (mask key 0: the payload is sent as it is)."""
    data = json.dumps(payload).encode()
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + b"\x00\x00\x00\x00" + data


async def _latencies(running: Running, user: str, count: int) -> list[float]:
    conn = await running.connect(user)
    out = []
    try:
        for _ in range(count):
            began = time.perf_counter()
            await conn.call("list_channels", timeout=120)
            out.append(time.perf_counter() - began)
    finally:
        conn.close()
    return out


async def test_client_that_never_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    running = await start_server(make_settings(tmp_path, server={
        "port": 0, "dashboard": False, "max_inflight_per_client": 64, "max_unwritten_bytes": 65536,
        "client_queue_size": 100, "write_stall_timeout": 600}))
    me = psutil.Process()
    try:
        before = [x for user in ("admin", "oper") for x in await _latencies(running, user, 50)]
        token = (await login(running.url, "admin", PASSWORDS["admin"]))["access"]["token"]
        reader, writer = await _raw_ws(running, token)
        writer.write(_frame({"type": "rpc", "requestid": "sub", "intent": "subscribe_channel",
                             "params": {"topic": "/stats"}}))
        gc.collect()
        rss_before = me.memory_info().rss
        sent, blocked = 0, False
        batch = b"".join(_frame({"type": "rpc", "requestid": f"flood-{i:06d}", "intent": "list_channels"})
                         for i in range(1000))
        others = asyncio.gather(*(_latencies(running, user, 100) for user in ("admin", "oper", "viewer")))
        while sent < FRAMES:
            writer.write(batch)
            sent += 1000
            try:
                await asyncio.wait_for(writer.drain(), 5)
            except TimeoutError:
                blocked = True  # the server stopped reading this connection
                break
        during = [x for run in await others for x in run]
        rss_growth = me.memory_info().rss - rss_before
        print(f"flooder sent {sent} frames, blocked={blocked}; server grew {rss_growth / 2**20:.1f} MiB; "
              f"median latency before {statistics.median(before) * 1000:.1f} ms, "
              f"during {statistics.median(during) * 1000:.1f} ms")
        assert blocked, "the server kept reading a connection that never reads its answers"
        assert rss_growth < MEMORY_BOUND
        assert len(during) == 300  # every request of the other clients completed
        assert statistics.median(during) < LATENCY_FACTOR * statistics.median(before) + LATENCY_FLOOR
        writer.transport.abort()
        del reader, writer
    finally:
        await running.server.stop()
    gc.collect()
    await asyncio.sleep(0.1)
    never = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not never, never[0].getMessage()
