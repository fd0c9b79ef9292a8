"""Shared fixtures: a real server on port 0 with a real SQLite database in a temp dir."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudisense.client import Connection, RpcError, login
from cloudisense.config import Settings, load_settings
from cloudisense.core.modules import Module
from cloudisense.core.roles import Role
from cloudisense.node import Node
from cloudisense.server.app import Server
from cloudisense.store.users import client_credential

PASSWORDS = {"admin": "admin-pass-1", "oper": "oper-pass-1", "viewer": "viewer-pass-1"}
ROLES = {"admin": Role.ADMIN, "oper": Role.OPERATOR, "viewer": Role.VIEWER}


@dataclass
class Running:
    """A started server and how to reach it."""

    server: Server
    node: Node
    url: str

    async def connect(self, user: str = "admin") -> Connection:
        tokens = await login(self.url, user, PASSWORDS[user])
        return await Connection.open(self.url, tokens["access"]["token"])



def pulled_model_dir(model: str) -> str:
    """The data dir that holds the pulled ``model`` for the slow real-model tests; skips (saying how to
    get it) without llama-cpp-python or the model. ``scripts/test.sh`` pulls it and sets the variable."""
    pytest.importorskip("llama_cpp")
    data_dir = os.environ.get("MODEL_TESTS_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "models" / f"{model}.gguf").exists():
        pytest.skip(f"no pulled {model}: run scripts/test.sh, or `cloudisense model pull {model} --data-dir DIR` "
                    "and set MODEL_TESTS_DATA_DIR=DIR")
    return data_dir

def make_settings(tmp_path: Path, config: Path | None = None, **overrides: Any) -> Settings:
    """Settings for a test node: data in ``tmp_path``, fast stats, free port."""
    base = {"data_dir": str(tmp_path / "data"), "identity": "test-node",
            "system": {"stats_interval": 0.2}, "server": {"port": 0}}
    return load_settings(config, environ={}, overrides=_merge(base, overrides))


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


async def start_server(settings: Settings, module_classes: dict[str, type[Module]] | None = None) -> Running:
    """Start a node with the three test users (``module_classes``: instead of the installed modules)."""
    node = Node(settings, module_classes)
    server = Server(node)
    port = await server.start(host="127.0.0.1", port=0)
    for name, pw in PASSWORDS.items():
        if await node.users.get(name) is None:
            await node.users.add(name, client_credential(pw), ROLES[name])
    return Running(server, node, f"http://127.0.0.1:{port}")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    """A real server with only the core modules' default settings."""
    r = await start_server(make_settings(tmp_path))
    yield r
    await r.server.stop()


async def error_of(conn: Connection, intent: str, params: dict[str, Any]) -> RpcError:
    """The error an RPC answers with (fails the test when it succeeds)."""
    with pytest.raises(RpcError) as info:
        await conn.call(intent, params)
    return info.value


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


class Events:
    """Every event a connection receives, kept so waiting for one loses no other.

    ``timeout`` is how long :meth:`wait` waits unless a call says otherwise.
    """

    def __init__(self, conn: Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.seen: list[dict[str, Any]] = []

    async def wait(self, topic: str, pred: Callable[[dict[str, Any]], bool] = lambda e: True,
                   timeout: float | None = None) -> dict[str, Any]:
        """The first event on ``topic`` (seen before or arriving) that satisfies ``pred``."""
        for ev in self.seen:
            if ev["topic"] == topic and pred(ev):
                return ev
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            ev = await asyncio.wait_for(self.conn.events.get(), max(0.01, deadline - loop.time()))
            self.seen.append(ev)
            if ev["topic"] == topic and pred(ev):
                return ev

    def on(self, topic: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Events seen so far on ``topic`` (of ``meta.event`` ``kind``)."""
        return [e for e in self.seen if e["topic"] == topic and (kind is None or e["meta"].get("event") == kind)]
