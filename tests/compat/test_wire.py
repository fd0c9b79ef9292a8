"""End to end, as the existing CloudiSENSE client: live stats, log tails, script output, UI updates,
pings, notifications and service buttons all reach its dispatcher."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tests.compat.client import ClientRejected, ExistingClient
from tests.conftest import PASSWORDS, Running, make_settings, start_server

MODULES = ["pubsub", "audit", "system", "logs", "scripts", "targets", "notify"]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    """A node with a log, a script, a target and a notification webhook (the webhook is never called here)."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "app.log").write_text("old line\n")
    (tmp_path / "elsewhere.log").write_text("not for you\n")
    (tmp_path / "log" / "escape.log").symlink_to(tmp_path / "elsewhere.log")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "hello.sh").write_text("echo hello from the script\necho oops >&2\n")
    settings = make_settings(
        tmp_path, modules=MODULES, logs={"files": {"app": str(tmp_path / "log" / "app.log"),
                                        "escape": str(tmp_path / "log" / "escape.log")}, "poll_interval": 0.05},
        scripts={"folder": str(scripts)}, pubsub={"ping_interval": 0.2, "max_topics_per_client": 3},
        targets={"sleeper": {"command": [sys.executable, "-c", "import time; time.sleep(60)"], "stop_timeout": 2}})
    r = await start_server(settings)
    yield r
    await r.server.stop()


async def client(r: Running, user: str = "oper") -> ExistingClient:
    c = ExistingClient(r.url)
    await c.login(user, PASSWORDS[user])
    return c


async def test_stats_reach_the_client_in_its_shape(node: Running) -> None:
    c = await client(node)
    await c.execute("subscribe_channel", {"topic": "/stats"})
    ev = await c.wait("stats")
    assert ev["name"] == "data_generated" and ev["topic"] == "/stats"
    system = ev["data"]["system"]
    assert set(system["os"]) >= {"arch", "name", "type", "flavor", "version", "boot_time", "uptime",
                                 "system_datetime", "timezone", "average_load"}
    assert set(system["cpu"]) == {"max_frequency", "count", "percent"} and system["cpu"]["count"] >= 1
    assert set(system["memory"]) == {"total", "used", "free", "swap_total", "swap_used", "swap_free", "percent"}
    assert system["disk"] and all(set(d) == {"mountpoint", "fstype", "total", "used", "free", "percent"}
                                  for d in system["disk"])
    nic_keys = {"id", "bytes_sent", "bytes_recv", "packets_sent", "packets_recv", "errin", "errout", "dropin",
                "dropout", "bytes_recv_rate", "bytes_sent_rate"}
    assert system["network"] and all(set(n) == nic_keys for n in system["network"])
    assert ev["data"]["target"] == {"sleeper": {"state": "stopped", "pid": None}}
    # A second event has rates measured since the first (never negative).
    second = await c.wait("stats", lambda e: e is not ev)
    assert all(n["bytes_recv_rate"] >= 0 and n["bytes_sent_rate"] >= 0 for n in second["data"]["system"]["network"])
    c.close()


async def test_log_tail_from_list_logs_topic(node: Running, tmp_path: Path) -> None:
    c = await client(node, "viewer")
    logs = await c.execute("list_logs")
    assert logs == [{"name": "app", "topic": "/logging/app"}, {"name": "escape", "topic": "/logging/escape"}]
    await c.execute("subscribe_channel", {"topic": logs[0]["topic"]})
    with open(tmp_path / "log" / "app.log", "a", encoding="utf-8") as f:
        f.write("ERROR payment timeout\nINFO retry ok\n")
    text = ""
    while "INFO retry ok" not in text:
        evs = [e for e in c.received["log"] if e["topic"] == "/logging/app"]
        text = "".join(e["data"]["data"] for e in evs)
        if "INFO retry ok" not in text:
            await c.wait("log", lambda e, n=len(evs): len([x for x in c.received["log"]]) > n)
    assert all(e["name"] == "data_generated" and e["data"]["name"] == "app" for e in c.received["log"])
    assert text == "ERROR payment timeout\nINFO retry ok\n"
    # A log whose file leads out of its folder: the client hears why nothing comes.
    await c.execute("subscribe_channel", {"topic": "/logging/escape"})
    error = await c.wait("error")
    assert error["topic"] == "/logging/escape" and "outside its folder" in error["data"]["message"]
    assert "not for you" not in json.dumps(c.received)
    c.close()


async def test_script_output_reaches_the_client(node: Running) -> None:
    c = await client(node)
    started = await c.execute("start_script_execution", {"name": "hello.sh"})
    await c.wait("script", lambda e: e["data"]["state"] == "stop")
    evs = [e for e in c.received["script"] if e["topic"] == started["topic"]]
    assert evs[0]["data"]["state"] == "start" and evs[0]["data"]["script"] == "hello.sh"
    output = "".join(e["data"]["data"] for e in evs if e["data"]["state"] == "progress")
    assert "hello from the script\n" in output and "oops\n" in output
    c.close()


