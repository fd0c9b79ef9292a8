"""Demo background worker: a job loop that writes an application log and a syslog file.

Each job talks to the kv store (``--kv host:port``, a PING) when one is given, so a kv store that
is down or refusing clients shows up as failed jobs. ``--settings`` names an optional JSON file
(``{"interval": seconds > 0, "batch_size": 1..1000}``); a bad value stops the worker at start with
exit code 2 and a log line saying which setting is wrong.

    python worker.py --log var/log/app.log --syslog var/log/syslog --kv 127.0.0.1:8082 --settings files/worker.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path

from _common import LineLog, app_line, on_stop

#: The host name in syslog lines: the demo node's identity.
HOST = "demo"
DEFAULTS: dict[str, float | int] = {"interval": 3.0, "batch_size": 10}


def syslog_line(message: str) -> str:
    """``Nov 24 02:30:00 demo worker[123]: message`` (RFC 3164 style, English month)."""
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    now = time.localtime()
    return f"{month[now.tm_mon - 1]} {now.tm_mday:2d} {time.strftime('%H:%M:%S', now)} {HOST} worker[{os.getpid()}]: {message}"


def load_settings(path: str | None) -> dict[str, float | int]:
    """The worker's settings: defaults, overridden by the JSON file; ``ValueError`` says what is wrong."""
    settings = dict(DEFAULTS)
    if not path or not Path(path).exists():
        return settings
    try:
        given = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(given, dict):
        raise ValueError(f"{path} must hold a JSON object")
    for key, value in given.items():
        if key == "interval":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"invalid setting interval={value!r} in {path}: "
                                 "expected a number of seconds above 0")
        elif key == "batch_size":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                raise ValueError(f"invalid setting batch_size={value!r} in {path}: "
                                 "expected a whole number from 1 to 1000")
        else:
            raise ValueError(f"unknown setting {key!r} in {path}")
        settings[key] = value
    return settings


def kv_problem(address: str | None) -> str | None:
    """Why the kv store could not serve a PING, or ``None`` when it answered (or none is configured)."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.makefile("rb").readline().decode(errors="replace").strip()
    except ConnectionRefusedError:
        return f"connection refused by redis at {address}"
    except OSError as exc:
        return f"redis at {address} unreachable ({exc.__class__.__name__})"
    if reply != "+PONG":
        return f"redis at {address} answered: {reply.lstrip('-')[:200]}"
    return None


def main() -> None:
    """Run jobs until SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", default=None, help="application log file (below the demo's var/)")
    ap.add_argument("--syslog", default=None, help="syslog-format file (below the demo's var/)")
    ap.add_argument("--interval", type=float, default=None, help="seconds between jobs (overrides the settings file)")
    ap.add_argument("--kv", default=None, help="host:port of the kv store each job uses")
    ap.add_argument("--settings", default=None, help="JSON settings file (interval, batch_size)")
    args = ap.parse_args()
    app, sys_log = LineLog(args.log), LineLog(args.syslog)
    try:
        settings = load_settings(args.settings)
    except ValueError as exc:
        app.write(app_line("ERROR", "worker", f"cannot start: {exc}"))
        sys_log.write(syslog_line(f"cannot start: {exc}"))
        print(f"worker: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    interval = args.interval if args.interval is not None else float(settings["interval"])
    stop = threading.Event()
    on_stop(stop.set)
    app.write(app_line("INFO", "worker", "started"))
    sys_log.write(syslog_line("started"))
    job = 0
    while not stop.wait(interval):
        job += 1
        took = random.uniform(0.01, 0.8)
        problem = kv_problem(args.kv)
        if problem:
            app.write(app_line("ERROR", "worker", f"job {job} failed: {problem}"))
            sys_log.write(syslog_line(f"job {job} failed: {problem}"))
        elif random.random() < 0.1:
            depth = random.randint(20, 90)
            app.write(app_line("WARNING", "worker", f"job {job} slow: {took * 10:.2f}s (queue depth {depth})"))
            sys_log.write(syslog_line(f"job {job} slow"))
        else:
            app.write(app_line("INFO", "worker", f"job {job} done in {took:.2f}s"))
            sys_log.write(syslog_line(f"job {job} done"))
    app.write(app_line("INFO", "worker", "stopping on request"))
    sys_log.write(syslog_line("stopped"))
    app.close()
    sys_log.close()


if __name__ == "__main__":
    main()
