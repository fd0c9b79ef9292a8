"""Plain-words answers built only from what the steps actually returned.

A module words its own results (``Intent.say(params, data)``: it knows their shape); every other
result gets the generic renderer: a list of records becomes a small table, a record becomes
``key: value`` lines, never raw JSON. Nothing here claims an action that did not run: a step that
was refused, failed, skipped or is waiting for approval is said to be so.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudisense.core.intents import IntentRegistry

log = logging.getLogger(__name__)
MAX_ROWS = 15
MAX_COLUMNS = 6
MAX_CELL = 60


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in list(value.items())[:4])
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def _label(key: str) -> str:
    return key.replace("_", " ")


def table(rows: list[dict[str, Any]]) -> str:
    """A small aligned text table of records (the first columns with plain values)."""
    columns: list[str] = []
    for row in rows[:MAX_ROWS]:
        for key, value in row.items():
            if key not in columns and not isinstance(value, (dict, list)) and len(columns) < MAX_COLUMNS:
                columns.append(key)
    if not columns:
        return "\n".join(f"  {_cell(r)}" for r in rows[:MAX_ROWS])
    cells = [[_label(c) for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows[:MAX_ROWS]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    more = f"\n  … and {len(rows) - MAX_ROWS} more" if len(rows) > MAX_ROWS else ""
    return "\n".join(lines) + more


def render_data(intent: str, data: Any) -> str:
    """The generic wording of a result whose module does not word it."""
    title = intent.replace("_", " ")
    if data is None or data == {} or data == []:
        return f"{title}: done (nothing to report)"
    if isinstance(data, list):
        records = [d for d in data if isinstance(d, dict)]
        if records and len(records) == len(data):
            return f"{title} ({len(data)}):\n" + table(records)
        return f"{title}: " + _cell(data)
    if not isinstance(data, dict):
        return f"{title}: {_cell(data)}"
    lists = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    if len(lists) == 1:
        key, rows = next(iter(lists.items()))
        rest = [f"{_label(k)} {_cell(v)}" for k, v in data.items() if k != key and not isinstance(v, (dict, list))]
        head = f"{title}: {len(rows)} {_label(key)}" + (f" ({', '.join(rest[:4])})" if rest else "")
        return head + "\n" + table(rows)
    lines = [f"  {_label(k)}: {_cell(v)}" for k, v in list(data.items())[:MAX_ROWS]]
    return f"{title}:\n" + "\n".join(lines)


def _say(intent: str, params: dict[str, Any], data: Any, registry: IntentRegistry | None) -> str:
    found = registry.find(intent) if registry is not None else None
    if found is not None and found.say is not None:
        try:
            return found.say(params, data)
        except Exception:  # a result of an unexpected shape still gets the generic wording
            log.debug("say() of %s failed; using the generic wording", intent, exc_info=True)
    return render_data(intent, data)


_REF = re.compile(r"\$\{[A-Za-z][\w-]*\.data\.([\w.-]+)\}")


def _readable(text: str) -> str:
    """References said as words: ``${s1.data.disk.percent} > 90`` -> ``disk percent > 90``."""
    return _REF.sub(lambda m: m.group(1).replace(".", " ").replace("_", " "), text).replace("'", "")


def render_step(step: Mapping[str, Any], registry: IntentRegistry | None = None) -> str:
    """One line (or block) about one step's real outcome."""
    intent, status, params = step.get("intent", "?"), step.get("status"), step.get("params") or {}
    if status == "ok":
        return _say(intent, dict(params), step.get("data"), registry)
    if status == "pending_approval":
        return f"{intent} has not run yet: it is waiting for approval"
    if status == "denied":
        return f"{intent} was not run: policy refused it ({step.get('message')})"
    if status in ("rejected", "expired"):
        return f"{intent} was not run: the approval was {status}"
    if status == "skipped":
        return f"{intent} was not run: {_readable(str(step.get('message') or 'skipped'))}"
    return f"{intent} failed: {step.get('message')}"


def compose_answer(result: Mapping[str, Any], registry: IntentRegistry | None = None, since: int = 0) -> str:
    """The answer to the user for an executed plan (``ExecutionResult.as_dict()``).

    ``since``: steps before this index were already reported (a run resumed after an approval).
    """
    parts = [render_step(step, registry) for step in list(result.get("steps", []))[since:]
             if step.get("status") != "pending_approval"]
    approval = result.get("approval") or {}
    paused = result.get("status") == "paused" and bool(approval)
    if paused:
        parts.append(f"Waiting for approval before: {approval.get('description')} "
                     f"(approval {approval.get('approval_id')}).")
    not_run = [s.get("intent", "?") for s in result.get("not_run") or []]
    if not_run:
        parts.append(("Then, once approved: " if paused else "Not run: ") + ", ".join(not_run))
    return "\n".join(parts) or "Nothing was run."
