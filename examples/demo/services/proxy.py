"""Demo reverse proxy (a fake nginx): forwards GET requests to an upstream.

Writes an access log in nginx's combined format and an nginx-style error log line
when the upstream can't be reached. ``/health`` is answered by the proxy itself.

    python proxy.py --port 8080 --upstream http://127.0.0.1:8081 \
        --access var/log/nginx-access.log --error var/log/nginx-error.log
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _common import LineLog, on_stop

ACCESS: LineLog
ERROR: LineLog
UPSTREAM = "http://127.0.0.1:8081"
_conn = 0
_conn_lock = threading.Lock()


def error_line(level: str, message: str) -> str:
    """``2026/11/24 02:30:00 [error] 123#0: *5 message``."""
    global _conn
    with _conn_lock:
        _conn += 1
        conn = _conn
    return f"{time.strftime('%Y/%m/%d %H:%M:%S')} [{level}] {os.getpid()}#0: *{conn} {message}"


class Handler(BaseHTTPRequestHandler):
    """Forwards GET; logs like nginx."""

    server_version = "nginx/1.24.0"

    def _access(self, status: int, size: int) -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        referer = self.headers.get("Referer", "-")
        agent = self.headers.get("User-Agent", "-")
        ACCESS.write(f'{self.client_address[0]} - - [{stamp}] "{self.requestline}" {status} {size} '
                     f'"{referer}" "{agent}"')

    def _send(self, status: int, body: bytes, ctype: str = "text/html") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._access(status, len(body))

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b'{"status": "ok"}', "application/json")
            return
        url = UPSTREAM.rstrip("/") + self.path
        try:
            req = urllib.request.Request(url, headers={"User-Agent": self.headers.get("User-Agent", "-")})
            with urllib.request.urlopen(req, timeout=10) as resp:
                self._send(resp.status, resp.read(), resp.headers.get("Content-Type", "text/html"))
        except urllib.error.HTTPError as exc:
            self._send(exc.code, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            code = getattr(reason, "errno", None) or 111
            what = "upstream timed out (110: Connection timed out)" if "timed out" in str(reason) else \
                f"connect() failed ({code}: {getattr(reason, 'strerror', None) or reason})"
            ERROR.write(error_line("error", f'{what} while connecting to upstream, client: {self.client_address[0]}, '
                                            f'server: localhost, request: "{self.requestline}", upstream: "{url}", '
                                            f'host: "{self.headers.get("Host", "-")}"'))
            self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>\n")

    def do_POST(self) -> None:
        self._send(405, b"<html><body><h1>405 Not Allowed</h1></body></html>\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def probe(port: int, stop: threading.Event, interval: float) -> None:
    """Request the proxy's own front page now and then, so the demo logs have traffic."""
    while not stop.wait(interval):
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"User-Agent": "demo-probe/1.0"})
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass  # the access and error logs already tell


def main() -> None:
    """Parse arguments and serve until SIGTERM."""
    global ACCESS, ERROR, UPSTREAM
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--upstream", default=UPSTREAM)
    ap.add_argument("--access", default=None, help="access log (below the demo's var/)")
    ap.add_argument("--error", default=None, help="error log (below the demo's var/)")
    ap.add_argument("--probe-interval", type=float, default=0.0, help="seconds between self-requests; 0: none")
    args = ap.parse_args()
    UPSTREAM = args.upstream
    ACCESS, ERROR = LineLog(args.access), LineLog(args.error)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    if args.probe_interval > 0:
        threading.Thread(target=probe, args=(server.server_address[1], stop, args.probe_interval), daemon=True).start()

    def shutdown() -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    on_stop(shutdown)
    ERROR.write(error_line("notice", f"start worker process {os.getpid()}"))
    print(f"listening on {args.host}:{server.server_address[1]} -> {UPSTREAM}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    ERROR.write(error_line("notice", "exiting"))
    ACCESS.close()
    ERROR.close()


if __name__ == "__main__":
    main()
