"""End-to-end tests of the provision module: real ansible-playbook runs against localhost."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cloudisense.client import Connection
from cloudisense.modules.provision import Run
from tests.conftest import Running, make_settings, start_server

DEMO_PLAYBOOKS = Path(__file__).resolve().parents[2] / "examples" / "demo" / "playbooks"
MODULES = ["pubsub", "system", "audit", "provision"]


def demo_copy(tmp_path: Path) -> Path:
    """A copy of the demo playbooks in ``tmp_path/demo/playbooks`` (they write to ``tmp_path/demo/var``)."""
    folder = tmp_path / "demo" / "playbooks"
    shutil.copytree(DEMO_PLAYBOOKS, folder)
    return folder


def settings_for(tmp_path: Path, folder: Path, time_limit: float = 120) -> Any:
    """Node settings with the provision module on ``folder``."""
    return make_settings(tmp_path, modules=MODULES, provision={
        "folder": str(folder), "inventory": str(folder / "inventory.ini"), "time_limit": time_limit})


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    """A server whose playbooks are a copy of the demo's."""
    r = await start_server(settings_for(tmp_path, demo_copy(tmp_path)))
    yield r
    await r.server.stop()


def drain(conn: Connection) -> list[dict[str, Any]]:
    """Every event queued on ``conn`` so far."""
    out = []
    while not conn.events.empty():
        out.append(conn.events.get_nowait())
    return out


async def test_list_playbooks(node: Running, tmp_path: Path) -> None:
    folder = node.node.settings.provision.folder
    (tmp_path / "outside.yml").write_text("- hosts: all\n  tasks: []\n")
    (folder / "escape.yml").symlink_to(tmp_path / "outside.yml")
    (folder / "notes.txt").write_text("not a playbook")
    conn = await node.connect("viewer")
    listed = (await conn.call("list_playbooks"))["playbooks"]
    assert [p["name"] for p in listed] == ["nginx.yml", "users.yml"]
    assert listed[0]["plays"] == [{"name": "Configure the demo nginx", "hosts": "demo"}]
    assert node.node.entities()["playbook"] == ["nginx.yml", "users.yml"]
    conn.close()


async def test_check_then_apply_then_apply_again(node: Running, tmp_path: Path) -> None:
    out = tmp_path / "demo" / "var" / "provision" / "nginx"
    viewer = await node.connect("viewer")
    await viewer.call("subscribe_channel", {"topic": "/provision"})

    # Check mode is a read: a viewer may run it; it reports a diff and changes nothing.
    checked = await viewer.call("run_playbook", {"name": "nginx.yml", "check": True}, timeout=120)
    assert checked["check"] is True and checked["ok"] is True
    assert checked["hosts"]["localhost"]["changed"] == 3 and checked["hosts"]["localhost"]["failed"] == 0
    diff_text = "\n".join(d["diff"] for d in checked["diff"])
    assert "+worker_processes 2;" in diff_text and "+    listen 8080;" in diff_text
    assert not out.exists()
    events = drain(viewer)
    started = [e for e in events if e["name"] == "provision_started"]
    assert started and started[0]["topic"] == "/provision" and started[0]["data"]["run_id"] == checked["run_id"]
    stream = [e for e in events if e["topic"] == checked["topic"]]
    assert any(e["name"] == "provision_output" and e["data"]["line"] == "TASK [Write nginx.conf]" for e in stream)
    assert stream[-1]["name"] == "provision_done" and stream[-1]["data"]["status"] == "ok"
    assert any(e["name"] == "provision_done" and e["topic"] == "/provision" for e in events)

    refused = await viewer.request("run_playbook", {"name": "nginx.yml"})
    assert refused["code"] == 403 and "destructive" in refused["message"]
    viewer.close()

    oper = await node.connect("oper")
    applied = await oper.call("run_playbook", {"name": "nginx.yml", "extra_vars": {"listen_port": 8088}},
                              timeout=120)
    assert applied["ok"] is True and applied["check"] is False and "diff" not in applied
    assert applied["hosts"]["localhost"]["changed"] == 3 and applied["changed"] == 3
    assert "listen 8088;" in (out / "sites-enabled" / "demo.conf").read_text()
    assert (out / "nginx.conf").read_text().startswith("# Managed by CloudiSENSE")
    assert sorted(p.name for p in out.iterdir()) == ["conf.d", "nginx.conf", "sites-enabled"]

    again = await oper.call("run_playbook", {"name": "nginx.yml", "extra_vars": {"listen_port": 8088}},
                            timeout=120)
    assert again["ok"] is True and again["changed"] == 0
    assert again["hosts"]["localhost"] == {"ok": 3, "changed": 0, "failed": 0, "unreachable": 0,
                                           "skipped": 0, "rescued": 0, "ignored": 0}
    # The extra vars went through a private file that is gone now.
    assert list((node.node.settings.data_dir / "ansible" / "tmp").glob("extra-vars-*")) == []
    admin = await node.connect("admin")
    records = (await admin.call("get_audit_log", {"intent": "run_playbook"}))["records"]
    assert [r["user"] for r in records] == ["oper", "oper", "viewer", "viewer"]
    assert [r["outcome"] for r in records] == ["success", "success", "error", "success"]
    admin.close()
    oper.close()


