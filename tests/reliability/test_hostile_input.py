"""Hostile input: non-finite numbers, markup and control sequences in data, and login lockout."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cloudisense import cli
from cloudisense.store.users import client_credential
from tests.conftest import PASSWORDS, Running, make_settings, start_server
from tests.core.helpers import RawWs, post_form


@pytest.fixture
async def running(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = await start_server(make_settings(tmp_path, server={"port": 0, "dashboard": False}))
    yield r
    await r.server.stop()


@pytest.mark.parametrize("frame", [
    '{"type": "rpc", "requestid": "inf-1", "intent": "publish_channel", "params": {"topic": "/x", "message": {"x": 1e999}}}',
    '{"type": "rpc", "requestid": "inf-1", "intent": "list_channels", "params": {"x": -1e400}}',
    '{"type": "rpc", "requestid": "inf-1", "intent": "list_channels", "params": {}, "extra": [1e999]}',
    '{"type": "rpc", "requestid": "inf-1", "intent": "list_channels", "params": {"x": NaN}}',
])
async def test_non_finite_numbers_are_refused_and_never_stored(running: Running, frame: str) -> None:
    admin = await RawWs.open(running, "admin")
    await admin.conn.write_message(frame)
    answer = await admin.response(timeout=30)
    assert answer["code"] == 400
    if "NaN" not in frame:  # a NaN literal is not JSON at all, so no requestid can be read
        assert answer["requestid"] == "inf-1" and "finite" in answer["message"]
    log = await admin.rpc("get_audit_log", {"limit": 1000})
    assert log["status"] == "success"
    assert all(r["requestid"] != "inf-1" for r in log["data"]["records"])
    db = sqlite3.connect(running.node.settings.db_path)
    try:
        for (params,) in db.execute("SELECT params FROM audit"):
            json.loads(params, parse_constant=lambda name: pytest.fail(f"{name} stored in the audit log"))
    finally:
        db.close()


async def test_audit_log_readable_even_with_old_infinity_rows(running: Running) -> None:
    """Rows written by older versions (``Infinity`` in params) no longer break ``get_audit_log``."""
    await running.node.db.execute(
        # id -1: below every id the running node gives (it counts on from the highest at its start).
        "INSERT INTO audit (id, ts, user, role, client_kind, client_id, requestid, intent, params, outcome, code,"
        " duration_ms) VALUES (-1, 1, 'oper', 'operator', 'websocket', 'c', 'old', 'publish_channel',"
        " '{\"x\": Infinity}', 'error', 400, 1)")
    admin = await RawWs.open(running, "admin")
    log = await admin.rpc("get_audit_log", {"limit": 1000})
    assert log["status"] == "success"
    old = [r for r in log["data"]["records"] if r["requestid"] == "old"]
    assert old and old[0]["params"] == {"x": "Infinity"}


def test_cli_prints_log_and_model_text_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, force_terminal=True, width=400))
    text = ("2024/05/01 [error] 12#0: upstream timed out [crit] disk [/x] [notice] [bold]x[/bold] "
            "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;pwned\x07 \r over \x9b31m end")
    cli._show_answer({"answer": text}, as_json=False)
    printed = out.getvalue()
    for literal in ("[error]", "[crit]", "[/x]", "[notice]", "[bold]x[/bold]", "red", "over", "end"):
        assert literal in printed
    body = printed.split("assistant> ", 1)[1]
    assert "\x1b]0;" not in body and "\x1b[2J" not in body and "\r" not in body and "\x9b" not in body
    assert "\x1b[31m" not in body  # the log's own colour codes are gone; only our style is left
    err = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=err, force_terminal=False, width=400))
    with pytest.raises(Exception):
        cli.fail("read_log: [/x] not found \x1b[2J")
    assert "[/x] not found" in err.getvalue() and "\x1b" not in err.getvalue()


async def test_lockout_can_not_be_used_against_the_owner(running: Running, tmp_path: Path) -> None:
    url = f"{running.url}/authorize"
    admin = {"username": "admin", "password": client_credential(PASSWORDS["admin"])}
    bad = {**admin, "password": client_credential("guess")}
    # An attacker guesses admin's password over and over from one address.
    codes = [(await post_form(url, bad, source_ip="127.0.0.66"))[0] for _ in range(30)]
    assert codes[:5] == [401] * 5 and 429 in codes
    # The owner, from their own address, logs in at once.
    assert (await post_form(url, admin, source_ip="127.0.0.1"))[0] == 200
    # From the attacker's address the pair waits; an admin clears it with the CLI on the running node.
    assert (await post_form(url, admin, source_ip="127.0.0.66"))[0] == 429
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloudisense.cli", "user", "unlock", "admin", "--data-dir",
        str(running.node.settings.data_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, errs = await proc.communicate()
    assert proc.returncode == 0, errs.decode()
    assert "admin may log in again" in out.decode()
    assert (await post_form(url, admin, source_ip="127.0.0.66"))[0] == 200
    # Unlocking a user that does not exist says so.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloudisense.cli", "user", "unlock", "nobody", "--data-dir",
        str(running.node.settings.data_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, errs = await proc.communicate()
    assert proc.returncode == 1 and "no user 'nobody'" in errs.decode()
