"""RPC round trips per second over the WebSocket, next to a raw Tornado echo server.

Usage: ``.venv/bin/python bench/rpc.py [--seconds 5] [--clients 100] [--rounds 3]``

Both servers run in their own process (started from this file with ``--serve``), the load
generator in this one, so neither shares an event loop with the load. The same client code
sends the same frame to both:

    {"type": "rpc", "requestid": "<21 chars>", "intent": "list_channels", "params": {}}

- echo: a bare Tornado ``WebSocketHandler`` that writes back what it received.
- cloudisense: the real node (modules pubsub, system, audit); ``list_channels`` is a cheap
  ``read`` intent, so the figure is the cost of the RPC path itself: envelope parsing, intent
  lookup, params validation (pydantic), role check, the handler, the audit record made durable
  before the answer (one line appended to the audit journal), metrics, and the JSON response.

"1 client" is one connection sending a request, waiting for its answer, and so on.
"N clients" is N connections doing that at once. Prints a table; asserts nothing.

``--before DIR`` also measures the node from another source tree in the same alternating
rounds (an older version: ``git archive <commit> src | tar -x -C DIR``, then ``--before DIR/src``).

``--breakdown`` prints where a request's time goes instead: each step of the request path
timed alone in this process (CPU µs per request, best of several repeats, so other load on
the machine inflates it least), the whole router path with no socket at 1 and 100
concurrent callers, and the server process's CPU per round trip over the socket (from
/proc, Linux) for the echo server and the node, whose difference is the socket side's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

INTENT = "list_channels"
USER, PASSWORD = "bench", "bench-password-1"


# -- servers (run in a child process) --------------------------------------------------------


async def serve_echo() -> None:
    """A raw Tornado WebSocket echo server with the same WebSocket settings as the node."""
    from tornado.web import Application
    from tornado.websocket import WebSocketHandler

    class Echo(WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message)

    app = Application([(r"/ws", Echo)], websocket_max_message_size=1_048_576)
    server = app.listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()


async def serve_node(data_dir: str) -> None:
    """The real CloudiSENSE node with the core modules and one user."""
    import logging

    from cloudisense.config import load_settings
    from cloudisense.core.roles import Role
    from cloudisense.node import Node
    from cloudisense.server.app import Server
    from cloudisense.store.users import client_credential

    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(None, environ={}, overrides={
        "data_dir": data_dir, "identity": "bench", "modules": ["pubsub", "system", "audit"],
        "server": {"port": 0, "dashboard": False}, "system": {"stats_interval": 60},
    })
    node = Node(settings)
    server = Server(node)
    port = await server.start(host="127.0.0.1", port=0)
    await node.users.add(USER, client_credential(PASSWORD), Role.VIEWER)
    token = node.tokens.issue(USER, Role.VIEWER, "access")["token"]
    print(json.dumps({"port": port, "token": token}), flush=True)
    await asyncio.Event().wait()


# -- load generator ------------------------------------------------------------------------


def start(kind: str, data_dir: str, source: str | None = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a server process (``source``: import cloudisense from there); returns it and what it printed."""
    env = {**os.environ, "PYTHONPATH": source} if source else None
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "node" if kind == "before" else kind,
                             "--data-dir", data_dir], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit(f"the {kind} server did not start")
    return proc, json.loads(line)


def frame(i: int) -> str:
    """The request frame (same size for every i)."""
    return json.dumps({"type": "rpc", "requestid": f"bench-{i:015d}", "intent": INTENT, "params": {}})


async def one_client(ws: WebSocketClientConnection, stop_at: float, counts: list[int], slot: int,
                     check: bool) -> None:
    """Round trips on one connection until ``stop_at``."""
    i = 0
    while time.perf_counter() < stop_at:
        await ws.write_message(frame(i))
        reply = await ws.read_message()
        if reply is None:
            raise ConnectionError("server closed the connection")
        if check and i == 0:  # make sure we measure successful RPCs, not errors
            msg = json.loads(reply)
            if msg.get("status") != "success":
                raise SystemExit(f"RPC failed: {msg}")
        counts[slot] += 1
        i += 1


