"""Fault scenarios benchmark: detection, localization, root cause and mitigation on the real demo node.

Each scenario of ``eval/scenarios/{dev,heldout}.jsonl`` (format: ``eval/scenarios/README.md``) runs on
a fresh copy of ``examples/demo`` in a temporary folder (its ports swapped for free ones), served by a
real server on port 0 with real SQLite and the demo's real services. The harness injects the fault
(as an admin, or at the OS level), asks the question over the WebSocket as an operator
(``query_assist``), checks the answer, approves the proposed fix (``confirm_action``) and runs the
scenario's health check. Pure figures, no assertions:

    .venv/bin/python bench/scenarios.py                    # offline (built-in checks), dev and held-out
    .venv/bin/python bench/scenarios.py --set dev --only d-web-stopped-502 --show

Strategies: ``offline`` (the built-in investigation, no model); any model provider the node accepts
(``--strategy local:qwen2.5-coder-0.5b``, ``--strategy openai:gpt-4o-mini``): the built-in
investigation, then the model may read more (ReAct, read tools only) and adds its reading. The
judged likely cause and the proposed fix are the built-in ones either way; with a model the figures
show what it costs in time and tokens. Times are wall-clock seconds from the question to the
answer, on this machine, in this run; tokens are the condensed evidence plus the model's tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloudisense.client import Connection, RpcError, login  # noqa: E402
from cloudisense.config import load_settings  # noqa: E402
from cloudisense.core.roles import Role  # noqa: E402
from cloudisense.node import Node  # noqa: E402
from cloudisense.server.app import Server  # noqa: E402
from cloudisense.store.users import client_credential  # noqa: E402

DEMO = ROOT / "examples" / "demo"
SCENARIOS = ROOT / "eval" / "scenarios"
DEMO_PORTS = (8080, 8081, 8082)
CHECKS = ("detection", "localization", "root_cause", "mitigation")
#: Seconds an answer may take before the scenario counts as missed.
ANSWER_TIMEOUT = 600.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_scenarios(name: str) -> list[dict[str, Any]]:
    """The scenarios of one set (``dev`` or ``heldout``)."""
    lines = (SCENARIOS / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def demo_copy(folder: Path) -> tuple[Path, dict[int, int]]:
    """A copy of the demo in ``folder`` with free ports instead of 8080-8082; returns its config and the ports."""
    copy = folder / "demo"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("var", "__pycache__"))
    ports = {old: free_port() for old in DEMO_PORTS}
    config = copy / "cloudisense.toml"
    text = config.read_text(encoding="utf-8")
    for old, new in ports.items():
        text = re.sub(rf"\b{old}\b", str(new), text)
    config.write_text(text, encoding="utf-8")
    return config, ports


@dataclass
class DemoNode:
    """A started demo copy: the server, its folder, its ports, an admin and an operator connection."""

    server: Server
    node: Node
    url: str
    folder: Path
    ports: dict[int, int]
    passwords: dict[str, str]

    async def connect(self, user: str) -> Connection:
        """A WebSocket connection as ``user`` (``admin`` or ``oper``)."""
        tokens = await login(self.url, user, self.passwords[user])
        return await Connection.open(self.url, tokens["access"]["token"])

    def fill(self, text: str) -> str:
        """``{port:8080}`` -> the copy's port."""
        return re.sub(r"\{port:(\d+)\}", lambda m: str(self.ports[int(m.group(1))]), text)


