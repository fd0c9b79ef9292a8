"""Fake model services for tests: a tiny HTTP server in a thread, speaking the wire formats.

Tests fake the *peer* (real HTTP, real SDK, real retries), never SDK internals.
A :class:`FakePeer` answers each request with the next scripted reply (the last
one repeats), and records every request it saw, so tests can count attempts.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A plain JSON answer (errors, mostly)."""

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SSE:
    """A streamed answer: ``events`` are complete SSE frames (``data: ...\\n\\n``).

    ``cut_after``: after that many frames the socket is closed abruptly (the chunked
    body never terminates), like a peer that dies midway.
    """

    events: list[str]
    cut_after: int | None = None
    delay: float = 0.0


@dataclass
class Hang:
    """Accept the request and never answer (until the peer stops)."""

    seconds: float = 30.0


@dataclass
class Seen:
    """One request the peer received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakePeer:
    """An HTTP server on 127.0.0.1:<free port> answering scripted replies."""

    def __init__(self, *replies: Reply | SSE | Hang) -> None:
        self.replies: deque[Reply | SSE | Hang] = deque(replies)
        self.requests: list[Seen] = []
        self._stop = threading.Event()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                peer.requests.append(Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                peer._answer(self, peer._next())

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the peer."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _next(self) -> Reply | SSE | Hang:
        if len(self.replies) > 1:
            return self.replies.popleft()
        if self.replies:
            return self.replies[0]
        return Reply(500, {"error": {"message": "no reply scripted"}})

    def _answer(self, h: BaseHTTPRequestHandler, reply: Reply | SSE | Hang) -> None:
        if isinstance(reply, Hang):
            self._stop.wait(reply.seconds)
            h.close_connection = True
            return
        if isinstance(reply, Reply):
            data = json.dumps(reply.body).encode()
            h.send_response(reply.status)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            return
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        for i, frame in enumerate(reply.events):
            if reply.cut_after is not None and i >= reply.cut_after:
                # Die midway: no terminating chunk, the connection just goes.
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
                h.close_connection = True
                return
            data = frame.encode()
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()
            if reply.delay:
                time.sleep(reply.delay)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def attempts(self, path_suffix: str = "") -> int:
        """How many requests reached the peer (optionally only those whose path ends so)."""
        return sum(1 for r in self.requests if r.path.endswith(path_suffix))

    def __enter__(self) -> FakePeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


# --- OpenAI chat-completions streaming wire format -----------------------------------------------


def oa_frame(payload: dict[str, Any] | str) -> str:
    """One ``data:`` frame."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def oa_chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> str:
    """A chat.completion.chunk with one choice."""
    return oa_frame(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        }
    )


def oa_usage(prompt: int, completion: int) -> str:
    """The final usage chunk (stream_options.include_usage)."""
    return oa_frame(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
    )


def oa_text(*parts: str, usage: tuple[int, int] | None = (7, 3), finish: str = "stop") -> list[str]:
    """A streamed text answer."""
    frames = [oa_chunk({"role": "assistant", "content": ""})]
    frames += [oa_chunk({"content": p}) for p in parts]
    frames.append(oa_chunk({}, finish))
    if usage:
        frames.append(oa_usage(*usage))
    frames.append(oa_frame("[DONE]"))
    return frames


def oa_tools(*calls: tuple[str, str, list[str]], usage: tuple[int, int] = (20, 9)) -> list[str]:
    """Streamed tool calls: each ``(id, name, argument fragments)``, fragments sent interleaved."""
    frames = [oa_chunk({"role": "assistant", "content": None})]
    for index, (cid, name, _) in enumerate(calls):
        frames.append(
            oa_chunk({"tool_calls": [{"index": index, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}]})
        )
    longest = max(len(c[2]) for c in calls)
    for step in range(longest):
        for index, (_, _, frags) in enumerate(calls):
            if step < len(frags):
                frames.append(oa_chunk({"tool_calls": [{"index": index, "function": {"arguments": frags[step]}}]}))
    frames.append(oa_chunk({}, "tool_calls"))
    frames.append(oa_usage(*usage))
    frames.append(oa_frame("[DONE]"))
    return frames


# --- Anthropic Messages streaming wire format -----------------------------------------------------


def an_frame(payload: dict[str, Any]) -> str:
    """One ``event:`` + ``data:`` frame."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


def an_start(input_tokens: int = 11) -> str:
    """message_start."""
    return an_frame(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-fake",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }
    )


def an_text_block(index: int, *parts: str) -> list[str]:
    """A text content block streamed in parts."""
    frames = [an_frame({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})]
    frames += [
        an_frame({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}})
        for p in parts
    ]
    frames.append(an_frame({"type": "content_block_stop", "index": index}))
    return frames


def an_tool_block(index: int, tool_id: str, name: str, *fragments: str) -> list[str]:
    """A tool_use block whose input JSON arrives in fragments."""
    frames = [
        an_frame(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            }
        )
    ]
    frames += [
        an_frame({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}})
        for f in fragments
    ]
    frames.append(an_frame({"type": "content_block_stop", "index": index}))
    return frames


def an_end(stop_reason: str = "end_turn", output_tokens: int = 5) -> list[str]:
    """message_delta + message_stop."""
    return [
        an_frame(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            }
        ),
        an_frame({"type": "message_stop"}),
    ]
