"""Shared helpers of the demo services (standard library only).

The demo services write only below the demo folder's ``var/`` (or below ``$DEMO_VAR_DIR``
when set, which tests use to keep files in their temporary folder); a log path outside
that folder is refused at start-up.

Fault knobs (for the fault scenarios in ``eval/scenarios/``): write ``var/faults/<service>.json``
(``<service>``: the script's name without ``.py``: ``webapp``, ``kv``)
(``{"mode": "...", ...}``) and send the service's process SIGUSR1. The service reads the file,
removes it and behaves faulty until it stops, so a restart clears the fault, like a real leak or
deadlock. The modes each service knows are in its docstring; an unknown mode is ignored.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent


def var_root() -> Path:
    """The one folder the demo services may write to."""
    return Path(os.environ.get("DEMO_VAR_DIR") or DEMO / "var").resolve()


def checked_path(arg: str) -> Path:
    """``arg`` resolved (relative to the working folder); exits when it leaves :func:`var_root`."""
    path = Path(arg).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path = path.resolve()
    root = var_root()
    if not path.is_relative_to(root):
        sys.exit(f"refusing to write {path}: demo services only write below {root}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class LineLog:
    """An append-only text file written one whole line at a time (safe across threads)."""

    def __init__(self, arg: str | None) -> None:
        self.path = checked_path(arg) if arg else None
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8", buffering=1) if self.path else None  # noqa: SIM115

    def write(self, line: str) -> None:
        """Append ``line`` (a newline is added)."""
        if self._file is None:
            return
        with self._lock:
            self._file.write(line.rstrip("\n") + "\n")

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            with self._lock:
                self._file.close()
                self._file = None


def iso_now() -> str:
    """Local time as ``2026-11-24T02:30:00``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def app_line(level: str, source: str, message: str) -> str:
    """An application log line: ``2026-11-24T02:30:00 INFO web: message``."""
    return f"{iso_now()} {level} {source}: {message}"


def on_stop(callback: Callable[[], None]) -> None:
    """Call ``callback`` once on SIGTERM or SIGINT."""

    def handler(signum: int, frame: object) -> None:
        callback()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def on_fault(service: str, apply: Callable[[dict[str, object]], None]) -> None:
    """On SIGUSR1, read and remove ``var/faults/<service>.json`` and pass its object to ``apply``."""

    def handler(signum: int, frame: object) -> None:
        path = var_root() / "faults" / f"{service}.json"
        try:
            knob = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()
        except (OSError, ValueError):
            return  # no knob, or not JSON: nothing changes
        if isinstance(knob, dict):
            apply(knob)

    signal.signal(signal.SIGUSR1, handler)