@asynccontextmanager
async def demo_node(folder: Path, provider: str | None = None) -> AsyncIterator[DemoNode]:
    """A real server on port 0 serving a fresh demo copy; every target up before it is handed out."""
    config, ports = demo_copy(folder)
    overrides: dict[str, Any] = {"server": {"port": 0}, "data_dir": str(folder / "data")}
    if provider:
        overrides["llm"] = {"provider": provider}
    settings = load_settings(config, environ={}, overrides=overrides)
    node = Node(settings)
    server = Server(node)
    port = await server.start(host="127.0.0.1", port=0)
    # No default passwords: fresh random ones for this run only.
    passwords = {"admin": secrets.token_urlsafe(12), "oper": secrets.token_urlsafe(12)}
    for name, role in (("admin", Role.ADMIN), ("oper", Role.OPERATOR)):
        await node.users.add(name, client_credential(passwords[name]), role)
    demo = DemoNode(server, node, f"http://127.0.0.1:{port}", config.parent, ports, passwords)
    try:
        await wait_healthy(demo)
        yield demo
    finally:
        await server.stop()


async def wait_healthy(demo: DemoNode, timeout: float = 30) -> None:
    """Until every target runs and every health URL answers."""
    conn = await demo.connect("admin")
    try:
        deadline = time.monotonic() + timeout
        while True:
            listed = (await conn.call("list_targets", {"details": True}))["targets"]
            if all(t["state"] == "running" and t["health"] != "unhealthy" for t in listed):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"demo did not come up: {listed}")
            await asyncio.sleep(0.2)
    finally:
        conn.close()


# -- faults ---------------------------------------------------------------------------

