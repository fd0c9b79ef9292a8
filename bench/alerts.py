"""What watching a log for error bursts costs, and what a burst turns into.

Usage: ``.venv/bin/python bench/alerts.py [--lines 50000] [--rounds 5]``

A real node in this process (modules pubsub, audit, logs, alerts; SQLite in a temp folder) with one
log rule (the default error pattern, count 5, window 60 s). Each round appends ``--lines`` lines
(one in four an ERROR line) to the log and times the monitor's log check (read the new lines,
match the pattern, count, record the alert). The baseline, measured in the same round on the same
bytes, is reading those lines with the follower alone (what the live tail of ``/logging/<name>``
does anyway): the ratio is the monitor's own cost. It also prints how many alerts, ``/alerts``
events and notifications the whole run produced (one alert, however many lines).

Medians of alternating rounds are printed (the machine may be busy); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudisense.config import load_settings  # noqa: E402
from cloudisense.modules.logfiles import FileFollower  # noqa: E402
from cloudisense.node import Node  # noqa: E402


def append(path: Path, lines: int, round_no: int) -> None:
    """``lines`` application log lines, one in four an ERROR."""
    with path.open("a") as fh:
        for i in range(lines):
            level = "ERROR" if i % 4 == 0 else "INFO"
            fh.write(f"2026-12-01 10:00:00,{i % 1000:03d} {level} web: request {round_no}-{i} took 12ms\n")


async def main(lines: int, rounds: int) -> None:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "app.log"
        log.write_text("")
        settings = load_settings(None, environ={}, overrides={
            "data_dir": tmp, "modules": ["pubsub", "audit", "logs", "alerts"], "server": {"port": 0},
            "logs": {"files": {"app": str(log)}},
            "alerts": {"interval": 60, "logs": [{"name": "app-errors", "log": "app", "count": 5, "window": 60}]}})
        node = Node(settings)
        await node.start()
        events: list[dict[str, Any]] = []
        node.pubsub.add_listener(lambda m: events.append(m) if m["topic"] in ("/alerts", "/notification") else None)
        monitor = node.module("alerts").monitor
        state = monitor._logs[0]
        baseline, watched = [], []
        try:
            for r in range(rounds):
                start_offset = log.stat().st_size
                append(log, lines, r)
                # Baseline: the same new bytes read by a follower of its own.
                follower = FileFollower(log)
                follower.open(at_end=False)
                follower._pos = start_offset
                t0 = time.perf_counter()
                got = len(follower.poll())
                baseline.append(time.perf_counter() - t0)
                follower.close()
                t0 = time.perf_counter()
                await monitor._check_log(state)
                watched.append(time.perf_counter() - t0)
                assert got == lines
        finally:
            await node.stop()
        b, w = statistics.median(baseline), statistics.median(watched)
        alerts = {e["data"]["id"] for e in events if e["topic"] == "/alerts"}
        print(f"log lines per round: {lines} (a quarter of them errors), rounds: {rounds}")
        print(f"baseline, reading the new lines: {b * 1e3:.1f} ms ({lines / b / 1e6:.2f} M lines/s)")
        print(f"monitor, read + match + count + record: {w * 1e3:.1f} ms ({lines / w / 1e6:.2f} M lines/s)")
        print(f"monitor / baseline: {w / b:.2f}x")
        print(f"error lines written: {lines // 4 * rounds}; alerts: {len(alerts)}; "
              f"/alerts events: {sum(1 for e in events if e['topic'] == '/alerts')}; "
              f"notifications: {sum(1 for e in events if e['topic'] == '/notification')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.lines, args.rounds))