async def measure(url: str, clients: int, seconds: float, check: bool) -> float:
    """Round trips per second with ``clients`` connections, after a short warm-up."""
    conns = [await websocket_connect(url) for _ in range(clients)]
    counts = [0] * clients
    await asyncio.gather(*(one_client(ws, time.perf_counter() + 0.5, counts, n, check)
                           for n, ws in enumerate(conns)))
    counts = [0] * clients
    began = time.perf_counter()
    await asyncio.gather(*(one_client(ws, began + seconds, counts, n, check) for n, ws in enumerate(conns)))
    elapsed = time.perf_counter() - began
    for ws in conns:
        ws.close()
    return sum(counts) / elapsed


async def run(seconds: float, many: int, rounds: int, before: str | None = None) -> None:
    """Measure echo and node in alternating rounds (so both see the same machine load), print medians."""
    import statistics

    kinds = ["echo", "node"] + (["before"] if before else [])
    samples: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {kind: start(kind, str(Path(tmp) / kind), before if kind == "before" else None) for kind in kinds}
        try:
            urls = {}
            for kind, (_, info) in servers.items():
                urls[kind] = f"ws://127.0.0.1:{info['port']}/ws" + (f"?token={info['token']}" if kind != "echo" else "")
            for _ in range(rounds):
                for clients in (1, many):
                    for kind in kinds:
                        rate = await measure(urls[kind], clients, seconds, check=kind != "echo")
                        samples.setdefault((kind, clients), []).append(rate)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    print(f"RPC round trips per second (median of {rounds} alternating rounds of {seconds:g} s, "
          f"intent {INTENT}, {os.cpu_count()} CPUs)")
    extra = f" | {'before':>8} | {'ratio':>6}" if before else ""
    print(f"{'clients':>8} | {'tornado echo':>12} | {'cloudisense':>12} | {'ratio':>6} | {'per round':>17}{extra}")
    print("-" * (69 + len(extra)))
    for clients in (1, many):
        echo = statistics.median(samples[("echo", clients)])
        node = statistics.median(samples[("node", clients)])
        line = (f"{clients:>8} | {echo:>12,.0f} | {node:>12,.0f} | {node / echo:>6.2f} | "
                f"{_per_round(samples, 'node', clients):>17}")
        if before:
            old = statistics.median(samples[("before", clients)])
            line += f" | {old:>8,.0f} | {old / echo:>6.2f}"
        print(line)
    print("per round: the node's rate over the echo's in each round (measured back to back), median and "
          "quartiles;\nthe machine's own speed drifts between rounds, so a spread wider than a difference "
          "means no difference was measured")


def _per_round(samples: dict[tuple[str, int], list[float]], kind: str, clients: int) -> str:
    """Median (quartiles) of the per-round ratios of ``kind`` to the echo server."""
    import statistics

    ratios = [a / b for a, b in zip(samples[(kind, clients)], samples[("echo", clients)], strict=True)]
    if len(ratios) < 2:
        return f"{ratios[0]:.2f}"
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"{statistics.median(ratios):.2f} ({low:.2f}-{high:.2f})"


# -- breakdown ------------------------------------------------------------------------------


def _best_us(fn: Any, number: int = 20_000, repeat: int = 5) -> float:
    """CPU µs per call of ``fn``, best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - began) / number * 1e6)
    return best


async def _best_async_us(make: Any, number: int = 20_000, repeat: int = 5) -> float:
    """CPU µs per ``await make()``, best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        for _ in range(number):
            await make()
        best = min(best, (time.process_time() - began) / number * 1e6)
    return best


def _server_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _socket_cpu(url: str, clients: int, seconds: float, pid: int, check: bool) -> float:
    """Server CPU µs per round trip with ``clients`` connections."""
    conns = [await websocket_connect(url) for _ in range(clients)]
    counts = [0] * clients
    await asyncio.gather(*(one_client(ws, time.perf_counter() + 0.5, counts, n, check) for n, ws in enumerate(conns)))
    counts = [0] * clients
    cpu = _server_cpu(pid)
    began = time.perf_counter()
    await asyncio.gather(*(one_client(ws, began + seconds, counts, n, check) for n, ws in enumerate(conns)))
    used = _server_cpu(pid) - cpu
    for ws in conns:
        ws.close()
    return used / sum(counts) * 1e6


