"""The ``anthropic`` provider: the Messages API through the official SDK (``AsyncAnthropic``).

Mapping to the common types:

* system messages go in the ``system`` parameter (joined), not in ``messages``;
* an assistant message's tool calls become ``tool_use`` blocks, and ``tool``
  messages become ``tool_result`` blocks of a user message (consecutive results
  share one user message, as the API requires);
* stream events: ``message_start`` (input tokens), ``content_block_start`` /
  ``content_block_delta`` (``text_delta`` is yielded at once, ``input_json_delta``
  fragments of a ``tool_use`` block are assembled and the call is emitted when its
  block stops), ``message_delta`` (output tokens, ``stop_reason``);
* ``response_schema`` is implemented with a **forced tool**: one tool named
  ``structured_output`` whose ``input_schema`` is the schema, with
  ``tool_choice={"type": "tool", ...}``; its JSON input is streamed out as
  text deltas, so the caller sees plain JSON text exactly as with other providers.
  Combining ``response_schema`` with ``tools`` raises
  :class:`~cloudisense.llm.errors.UnsupportedFeature` (forcing one tool would
  forbid the others).
* ``temperature`` is not sent: the SDK in use (anthropic 2.x) has no such
  parameter any more; the model's default sampling applies.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from cloudisense.llm.base import (
    BaseProvider,
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
    UsageEvent,
)
from cloudisense.llm.errors import ProviderNotConfigured, ProviderUnavailable, StreamInterrupted, UnsupportedFeature
from cloudisense.llm.faults import map_sdk_error

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings

KEY_HINT = "set ANTHROPIC_API_KEY or [llm.providers] anthropic_api_key in the config file"
SCHEMA_TOOL = "structured_output"

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def to_anthropic(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Our messages as (system, messages) of the Messages API."""
    system = "\n\n".join(m.content or "" for m in messages if m.role == "system") or None
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            role = "user"
            blocks: list[dict[str, Any]] = [
                {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content or ""}
            ]
        elif m.role == "assistant":
            role = "assistant"
            blocks = [{"type": "text", "text": m.content}] if m.content else []
            # Invalid arguments the model wrote earlier are sent back as {} (the API wants an object).
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
        else:
            role = "user"
            blocks = [{"type": "text", "text": m.content or ""}]
        if out and out[-1]["role"] == role:
            # The API wants alternating roles: merge consecutive same-role messages.
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


class AnthropicProvider(BaseProvider):
    """Claude models through the official ``anthropic`` SDK (see the module docstring)."""

    name = "anthropic"

    def __init__(self, model: str, settings: LLMSettings) -> None:
        super().__init__(model)
        providers = settings.providers
        key = os.environ.get("ANTHROPIC_API_KEY") or (
            providers.anthropic_api_key.get_secret_value() if providers.anthropic_api_key else None
        )
        if not key:
            raise ProviderNotConfigured(f"no Anthropic API key: {KEY_HINT}")
        self._key = SecretStr(key)
        self.base_url = os.environ.get("ANTHROPIC_BASE_URL") or providers.anthropic_base_url
        self.settings = settings
        import anthropic  # imported only when this provider is used

        self._sdk = anthropic
        self.client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=self.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        if request.response_schema is not None and request.tools:
            raise UnsupportedFeature(
                "the anthropic provider implements response_schema with a forced tool, "
                "so it cannot be combined with tools in one request"
            )
        system, messages = to_anthropic(request.messages)
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.settings.max_tokens,
            # No temperature: the anthropic SDK in use (2.x) no longer has that parameter.
            "stream": True,
        }
        if system:
            params["system"] = system
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
        if request.response_schema is not None:
            params["tools"] = [
                {
                    "name": SCHEMA_TOOL,
                    "description": "Give the answer as this JSON object.",
                    "input_schema": request.response_schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": SCHEMA_TOOL}
        return params

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params = self._params(request)
        structured = request.response_schema is not None
        started = False
        text: list[str] = []
        blocks: dict[int, dict[str, str]] = {}  # index -> tool_use {id, name, json}
        usage = Usage()
        stop: str | None = None
        finished = False
        try:
            stream = await self.client.messages.create(**params)
            try:
                async for event in stream:
                    kind = event.type
                    if kind == "message_start":
                        u = event.message.usage
                        usage.input_tokens = (u.input_tokens or 0) + (getattr(u, "cache_read_input_tokens", 0) or 0)
                        usage.output_tokens = u.output_tokens or 0
                    elif kind == "content_block_start":
                        block = event.content_block
                        if block.type == "tool_use":
                            blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
                        elif block.type == "text" and getattr(block, "text", ""):
                            text.append(block.text)
                            started = True
                            yield TextDelta(block.text)
                    elif kind == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta" and delta.text:
                            text.append(delta.text)
                            started = True
                            yield TextDelta(delta.text)
                        elif delta.type == "input_json_delta" and event.index in blocks:
                            blocks[event.index]["json"] += delta.partial_json
                            if structured and delta.partial_json:
                                # The forced tool's input *is* the answer: stream it as text.
                                text.append(delta.partial_json)
                                started = True
                                yield TextDelta(delta.partial_json)
                    elif kind == "content_block_stop":
                        block_data = blocks.pop(event.index, None)
                        if block_data is not None and not structured:
                            started = True
                            yield ToolCallEvent(
                                ToolCall.parse(block_data["id"], block_data["name"], block_data["json"])
                            )
                    elif kind == "message_delta":
                        if event.delta.stop_reason:
                            stop = event.delta.stop_reason
                        if event.usage is not None and event.usage.output_tokens is not None:
                            usage.output_tokens = event.usage.output_tokens
                    elif kind == "message_stop":
                        finished = True
            finally:
                await stream.close()
        except Exception as exc:
            raise map_sdk_error(
                exc,
                self._sdk,
                provider=self.name,
                started=started,
                partial_text="".join(text),
                secrets=[self._key.get_secret_value()],
                key_hint=KEY_HINT,
            ) from exc
        if not finished and stop is None:
            message = f"the {self.name} stream ended before the model finished"
            if started:
                raise StreamInterrupted(message, provider=self.name, started=True, partial_text="".join(text))
            raise ProviderUnavailable(message, provider=self.name)
        yield UsageEvent(usage)
        reason = _FINISH.get(stop or "", "other")
        if structured and reason == "tool_calls":
            reason = "stop"  # the forced tool is an implementation detail
        yield Finish(reason)

    async def aclose(self) -> None:
        """Close the SDK's HTTP client."""
        await self.client.close()

    def __repr__(self) -> str:
        return f"<AnthropicProvider anthropic:{self.model} base_url={self.base_url!r}>"


def make_anthropic(model: str, settings: LLMSettings) -> AnthropicProvider:
    """Factory for ``anthropic:<model>``."""
    if not model:
        raise ProviderNotConfigured(
            "the anthropic provider needs a model: use e.g. 'anthropic:claude-3-5-haiku-latest'"
        )
    return AnthropicProvider(model, settings)

