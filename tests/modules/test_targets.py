"""End-to-end tests of the targets module: a real server, real processes, a fake systemctl."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

from cloudisense.client import Connection
from tests.conftest import Running, make_settings, start_server, until

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
MODULES = ["pubsub", "audit", "targets"]
SLEEPER = ["{python}", "-c", "import time\nwhile True: time.sleep(1)"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie left to an init that never reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def next_state(conn: Connection, name: str, state: str) -> dict[str, Any]:
    """The next ``target_state`` event of ``name`` with ``state`` (others are skipped)."""
    while True:
        ev = await conn.next_event("/targets")
        assert ev["name"] == "target_state"
        if ev["data"]["name"] == name and ev["data"]["state"] == state:
            return ev["data"]


@asynccontextmanager
async def node(tmp_path: Path, targets: dict[str, Any]) -> AsyncIterator[Running]:
    """A server with only the modules these tests need, stopped afterwards."""
    running = await start_server(make_settings(tmp_path, modules=MODULES, targets=targets))
    try:
        yield running
    finally:
        await running.server.stop()


def kv_target(tmp_path: Path, port: int, **extra: Any) -> dict[str, Any]:
    """The demo key-value service (``kv.py``) writing below ``tmp_path``."""
    return {"command": ["{python}", str(DEMO / "services" / "kv.py"), "--port", str(port)], "cwd": str(tmp_path),
            "log": str(tmp_path / "var" / "kv.out"), "env": {"DEMO_VAR_DIR": str(tmp_path)}, **extra}


async def kv_ping(port: int) -> bytes:
    """Send PING to the kv service."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PING\r\n")
    line = await reader.readline()
    writer.close()
    return line


async def kv_answers(port: int) -> bool:
    """The kv service answers PING."""
    try:
        return await kv_ping(port) == b"+PONG\r\n"
    except OSError:
        return False


async def test_process_lifecycle(tmp_path: Path) -> None:
    port = free_port()
    async with node(tmp_path, {"redis": kv_target(tmp_path, port)}) as r:
        conn = await r.connect("admin")
        await conn.call("subscribe_channel", {"topic": "/targets"})
        assert await conn.call("list_targets") == ["redis"]  # the existing client's shape: names
        listed = await conn.call("list_targets", {"details": True})
        assert listed["count"] == 1 and listed["targets"][0]["state"] == "stopped"

        started = await conn.call("start_target", {"name": "redis"})
        assert started["state"] == "running" and started["pid"] and started["uptime"] is not None
        assert (await next_state(conn, "redis", "running"))["pid"] == started["pid"]
        await until(lambda: kv_answers(port))
        pid_file = tmp_path / "data" / "targets" / "redis.pid"
        assert json.loads(pid_file.read_text())["pid"] == started["pid"]

        again = await conn.request("start_target", {"name": "redis"})
        assert again["code"] == 409 and "restart_target" in again["message"]

        status = await conn.call("target_status", {"name": "redis"})
        assert status["state"] == "running" and status["health"] == "unknown" and status["exit_code"] is None

        restarted = await conn.call("restart_target", {"name": "redis"})
        assert restarted["state"] == "running" and restarted["pid"] != started["pid"]
        assert gone(started["pid"])
        await until(lambda: kv_answers(port))

        stopped = await conn.call("stop_target", {"name": "redis"})
        assert stopped["changed"] is True and stopped["state"] == "stopped"
        assert stopped["exit_code"] == 0  # kv.py exits cleanly on SIGTERM
        assert (await next_state(conn, "redis", "stopped"))["exit_code"] == 0
        assert gone(restarted["pid"]) and not pid_file.exists()
        assert not await kv_answers(port)
        assert (await conn.call("stop_target", {"name": "redis"}))["action"] == "already_stopped"
        assert "kv listening" in (tmp_path / "var" / "kv.out").read_text()
        conn.close()