def _get(url: str, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return resp.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
    except (urllib.error.URLError, OSError):
        return 0, time.monotonic() - started


async def _pid(conn: Connection, target: str) -> int:
    status = await conn.call("target_status", {"name": target})
    if not status.get("pid"):
        raise RuntimeError(f"{target} has no process to signal: {status}")
    return int(status["pid"])


def _service(demo: DemoNode, target: str) -> str:
    """The fault-knob name of a target: its script's stem (``services/kv.py`` -> ``kv``)."""
    from cloudisense.modules.target_config import TargetsSettings

    for item in demo.node.settings.section("targets", TargetsSettings).root[target].command:
        if str(item).endswith(".py"):
            return Path(str(item)).stem
    raise RuntimeError(f"{target} is not a demo service")


async def inject(demo: DemoNode, steps: list[dict[str, Any]]) -> None:
    """Break the demo as ``steps`` say (see eval/scenarios/README.md)."""
    conn = await demo.connect("admin")
    try:
        for step in steps:
            if "stop" in step:
                await conn.call("stop_target", {"name": step["stop"]})
            elif "restart" in step:
                try:
                    await conn.call("restart_target", {"name": step["restart"]}, timeout=60)
                except RpcError:
                    pass  # a broken setting makes the restart fail: that is the fault
            elif "kill" in step:
                os.kill(await _pid(conn, step["kill"]), signal.SIGKILL)
                await _until(lambda name=step["kill"]: _state(conn, name, "crashed"), 10)
            elif "fault" in step:
                knob = {k: v for k, v in step.items() if k != "fault"}
                faults = demo.folder / "var" / "faults"
                faults.mkdir(parents=True, exist_ok=True)
                (faults / f"{_service(demo, step['fault'])}.json").write_text(json.dumps(knob), encoding="utf-8")
                os.kill(await _pid(conn, step["fault"]), signal.SIGUSR1)
                await asyncio.sleep(0.3)
            elif "write" in step:
                (demo.folder / step["write"]).write_text(step["text"], encoding="utf-8")
            elif "fill" in step:
                folder = demo.folder / step["fill"]
                folder.mkdir(parents=True, exist_ok=True)
                for name in step["names"]:
                    with open(folder / name, "wb") as f:
                        f.truncate(int(step["mb"] * 1e6))
                        f.write(b"old rotated log\n")
            elif "http" in step:
                url = demo.fill(step["http"])
                timeout = float(step.get("timeout", 5))
                await asyncio.gather(*(asyncio.to_thread(_get, url, timeout) for _ in range(int(step.get("times", 1)))))
            elif "wait_log" in step:
                path = Path(demo.node.settings.section("logs", _logs_model()).files[step["wait_log"]])
                text = step["contains"]
                if not await _until(lambda path=path, text=text: path.exists()
                                    and text in path.read_text(errors="replace"),
                                    float(step.get("timeout", 20))):
                    raise RuntimeError(f"the fault did not show: {step['wait_log']} never said {step['contains']!r}")
            else:
                raise ValueError(f"unknown inject step {step}")
    finally:
        conn.close()


def _logs_model() -> Any:
    from cloudisense.modules.logs import LogsSettings

    return LogsSettings


async def _state(conn: Connection, target: str, state: str) -> bool:
    return (await conn.call("target_status", {"name": target}))["state"] == state


async def _until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(0.2)
    return False


async def healthy(demo: DemoNode, checks: list[dict[str, Any]]) -> bool:
    """Whether every health check of a scenario passes now."""
    conn = await demo.connect("admin")
    try:
        for check in checks:
            if "http" in check:
                within = float(check.get("within", 2))
                status, took = await asyncio.to_thread(_get, demo.fill(check["http"]), within + 1)
                if status != check.get("status", 200) or took > within:
                    return False
            elif "kv" in check:
                host, _, port = demo.fill(check["kv"]).rpartition(":")
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
                    writer.write(b"PING\r\n")
                    line = await asyncio.wait_for(reader.readline(), 2)
                    writer.close()
                except (OSError, TimeoutError):
                    return False
                if line.strip() != b"+PONG":
                    return False
            elif "running" in check:
                if not await _state(conn, check["running"], "running"):
                    return False
                await asyncio.sleep(float(check.get("for", 0)))
                if not await _state(conn, check["running"], "running"):
                    return False
            elif "folder_under" in check:
                folder = demo.folder / check["folder_under"]
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                if size / 1e6 >= float(check["mb"]):
                    return False
            else:
                raise ValueError(f"unknown health check {check}")
        return True
    finally:
        conn.close()


# -- one scenario -----------------------------------------------------------------------

@dataclass
class Outcome:
    """What one scenario scored."""

    id: str
    checks: dict[str, bool]
    seconds: float
    tokens: int
    answer: str = ""
    events: list[str] = field(default_factory=list)


def likely_cause(answer: str) -> str:
    """The answer's likely-cause sentence (what localization and root cause are judged on)."""
    match = re.search(r"^Likely cause: (.*)$", answer, re.MULTILINE)
    return match.group(1) if match else ""


def judge(scenario: dict[str, Any], answer: str) -> dict[str, bool]:
    """Detection, localization and root cause from the answer's words (mitigation is run, not read)."""
    expect = scenario["expect"]
    cause = likely_cause(answer)
    return {
        "detection": bool(cause),
        "localization": bool(re.search(rf"(?<![\w-]){re.escape(expect['component'])}(?![\w-])", cause)),
        "root_cause": bool(re.search(expect["cause"], cause, re.IGNORECASE)),
    }


async def run_scenario(scenario: dict[str, Any], folder: Path, provider: str | None = None) -> Outcome:
    """Inject, ask, judge, approve the fix, check health."""
    async with demo_node(folder, provider) as demo:
        await inject(demo, scenario["inject"])
        conn = await demo.connect("oper")
        try:
            started = time.monotonic()
            try:
                data = await conn.call("query_assist", {"query": scenario["question"]}, timeout=ANSWER_TIMEOUT)
            except TimeoutError:  # counted as a miss on every check, at the time limit
                return Outcome(scenario["id"], dict.fromkeys(CHECKS, False), ANSWER_TIMEOUT, 0,
                               f"no answer within {ANSWER_TIMEOUT:.0f} s")
            seconds = time.monotonic() - started
            answer = str(data.get("answer", ""))
            checks = judge(scenario, answer)
            events = []
            while not conn.events.empty():
                events.append(conn.events.get_nowait().get("name", "?"))
            fixed = False
            approval = data.get("approval") or {}
            fix_ok = bool(re.fullmatch(scenario["expect"]["fix"], str(approval.get("intent", ""))))
            if data.get("outcome") == "awaiting_approval" and approval.get("approval_id") and fix_ok:
                await conn.call("confirm_action", {"approval_id": approval["approval_id"], "approve": True},
                                timeout=120)
                fixed = await _until(lambda: healthy(demo, scenario["health"]), 30)
            checks["mitigation"] = fixed
            usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
            tokens = int((data.get("diagnosis") or {}).get("evidence_tokens") or 0) + \
                int(usage.get("input", 0)) + int(usage.get("output", 0))
        finally:
            conn.close()
    return Outcome(scenario["id"], checks, seconds, tokens, answer, events)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered) + 0.5) - 1)] if ordered else 0.0


