"""Faults: mapping SDK exceptions into our error tree, and the fallback provider.

Retries are the SDKs' own (``max_retries`` / ``timeout`` from ``[llm]`` are
passed to ``AsyncOpenAI`` / ``AsyncAnthropic``): they retry connection errors,
timeouts, 408/409/429 and 5xx *before* a response starts. Nothing here retries
again. Once a stream has started nothing is retried at all; a break midway
raises :class:`~cloudisense.llm.errors.StreamInterrupted`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from types import ModuleType
from typing import Any

from cloudisense.core.errors import CloudisenseError
from cloudisense.llm.base import BaseProvider, ChatRequest, ChatResponse, Provider, StreamEvent, collect
from cloudisense.llm.errors import (
    ProviderAuthFailed,
    ProviderFailure,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    StreamInterrupted,
    redact,
)

log = logging.getLogger(__name__)


def map_sdk_error(
    exc: BaseException,
    sdk: ModuleType,
    *,
    provider: str,
    started: bool,
    partial_text: str = "",
    secrets: Iterable[str | None] = (),
    key_hint: str = "",
) -> Exception:
    """Translate an exception of the ``openai`` / ``anthropic`` SDK (same class names) into ours.

    ``started`` tells whether output had already reached the caller: then any
    failure is a :class:`StreamInterrupted`, whatever its cause.
    """
    if isinstance(exc, CloudisenseError):
        return exc
    if isinstance(exc, (TypeError, NameError, AssertionError)):
        # Our own bug (a wrong SDK argument, ...), not the service failing: keep it loud.
        return exc
    secrets = list(secrets)
    detail = redact(str(exc) or type(exc).__name__, secrets)
    status: int | None = getattr(exc, "status_code", None)
    if started:
        return StreamInterrupted(
            f"the {provider} stream broke after output had begun ({detail}); the answer is incomplete",
            provider=provider,
            status=status,
            started=True,
            partial_text=partial_text,
        )
    kw: dict[str, Any] = {"provider": provider, "status": status, "started": False}
    if isinstance(exc, (sdk.APITimeoutError, TimeoutError)):
        return ProviderTimeout(f"{provider} did not answer in time (after retries): {detail}", **kw)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderUnavailable(f"cannot reach {provider} (after retries): {detail}", **kw)
    if isinstance(exc, sdk.APIStatusError) and status is not None:
        if status == 429:
            return ProviderRateLimited(
                f"{provider} is rate limiting or out of quota (HTTP 429 after retries): {detail}", **kw
            )
        if status in (401, 403):
            return ProviderAuthFailed(
                f"{provider} refused the API key (HTTP {status}); check {key_hint or 'the key'}: {detail}", **kw
            )
        if 400 <= status < 500:
            return ProviderRejected(f"{provider} rejected the request (HTTP {status}): {detail}", **kw)
        return ProviderUnavailable(f"{provider} failed (HTTP {status} after retries): {detail}", **kw)
    return ProviderUnavailable(f"{provider} failed: {type(exc).__name__}: {detail}", **kw)


async def stream_with_fallback(
    primary: Provider,
    fallback: Provider | None,
    request: ChatRequest,
    answered: list[Provider] | None = None,
) -> AsyncIterator[StreamEvent]:
    """Stream ``request`` from ``primary``; switch to ``fallback`` only if the primary failed
    before producing any event. Appends the provider that answered to ``answered``.

    Triggers: run-time failures (:class:`ProviderFailure`: unreachable, 5xx, 429,
    timeout, key refused) and a primary that is not usable
    (:class:`ProviderNotConfigured`, e.g. its model file is missing). Not triggers:
    :class:`ProviderRejected` (the provider refused this request as malformed; the
    fallback would most likely refuse it too), unsupported features, budget refusals.
    """
    started = False
    try:
        if answered is not None:
            answered.append(primary)
        async for event in primary.stream(request):
            started = True
            yield event
        return
    except (ProviderFailure, ProviderNotConfigured) as exc:
        if fallback is None or started or getattr(exc, "started", False) or isinstance(exc, ProviderRejected):
            raise
        log.warning(
            "llm provider %s:%s failed before any output (%s); using fallback %s:%s",
            primary.name,
            primary.model,
            exc.message,
            fallback.name,
            fallback.model,
        )
    if answered is not None:
        answered[-1] = fallback
    # The request's model override was meant for the primary.
    async for event in fallback.stream(replace(request, model=None)):
        yield event


class FallbackProvider(BaseProvider):
    """A provider that is ``primary``, with ``fallback`` tried as :func:`stream_with_fallback` says."""

    def __init__(self, primary: Provider, fallback: Provider) -> None:
        super().__init__(primary.model)
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name

    def check(self, request: ChatRequest) -> None:
        # Each inner provider checks for itself (they may differ in capabilities).
        return None

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        async for event in stream_with_fallback(self.primary, self.fallback, request):
            yield event

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Collected answer of whichever provider answered."""
        answered: list[Provider] = []
        response = await collect(stream_with_fallback(self.primary, self.fallback, request, answered))
        response.provider, response.model = answered[-1].name, request.model or answered[-1].model
        return response

    async def aclose(self) -> None:
        """Providers are shared through the registry cache; closing them is the registry's job."""

    def __repr__(self) -> str:
        return f"<FallbackProvider {self.primary!r} then {self.fallback!r}>"
