"""End-to-end tests of the logs module over the WebSocket against the real server, on real files."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from cloudisense.client import Connection
from tests.conftest import Running, error_of, make_settings, start_server

DEMO_SCRIPTS = Path(__file__).resolve().parents[2] / "examples" / "demo" / "scripts"
MODULES = ["pubsub", "audit", "logs"]


def stamp(minutes_ago: float, fmt: str) -> str:
    """A local-time stamp ``minutes_ago`` in one of the recognised formats."""
    t = datetime.fromtimestamp(time.time() - minutes_ago * 60)
    if fmt == "iso":
        return t.strftime("%Y-%m-%dT%H:%M:%S")
    if fmt == "pylog":
        return t.strftime("%Y-%m-%d %H:%M:%S") + ",123"
    if fmt == "syslog":
        return t.strftime("%b ") + f"{t.day:2d}" + t.strftime(" %H:%M:%S")
    return "[" + t.astimezone().strftime("%d/%b/%Y:%H:%M:%S %z") + "]"


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    """A log folder with an app log, an nginx access log, a syslog and two symlinks."""
    d = tmp_path / "var" / "log"
    d.mkdir(parents=True)
    (d / "app.log").write_text(
        f"{stamp(120, 'pylog')} INFO started\n"
        f"{stamp(90, 'pylog')} ERROR old failure\n"
        "Traceback (most recent call last):\n"
        "  ValueError: old error detail\n"
        f"{stamp(10, 'pylog')} WARNING disk at 85%\n"
        f"{stamp(5, 'pylog')} ERROR payment timeout\n"
        "  error detail of the recent failure\n"
        f"{stamp(1, 'pylog')} INFO all good\n")
    (d / "nginx-access.log").write_text(
        f'10.0.0.1 - - {stamp(200, "clf")} "GET / HTTP/1.1" 200 12 "-" "curl"\n'
        f'10.0.0.2 - - {stamp(3, "clf")} "GET /pay HTTP/1.1" 502 0 "-" "curl"\n')
    (d / "syslog").write_text(
        f"{stamp(300, 'syslog')} host kernel: Out of memory: Killed process 12 (error)\n"
        f"{stamp(2, 'syslog')} host cron[5]: job done\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    (d / "escape.log").symlink_to(secret)  # leads out of the log folder: refused
    (d / "current").mkdir()
    (d / "current" / "svc.log").write_text("inside line\n")
    (d / "svc.log").symlink_to(d / "current" / "svc.log")  # stays inside: allowed
    return d


def files(d: Path) -> dict[str, str]:
    """The logs configuration of ``logdir``."""
    return {"app": str(d / "app.log"), "nginx-access": str(d / "nginx-access.log"), "syslog": str(d / "syslog"),
            "escape": str(d / "escape.log"), "svc": str(d / "svc.log"), "missing": str(d / "missing.log")}


@pytest.fixture
async def node(tmp_path: Path, logdir: Path) -> AsyncIterator[Running]:
    """A real server with the logs module and a fast poll."""
    settings = make_settings(tmp_path, modules=MODULES, logs={"files": files(logdir), "poll_interval": 0.05})
    r = await start_server(settings)
    yield r
    await r.server.stop()


async def collect(conn: Connection, topic: str, count: int, timeout: float = 15) -> list[str]:
    """Lines of ``log_line`` events on ``topic`` until ``count`` arrived."""
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(lines) < count:
        ev = await conn.next_event(topic, timeout=max(0.05, deadline - loop.time()))
        # The existing client's event (data_generated, {name, data: text}); ours rides in meta.event and lines.
        assert ev["name"] == "data_generated" and ev["meta"]["event"] == "log_line"
        assert ev["data"]["name"] == topic.rsplit("/", 1)[1]
        assert ev["data"]["data"] == "".join(f"{line}\n" for line in ev["data"]["lines"])
        lines.extend(ev["data"]["lines"])
    return lines


def append(path: Path, lines: list[str]) -> None:
    """Append lines the way a logger does (open, write, close)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


async def test_list_logs(node: Running, logdir: Path) -> None:
    conn = await node.connect("viewer")
    plain = await conn.call("list_logs")  # the existing client's shape: [{name, topic}]
    assert plain == [{"name": n, "topic": f"/logging/{n}"} for n in sorted(["app", "nginx-access", "syslog", "escape",
                                                                               "svc", "missing"])]
    data = await conn.call("list_logs", {"details": True})
    by_name = {entry["name"]: entry for entry in data["logs"]}
    assert by_name["app"]["topic"] == "/logging/app"
    assert set(by_name) == {"app", "nginx-access", "syslog", "escape", "svc", "missing"}
    assert by_name["app"]["size"] == (logdir / "app.log").stat().st_size
    assert by_name["app"]["exists"] and by_name["app"]["mtime"] and by_name["app"]["allowed"]
    assert by_name["missing"]["exists"] is False
    assert by_name["escape"]["allowed"] is False and by_name["svc"]["allowed"] is True
    entities = node.node.entities()["log"]
    assert "app" in entities and "nginx-access" in entities
    conn.close()


