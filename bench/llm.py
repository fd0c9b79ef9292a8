"""Benchmark: the local model through llmcore's provider vs a direct llama-cpp-python call.

Prints, for this machine and the same loaded model, tokens/second and
time-to-first-token of both paths and their ratio, then the time to the first
``llm_delta`` event of ``chat_llm`` over a real WebSocket to a real server minus
the direct call's time to first token for the same messages. Figures only;
nothing is asserted. Run::

    .venv/bin/python bench/llm.py [--runs 5] [--max-tokens 64] [--model /path.gguf]

:func:`measure_stream` times any async stream of items (provider events,
WebSocket frames, ...); whoever wires ``chat_llm`` can reuse it to add the
over-WebSocket figure next to these two.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cloudisense.config import LLMSettings, ProviderSettings
from cloudisense.llm import ChatRequest, Message, TextDelta, get_provider
from cloudisense.llm.local import LocalProvider, to_local_messages

PROMPT = "Write a short paragraph about keeping servers healthy."


@dataclass
class Figures:
    """One timed generation."""

    ttft: float  # seconds until the first token
    tokens: int
    seconds: float  # whole generation

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of generation (first token to last)."""
        span = self.seconds - self.ttft
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else float("nan")


class _Stopwatch:
    """Times one stream: when the first token came, how many came, how long it all took."""

    def __init__(self, is_token: Callable[[Any], bool]) -> None:
        self.is_token = is_token
        self.start = time.perf_counter()
        self.first: float | None = None
        self.count = 0

    def see(self, item: Any) -> None:
        if self.is_token(item):
            self.count += 1
            if self.first is None:
                self.first = time.perf_counter() - self.start

    def figures(self) -> Figures:
        total = time.perf_counter() - self.start
        return Figures(self.first if self.first is not None else total, self.count, total)


async def measure_stream(items: AsyncIterable[Any], is_token: Callable[[Any], bool]) -> Figures:
    """Time an async stream: first ``is_token`` item, count of them, total time."""
    watch = _Stopwatch(is_token)
    async for item in items:
        watch.see(item)
    return watch.figures()


def measure_sync(items: Iterable[Any], is_token: Callable[[Any], bool]) -> Figures:
    """Like :func:`measure_stream` for a plain iterator."""
    watch = _Stopwatch(is_token)
    for item in items:
        watch.see(item)
    return watch.figures()


def _direct_token(chunk: dict[str, Any]) -> bool:
    return bool(chunk["choices"][0]["delta"].get("content"))


async def run(runs: int, max_tokens: int, model: str) -> None:
    settings = LLMSettings(providers=ProviderSettings(local_context=2048))
    provider = get_provider("local:" + model if model else "local", settings)
    assert isinstance(provider, LocalProvider)
    request = ChatRequest([Message.user(PROMPT)], max_tokens=max_tokens, temperature=0)
    llama = await asyncio.to_thread(provider.local.load)  # the same loaded model for both paths
    messages = to_local_messages(request)

    def direct() -> Figures:
        stream = llama.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0, stream=True)
        return measure_sync(stream, _direct_token)

    async def ours() -> Figures:
        return await measure_stream(provider.stream(request), lambda e: isinstance(e, TextDelta))

    # Warm-up (first evaluation, caches), then alternate so both see the same conditions.
    await asyncio.to_thread(direct)
    await ours()
    results: dict[str, list[Figures]] = {"direct": [], "llmcore": []}
    for _ in range(runs):
        # The direct call runs in a thread too, as the provider's does, so only llmcore's overhead differs.
        results["direct"].append(await asyncio.to_thread(direct))
        results["llmcore"].append(await ours())

    def med(name: str, key: Callable[[Figures], float]) -> float:
        return statistics.median(key(f) for f in results[name])

    print(f"model: {provider.model}")
    print(f"runs: {runs} (median), max_tokens: {max_tokens}, tokens generated: {results['llmcore'][0].tokens}")
    print(f"{'path':<10} {'tokens/s':>10} {'TTFT ms':>10}")
    for name in ("direct", "llmcore"):
        print(f"{name:<10} {med(name, lambda f: f.tokens_per_second):>10.1f} {med(name, lambda f: f.ttft) * 1000:>10.1f}")
    tps_ratio = med("llmcore", lambda f: f.tokens_per_second) / med("direct", lambda f: f.tokens_per_second)
    ttft_ratio = med("llmcore", lambda f: f.ttft) / med("direct", lambda f: f.ttft)
    print(f"ratio llmcore/direct: tokens/s {tps_ratio:.3f}, TTFT {ttft_ratio:.3f}")


async def run_websocket(runs: int, max_tokens: int) -> None:
    """Time to first delta over the WebSocket vs the direct call's first token, same prompt and model."""
    import tempfile
    import uuid

    from cloudisense.assistant.chat import CHAT_SYSTEM_PROMPT as SYSTEM_PROMPT
    from cloudisense.client import Connection, login
    from cloudisense.config import load_settings
    from cloudisense.core.roles import Role
    from cloudisense.node import Node
    from cloudisense.server.app import Server
    from cloudisense.store.users import client_credential

    data_dir = tempfile.mkdtemp(prefix="cloudisense-bench-")
    settings = load_settings(environ={}, overrides={
        "data_dir": data_dir, "identity": "bench", "modules": ["pubsub", "audit", "assistant"],
        "server": {"port": 0}, "llm": {"provider": "local", "max_tokens": max_tokens,
                                       "providers": {"local_context": 2048}}})
    node = Node(settings)
    server = Server(node)
    port = await server.start(host="127.0.0.1", port=0)
    await node.users.add("bench", client_credential("bench-password"), Role.OPERATOR)
    url = f"http://127.0.0.1:{port}"
    conn = await Connection.open(url, (await login(url, "bench", "bench-password"))["access"]["token"])
    provider = get_provider("local", settings.llm)
    llama = await asyncio.to_thread(provider.local.load)  # type: ignore[attr-defined]
    messages = to_local_messages(ChatRequest([Message.system(SYSTEM_PROMPT), Message.user(PROMPT)]))

    def direct() -> float:
        stream = llama.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0, stream=True)
        return measure_sync(stream, _direct_token).ttft

    async def over_ws() -> float:
        start = time.perf_counter()
        params = {"prompt": PROMPT, "params": {"temperature": 0, "session": "b" + uuid.uuid4().hex[:12]}}
        task = asyncio.create_task(conn.request("chat_llm", params, timeout=600))
        await conn.next_event(timeout=600)
        first = time.perf_counter() - start
        await task
        while not conn.events.empty():
            conn.events.get_nowait()
        return first

    await over_ws()  # warm-up
    direct_ttft, ws_ttfd = [], []
    for _ in range(runs):
        direct_ttft.append(await asyncio.to_thread(direct))
        ws_ttfd.append(await over_ws())
    conn.close()
    await server.stop()
    d, w = statistics.median(direct_ttft), statistics.median(ws_ttfd)
    print(f"over the WebSocket ({runs} runs, median): first llm_delta {w * 1000:.1f} ms, "
          f"direct first token {d * 1000:.1f} ms, difference {(w - d) * 1000:+.1f} ms")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default="", help="a GGUF path (default: the shipped model)")
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.max_tokens, args.model))
    if not args.model:
        asyncio.run(run_websocket(args.runs, args.max_tokens))


if __name__ == "__main__":
    main()