async def test_bad_params_are_refused_before_anything_runs(node: Running, tmp_path: Path) -> None:
    folder = node.node.settings.provision.folder
    (tmp_path / "outside.yml").write_text("- hosts: all\n  tasks: []\n")
    (folder / "escape.yml").symlink_to(tmp_path / "outside.yml")
    conn = await node.connect("admin")
    await conn.call("subscribe_channel", {"topic": "/provision"})
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "../outside.yml"}, 400, "params.name"),
        ({"name": "/etc/passwd.yml"}, 400, "params.name"),
        ({"name": "templates/x.yml"}, 400, "params.name"),
        ({"name": "inventory.ini"}, 400, "params.name"),
        ({"name": "a..yml"}, 400, "file name of the playbook folder"),
        ({"name": "escape.yml"}, 400, "links outside the playbook folder"),
        ({"name": "missing.yml"}, 404, "playbooks: nginx.yml, users.yml"),
        ({"name": "nginx.yml", "extra_vars": {"bad-key": 1}}, 400, "must be an identifier"),
        ({"name": "nginx.yml", "extra_vars": {"ansible_connection": "ssh"}}, 400, "reserved"),
        ({"name": "nginx.yml", "extra_vars": {"x": ["{{ lookup('pipe', 'id') }}"]}}, 400, "Jinja templates"),
        ({"name": "nginx.yml", "limit": "web1 web2"}, 400, "params.limit"),
        ({"name": "nginx.yml", "limit": "x;rm -rf /"}, 400, "params.limit"),
        ({"name": "nginx.yml", "limit": "$(id)"}, 400, "params.limit"),
        ({"name": "nginx.yml", "limit": "@hosts.txt"}, 400, "params.limit"),
        ({"name": "nginx.yml", "limit": "--help"}, 400, "params.limit"),
        ({"name": "nginx.yml", "verbose": True}, 400, "extra inputs are not permitted"),
    ]
    for params, code, text in cases:
        resp = await conn.request("run_playbook", params)
        assert resp["code"] == code and text in resp["message"], (params, resp)
    await asyncio.sleep(0.05)
    assert [e for e in drain(conn) if e["name"] == "provision_started"] == []
    assert not (tmp_path / "demo" / "var").exists()
    conn.close()


async def test_time_limit_kills_the_run(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "slow.yml").write_text(
        "- name: Slow\n  hosts: demo\n  gather_facts: false\n  tasks:\n"
        "    - name: Wait\n      ansible.builtin.command: sleep 61.25\n")
    r = await start_server(settings_for(tmp_path, folder, time_limit=4))
    try:
        conn = await r.connect("oper")
        await conn.call("subscribe_channel", {"topic": "/provision"})
        resp = await conn.request("run_playbook", {"name": "slow.yml"}, timeout=60)
        assert resp["code"] == 504 and "was killed" in resp["message"] and "time_limit" in resp["message"]
        done = [e for e in drain(conn) if e["name"] == "provision_done" and e["topic"] == "/provision"]
        assert done[0]["data"]["status"] == "timeout"
        leftovers = [p for p in psutil.process_iter(["cmdline"]) if "61.25" in (p.info["cmdline"] or [])]
        assert leftovers == []
        conn.close()
    finally:
        await r.server.stop()


async def test_without_a_folder_the_intents_say_what_to_configure(tmp_path: Path) -> None:
    r = await start_server(make_settings(tmp_path, modules=MODULES))
    try:
        conn = await r.connect("admin")
        resp = await conn.request("list_playbooks")
        assert resp["code"] == 503 and "[provision] folder" in resp["message"]
        resp = await conn.request("run_playbook", {"name": "nginx.yml", "check": True})
        assert resp["code"] == 503
        conn.close()
    finally:
        await r.server.stop()


def test_callback_lines_become_a_summary() -> None:
    run = Run("r1", "site.yml", check=True)
    lines = [
        '{"event": "task_start", "task": "Install"}',
        '{"event": "failed", "host": "web1", "task": "Install", "msg": "no package", "ignored": false}',
        '{"event": "failed", "host": "web2", "task": "Install", "msg": "meh", "ignored": true}',
        '{"event": "unreachable", "host": "db1", "task": "Install", "msg": "ssh: timeout"}',
        '{"event": "diff", "host": "web2", "task": "Install", "diff": "+x"}',
        '{"event": "stats", "hosts": {"web1": {"ok": 0, "changed": 0, "failed": 1, "unreachable": 0}}}',
        "{not json",
    ]
    outputs = [run.take("stdout", line) for line in lines]
    run.take("stderr", "[WARNING]: something")
    assert outputs[0]["line"] == "TASK [Install]"
    assert outputs[1]["line"] == "failed: [web1] Install => no package"
    assert [f["host"] for f in run.failures] == ["web1", "db1"]
    assert run.failures[1]["kind"] == "unreachable"
    assert run.diffs == [{"host": "web2", "task": "Install", "diff": "+x"}]
    assert run.stats == {"web1": {"ok": 0, "changed": 0, "failed": 1, "unreachable": 0}}
    assert list(run.text) == ["{not json", "[WARNING]: something"]