async def breakdown(seconds: float, many: int, rounds: int) -> None:
    """Print where the time of one ``list_channels`` request goes, in CPU µs."""
    from cloudisense.config import load_settings
    from cloudisense.core import protocol
    from cloudisense.core.audit import AuditRecord
    from cloudisense.core.clients import Client
    from cloudisense.core.context import ActionContext
    from cloudisense.core.intents import NoParams
    from cloudisense.core.roles import Role
    from cloudisense.node import Node
    from cloudisense.store.audit import _INSERT, _move_by_line, _move_items, _move_whole

    class Sink(Client):
        """A client that encodes its answers, as the WebSocket one does, and keeps nothing."""

        kind = "websocket"

        async def send(self, message: dict[str, Any]) -> None:
            protocol.dumps_bytes(message)

        def push_event(self, event: dict[str, Any]) -> bool:
            return True

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, environ={}, overrides={
            "data_dir": tmp, "identity": "bench", "modules": ["pubsub", "system", "audit"],
            "server": {"port": 0, "dashboard": False}, "system": {"stats_interval": 60},
        })
        node = Node(settings)
        await node.start()
        try:
            text = frame(0)
            decoded = protocol.decode_frame(text)
            request = protocol.parse_rpc(decoded)
            intent = node.registry.get(INTENT)
            client = Sink(USER, Role.VIEWER)
            data = {"topics": node.pubsub.topics(), "subscribed": node.pubsub.subscriptions(client)}
            ctx = ActionContext(node, client, request.requestid, INTENT)
            router = node.router
            task = asyncio.current_task()
            assert task is not None

            def record() -> AuditRecord:
                return AuditRecord(user=USER, role="viewer", client_kind="websocket", client_id=client.id,
                                   requestid=request.requestid, intent=INTENT, params={}, outcome="success",
                                   code=200, message=None, duration_ms=0.1)

            def limit() -> None:
                router._limits.finish(router._limits.start(task, 30.0, asyncio.get_running_loop()))

            def permit() -> None:
                if not router._slots.try_take():
                    raise RuntimeError("no free permit")
                router._slots.give()

            semaphore = asyncio.Semaphore(16)

            async def asyncio_semaphore() -> None:
                async with semaphore:
                    pass

            async def asyncio_timeout() -> None:
                async with asyncio.timeout(30.0):
                    pass

            rows += [
                ("decode the frame (orjson)", _best_us(lambda: protocol.decode_frame(text))),
                ("check the envelope (parse_rpc)", _best_us(lambda: protocol.parse_rpc(decoded))),
                ("find the intent", _best_us(lambda: node.registry.get(INTENT))),
                ("params validated and dumped (now skipped for NoParams)",
                 _best_us(lambda: NoParams.model_validate({}).model_dump(mode="json"))),
                ("run list_channels' handler", await _best_async_us(lambda: intent.handler(NoParams(), ctx))),
                ("time limit (router.TimeLimits)", _best_us(limit)),
                ("  the same with asyncio.timeout (before)", await _best_async_us(asyncio_timeout)),
                ("node-wide permit (router.Permits)", _best_us(permit)),
                ("  the same with asyncio.Semaphore (before)", await _best_async_us(asyncio_semaphore)),
                ("result to JSON-ready (to_jsonable)", _best_us(lambda: protocol.to_jsonable(data))),
                ("audit record, encoded and appended to the journal (one write)",
                 _best_us(lambda: node.audit._insert(record()))),
                ("metrics (request_done)",
                 _best_us(lambda: node.metrics.request_done(INTENT, "success", 200, 1e-3))),
                ("answer built and encoded",
                 _best_us(lambda: protocol.dumps_bytes(protocol.success(request.requestid, data)))),
            ]
            # What the journal replaces: the row committed to SQLite on the loop (WAL, synchronous=NORMAL).
            conn = sqlite3.connect(node.db.path, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            values = (None, time.time(), USER, "viewer", "websocket", client.id, request.requestid, None, INTENT,
                      "{}", "success", 200, None, 0.1, None, None)

            def hundred_rows() -> None:
                conn.execute("BEGIN IMMEDIATE")
                for _ in range(100):
                    conn.execute(_INSERT, values)
                conn.execute("COMMIT")

            rows += [
                ("  the same as a SQLite commit of 1 row (before, alone)",
                 _best_us(lambda: conn.execute(_INSERT, values), number=2000)),
                ("  the same, 100 rows per commit, per row (before, load)",
                 _best_us(hundred_rows, number=40) / 100),
            ]
            # Off the loop: the writer thread moving a closed journal file into the table (the same
            # rows again each time: the move replaces them).
            await node.audit._move_written()
            moved = 900  # fewer than MOVE_EVERY: the file stays open until moved here
            for _ in range(moved):
                node.audit._insert(record())
            journal = Path(tmp) / "bench.jsonl"
            journal.write_bytes((node.audit._folder / f"{node.audit._number}.jsonl").read_bytes())
            items = list(node.audit._items)
            await node.audit._move_written()

            def move(how: Any) -> None:
                conn.execute("BEGIN IMMEDIATE")
                how()
                conn.execute("COMMIT")

            rows += [
                ("journal moved into the table, per row (writer thread)",
                 _best_us(lambda: move(lambda: _move_items(conn, items)), number=5) / moved),
                ("  the same, read back from the file (after a crash)",
                 _best_us(lambda: move(lambda: _move_whole(conn, journal.read_bytes())), number=5) / moved),
                ("  the same, a statement per row (before)",
                 _best_us(lambda: move(lambda: _move_by_line(conn, journal)), number=5) / moved),
            ]
            journal.unlink()
            conn.close()
            for concurrency in (1, many):
                callers = [Sink(USER, Role.VIEWER) for _ in range(concurrency)]
                per_caller = max(1, 4000 // concurrency)

                async def calls(caller: Client, n: int = per_caller) -> None:
                    for _ in range(n):
                        await router.handle_messages(text, caller)

                async def everyone(callers: list[Client] = callers) -> None:
                    await asyncio.gather(*(calls(c) for c in callers))

                total = await _best_async_us(everyone, number=1, repeat=5) / (per_caller * concurrency)
                rows.append((f"whole router path, no socket, {concurrency} caller(s)", total))
        finally:
            await node.stop()
        servers = {kind: start(kind, str(Path(tmp) / kind)) for kind in ("echo", "node")}
        try:
            cpu: dict[tuple[str, int], list[float]] = {}
            for _ in range(rounds):
                for clients in (1, many):
                    for kind, (proc, info) in servers.items():
                        token = f"?token={info['token']}" if kind != "echo" else ""
                        url = f"ws://127.0.0.1:{info['port']}/ws{token}"
                        cpu.setdefault((kind, clients), []).append(
                            await _socket_cpu(url, clients, seconds, proc.pid, kind != "echo"))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(10)
    for clients in (1, many):
        echo = min(cpu[("echo", clients)])
        node_cpu = min(cpu[("node", clients)])
        rows.append((f"server CPU per round trip, {clients} client(s): echo", echo))
        rows.append((f"server CPU per round trip, {clients} client(s): node", node_cpu))
        rows.append(("  node minus echo: the RPC path's share", node_cpu - echo))
    print(f"Where a {INTENT} request's time goes (CPU µs per request, best of repeats; {os.cpu_count()} CPUs)")
    for name, us in rows:
        print(f"{name:<62} {us:8.1f}")


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients of the second figure")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are printed")
    parser.add_argument("--before", help="also measure the node imported from this source folder (an older version)")
    parser.add_argument("--breakdown", action="store_true", help="print where a request's time goes instead")
    parser.add_argument("--serve", choices=["echo", "node"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "echo":
        asyncio.run(serve_echo())
    elif args.serve == "node":
        asyncio.run(serve_node(args.data_dir))
    elif args.breakdown:
        asyncio.run(breakdown(args.seconds, args.clients, args.rounds))
    else:
        asyncio.run(run(args.seconds, args.clients, args.rounds, args.before))


if __name__ == "__main__":
    main()
