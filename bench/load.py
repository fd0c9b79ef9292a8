"""Many clients at once: errors, latency percentiles and server memory, next to a raw Tornado echo.

Usage: ``.venv/bin/python bench/load.py [--clients 500] [--seconds 10] [--rounds 1]``

Both servers are the ones of ``bench/rpc.py`` (own processes; the node with modules pubsub,
system, audit and the audit record committed before each answer). Every client opens its own
WebSocket and does ``list_channels`` round trips (one at a time) for ``--seconds``. Printed:
round trips per second, errors (error answers, timeouts and dropped connections), p50 and p99
latency, and each server's resident memory before and at the end of the load. The echo server
runs the same load in the same round as the baseline. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rpc  # noqa: E402  (the servers and the request frame)


async def _client(url: str, stop_at: float, latencies: list[float], errors: list[str], check: bool) -> None:
    try:
        ws = await asyncio.wait_for(websocket_connect(url), 60)
    except Exception as exc:
        errors.append(f"connect: {type(exc).__name__}")
        return
    i = 0
    try:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            await ws.write_message(rpc.frame(i))
            reply = await asyncio.wait_for(ws.read_message(), 30)
            if reply is None:
                errors.append("connection closed")
                return
            if check and '"status":"success"' not in reply.replace(" ", ""):
                errors.append(f"error answer: {reply[:80]}")
            latencies.append(time.perf_counter() - began)
            i += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}")
    finally:
        ws.close()


async def _measure(url: str, pid: int, clients: int, seconds: float, check: bool) -> dict[str, float]:
    proc = psutil.Process(pid)
    rss_before = proc.memory_info().rss
    latencies: list[float] = []
    errors: list[str] = []
    began = time.perf_counter()
    stop_at = began + seconds
    peak = rss_before
    runs = asyncio.gather(*(_client(url, stop_at, latencies, errors, check) for _ in range(clients)))
    while not runs.done():
        peak = max(peak, proc.memory_info().rss)
        await asyncio.sleep(0.25)
    await runs
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies) or [float("nan")]
    if errors:
        print(f"  errors ({len(errors)}), first: {errors[:3]}")
    return {"rate": len(latencies) / elapsed, "errors": len(errors), "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "rss_before": rss_before / 2**20, "rss_peak": peak / 2**20}


async def run(clients: int, seconds: float, rounds: int) -> None:
    """Echo and node in alternating rounds; prints each round and the medians."""
    samples: dict[str, list[dict[str, float]]] = {"echo": [], "node": []}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {kind: rpc.start(kind, str(Path(tmp) / kind)) for kind in ("echo", "node")}
        try:
            for _ in range(rounds):
                for kind, (proc, info) in servers.items():
                    url = f"ws://127.0.0.1:{info['port']}/ws" + (f"?token={info['token']}" if kind == "node" else "")
                    samples[kind].append(await _measure(url, proc.pid, clients, seconds, kind == "node"))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    print(f"{clients} clients, {seconds:g} s per round, median of {rounds} round(s), {os.cpu_count()} CPUs, "
          f"intent {rpc.INTENT}")
    print(f"{'server':>12} | {'rt/s':>7} | {'errors':>6} | {'p50 ms':>7} | {'p99 ms':>7} | {'RSS MiB before/peak':>19}")
    print("-" * 74)
    for kind, runs in samples.items():
        m = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        name = "tornado echo" if kind == "echo" else "cloudisense"
        print(f"{name:>12} | {m['rate']:>7,.0f} | {m['errors']:>6.0f} | {m['p50'] * 1000:>7.1f} | "
              f"{m['p99'] * 1000:>7.1f} | {m['rss_before']:>8.1f} / {m['rss_peak']:<8.1f}")


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are printed")
    args = parser.parse_args()
    asyncio.run(run(args.clients, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
