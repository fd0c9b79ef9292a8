"""Demo key-value server (a tiny stand-in for redis) over TCP, one command per line.

Commands: ``PING`` -> ``+PONG``, ``SET k v`` -> ``+OK``, ``GET k`` -> ``$<len>`` + value or
``$-1``, ``DEL k`` -> ``:1``/``:0``, ``QUIT``. Answers end with CRLF like redis's.

    python kv.py --port 8082

Fault knob (see ``_common.py``): ``{"mode": "maxclients"}`` every command is answered
``-ERR max number of clients reached`` and the connection closed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from _common import on_fault

MAX_LINE = 65536


class Store:
    """The keys, in memory."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        #: The injected fault (``_common.on_fault``); empty when healthy.
        self.fault: dict[str, object] = {}

    def answer(self, line: str) -> tuple[str, bool]:
        """The reply to one command line, and whether to close the connection."""
        if self.fault.get("mode") == "maxclients":
            return "-ERR max number of clients reached", True
        parts = line.split(" ", 2)
        cmd = parts[0].upper()
        if cmd == "PING":
            return "+PONG", False
        if cmd == "QUIT":
            return "+OK", True
        if cmd == "SET" and len(parts) == 3:
            self.data[parts[1]] = parts[2]
            return "+OK", False
        if cmd == "GET" and len(parts) == 2:
            value = self.data.get(parts[1])
            return ("$-1", False) if value is None else (f"${len(value.encode())}\r\n{value}", False)
        if cmd == "DEL" and len(parts) == 2:
            return f":{1 if self.data.pop(parts[1], None) is not None else 0}", False
        return f"-ERR unknown command or wrong arguments '{cmd[:32]}'", False


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    store = Store()
    writers: set[asyncio.StreamWriter] = set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                reply, close = store.answer(line)
                writer.write(reply.encode() + b"\r\n")
                await writer.drain()
                if close:
                    break
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(client, host, port, limit=MAX_LINE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    on_fault("kv", store.fault.update)
    print(f"kv listening on {host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()
        for writer in list(writers):  # ends each client's readline, so no task is left to cancel
            writer.close()
        await asyncio.sleep(0.05)
    print("kv stopped", flush=True)


def main() -> None:
    """Parse arguments and serve."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8082)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
