"""The `cloudisense` command as a user runs it: a real process against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from tests.assistant.conftest import agent_settings, serving
from tests.conftest import PASSWORDS

CLI = [sys.executable, "-m", "cloudisense.cli"]


async def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 120) -> tuple[int, str, str]:
    """Run the CLI without blocking the event loop (the server under test lives on it)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200", **(env or {})})
    # stdin="" closes the input at once (EOF); None leaves it open.
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_user_commands_and_intents(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, out, _ = await run("user", "add", "alice", "--role", "viewer", "--password-stdin", "--data-dir", data,
                             stdin="alice-password\n")
    assert code == 0 and "created user alice (viewer)" in out
    code, _, err = await run("user", "add", "alice", "--password-stdin", "--data-dir", data, stdin="x\n")
    assert code == 1 and "already exists" in err
    code, _, err = await run("user", "add", "bob", "--role", "root", "--password-stdin", "--data-dir", data,
                             stdin="x\n")
    assert code == 1 and "unknown role" in err
    code, out, _ = await run("user", "list", "--json", "--data-dir", data)
    assert json.loads(out)[0]["username"] == "alice"
    code, out, _ = await run("intents", "--json")
    intents = {i["name"]: i for i in json.loads(out)}
    assert intents["read_log"]["params"]["properties"]["lines"]["default"] == 50
    assert intents["stop_target"]["risk"] == "destructive"


async def test_rpc_and_ask_against_a_running_server(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path, modules=["pubsub", "audit", "system", "targets", "logs",
                                                         "assistant"])) as running:
        env = {"CLOUDISENSE_URL": running.url, "CLOUDISENSE_USER": "viewer",
               "CLOUDISENSE_PASSWORD": PASSWORDS["viewer"]}
        code, out, _ = await run("rpc", "read_log", "name=app", "lines=5", env=env)
        assert code == 0 and "upstream timeout" in out
        code, _, err = await run("rpc", "restart_target", "name=web", env=env)
        assert code == 1 and "403" in err and "viewer" in err
        code, _, err = await run("rpc", "no_such_intent", env=env)
        assert code == 1 and "unknown intent" in err
        code, out, _ = await run("ask", "is the web service up?", env=env)
        assert code == 0 and "web is running" in out
        env["CLOUDISENSE_PASSWORD"] = "wrong"
        code, _, err = await run("rpc", "list_targets", env=env)
        assert code == 1 and "invalid username or password" in err


async def test_ask_confirms_in_the_terminal_flow(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path, modules=["pubsub", "audit", "system", "targets",
                                                         "assistant"])) as running:
        env = {"CLOUDISENSE_URL": running.url, "CLOUDISENSE_USER": "oper", "CLOUDISENSE_PASSWORD": PASSWORDS["oper"]}
        pid = (await running.node.module("targets").backends["web"].status())["pid"]
        # No terminal and nothing piped in: not approved, nothing runs, and the exit code says so.
        code, out, err = await run("ask", "restart the web service", stdin="", env=env)
        assert code == 1 and "Waiting for approval" in out and "not approved" in err
        assert "confirm_action" not in out + err  # plain words, not the API's
        assert (await running.node.module("targets").backends["web"].status())["pid"] == pid
        # A piped "no" is a refusal too.
        code, out, err = await run("ask", "restart the web service", stdin="n\n", env=env)
        assert code == 1 and "Approve" in err
        assert (await running.node.module("targets").backends["web"].status())["pid"] == pid
        # `yes | cloudisense ask ...`: the piped answer approves; the result is printed once.
        code, out, err = await run("ask", "restart the web service", stdin="y\n" * 5, env=env)
        assert code == 0 and out.count("web is running") == 1, (out, err)
        new_pid = (await running.node.module("targets").backends["web"].status())["pid"]
        assert new_pid != pid
        code, out, _ = await run("ask", "restart the web service", "--yes", stdin="", env=env)
        assert code == 0 and out.count("web is running") == 1
        assert (await running.node.module("targets").backends["web"].status())["pid"] != new_pid


async def test_serve_starts_with_zero_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(*CLI, "serve", "--port", "0", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    lines = []
    while not any("listening on" in line for line in lines):
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "serve exited early"
        lines.append(line)
    text = "".join(lines)
    assert "created user 'admin' with password:" in text
    assert re.search(r"listening on http://127\.0\.0\.1:\d+", text)
    assert (tmp_path / "xdg" / "cloudisense" / "cloudisense.db").exists()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_busy_port_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    import socket

    import psutil

    marker = f"cloudisense-test-marker-{os.getpid()}"
    config = tmp_path / "node.toml"
    config.write_text(f'''data_dir = "data"
[targets.sleeper]
command = ["{sys.executable}", "-c", "import time, sys; time.sleep(60)", "{marker}"]
autostart = true
''')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = await run("serve", "--config", str(config), "--port", str(port))
    assert code == 1 and f"could not listen on 127.0.0.1:{port}" in err
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
