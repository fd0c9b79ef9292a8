"""The assistant's own overhead per plan step (model time excluded) and the offline planner's latency.

Usage: ``.venv/bin/python bench/agent.py [--rounds 5] [--plans 40]``

A real node in this process (modules pubsub, system, audit, logs, agent; SQLite in a temp
folder; the offline planner, so no model is ever called). Everything goes through the router
as an in-process client, exactly as the assistant's own calls do.

- **per step**: ``agent_execute`` with 8 steps and with 1 step of the cheap ``list_channels``;
  the difference divided by 7 is what one more step costs, and minus one direct
  ``list_channels`` call (the baseline, measured in the same round) it is the assistant's own
  overhead per step: the policy gate, the executor's bookkeeping, the step's events and its
  memory row, the nested audit record.
- **planner**: ``OfflinePlanner.plan_sync`` over the planner eval's requests (dev set), per request.

Medians of alternating rounds are printed (the machine may be busy); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudisense.config import load_settings  # noqa: E402
from cloudisense.core.clients import InProcessClient  # noqa: E402
from cloudisense.core.roles import Role  # noqa: E402
from cloudisense.node import Node  # noqa: E402

STEP = {"intent": "list_channels"}
LONG, SHORT = 8, 1


async def _timed(client: InProcessClient, intent: str, params: dict, n: int) -> float:
    """Seconds per call of ``intent`` (each must succeed)."""
    began = time.perf_counter()
    for _ in range(n):
        answer = await client.call(intent, params)
        if answer["status"] != "success":
            raise SystemExit(f"{intent} failed: {answer.get('message')}")
    return (time.perf_counter() - began) / n


def _requests() -> list[str]:
    path = ROOT / "eval" / "planner" / "dev.jsonl"
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return texts or ["get system stats and then list the logs"]


async def run(rounds: int, plans: int) -> None:
    """Alternate the measurements ``rounds`` times and print medians."""
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "app.log").write_text("2024-05-01 10:00:00 INFO started\n")
        settings = load_settings(None, environ={}, overrides={
            "data_dir": tmp, "identity": "bench", "modules": ["pubsub", "system", "audit", "logs", "assistant"],
            "server": {"dashboard": False}, "system": {"stats_interval": 60},
            "logs": {"files": {"app": str(Path(tmp) / "app.log")}},
        })
        node = Node(settings)
        await node.start()
        try:
            client = InProcessClient(node.router, "bench", Role.OPERATOR, kind="bench")
            from cloudisense.assistant.offline import OfflinePlanner
            from cloudisense.assistant.plan_cli import planning_context

            planner = OfflinePlanner()
            context = planning_context(node, "operator")
            texts = _requests()
            planner.plan_sync(texts[0], context)  # warm-up (catalogue index)
            await _timed(client, "agent_execute", {"steps": [STEP] * LONG}, 5)
            direct, long_, short, planning = [], [], [], []
            for _ in range(rounds):
                direct.append(await _timed(client, "list_channels", {}, plans * 4))
                long_.append(await _timed(client, "agent_execute", {"steps": [STEP] * LONG}, plans))
                short.append(await _timed(client, "agent_execute", {"steps": [STEP] * SHORT}, plans))
                began = time.perf_counter()
                for text in texts:
                    planner.plan_sync(text, context)
                planning.append((time.perf_counter() - began) / len(texts))
        finally:
            await node.stop()
    d = statistics.median(direct)
    per_step = (statistics.median(long_) - statistics.median(short)) / (LONG - SHORT)
    print(f"Assistant overhead (medians of {rounds} alternating rounds, {os.cpu_count()} CPUs, offline planner, "
          f"no model)")
    print(f"  direct list_channels call (baseline)      {d * 1000:8.3f} ms")
    print(f"  one more plan step (list_channels)        {per_step * 1000:8.3f} ms")
    print(f"  assistant's own overhead per step         {(per_step - d) * 1000:8.3f} ms   (goal < 2 ms)")
    print(f"  agent_execute, {SHORT} step, whole call        {statistics.median(short) * 1000:8.3f} ms")
    print(f"  offline planner, per request ({len(texts)} reqs)  {statistics.median(planning) * 1000:8.3f} ms")


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are printed")
    parser.add_argument("--plans", type=int, default=40, help="agent_execute calls per round and length")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.plans))


if __name__ == "__main__":
    main()
