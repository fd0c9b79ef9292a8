"""End-to-end tests of the scripts module over the WebSocket against the real server, on real processes."""

from __future__ import annotations

import asyncio
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cloudisense.client import Connection
from tests.conftest import Running, error_of, make_settings, start_server

DEMO_SCRIPTS = Path(__file__).resolve().parents[2] / "examples" / "demo" / "scripts"
MODULES = ["pubsub", "audit", "scripts"]

SCRIPTS = {
    # No shebang, no executable bit: run as /bin/sh hello.sh.
    "hello.sh": 'echo "hello from $0"\nfor a in "$@"; do echo "arg=[$a]"; done\necho "to stderr" >&2\n'
                'echo "key=${FAKE_API_KEY:-unset} id=${CLOUDISENSE_SCRIPT_ID:-none}"\n',
    "fail.sh": "echo failing\nexit 3\n",
    "many.sh": 'i=1\nwhile [ $i -le 500 ]; do echo "out $i"; i=$((i + 1)); done\n',
    # A child that ignores SIGTERM, so only the SIGKILL of the whole group ends it.
    "hang.sh": "(trap '' TERM; exec sleep 300) &\necho \"child $!\"\nsleep 300\n",
    "gate.sh": 'echo waiting\nwhile [ ! -f "$1" ]; do sleep 0.02; done\necho "gate open"\n',
    "notes.txt": "not a script\n",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A scripts folder with test scripts, a direct-run script and a symlink leading out."""
    d = tmp_path / "scripts"
    d.mkdir()
    for name, body in SCRIPTS.items():
        (d / name).write_text(body)
    direct = d / "direct"
    direct.write_text("#!/bin/sh\necho direct run\n")
    direct.chmod(direct.stat().st_mode | stat.S_IXUSR)
    outside = tmp_path / "outside.sh"
    outside.write_text("echo should never run\n")
    (d / "escape.sh").symlink_to(outside)
    (d / "sub").mkdir()
    (d / "sub" / "x.sh").write_text("echo nested\n")
    return d


@pytest.fixture
async def node(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """A real server with the scripts module and a 2 s time limit."""
    monkeypatch.setenv("FAKE_API_KEY", "sk-must-not-leak")
    r = await start_server(make_settings(tmp_path, modules=MODULES,
                                         scripts={"folder": str(folder), "time_limit": 2}))
    r.node.module("scripts").kill_grace = 0.5
    yield r
    await r.server.stop()


def kind(ev: dict[str, Any]) -> str:
    """Our name of a script event (the wire name is the existing client's ``data_generated``)."""
    assert ev["name"] == "data_generated" and ev["data"]["state"] in ("start", "progress", "stop")
    return ev["meta"]["event"]


async def run_events(conn: Connection, topic: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Events on ``topic`` up to and including ``script_stop``."""
    events = []
    while True:
        ev = await conn.next_event(topic, timeout=timeout)
        events.append(ev)
        if kind(ev) == "script_stop":
            return events


def output(events: list[dict[str, Any]], stream: str = "stdout") -> list[str]:
    """Lines of ``script_output`` events of one stream, in order."""
    return [line for e in events if kind(e) == "script_output" and e["data"]["stream"] == stream
            for line in e["data"]["lines"]]


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_list_scripts(node: Running) -> None:
    conn = await node.connect("viewer")
    data = await conn.call("list_scripts")
    by_name = {s["name"]: s for s in data["scripts"]}
    assert {"hello.sh", "fail.sh", "direct", "notes.txt"} <= set(by_name)
    assert "escape.sh" not in by_name and "sub" not in by_name
    assert by_name["direct"]["executable"] is True and by_name["direct"]["runs_with"] == "direct"
    assert by_name["hello.sh"]["runs_with"] == "sh" and by_name["hello.sh"]["size"] == len(SCRIPTS["hello.sh"])
    assert by_name["notes.txt"]["runs_with"] is None
    entities = node.node.entities()["script"]
    assert "hello.sh" in entities and "notes.txt" not in entities and "escape.sh" not in entities
    conn.close()


async def test_run_streams_output_and_args_stay_literal(node: Running) -> None:
    conn = await node.connect("oper")
    args = ["a b", "$(id)", "; rm -rf /", "*"]
    started = await conn.call("start_script_execution", {"name": "hello.sh", "args": args})
    assert started["state"] == "running" and started["topic"] == f"/script/{started['script_id']}"
    events = await run_events(conn, started["topic"])
    assert kind(events[0]) == "script_start" and events[0]["data"]["args"] == args
    # What the existing client reads: {script, state, data}.
    assert events[0]["data"]["script"] == events[0]["data"]["name"] and events[0]["data"]["state"] == "start"
    progress = [e for e in events if kind(e) == "script_output"]
    assert progress and all(e["data"]["state"] == "progress" for e in progress)
    assert all(e["data"]["data"] == "".join(f"{x}\n" for x in e["data"]["lines"]) for e in progress)
    assert events[-1]["data"]["state"] == "stop"
    out = output(events)
    assert out[0].startswith("hello from ") and out[1:5] == [f"arg=[{a}]" for a in args]
    assert out[5] == f"key=unset id={started['script_id']}"  # secrets stay out of the script's environment
    assert output(events, "stderr") == ["to stderr"]
    stop = events[-1]["data"]
    assert stop["exit_code"] == 0 and stop["killed"] is False and stop["reason"] == "exited"
    assert stop["duration_seconds"] >= 0

    started = await conn.call("start_script_execution", {"name": "direct"})
    events = await run_events(conn, started["topic"])
    assert output(events) == ["direct run"] and events[-1]["data"]["exit_code"] == 0
    conn.close()


async def test_exit_code_status_and_late_reader(node: Running) -> None:
    conn = await node.connect("oper")
    started = await conn.call("start_script_execution", {"name": "fail.sh"})
    events = await run_events(conn, started["topic"])
    assert events[-1]["data"]["exit_code"] == 3 and events[-1]["data"]["reason"] == "exited with code 3"
    late = await node.connect("viewer")
    status = await late.call("script_status", {"script_id": started["script_id"]})
    assert status["state"] == "finished" and status["exit_code"] == 3
    assert status["output"] == [{"stream": "stdout", "line": "failing"}]
    assert (await late.call("subscribe_channel", {"topic": started["topic"]}))["subscribed"]
    assert (await error_of(late, "script_status", {"script_id": "0123456789abcdef"})).code == 404
    assert (await error_of(late, "subscribe_channel", {"topic": "/script/0123456789abcdef"})).code == 404
    err = await error_of(conn, "stop_script_execution", {"script_id": started["script_id"]})
    assert err.code == 409
    conn.close()
    late.close()


async def test_many_lines_arrive_in_order(node: Running) -> None:
    conn = await node.connect("oper")
    started = await conn.call("start_script_execution", {"name": "many.sh"})
    events = await run_events(conn, started["topic"])
    assert output(events) == [f"out {i}" for i in range(1, 501)]
    status = await conn.call("script_status", {"script_id": started["script_id"]})
    assert status["output_lines"] == 500 and status["output"][-1]["line"] == "out 500"
    conn.close()


async def test_time_limit_kills_script_and_children(node: Running) -> None:
    conn = await node.connect("oper")
    started = await conn.call("start_script_execution", {"name": "hang.sh"})
    events = await run_events(conn, started["topic"], timeout=30)
    child = int(output(events)[0].split()[1])
    stop = events[-1]["data"]
    assert stop["killed"] is True and "time limit" in stop["reason"] and stop["exit_code"] != 0
    for _ in range(200):
        if gone(child) and gone(started["pid"]):
            break
        await asyncio.sleep(0.05)
    assert gone(child), "the child that ignored SIGTERM survived"
    assert gone(started["pid"])
    conn.close()


async def test_stop_script_execution(node: Running, tmp_path: Path) -> None:
    conn = await node.connect("oper")
    started = await conn.call("start_script_execution", {"name": "gate.sh", "args": [str(tmp_path / "never")]})
    first = await conn.next_event(started["topic"])
    assert kind(first) == "script_start"
    listed = await conn.call("list_scripts")
    assert [r["script_id"] for r in listed["running"]] == [started["script_id"]]
    viewer = await node.connect("viewer")
    assert (await error_of(viewer, "stop_script_execution", {"script_id": started["script_id"]})).code == 403
    result = await conn.call("stop_script_execution", {"script_id": started["script_id"]})
    assert result["state"] == "finished" and result["killed"] is True and result["reason"] == "stopped by oper"
    events = await run_events(conn, started["topic"])
    assert events[-1]["data"]["killed"] is True
    assert gone(started["pid"])
    conn.close()
    viewer.close()


async def test_subscribe_while_running(node: Running, tmp_path: Path) -> None:
    conn = await node.connect("oper")
    gate = tmp_path / "go"
    started = await conn.call("start_script_execution", {"name": "gate.sh", "args": [str(gate)], "subscribe": False})
    watcher = await node.connect("viewer")
    await watcher.call("subscribe_channel", {"topic": started["topic"]})
    gate.touch()
    events = await run_events(watcher, started["topic"])
    assert "gate open" in output(events) and events[-1]["data"]["exit_code"] == 0
    assert conn.events.empty()  # the caller chose not to follow
    conn.close()
    watcher.close()


async def test_refusals(node: Running) -> None:
    conn = await node.connect("admin")
    for bad in ("../outside.sh", "/bin/sh", "sub/x.sh", "..", "a\\b.sh"):
        err = await error_of(conn, "start_script_execution", {"name": bad})
        assert err.code == 400 and "not a path" in err.message, bad
    err = await error_of(conn, "start_script_execution", {"name": "escape.sh"})
    assert err.code == 403 and "outside" in err.message
    err = await error_of(conn, "start_script_execution", {"name": "notes.txt"})
    assert err.code == 400 and "executable bit" in err.message
    err = await error_of(conn, "start_script_execution", {"name": "missing.sh"})
    assert err.code == 404 and "hello.sh" in err.message
    assert (await error_of(conn, "start_script_execution", {"name": "hello.sh", "args": ["x"] * 33})).code == 400
    assert (await error_of(conn, "start_script_execution", {"name": "hello.sh", "args": ["x" * 1025]})).code == 400
    assert (await error_of(conn, "start_script_execution", {"name": "hello.sh", "args": "a b"})).code == 400
    assert (await error_of(conn, "start_script_execution", {"name": "hello.sh", "args": ["a\x00"]})).code == 400
    viewer = await node.connect("viewer")
    err = await error_of(viewer, "start_script_execution", {"name": "hello.sh"})
    assert err.code == 403 and "viewer" in err.message
    conn.close()
    viewer.close()


async def test_no_folder_configured(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=MODULES))
    try:
        conn = await r.connect("oper")
        assert (await conn.call("list_scripts"))["scripts"] == []
        err = await error_of(conn, "start_script_execution", {"name": "cleanup.sh"})
        assert err.code == 503 and "[scripts] folder" in err.message
        conn.close()
    finally:
        await r.server.stop()


async def test_demo_scripts(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(DEMO_SCRIPTS, demo / "scripts")
    shutil.copy(DEMO_SCRIPTS.parent / "cloudisense.toml", demo / "cloudisense.toml")
    (demo / "var" / "log").mkdir(parents=True)
    (demo / "var" / "tmp").mkdir()
    (demo / "var" / "tmp" / "junk").write_text("x")
    (demo / "var" / "log" / "app.log").write_text("an app line\n")
    r = await start_server(make_settings(tmp_path, modules=MODULES, scripts={"folder": str(demo / "scripts")}))
    try:
        conn = await r.connect("oper")
        names = {s["name"]: s for s in (await conn.call("list_scripts"))["scripts"]}
        assert all(names[n]["executable"] and names[n]["runs_with"] == "direct"
                   for n in ("cleanup.sh", "backup.sh", "rotate-logs.sh"))
        results = {}
        for name in ("rotate-logs.sh", "cleanup.sh", "backup.sh"):
            started = await conn.call("start_script_execution", {"name": name})
            events = await run_events(conn, started["topic"])
            assert events[-1]["data"]["exit_code"] == 0, output(events, "stderr")
            results[name] = output(events)
        assert "rotate-logs: rotated app.log" in results["rotate-logs.sh"]
        assert (demo / "var" / "log" / "app.log.1").read_text() == "an app line\n"
        assert (demo / "var" / "log" / "app.log").read_text() == ""
        assert not (demo / "var" / "tmp" / "junk").exists() and results["cleanup.sh"][-1].startswith("cleanup: done")
        assert list((demo / "var" / "backups").iterdir()) and results["backup.sh"][-1] == "backup: done"
        conn.close()
    finally:
        await r.server.stop()