async def test_read_log_tail_and_grep(node: Running) -> None:
    conn = await node.connect("viewer")
    data = await conn.call("read_log", {"name": "app", "lines": 2})
    assert data["lines"][-1].endswith("INFO all good") and len(data["lines"]) == 2 and data["more"] is True
    data = await conn.call("intent_read_log", {"name": "app", "lines": 50, "grep": "error"})
    assert [line.split(" ", 3)[-1] for line in data["lines"][:1]] == ["old failure"]
    assert all("error" in line.lower() for line in data["lines"]) and len(data["lines"]) == 4
    data = await conn.call("read_log", {"name": "app", "lines": 1, "grep": "ERROR p"})
    assert data["lines"][0].endswith("ERROR payment timeout")
    data = await conn.call("read_log", {"name": "app", "grep": r"error (old|payment)", "regex": True})
    assert len(data["lines"]) == 2
    data = await conn.call("read_log", {"name": "svc"})  # a symlink that stays inside its folder
    assert data["lines"] == ["inside line"]
    conn.close()


async def test_read_log_refusals(node: Running) -> None:
    conn = await node.connect("admin")
    err = await error_of(conn, "read_log", {"name": "nope"})
    assert err.code == 404 and "app" in err.message and "nginx-access" in err.message
    for bad in ("../secret.txt", "/etc/passwd", "app/../../secret.txt", "..", "app\\x"):
        err = await error_of(conn, "read_log", {"name": bad})
        assert err.code == 400 and "not a path" in err.message, bad
    err = await error_of(conn, "read_log", {"name": "escape"})
    assert err.code == 403 and "outside" in err.message and "secret" not in err.message.split("outside")[-1]
    err = await error_of(conn, "read_log", {"name": "missing"})
    assert err.code == 404
    for lines in (0, 5001):
        assert (await error_of(conn, "read_log", {"name": "app", "lines": lines})).code == 400
    err = await error_of(conn, "read_log", {"name": "app", "grep": "(a+)+$", "regex": True})
    assert err.code == 400 and "nested quantifiers" in err.message
    err = await error_of(conn, "read_log", {"name": "app", "grep": "([", "regex": True})
    assert err.code == 400 and "invalid regex" in err.message
    err = await error_of(conn, "read_log", {"name": "app", "path": "/etc/passwd"})
    assert err.code == 400
    conn.close()


async def test_search_logs_all_and_window(node: Running) -> None:
    conn = await node.connect("viewer")
    data = await conn.call("search_logs", {"pattern": "error"})
    found = {(m["name"], m["line"].strip()) for m in data["matches"]}
    assert any(n == "syslog" and "Out of memory" in line for n, line in found)
    assert any(n == "app" and "old error detail" in line for n, line in found)
    assert len(found) == 5
    assert data["truncated"] is False and "escape" in data["skipped"] and "missing" in data["skipped"]
    assert all(n != "escape" for n, _ in found)
    stamps = [m["timestamp"] for m in data["matches"] if m["timestamp"]]
    assert stamps == sorted(stamps)  # oldest first across logs

    # Last hour: the recent ERROR and its continuation line (which inherits its stamp) only.
    data = await conn.call("search_logs", {"pattern": "error", "name": "app", "since_minutes": 60})
    lines = [m["line"] for m in data["matches"]]
    assert lines[0].endswith("ERROR payment timeout") and lines[1] == "  error detail of the recent failure"
    assert len(data["matches"]) == 2 and data["matches"][0]["timestamp"] == data["matches"][1]["timestamp"]

    data = await conn.call("search_logs", {"pattern": "GET", "name": "nginx-access", "since_minutes": 30})
    assert len(data["matches"]) == 1 and " 502 " in data["matches"][0]["line"]
    data = await conn.call("search_logs", {"pattern": "out of memory", "since_minutes": 60})
    assert data["matches"] == []
    data = await conn.call("search_logs", {"pattern": "out of memory"})
    assert [m["name"] for m in data["matches"]] == ["syslog"]

    data = await conn.call("search_logs", {"pattern": "o", "name": "app", "limit": 2})
    assert data["truncated"] is True and len(data["matches"]) == 2
    assert data["matches"][-1]["line"].endswith("INFO all good")  # the newest are kept

    err = await error_of(conn, "search_logs", {"pattern": "x", "name": "../secret.txt"})
    assert err.code == 400
    err = await error_of(conn, "search_logs", {"pattern": "x", "name": "escape"})
    assert err.code == 403
    assert (await error_of(conn, "search_logs", {"pattern": "x", "since_minutes": -1})).code == 400
    conn.close()


