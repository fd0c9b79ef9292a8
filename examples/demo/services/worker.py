"""Demo background worker: a job loop that writes an application log and a syslog file.

    python worker.py --log var/log/app.log --syslog var/log/syslog
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time

from _common import LineLog, app_line, on_stop

#: The host name in syslog lines: the demo node's identity.
HOST = "demo"


def syslog_line(message: str) -> str:
    """``Nov 24 02:30:00 demo worker[123]: message`` (RFC 3164 style, English month)."""
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    now = time.localtime()
    return f"{month[now.tm_mon - 1]} {now.tm_mday:2d} {time.strftime('%H:%M:%S', now)} {HOST} worker[{os.getpid()}]: {message}"


def main() -> None:
    """Run jobs until SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", default=None, help="application log file (below the demo's var/)")
    ap.add_argument("--syslog", default=None, help="syslog-format file (below the demo's var/)")
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between jobs")
    args = ap.parse_args()
    app, sys_log = LineLog(args.log), LineLog(args.syslog)
    stop = threading.Event()
    on_stop(stop.set)
    app.write(app_line("INFO", "worker", "started"))
    sys_log.write(syslog_line("started"))
    job = 0
    while not stop.wait(args.interval):
        job += 1
        took = random.uniform(0.01, 0.8)
        roll = random.random()
        if roll < 0.06:
            app.write(app_line("ERROR", "worker", f"job {job} failed: connection refused by redis at 127.0.0.1:8082"))
            sys_log.write(syslog_line(f"job {job} failed: connection refused"))
        elif roll < 0.16:
            app.write(app_line("WARNING", "worker", f"job {job} slow: {took * 10:.2f}s (queue depth {random.randint(20, 90)})"))
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
