"""Fixtures of the federation tests: a real mosquitto broker and two real nodes on it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Running, make_settings, start_server

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
#: Only what the tests need: quick to start, independent of modules others are writing.
MODULES = ["pubsub", "system", "audit", "federation"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Broker:
    """A mosquitto process on 127.0.0.1:``port`` with a generated config file."""

    port: int
    folder: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        conf = self.folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        log = open(self.folder / "mosquitto.log", "ab")  # noqa: SIM115 - the child keeps writing to it
        try:
            self.proc = await asyncio.create_subprocess_exec(MOSQUITTO, "-c", str(conf), stdout=log, stderr=log,
                                                             start_new_session=True)
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            if self.proc.returncode is not None:
                pytest.fail(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if loop.time() > deadline:
                    pytest.fail(f"mosquitto did not listen on {self.port}")
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop mosquitto (its whole process group)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A fresh mosquitto broker for one test."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; scripts/test.sh does it)")
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(free_port(), folder)
    await b.start()
    yield b
    await b.stop()


def node_settings(tmp_path: Path, identity: str, broker: Broker, prefix: str, **federation: Any) -> Any:
    """Settings of a federated test node."""
    fed = {"enabled": True, "broker_port": broker.port, "topic_prefix": prefix, "request_timeout": 2.0,
           **federation}
    return make_settings(tmp_path / identity, identity=identity, modules=MODULES, federation=fed)


@dataclass
class Pair:
    """Two federated nodes that see each other."""

    a: Running
    b: Running
    broker: Broker
    prefix: str
    stopped: list[Running]

    async def stop(self, r: Running) -> None:
        """Stop one node now (the fixture then leaves it alone)."""
        self.stopped.append(r)
        await r.server.stop()


def bridge(r: Running) -> Any:
    """The node's MQTT bridge."""
    return r.node.module("federation").bridge


@pytest.fixture
async def pair(tmp_path: Path, broker: Broker) -> AsyncIterator[Pair]:
    """node-a and node-b on one broker, each seeing the other online."""
    prefix = f"t{uuid.uuid4().hex[:8]}/cs"
    a = await start_server(node_settings(tmp_path, "node-a", broker, prefix))
    b = await start_server(node_settings(tmp_path, "node-b", broker, prefix))
    p = Pair(a, b, broker, prefix, [])
    try:
        await eventually(lambda: bridge(a).knows("node-b") and bridge(b).knows("node-a"), what="nodes to meet")
        yield p
    finally:
        for r in (a, b):
            if not any(r is s for s in p.stopped):
                await r.server.stop()