def report(name: str, strategy: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """The four rates, median and p95 seconds, and tokens per scenario of one set."""
    n = len(outcomes)
    rates = {c: sum(o.checks.get(c, False) for o in outcomes) / n for c in CHECKS} if n else {}
    times = [o.seconds for o in outcomes]
    return {"set": name, "strategy": strategy, "scenarios": n, **rates,
            "median_s": statistics.median(times) if times else 0.0, "p95_s": p95(times),
            "tokens": statistics.mean(o.tokens for o in outcomes) if outcomes else 0.0}


def print_table(rows: list[dict[str, Any]]) -> None:
    """The figures as an aligned table."""
    head = f"{'set':8} {'strategy':26} {'n':>3} {'detect':>7} {'locate':>7} {'cause':>7} {'mitig':>7} " \
           f"{'median s':>9} {'p95 s':>7} {'tokens':>7}"
    print(head)
    for r in rows:
        print(f"{r['set']:8} {r['strategy']:26} {r['scenarios']:>3} {r['detection']:>7.0%} {r['localization']:>7.0%} "
              f"{r['root_cause']:>7.0%} {r['mitigation']:>7.0%} {r['median_s']:>9.1f} {r['p95_s']:>7.1f} "
              f"{r['tokens']:>7.0f}")


def pulled(provider: str) -> str:
    """``local:<catalogue name>`` as the file ``cloudisense model pull`` put in the user's data dir.

    Each scenario's node has a fresh data dir, so a model pulled for the user is named by its path.
    """
    from cloudisense.config import _default_data_dir
    from cloudisense.llm import models

    kind, _, name = provider.partition(":")
    if kind != "local" or name not in models.CATALOGUE:
        return provider
    return f"local:{models.verified_path(_default_data_dir(), name)}"


async def main() -> None:
    """Run the sets and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("dev", "heldout", "both"), default="both")
    ap.add_argument("--only", action="append", default=[], help="scenario id (repeatable)")
    ap.add_argument("--show", action="store_true", help="print each answer")
    ap.add_argument("--strategy", action="append", default=[],
                    help="offline (default) or a provider such as local:qwen2.5-coder-0.5b (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    logging.getLogger("cloudisense.assistant").setLevel(logging.WARNING)
    rows = []
    for strategy in args.strategy or ["offline"]:
        provider = None if strategy == "offline" else pulled(strategy)
        for name in (("dev", "heldout") if args.set == "both" else (args.set,)):
            outcomes = []
            for scenario in load_scenarios(name):
                if args.only and scenario["id"] not in args.only:
                    continue
                with tempfile.TemporaryDirectory(prefix="scenario-") as tmp:
                    outcome = await run_scenario(scenario, Path(tmp), provider)
                outcomes.append(outcome)
                marks = " ".join(f"{c}={'yes' if outcome.checks.get(c) else 'no'}" for c in CHECKS)
                print(f"{name:8} {strategy:10} {outcome.id:24} {marks}  {outcome.seconds:.1f}s", flush=True)
                if args.show:
                    print("    " + outcome.answer.replace("\n", "\n    "))
            if outcomes:
                rows.append(report(name, strategy, outcomes))
    print()
    print_table(rows)


if __name__ == "__main__":
    asyncio.run(main())
