"""The ``openai`` provider: any OpenAI-compatible chat-completions endpoint.

Serves OpenAI itself, and through ``base_url`` Ollama (the ``ollama:`` spec),
vLLM, llama.cpp's server and llama-cpp-python's server. Uses the official SDK
(``AsyncOpenAI``) with its own retries and timeout; this module adds no retry.

* streaming with ``stream_options.include_usage`` (servers that ignore it send
  no usage; the service then estimates);
* tool calls are assembled from streamed fragments (by ``index``) and emitted
  whole, after the model finished; invalid JSON arguments become a flagged
  :class:`~cloudisense.llm.base.ToolCall`, never a crash;
* ``response_schema`` is sent as ``response_format`` ``json_schema`` (OpenAI,
  Ollama, vLLM, llama.cpp), or as ``{"type": "json_object", "schema": ...}`` when
  ``[llm.providers] openai_response_format = "json_object"`` (llama-cpp-python's
  server understands only that form).
"""

from __future__ import annotations

import json
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
from cloudisense.llm.errors import ProviderNotConfigured, ProviderUnavailable, StreamInterrupted
from cloudisense.llm.faults import map_sdk_error

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings

KEY_HINT = "set OPENAI_API_KEY or [llm.providers] openai_api_key in the config file"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _ollama_base_url(settings: LLMSettings) -> str:
    host = os.environ.get("OLLAMA_HOST") or settings.providers.ollama_host or DEFAULT_OLLAMA_HOST
    if "://" not in host:
        # OLLAMA_HOST is often written as "0.0.0.0:11434".
        host = "http://" + host
    return host.rstrip("/") + "/v1"


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Our messages in chat-completions form."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content or ""})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments)},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content or ""})
    return out


class OpenAIProvider(BaseProvider):
    """Chat completions through the official ``openai`` SDK (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        settings: LLMSettings,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "openai",
    ) -> None:
        super().__init__(model)
        self.name = name
        providers = settings.providers
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or providers.openai_base_url
        key = api_key or os.environ.get("OPENAI_API_KEY") or (
            providers.openai_api_key.get_secret_value() if providers.openai_api_key else None
        )
        if not key:
            if not self.base_url:
                raise ProviderNotConfigured(f"no OpenAI API key: {KEY_HINT}")
            # Self-hosted compatible servers (llama.cpp, vLLM) usually need no key,
            # but the SDK insists on one.
            key = "not-needed"
        self._key = SecretStr(key)
        self.official = self.base_url is None
        self.response_format_style = getattr(providers, "openai_response_format", "json_schema")
        self.settings = settings
        import openai  # imported only when this provider is used

        self._sdk = openai
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=self.base_url,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.settings.temperature if request.temperature is None else request.temperature,
        }
        max_tokens = request.max_tokens or self.settings.max_tokens
        # OpenAI's newer models refuse max_tokens; compatible servers only know max_tokens.
        params["max_completion_tokens" if self.official else "max_tokens"] = max_tokens
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.response_schema is not None:
            if self.response_format_style == "json_object":
                params["response_format"] = {"type": "json_object", "schema": request.response_schema}
            else:
                params["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": request.response_schema, "strict": False},
                }
        return params

    def _map(self, exc: BaseException, started: bool, partial: str) -> Exception:
        return map_sdk_error(
            exc,
            self._sdk,
            provider=self.name,
            started=started,
            partial_text=partial,
            secrets=[self._key.get_secret_value()],
            key_hint=KEY_HINT if self.name == "openai" else "",
        )

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        params = self._params(request)
        started = False
        text: list[str] = []
        fragments: dict[int, dict[str, str]] = {}
        finish: str | None = None
        usage: Usage | None = None
        try:
            stream = await self.client.chat.completions.create(**params)
            try:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
                    for choice in chunk.choices or []:
                        delta = choice.delta
                        if delta is not None and delta.content:
                            text.append(delta.content)
                            started = True
                            yield TextDelta(delta.content)
                        for tc in (delta.tool_calls if delta is not None else None) or []:
                            frag = fragments.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                            if tc.id:
                                frag["id"] = tc.id
                            if tc.function is not None:
                                if tc.function.name:
                                    frag["name"] += tc.function.name
                                if tc.function.arguments:
                                    frag["arguments"] += tc.function.arguments
                        if choice.finish_reason:
                            finish = choice.finish_reason
            finally:
                await stream.close()
        except Exception as exc:
            raise self._map(exc, started, "".join(text)) from exc
        if finish is None:
            # The connection closed cleanly but the model never said it was done.
            message = f"the {self.name} stream ended before the model finished"
            if started:
                raise StreamInterrupted(message, provider=self.name, started=True, partial_text="".join(text))
            raise ProviderUnavailable(message, provider=self.name)
        for index in sorted(fragments):
            frag = fragments[index]
            yield ToolCallEvent(ToolCall.parse(frag["id"] or f"call_{index}", frag["name"], frag["arguments"]))
        if usage is not None:
            yield UsageEvent(usage)
        reason = _FINISH.get(finish, "other")
        if fragments and reason == "stop":
            reason = "tool_calls"
        yield Finish(reason)

    async def aclose(self) -> None:
        """Close the SDK's HTTP client."""
        await self.client.close()

    def __repr__(self) -> str:
        return f"<OpenAIProvider {self.name}:{self.model} base_url={self.base_url!r}>"


def make_openai(model: str, settings: LLMSettings) -> OpenAIProvider:
    """Factory for ``openai:<model>``."""
    if not model:
        raise ProviderNotConfigured("the openai provider needs a model: use e.g. 'openai:gpt-4o-mini'")
    return OpenAIProvider(model, settings)


def make_ollama(model: str, settings: LLMSettings) -> OpenAIProvider:
    """Factory for ``ollama:<model>``: the OpenAI provider pointed at ``$OLLAMA_HOST/v1``."""
    if not model:
        raise ProviderNotConfigured("the ollama provider needs a model: use e.g. 'ollama:llama3'")
    return OpenAIProvider(model, settings, base_url=_ollama_base_url(settings), api_key="ollama", name="ollama")
