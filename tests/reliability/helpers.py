"""A real ``cloudisense serve`` process for crash tests, and small raw-socket tools."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cloudisense.client import Connection, login
from cloudisense.config import load_settings
from cloudisense.core.roles import Role
from cloudisense.modules.target_backends import TARGET_MARKER
from cloudisense.store.db import Database
from cloudisense.store.users import UserStore, client_credential
from tests.conftest import PASSWORDS, ROLES

CLI = [sys.executable, "-m", "cloudisense.cli"]
DEMO_POLICY = Path(__file__).resolve().parents[2] / "examples" / "demo" / "policy.toml"
#: The target writes one line per start to ``starts.log``: the test's record of real actions.
TARGET = ("import os, sys, time\n"
          "open(sys.argv[1], 'a').write(f'start {os.getpid()}\\n')\n"
          "while True: time.sleep(1)\n")


def write_config(folder: Path) -> Path:
    """A node with one process target ``web`` (not autostarted: every start is an audited RPC)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "target.py").write_text(TARGET)
    config = folder / "node.toml"
    config.write_text(f'''data_dir = "{folder / 'data'}"
identity = "crash-node"
log_level = "warning"
modules = ["pubsub", "audit", "system", "targets", "assistant"]
[server]
dashboard = false
[agent]
policy_file = "{DEMO_POLICY}"
[targets.web]
command = ["{sys.executable}", "{folder / 'target.py'}", "{folder / 'starts.log'}"]
stop_timeout = 2
''')
    return config


async def add_users(config: Path) -> None:
    """The test users, written to the node's database before its first start."""
    settings = load_settings(config, environ={})
    db = Database(settings.db_path)
    await db.open()
    try:
        users = UserStore(db)
        await users.start()
        for name, password in PASSWORDS.items():
            if await users.get(name) is None:
                await users.add(name, client_credential(password), Role(ROLES[name]))
    finally:
        await db.close()


@dataclass
class Served:
    """A running ``cloudisense serve`` process."""

    proc: asyncio.subprocess.Process
    url: str

    async def connect(self, user: str = "admin") -> Connection:
        tokens = await login(self.url, user, PASSWORDS[user])
        return await Connection.open(self.url, tokens["access"]["token"])

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), 60)

    async def stop(self) -> int:
        """SIGTERM and wait (the node stops its targets)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait()


async def serve(config: Path) -> Served:
    """Start ``cloudisense serve`` on a free port; returns once it listens."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(*CLI, "serve", "--config", str(config), "--port", "0",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                env=env)
    assert proc.stdout is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        if not line:
            raise AssertionError("serve exited early:\n" + "".join(seen))
        seen.append(line)
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if found:
            break
    # Keep reading its output, so a chatty server never blocks on a full pipe.
    asyncio.get_running_loop().create_task(_drain(proc.stdout))
    return Served(proc, found.group(1))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def rows(config: Path, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Query the node's database directly (the node may be running: WAL readers don't block it)."""
    settings = load_settings(config, environ={})
    conn = sqlite3.connect(settings.db_path, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()


def marked_processes(config: Path) -> list[psutil.Process]:
    """Live processes started for this node's targets (found by their environment mark)."""
    settings = load_settings(config, environ={})
    marker = str((settings.data_dir / "targets").resolve())
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TARGET_MARKER, "").startswith(marker) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found