async def test_ui_updates_are_created_on_subscribe_and_limited(node: Running) -> None:
    c = await client(node)
    await c.execute("subscribe_channel", {"topic": "/ui/updates"})  # never created: made on demand
    await c.execute("publish_channel", {"topic": "/ui/updates", "message": {"datakey": "cpu-widget", "data": 42}})
    ev = await c.wait("ui")
    assert ev["name"] == "ui_update" and ev["data"] == {"datakey": "cpu-widget", "data": 42}
    # A topic that is not allowed on demand still needs create_channel.
    with pytest.raises(ClientRejected) as info:
        await c.execute("subscribe_channel", {"topic": "/team"})
    assert info.value.code == 404
    # The per-connection limit (3 here) covers create_channel and topics made on demand.
    await c.execute("subscribe_channel", {"topic": "/ui/guide"})
    await c.execute("create_channel", {"topic": "/team"})
    with pytest.raises(ClientRejected) as info:
        await c.execute("create_channel", {"topic": "/team2"})
    assert info.value.code == 429 and "remove_channel" in str(info.value)
    await c.execute("remove_channel", {"topic": "/team"})
    await c.execute("create_channel", {"topic": "/team2"})
    # The count is per user: reconnecting does not reset it, another user has their own.
    again = await client(node)
    with pytest.raises(ClientRejected) as info:
        await again.execute("create_channel", {"topic": "/team3"})
    assert info.value.code == 429
    again.close()
    other = await client(node, "viewer")
    await other.execute("subscribe_channel", {"topic": "/ui/updates"})
    c.close()
    other.close()
    # Topics made on demand go away with their last subscriber.
    from tests.conftest import until

    await until(lambda: "/ui/updates" not in node.node.pubsub.topics() and "/ui/guide" not in node.node.pubsub.topics())


async def test_ping_on_ping(node: Running) -> None:
    c = await client(node, "viewer")
    await c.execute("subscribe_channel", {"topic": "/ping"})
    ev = await c.wait("ping")
    assert ev["topic"] == "/ping" and ev["data"]["node"] == "test-node"
    c.close()


async def test_service_buttons_send_module(node: Running) -> None:
    c = await client(node)
    assert await c.execute("list_targets") == ["sleeper"]
    started = await c.execute("start_target", {"module": "sleeper"})
    assert started["state"] == "running"
    assert (await c.execute("restart_target", {"module": "sleeper"}))["state"] == "running"
    assert (await c.execute("stop_target", {"module": "sleeper"}))["state"] == "stopped"
    with pytest.raises(ClientRejected) as info:
        await c.execute("start_target", {"module": "postgres"})
    assert info.value.code == 404 and "sleeper" in str(info.value)
    # Our dashboard's richer read.
    details = await c.execute("list_targets", {"details": True})
    assert details["targets"][0]["name"] == "sleeper" and details["targets"][0]["state"] == "stopped"
    c.close()


class Hook(RequestHandler):
    seen: list[tuple[str, bytes]] = []

    def get(self) -> None:
        Hook.seen.append(("GET", b""))

    def post(self) -> None:
        Hook.seen.append(("POST", self.request.body))


async def test_notifications_reach_both_topics(tmp_path: Path) -> None:
    sockets = bind_sockets(0, "127.0.0.1")
    hook_server = HTTPServer(Application([(r"/hook", Hook)]))
    hook_server.add_sockets(sockets)
    hook = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/hook"
    r = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "notify"],
                                         notify={"webhooks": [hook], "retries": 0}))
    try:
        c = await client(r)
        await c.execute("subscribe_channel", {"topic": "/notifications"})  # the client's constant
        await c.execute("simple_http_notify", {"message": "deploy done"})
        ev = await c.wait("notification")
        assert ev["name"] == "text_notification" and ev["data"]["message"] == "deploy done"
        assert ev["data"]["code"] == 2 and ev["topic"] == "/notifications"
        # CloudiSENSE's parameters: {"http": {"webhook": [...], "method": ...}}, still only configured hooks.
        await c.execute("simple_http_notify", {"http": {"webhook": [hook], "method": "GET"}})
        assert Hook.seen[-1] == ("GET", b"")
        with pytest.raises(ClientRejected) as info:
            await c.execute("simple_http_notify", {"http": {"webhook": ["http://169.254.169.254/x"]},
                                                   "message": "x"})
        assert info.value.code == 400 and "configured" in str(info.value)
        assert not c.dropped or all(e["topic"] != "/notifications" for e in c.dropped)
        c.close()
    finally:
        await r.server.stop()
        hook_server.stop()
