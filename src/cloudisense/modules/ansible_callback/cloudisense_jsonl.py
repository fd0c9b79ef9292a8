"""Ansible stdout callback: one JSON object per line, as the run goes (for CloudiSENSE).

Lines: ``play_start``, ``task_start``, per host ``ok``/``changed``/``failed``/``skipped``/
``unreachable``, ``diff`` (with ``--diff``: a unified diff of what changes or would change), and a
final ``stats`` line with the per-host recap (ok, changed, failed, unreachable, skipped, rescued,
ignored). Works with ansible-core 2.16+ (result attributes with or without the leading ``_``).
"""

from __future__ import annotations

import json
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: cloudisense_jsonl
    type: stdout
    short_description: one JSON line per event, for CloudiSENSE
    description: Streams play, task, host result, diff and recap events as JSON lines.
"""

MAX_TEXT = 4000
MAX_DIFF = 65536


def _parts(result: Any) -> tuple[str, str, dict[str, Any]]:
    host = getattr(result, "host", None) or result._host
    task = getattr(result, "task", None) or result._task
    res = getattr(result, "result", None)
    if res is None:
        res = getattr(result, "_result", {})
    return host.get_name(), task.get_name(), res


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "... (truncated)"


class CallbackModule(CallbackBase):
    """Emits JSON lines on stdout."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "cloudisense_jsonl"

    def _emit(self, event: str, **data: Any) -> None:
        self._display.display(json.dumps({"event": event, **data}, default=str))

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._emit("play_start", play=play.get_name())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._emit("task_start", task=task.get_name())

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._emit("task_start", task=task.get_name(), handler=True)

    def v2_runner_on_ok(self, result: Any) -> None:
        host, task, res = _parts(result)
        self._emit("changed" if res.get("changed") else "ok", host=host, task=task)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        host, task, res = _parts(result)
        msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
        self._emit("failed", host=host, task=task, msg=_text(msg), ignored=bool(ignore_errors))

    def v2_runner_on_skipped(self, result: Any) -> None:
        host, task, _ = _parts(result)
        self._emit("skipped", host=host, task=task)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        host, task, res = _parts(result)
        self._emit("unreachable", host=host, task=task, msg=_text(res.get("msg", "")))

    def v2_on_file_diff(self, result: Any) -> None:
        host, task, res = _parts(result)
        items = res["results"] if isinstance(res.get("results"), list) else [res]
        for item in items:
            if isinstance(item, dict) and item.get("diff") and item.get("changed"):
                text = self._get_diff(item["diff"])
                if text:
                    if len(text) > MAX_DIFF:
                        text = text[:MAX_DIFF] + "\n... (diff truncated)\n"
                    self._emit("diff", host=host, task=task, diff=text)

    def v2_playbook_on_no_hosts_matched(self) -> None:
        self._emit("no_hosts_matched")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[host] = {"ok": s["ok"], "changed": s["changed"], "failed": s["failures"],
                           "unreachable": s["unreachable"], "skipped": s["skipped"],
                           "rescued": s.get("rescued", 0), "ignored": s.get("ignored", 0)}
        self._emit("stats", hosts=hosts)
