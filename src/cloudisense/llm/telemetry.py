"""OpenTelemetry spans for model calls, after the GenAI semantic conventions.

When ``opentelemetry`` is importable, each request gets a span ``chat <model>``
with ``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.request.model``,
``gen_ai.request.temperature``, ``gen_ai.request.max_tokens``,
``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` and
``gen_ai.usage.output_tokens`` (and ``error.type`` on failure). Without the
package everything here is a no-op. Prompts and answers are never recorded.
"""

from __future__ import annotations

from typing import Any

from cloudisense.llm.base import ChatRequest, Usage

try:  # optional dependency: cloudisense[otel]
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on the environment
    _trace = None  # type: ignore[assignment]


class ChatSpan:
    """One model call's span (or nothing, when OpenTelemetry is absent)."""

    def __init__(self, provider: str, model: str, request: ChatRequest, tracer: Any = None) -> None:
        if tracer is None and _trace is not None:
            tracer = _trace.get_tracer("cloudisense.llm")
        self._span = None
        if tracer is None:
            return
        # The span is started and ended by hand: it covers an async generator whose
        # steps run in different contexts, so it is not made the current span.
        self._span = tracer.start_span(
            f"chat {model}",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                **({"gen_ai.request.temperature": request.temperature} if request.temperature is not None else {}),
                **({"gen_ai.request.max_tokens": request.max_tokens} if request.max_tokens else {}),
            },
        )

    def finish(self, usage: Usage | None, reason: str | None) -> None:
        """End the span with the outcome."""
        if self._span is None:
            return
        if usage is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            self._span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        if reason:
            self._span.set_attribute("gen_ai.response.finish_reasons", [reason])
        self._span.end()
        self._span = None

    def fail(self, exc: BaseException) -> None:
        """End the span as failed."""
        if self._span is None:
            return
        self._span.set_attribute("error.type", type(exc).__name__)
        if _trace is not None:
            self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
        self._span.end()
        self._span = None
