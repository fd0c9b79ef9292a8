"""Demo web application: a tiny HTTP server that writes an application log.

Routes: ``GET /health`` (200), ``GET /`` (a page), ``GET /slow?seconds=N`` (sleeps, at most
10 s), ``POST /hook`` (accepts webhook JSON and logs it). Every ``--interval`` seconds it
writes an application log line (now and then a WARNING or ERROR) to ``--log``.

Fault knobs (see ``_common.py``): ``{"mode": "hang"}`` every request, ``/health`` included, blocks
(a deadlock); ``{"mode": "slow", "ms": 2500}`` every page but ``/health`` answers late;
``{"mode": "errors"}`` pages answer 500 (the database connection pool is exhausted).

    python webapp.py --port 8081 --log var/log/app.log
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from _common import LineLog, app_line, on_fault, on_stop

PAGE = b"<!doctype html><title>demo web</title><h1>CloudiSENSE demo web app</h1><p>It works.</p>\n"
MAX_HOOK_BYTES = 65536
APP_LOG: LineLog
#: The injected fault (``_common.on_fault``): ``{"mode": ...}``; empty when healthy.
FAULT: dict[str, object] = {}
POOL_SIZE = 20


class Handler(BaseHTTPRequestHandler):
    """The demo routes."""

    server_version = "demo-web/1.0"

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _faulty(self, path: str) -> bool:
        """Apply the injected fault; ``True`` when the request was answered by it."""
        mode = FAULT.get("mode")
        if mode == "hang":
            threading.Event().wait()  # blocks this request's thread for good, like a deadlock
        if path == "/health":
            return False  # a shallow health check: only a hang reaches it
        if mode == "slow":
            ms = float(FAULT.get("ms", 2500))  # type: ignore[arg-type]
            time.sleep(ms / 1000)
            APP_LOG.write(app_line("WARNING", "web", f"slow request: GET {path} took {ms:.0f}ms"))
        elif mode == "errors":
            APP_LOG.write(app_line("ERROR", "web", f"database connection pool exhausted ({POOL_SIZE} of {POOL_SIZE} "
                                                   f"in use); GET {path} answered 500"))
            self._send(500, b'{"error": "internal server error"}')
            return True
        return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if self._faulty(url.path):
            return
        if url.path == "/health":
            self._send(200, b'{"status": "ok"}')
        elif url.path == "/":
            self._send(200, PAGE, "text/html; charset=utf-8")
        elif url.path == "/slow":
            try:
                seconds = min(10.0, max(0.0, float(parse_qs(url.query).get("seconds", ["2"])[0])))
            except ValueError:
                seconds = 2.0
            time.sleep(seconds)
            APP_LOG.write(app_line("WARNING" if seconds >= 2 else "INFO", "web", f"slow request took {seconds:.1f}s"))
            self._send(200, json.dumps({"slept": seconds}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/hook":
            self._send(404, b'{"error": "not found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_HOOK_BYTES:
            self._send(413, b'{"error": "too large"}')
            return
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, b'{"error": "body is not JSON"}')
            return
        message = str(payload.get("message", "")) if isinstance(payload, dict) else ""
        node = str(payload.get("node", "?")) if isinstance(payload, dict) else "?"
        APP_LOG.write(app_line("INFO", "web", f"webhook received from {node}: {message[:500]!r}"))
        self._send(200, b'{"ok": true}')

    do_PUT = do_POST

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def chatter(stop: threading.Event, interval: float) -> None:
    """Periodic application log lines, now and then a warning or an error."""
    n = 0
    while not stop.wait(interval):
        n += 1
        roll = random.random()
        if roll < 0.05:
            APP_LOG.write(app_line("ERROR", "web", f"database query failed: timeout after 5000ms (request {n})"))
        elif roll < 0.15:
            APP_LOG.write(app_line("WARNING", "web", f"response time high: {random.randint(800, 3000)}ms on /"))
        else:
            APP_LOG.write(app_line("INFO", "web", f"served {random.randint(1, 40)} requests, "
                                                  f"p50 {random.randint(3, 40)}ms"))


def main() -> None:
    """Parse arguments and serve until SIGTERM."""
    global APP_LOG
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log", default=None, help="application log file (below the demo's var/)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between periodic log lines")
    args = ap.parse_args()
    APP_LOG = LineLog(args.log)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    threading.Thread(target=chatter, args=(stop, args.interval), daemon=True).start()

    def shutdown() -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for serve_forever

    on_stop(shutdown)
    on_fault("webapp", lambda knob: FAULT.update(knob))
    APP_LOG.write(app_line("INFO", "web", f"listening on http://{args.host}:{server.server_address[1]}"))
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    APP_LOG.write(app_line("INFO", "web", "stopped"))
    APP_LOG.close()


if __name__ == "__main__":
    main()
