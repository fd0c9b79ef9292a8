"""Files stay in their folders, secrets stay out of the audit log and of child processes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.conftest import make_settings, start_server, until

# Traversal, lookalikes and oddities every name-taking intent must refuse without touching a file.
HOSTILE_NAMES = ["../x", "..", "/etc/passwd", "a/b", "a\\b", "x\x00.sh", "․․/x", "．．/x", "x" * 5000,
                 "..%2fx", " ", "-rf", "\u202ex"]


async def test_names_never_leave_their_folders(tmp_path: Path) -> None:
    scripts, rules, playbooks, logs = (tmp_path / n for n in ("scripts", "rules", "playbooks", "logs"))
    for d in (scripts, rules, playbooks, logs):
        d.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.sh").write_text("touch " + str(tmp_path / "PWNED") + "\n")
    (outside / "secret.log").write_text("root password is hunter2\n")
    (scripts / "x.sh").symlink_to(outside / "x.sh")
    (logs / "app.log").write_text("fine\n")
    (logs / "linked.log").symlink_to(outside / "secret.log")
    (playbooks / "inventory.ini").write_text("localhost ansible_connection=local\n")
    (playbooks / "leak.yml").symlink_to(outside / "secret.log")
    settings = make_settings(tmp_path, modules=["pubsub", "audit", "scripts", "logs", "reactions", "provision"],
                             scripts={"folder": str(scripts)}, rules={"folder": str(rules)},
                             provision={"folder": str(playbooks), "inventory": str(playbooks / "inventory.ini")},
                             logs={"files": {"app": str(logs / "app.log"), "linked": str(logs / "linked.log")}})
    running = await start_server(settings)
    try:
        conn = await running.connect("admin")
        for name in HOSTILE_NAMES:
            for intent, params in (("start_script_execution", {"name": name}), ("read_log", {"name": name}),
                                   ("read_rule", {"rule_id": name}), ("delete_rule", {"rule_id": name}),
                                   ("run_playbook", {"name": name, "check": True})):
                answer = await conn.request(intent, params)
                assert answer["status"] == "error" and answer["code"] in (400, 403, 404), (intent, name, answer)
        # Symlinks pointing out of the folder are refused even under a good name.
        assert (await conn.request("start_script_execution", {"name": "x.sh"}))["code"] == 403
        linked = await conn.request("read_log", {"name": "linked"})
        assert linked["status"] == "error" and "hunter2" not in json.dumps(linked)
        assert (await conn.request("run_playbook", {"name": "leak.yml", "check": True}))["code"] in (400, 404)
        # A rule whose id tries to escape, as an object and as JSON text nested past the recursion limit.
        bad_rule = {"id": "../../escape", "listen-to": "/stats", "trigger": {}, "response": {"intent": "list_rules"}}
        assert (await conn.request("write_rule", {"rule_data": bad_rule}))["code"] == 400
        deep = await conn.request("write_rule", {"rule_data": "[" * 100_000 + "]" * 100_000})
        assert deep["code"] == 400 and "nests" in deep["message"]
        nested = await conn.request("write_rule", {"rule_data": json.dumps({"id": "deep", "x": _nest(200)})})
        assert nested["code"] == 400 and "nest" in nested["message"]
        assert not (tmp_path / "PWNED").exists()
        assert sorted(p.name for p in rules.iterdir()) == [] and not (tmp_path / "escape.json").exists()
        conn.close()
    finally:
        await running.server.stop()


def _nest(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_check_mode_refuses_playbooks_that_run_tasks_for_real(tmp_path: Path) -> None:
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "inventory.ini").write_text("localhost ansible_connection=local\n")
    marker = tmp_path / "RAN-FOR-REAL"
    (playbooks / "sneaky.yml").write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - name: runs even with --check\n      ansible.builtin.command: touch {marker}\n"
        "      check_mode: false\n")
    settings = make_settings(tmp_path, modules=["pubsub", "audit", "provision"],
                             provision={"folder": str(playbooks), "inventory": str(playbooks / "inventory.ini")})
    running = await start_server(settings)
    try:
        viewer = await running.connect("viewer")
        refused = await viewer.request("run_playbook", {"name": "sneaky.yml", "check": True})
        assert refused["code"] == 403 and "check_mode" in refused["message"]
        assert not marker.exists()
        viewer.close()
    finally:
        await running.server.stop()


async def test_audit_log_redacts_secret_keys_at_any_depth(tmp_path: Path) -> None:
    running = await start_server(make_settings(tmp_path, modules=["pubsub", "audit", "system"]))
    secrets = ["pw-1", "tok-2", "bot-3", "key-4", "bearer-5", "sec-6", "key-7", "pw-8", "cookie-9"]
    params = {"password": "pw-1", "nested": {"token": "tok-2", "deeper": [{"bot_token": "bot-3"}]},
              "api_key": "key-4", "headers": {"Authorization": "Bearer bearer-5"}, "jwt_secret": "sec-6",
              "X-Api-Key": "key-7", "passwd": "pw-8", "Cookie": "cookie-9", "harmless": "visible"}
    try:
        conn = await running.connect("admin")
        refused = await conn.request("get_disk_usage", params)  # extra fields: 400, but audited as sent
        assert refused["code"] == 400 and not any(s in json.dumps(refused) for s in secrets)
        records = await conn.call("get_audit_log", {"intent": "get_disk_usage"})
        stored = json.dumps(records)
        assert "visible" in stored and not [s for s in secrets if s in stored]
        conn.close()
    finally:
        await running.server.stop()
    # The database, its WAL and the audit journal's folder: every file the node wrote.
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert not [s for s in secrets if s.encode() in raw]


async def test_scripts_and_targets_get_no_node_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDISENSE_AUTH__JWT_SECRET", "jwt-secret-value-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leak")
    monkeypatch.setenv("CLOUDISENSE_NOTIFY__TELEGRAM_BOT_TOKEN", "123:telegram-must-not-leak")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "env.sh").write_text("env\n")
    dump = tmp_path / "target-env.txt"
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\nenv > {tmp_path / 'systemctl-env.txt'}\necho active\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    settings = make_settings(
        tmp_path, modules=["pubsub", "audit", "scripts", "targets"], scripts={"folder": str(scripts)},
        targets={"envdump": {"command": ["/bin/sh", "-c", f"env > {dump}; sleep 30"], "stop_timeout": 1},
                 "unit": {"backend": "systemd", "unit": "demo.service", "systemctl": str(fake)}})
    running = await start_server(settings)
    try:
        conn = await running.connect("admin")
        started = await conn.call("start_script_execution", {"name": "env.sh"})
        lines: list[str] = []
        while True:
            event = await conn.next_event(started["topic"])
            if event["meta"].get("event") == "script_output":
                lines += event["data"]["lines"]
            if event["meta"].get("event") == "script_stop":
                break
        await conn.call("start_target", {"name": "envdump"})
        await conn.request("target_status", {"name": "unit"})
        await until(lambda: dump.exists() and dump.stat().st_size > 0)
        await until(lambda: (tmp_path / "systemctl-env.txt").exists())
        seen = "\n".join(lines) + dump.read_text() + (tmp_path / "systemctl-env.txt").read_text()
        assert "PATH=" in seen
        for leaked in ("jwt-secret-value", "sk-openai", "telegram-must-not-leak"):
            assert leaked not in seen, leaked
        await conn.call("stop_target", {"name": "envdump"})
        conn.close()
    finally:
        await running.server.stop()