async def test_large_file_read_from_the_end(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    filler = ("2020-01-01T00:00:00 INFO " + "x" * 100 + "\n") * 1000
    with open(big, "w") as f:
        for _ in range(300):  # about 38 MB
            f.write(filler)
        f.write(f"{stamp(2, 'iso')} ERROR recent one\n{stamp(1, 'iso')} INFO the last line\n")
    assert big.stat().st_size > 30_000_000
    r = await start_server(make_settings(tmp_path, modules=MODULES, logs={"files": {"big": str(big)}}))
    try:
        conn = await r.connect("viewer")
        data = await conn.call("read_log", {"name": "big", "lines": 3})
        assert data["lines"][-1].endswith("the last line") and data["lines"][0].startswith("2020-01-01")
        data = await conn.call("search_logs", {"pattern": "error", "since_minutes": 10})
        assert [m["line"].split(" ", 1)[1] for m in data["matches"]] == ["ERROR recent one"]
        data = await conn.call("read_log", {"name": "big", "lines": 1, "grep": "recent"})
        assert data["lines"][0].endswith("ERROR recent one")
        conn.close()
    finally:
        await r.server.stop()


async def test_live_tail_appended_lines(node: Running, logdir: Path) -> None:
    conn = await node.connect("viewer")
    assert (await conn.call("subscribe_channel", {"topic": "/logging/app"}))["subscribed"] is True
    append(logdir / "app.log", ["new line 1", "new line 2"])
    assert await collect(conn, "/logging/app", 2) == ["new line 1", "new line 2"]  # old content not re-sent
    err = await error_of(conn, "subscribe_channel", {"topic": "/logging/nope"})
    assert err.code == 404
    err = await error_of(conn, "subscribe_channel", {"topic": "/logging/../secret"})
    assert err.code == 400
    logs = node.node.module("logs")
    assert "app" in logs._tails
    await conn.call("unsubscribe_channel", {"topic": "/logging/app"})
    assert "app" not in logs._tails  # the last subscriber left: the tail stopped
    conn.close()


async def test_live_tail_survives_rotation_and_truncation(node: Running, logdir: Path) -> None:
    conn = await node.connect("viewer")
    path = logdir / "app.log"
    await conn.call("subscribe_channel", {"topic": "/logging/app"})
    numbered = [f"line {i:05d}" for i in range(1, 81)]
    append(path, numbered[0:20])
    os.rename(path, logdir / "app.log.1")  # rotated: the writer still appends to the old file...
    append(logdir / "app.log.1", numbered[20:25])
    append(path, numbered[25:50])  # ...then the new file appears
    got = await collect(conn, "/logging/app", 50)
    # Truncated in place, new lines right away (fewer bytes than before, so the shrink shows).
    with open(path, "r+") as f:
        f.truncate(0)
    append(path, numbered[50:55])
    got += await collect(conn, "/logging/app", 5)
    append(path, numbered[55:80])
    got += await collect(conn, "/logging/app", 25)
    assert got == numbered
    conn.close()


async def test_live_tail_follows_demo_rotate_script(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(DEMO_SCRIPTS, demo / "scripts")
    log = demo / "var" / "log" / "app.log"
    log.parent.mkdir(parents=True)
    log.write_text("before subscribing\n")
    r = await start_server(make_settings(tmp_path, modules=MODULES,
                                         logs={"files": {"app": str(log)}, "poll_interval": 0.05}))
    try:
        conn = await r.connect("viewer")
        await conn.call("subscribe_channel", {"topic": "/logging/app"})
        expected = [f"entry {i}" for i in range(60)]
        for i, line in enumerate(expected):
            append(log, [line])
            if i in (20, 40):  # rotate twice while lines keep coming
                out = await asyncio.to_thread(subprocess.run, ["/bin/sh", str(demo / "scripts" / "rotate-logs.sh")],
                                              capture_output=True, text=True, check=True)
                assert "rotated app.log" in out.stdout
            await asyncio.sleep(0.01)
        assert await collect(conn, "/logging/app", 60) == expected
        assert (log.parent / "app.log.2").exists()
        conn.close()
    finally:
        await r.server.stop()