async def test_crash_is_reported(tmp_path: Path) -> None:
    async with node(tmp_path, {"sleeper": {"command": SLEEPER}}) as r:
        conn = await r.connect("oper")
        await conn.call("subscribe_channel", {"topic": "/targets"})
        pid = (await conn.call("start_target", {"name": "sleeper"}))["pid"]
        os.kill(pid, signal.SIGKILL)
        event = await next_state(conn, "sleeper", "crashed")
        assert event["exit_code"] == -signal.SIGKILL and event["pid"] is None
        status = await conn.call("target_status", {"name": "sleeper"})
        assert status["state"] == "crashed" and status["exit_code"] == -9 and status["pid"] is None
        # A crashed target can be started again.
        assert (await conn.call("start_target", {"name": "sleeper"}))["state"] == "running"
        conn.close()


async def test_stop_kills_the_process_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    # The leader starts a child that ignores SIGTERM: only the SIGKILL after stop_timeout ends it.
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code])
        open({str(child_pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    async with node(tmp_path, {"group": {"command": ["{python}", "-c", script], "stop_timeout": 0.5}}) as r:
        conn = await r.connect("oper")
        leader = (await conn.call("start_target", {"name": "group"}))["pid"]
        await until(lambda: child_pid_file.exists() and child_pid_file.read_text())
        child = int(child_pid_file.read_text())
        assert os.getpgid(child) == leader  # same group as the leader
        result = await conn.call("stop_target", {"name": "group"})
        assert result["state"] == "stopped"
        assert gone(leader)
        await until(lambda: gone(child), timeout=5)
        conn.close()


async def test_autostart_health_and_node_stop(tmp_path: Path) -> None:
    port = free_port()
    app_log = tmp_path / "var" / "log" / "app.log"
    # {demo} stands for the cwd: here the demo's services folder.
    web = {"command": ["{python}", "{demo}/webapp.py", "--port", str(port), "--log", str(app_log), "--interval", "0.1"],
           "cwd": str(DEMO / "services"), "env": {"DEMO_VAR_DIR": str(tmp_path)}, "autostart": True,
           "health_url": f"http://127.0.0.1:{port}/health", "log": str(tmp_path / "web.out")}
    dead = {"command": SLEEPER, "health_url": f"http://127.0.0.1:{free_port()}/health"}
    running = await start_server(make_settings(tmp_path, modules=MODULES, targets={"web": web, "dead": dead}))
    try:
        conn = await running.connect("viewer")

        async def healthy() -> bool:
            return (await conn.call("target_status", {"name": "web"}))["health"] == "healthy"

        await until(healthy)
        listed = {t["name"]: t for t in (await conn.call("list_targets", {"details": True}))["targets"]}
        assert listed["web"]["state"] == "running" and listed["web"]["autostart"] is True
        assert listed["dead"]["state"] == "stopped" and listed["dead"]["health"] == "unknown"
        web_pid = listed["web"]["pid"]
        await until(lambda: app_log.exists() and " INFO web: " in app_log.read_text())
        conn.close()

        oper = await running.connect("oper")
        await oper.call("start_target", {"name": "dead"})
        status = await oper.call("target_status", {"name": "dead"})
        assert status["state"] == "running" and status["health"] == "unhealthy"
        dead_pid = status["pid"]
        oper.close()
    finally:
        await running.server.stop()
    assert gone(web_pid) and gone(dead_pid)  # the node stops what it supervises


async def test_adopts_a_process_left_running(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        state_dir = tmp_path / "data" / "targets"
        state_dir.mkdir(parents=True)
        create_time = psutil.Process(proc.pid).create_time()
        (state_dir / "kept.pid").write_text(json.dumps({"pid": proc.pid, "create_time": create_time}))
        (state_dir / "stale.pid").write_text(json.dumps({"pid": proc.pid, "create_time": create_time - 1000}))
        targets = {"kept": {"command": SLEEPER}, "stale": {"command": SLEEPER}}
        async with node(tmp_path, targets) as r:
            conn = await r.connect("admin")
            kept = await conn.call("target_status", {"name": "kept"})
            assert kept["state"] == "running" and kept["pid"] == proc.pid and kept["adopted"] is True
            stale = await conn.call("target_status", {"name": "stale"})
            assert stale["state"] == "stopped" and not (state_dir / "stale.pid").exists()
            await conn.call("subscribe_channel", {"topic": "/targets"})
            assert (await conn.call("stop_target", {"name": "kept"}))["state"] == "stopped"
            assert proc.wait(timeout=5) == -signal.SIGTERM
            conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fake_systemctl(tmp_path: Path) -> tuple[Path, Path]:
    """A small ``systemctl`` stand-in (no real systemd here): records argv, keeps unit state in JSON."""
    record = tmp_path / "systemctl-calls.jsonl"
    state = tmp_path / "systemctl-state.json"
    script = tmp_path / "systemctl"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        with open({str(record)!r}, "a") as f:
            f.write(json.dumps(args) + "\\n")
        try:
            units = json.load(open({str(state)!r}))
        except FileNotFoundError:
            units = {{}}
        verb, unit = args[0], args[-1]
        if unit.startswith("broken"):
            print(f"Job for {{unit}} failed because the control process exited with error code.", file=sys.stderr)
            sys.exit(1)
        if verb in ("start", "restart"):
            units[unit] = units.get(unit, 4000) + 1
        elif verb == "stop":
            units.pop(unit, None)
        elif verb == "is-active":
            print("active" if unit in units else "inactive")
            sys.exit(0 if unit in units else 3)
        elif verb == "show":
            active = unit in units
            print("ActiveState=" + ("active" if active else "inactive"))
            print("SubState=" + ("running" if active else "dead"))
            print("MainPID=" + str(units.get(unit, 0)))
            print("ExecMainStatus=0")
            print("ActiveEnterTimestampMonotonic=1000000")
            print("LoadState=loaded")
        json.dump(units, open({str(state)!r}, "w"))
    """))
    script.chmod(0o755)
    return script, record


async def test_systemd_backend_with_fake_systemctl(tmp_path: Path) -> None:
    systemctl, record = fake_systemctl(tmp_path)
    targets = {"nginx": {"backend": "systemd", "unit": "nginx.service", "systemctl": str(systemctl)},
               "broken": {"backend": "systemd", "unit": "broken.service", "systemctl": str(systemctl)},
               "nosystemd": {"backend": "systemd", "unit": "x.service", "systemctl": str(tmp_path / "missing")}}
    async with node(tmp_path, targets) as r:
        conn = await r.connect("oper")
        await conn.call("subscribe_channel", {"topic": "/targets"})
        status = await conn.call("target_status", {"name": "nginx"})
        assert status["state"] == "stopped" and status["unit"] == "nginx.service" and status["pid"] is None

        started = await conn.call("start_target", {"name": "nginx"})
        assert started["state"] == "running" and started["pid"] == 4001 and started["uptime"] is not None
        assert (await next_state(conn, "nginx", "running"))["pid"] == 4001
        assert (await conn.request("start_target", {"name": "nginx"}))["code"] == 409
        restarted = await conn.call("restart_target", {"name": "nginx"})
        assert restarted["pid"] == 4002
        stopped = await conn.call("stop_target", {"name": "nginx"})
        assert stopped["state"] == "stopped" and stopped["changed"] is True
        await next_state(conn, "nginx", "stopped")

        calls = [json.loads(line) for line in record.read_text().splitlines()]
        changes = [c for c in calls if c[0] in ("start", "stop", "restart")]
        assert changes == [["start", "nginx.service"], ["restart", "nginx.service"], ["stop", "nginx.service"]]
        assert ["is-active", "nginx.service"] in calls
        assert all(c[-1] in ("nginx.service", "broken.service") for c in calls)  # only configured units

        failed = await conn.request("start_target", {"name": "broken"})
        assert failed["code"] == 500 and "control process exited" in failed["message"]
        missing = await conn.request("target_status", {"name": "nosystemd"})
        assert missing["code"] == 503 and "systemctl" in missing["message"]
        conn.close()


async def test_roles_and_bad_input(tmp_path: Path) -> None:
    targets = {"sleeper": {"command": SLEEPER},
               "nothere": {"command": [str(tmp_path / "no-such-program")]},
               "quits": {"command": ["{python}", "-c", "import sys; sys.exit(3)"], "log": str(tmp_path / "q.out")}}
    async with node(tmp_path, targets) as r:
        viewer = await r.connect("viewer")
        assert (await viewer.call("list_targets", {"details": True}))["count"] == 3
        refused = await viewer.request("start_target", {"name": "sleeper"})
        assert refused["code"] == 403 and "viewer" in refused["message"]
        assert (await viewer.request("stop_target", {"name": "sleeper"}))["code"] == 403

        oper = await r.connect("oper")
        assert (await oper.call("start_target", {"name": "sleeper"}))["state"] == "running"
        assert (await oper.call("restart_target", {"name": "sleeper"}))["state"] == "running"
        assert (await oper.call("stop_target", {"name": "sleeper"}))["state"] == "stopped"
        # The existing client names the target "module".
        assert (await oper.call("start_target", {"module": "sleeper"}))["state"] == "running"
        assert (await oper.call("restart_target", {"module": "sleeper"}))["name"] == "sleeper"
        assert (await oper.call("stop_target", {"module": "sleeper"}))["state"] == "stopped"
        both = await oper.request("start_target", {"module": "sleeper", "name": "sleeper"})
        assert both["code"] == 400

        unknown = await oper.request("target_status", {"name": "postgres"})
        assert unknown["code"] == 404 and "sleeper" in unknown["message"]
        assert (await oper.request("start_target", {}))["code"] == 400
        assert (await oper.request("start_target", {"name": "sleeper", "shell": "rm -rf /"}))["code"] == 400
        not_found = await oper.request("start_target", {"name": "nothere"})
        assert not_found["code"] == 500 and "program not found" in not_found["message"]
        quits = await oper.request("start_target", {"name": "quits"})
        assert quits["code"] == 500 and "code 3" in quits["message"]
        assert (await oper.call("target_status", {"name": "quits"}))["state"] == "crashed"

        admin = await r.connect("admin")
        records = (await admin.call("get_audit_log", {"intent": "start_target"}))["records"]
        assert any(rec["user"] == "viewer" and rec["code"] == 403 for rec in records)
        for c in (viewer, oper, admin):
            c.close()


def test_entities_and_intent_catalogue(tmp_path: Path) -> None:
    from cloudisense.modules.targets import TargetsModule
    from cloudisense.node import Node

    settings = make_settings(tmp_path, targets={"web": {"command": SLEEPER}, "db": {"command": SLEEPER}})
    module = TargetsModule(Node(settings, module_classes={}))
    assert module.entities() == {"target": ["db", "web"]}
    risks = {i.name: i.risk.value for i in module.intents()}
    assert risks == {"list_targets": "read", "target_status": "read", "start_target": "write",
                     "restart_target": "write", "stop_target": "destructive"}
    assert all(4 <= len(i.examples) <= 8 for i in module.intents())



def demo_settings(tmp_path: Path) -> tuple[Any, dict[int, int]]:
    """The demo node's configuration with its ports swapped for free ones and its files below ``tmp_path``."""
    from cloudisense.config import load_settings
    from cloudisense.modules.notify import NotifySettings
    from cloudisense.modules.target_config import TargetsSettings

    ports = {8080: free_port(), 8081: free_port(), 8082: free_port()}

    def fix(item: str) -> str:
        for old, new in ports.items():
            item = item.replace(str(old), str(new))
        return str(tmp_path / item) if item.startswith("var/") else item

    demo = load_settings(DEMO / "cloudisense.toml", environ={})
    targets = {}
    for name, t in demo.section("targets", TargetsSettings).root.items():
        targets[name] = {**t.model_dump(mode="json", exclude_none=True), "command": [fix(c) for c in t.command],
                         "log": str(tmp_path / "var" / "log" / f"{name}.out"), "env": {"DEMO_VAR_DIR": str(tmp_path)},
                         "stop_timeout": 3}
        if t.health_url:
            targets[name]["health_url"] = fix(t.health_url)
    notify = {"webhooks": [fix(u) for u in demo.section("notify", NotifySettings).webhooks]}
    return make_settings(tmp_path, modules=MODULES + ["notify"], targets=targets, notify=notify), ports


async def test_demo_services_run_with_the_demo_config(tmp_path: Path) -> None:
    from tornado.httpclient import AsyncHTTPClient

    settings, ports = demo_settings(tmp_path)
    assert sorted(settings.targets) == ["nginx", "redis", "web", "worker"]
    running = await start_server(settings)
    try:
        conn = await running.connect("oper")

        async def all_healthy() -> bool:
            listed = (await conn.call("list_targets", {"details": True}))["targets"]
            return all(t["state"] == "running" for t in listed) and \
                all(t["health"] == "healthy" for t in listed if t["name"] in ("web", "nginx"))

        await until(all_healthy)
        await until(lambda: kv_answers(ports[8082]))
        log_dir = tmp_path / "var" / "log"
        delivered = await running.node.module("notify").notify("hello demo")
        assert delivered["delivered"] == 1
        assert "webhook received from test-node: 'hello demo'" in (log_dir / "app.log").read_text()

        http = AsyncHTTPClient()
        front = await http.fetch(f"http://127.0.0.1:{ports[8080]}/", raise_error=False)
        assert front.code == 200 and b"demo web app" in front.body
        await conn.call("stop_target", {"name": "web"})
        broken = await http.fetch(f"http://127.0.0.1:{ports[8080]}/", raise_error=False)
        assert broken.code == 502

        def logged(name: str, text: str) -> bool:
            # The proxy writes its log line after the response went out, like nginx: wait for it.
            path = log_dir / name
            return path.exists() and text in path.read_text()

        await until(lambda: logged("nginx-access.log", '"GET / HTTP/1.1" 200 '))
        await until(lambda: logged("nginx-access.log", '"GET / HTTP/1.1" 502 '))
        await until(lambda: logged("nginx-error.log",
                                   "connect() failed (111: Connection refused) while connecting to upstream"))
        await until(lambda: (log_dir / "syslog").exists() and " demo worker[" in (log_dir / "syslog").read_text())
        assert (await conn.call("target_status", {"name": "nginx"}))["state"] == "running"
        conn.close()
    finally:
        await running.server.stop()
    assert not any((tmp_path / "data" / "targets").glob("*.pid"))


async def test_restart_waits_for_a_slow_service_to_turn_healthy(tmp_path: Path) -> None:
    port = free_port()
    # Listens only a second after it starts, like a real service that loads before serving.
    server = textwrap.dedent(f"""
        import http.server, time
        time.sleep(1.0)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
            def log_message(self, *a):
                pass
        http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """)
    target = {"command": [sys.executable, "-c", server], "health_url": f"http://127.0.0.1:{port}/",
              "stop_timeout": 1, "health_wait": 15}
    async with node(tmp_path, {"slowweb": target}) as r:
        conn = await r.connect("oper")
        started = await conn.call("start_target", {"name": "slowweb"})
        assert started["state"] == "running" and started["health"] == "healthy"
        restarted = await conn.call("restart_target", {"name": "slowweb"})
        assert restarted["pid"] != started["pid"] and restarted["health"] == "healthy"
        conn.close()
