"""Plain-words answers built only from what the steps actually returned.

Each renderer turns one intent's result data into a sentence or a few lines
(the stats summarised, the matching log lines quoted). Nothing here claims an
action that did not run: a step that was refused, failed, skipped or is
waiting for approval is said to be so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Renderer = Callable[[dict[str, Any], dict[str, Any]], str]
MAX_LINES = 15


def _gib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB"


def _lines(lines: list[Any], limit: int = MAX_LINES) -> str:
    shown = [str(x) for x in lines[-limit:]]
    more = f"\n  … {len(lines) - limit} earlier lines not shown" if len(lines) > limit else ""
    return "\n".join(f"  {line}" for line in shown) + more


def _stats(d: dict[str, Any], p: dict[str, Any]) -> str:
    cpu, mem, disk, load = d.get("cpu", {}), d.get("memory", {}), d.get("disk", {}), d.get("load", {})
    return (f"CPU {cpu.get('percent', '?')} % of {cpu.get('count', '?')} cores, "
            f"memory {mem.get('percent', '?')} % used, disk / {disk.get('percent', '?')} % used, "
            f"load {load.get('1m', '?')} / {load.get('5m', '?')} / {load.get('15m', '?')}")


def _process(d: dict[str, Any], p: dict[str, Any]) -> str:
    if not d.get("running"):
        return f"no process named {d.get('name')} is running"
    pids = ", ".join(str(x.get("pid")) for x in d.get("processes", [])[:8])
    return f"{d.get('name')} is running ({d.get('count')} process(es), pid {pids})"


def _processes(d: dict[str, Any], p: dict[str, Any]) -> str:
    rows = [f"{x.get('name')} (pid {x.get('pid')}): cpu {x.get('cpu_percent')} %, mem {x.get('memory_percent')} %"
            for x in d.get("processes", [])]
    return f"top processes by {d.get('sort_by')}:\n" + _lines(rows)


def _disk(d: dict[str, Any], p: dict[str, Any]) -> str:
    return (f"{d.get('path')}: {d.get('percent')} % used, {_gib(d.get('free', 0))} free "
            f"of {_gib(d.get('total', 0))}")


def _read_log(d: dict[str, Any], p: dict[str, Any]) -> str:
    lines = d.get("lines", [])
    if not lines:
        return f"the {d.get('name', p.get('name'))} log has no matching lines"
    return f"last {len(lines)} line(s) of the {d.get('name', p.get('name'))} log:\n" + _lines(lines)


def _search(d: dict[str, Any], p: dict[str, Any]) -> str:
    matches = d.get("matches", [])
    if not matches:
        return f"no lines match {p.get('pattern')!r}"
    rows = [f"[{m.get('log', m.get('name', '?'))}] {m.get('line', m)}" if isinstance(m, dict) else str(m)
            for m in matches]
    more = " (more were found; showing the newest)" if d.get("truncated") else ""
    return f"{len(matches)} line(s) match {p.get('pattern')!r}{more}:\n" + _lines(rows)


def _target(d: dict[str, Any], p: dict[str, Any]) -> str:
    target = d.get("target", d)
    name = target.get("name", p.get("name"))
    state = target.get("state", "unknown")
    health = target.get("health")
    extra = f", health {health}" if health and health != "unknown" else ""
    pid = f", pid {target.get('pid')}" if target.get("pid") else ""
    return f"{name} is {state}{pid}{extra}"


def _targets(d: dict[str, Any] | list[Any], p: dict[str, Any]) -> str:
    if isinstance(d, list):  # list_targets without details: the existing client's array of names
        return "services: " + ", ".join(str(name) for name in d)
    return "services: " + "; ".join(f"{t.get('name')} {t.get('state')}" for t in d.get("targets", []))


def _script(d: dict[str, Any], p: dict[str, Any]) -> str:
    sid = d.get("script_id", "?")
    return f"started {p.get('name')} as run {sid}; its output streams on /script/{sid}"


def _playbook(d: dict[str, Any], p: dict[str, Any]) -> str:
    mode = "dry run (check mode) of" if p.get("check") else "ran"
    hosts = d.get("hosts") or d.get("summary") or {}
    per_host = "; ".join(f"{h}: " + ", ".join(f"{k} {v}" for k, v in s.items() if isinstance(v, int))
                         for h, s in hosts.items() if isinstance(s, dict))
    return f"{mode} {p.get('name')}: {per_host or 'no host summary'}"


def _notify(d: dict[str, Any], p: dict[str, Any]) -> str:
    return f"sent the notification {p.get('message')!r}"


RENDERERS: dict[str, Renderer] = {
    "get_system_stats": _stats,
    "check_process": _process,
    "list_processes": _processes,
    "get_disk_usage": _disk,
    "read_log": _read_log,
    "search_logs": _search,
    "target_status": _target,
    "start_target": _target,
    "restart_target": _target,
    "stop_target": _target,
    "list_targets": _targets,
    "start_script_execution": _script,
    "run_playbook": _playbook,
    "simple_http_notify": _notify,
    "simple_telegram_notify": _notify,
}


def render_step(step: dict[str, Any]) -> str:
    """One line (or block) about one step's real outcome."""
    intent, status, params = step.get("intent", "?"), step.get("status"), step.get("params") or {}
    if status == "ok":
        data = step.get("data")
        renderer = RENDERERS.get(intent)
        if renderer is not None and isinstance(data, (dict, list)):
            try:
                return renderer(data, params)
            except Exception:  # a result of an unexpected shape still gets the generic rendering
                pass
        text = json.dumps(data, default=str, ensure_ascii=False)
        return f"{intent}: {text[:600]}{'…' if len(text) > 600 else ''}"
    if status == "pending_approval":
        return f"{intent} did not run yet: it is waiting for approval"
    if status == "denied":
        return f"{intent} was not run: policy refused it ({step.get('message')})"
    if status in ("rejected", "expired"):
        return f"{intent} was not run: the approval was {status}"
    if status == "skipped":
        return f"{intent} was skipped ({step.get('message')})"
    return f"{intent} failed: {step.get('message')}"


def compose_answer(result: dict[str, Any]) -> str:
    """The answer to the user for an executed plan (``ExecutionResult.as_dict()``)."""
    parts = [render_step(step) for step in result.get("steps", [])]
    approval = result.get("approval")
    paused = result.get("status") == "paused" and approval
    if paused:
        parts.append(f"Should I continue? Approval {approval.get('approval_id')} is needed for: "
                     f"{approval.get('description')}. Answer with confirm_action (approve or reject).")
    not_run = [s.get("intent", "?") for s in result.get("not_run") or []]
    if not_run:
        parts.append(("Then, once approved: " if paused else "Not run: ") + ", ".join(not_run))
    return "\n".join(parts) or "Nothing was run."
