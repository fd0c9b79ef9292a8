"""``LLMService``: the one front door the server and the agent call.

It puts together what every call needs around a provider, in this order:

1. budget check (:class:`~cloudisense.llm.budget.UsageLedger`), before any model is called;
2. an OpenTelemetry span (:mod:`.telemetry`);
3. the configured provider, with the fallback tried only if the primary failed
   before any output (:func:`~cloudisense.llm.faults.stream_with_fallback`);
4. usage accounting per session, user and provider, after the stream finished.
   A provider that reports no usage is charged an estimate (four characters
   per token). A failed or abandoned request is counted as an error and not
   charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from cloudisense.llm.base import (
    ChatRequest,
    ChatResponse,
    Finish,
    Message,
    Provider,
    StreamEvent,
    TextDelta,
    Usage,
    UsageEvent,
    collect,
)
from cloudisense.llm.budget import UsageLedger, estimate_tokens
from cloudisense.llm.faults import stream_with_fallback
from cloudisense.llm.registry import get_provider
from cloudisense.llm.telemetry import ChatSpan

if TYPE_CHECKING:
    from cloudisense.config import LLMSettings


class LLMService:
    """Budgets, telemetry, fallback and accounting around the configured provider.

    It has the :class:`~cloudisense.llm.base.Provider` surface (``name``, ``model``,
    ``stream``, ``complete``, ``aclose``), so it is a drop-in for code written
    against a provider.

    ``provider`` / ``fallback`` may be given directly (tests pass a
    :class:`~cloudisense.llm.testing.ScriptedModel`); otherwise they come from
    ``settings.provider`` / ``settings.fallback`` through the registry, on first use.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        ledger: UsageLedger | None = None,
        provider: Provider | None = None,
        fallback: Provider | None = None,
        tracer: Any = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger if ledger is not None else UsageLedger.from_settings(settings)
        self._provider = provider
        self._fallback = fallback
        self._tracer = tracer

    @property
    def provider(self) -> Provider:
        """The primary provider (raises ``ProviderNotConfigured`` / ``UnknownProvider``)."""
        if self._provider is not None:
            return self._provider
        return get_provider(self.settings.provider, self.settings, with_fallback=False)

    @property
    def name(self) -> str:
        """The primary provider's name (so the service can stand in wherever a provider is expected)."""
        return self.provider.name

    @property
    def model(self) -> str:
        """The primary provider's model."""
        return self.provider.model

    async def aclose(self) -> None:
        """Providers are shared through the registry cache; :func:`aclose_all` closes them."""

    async def prepare(self, messages: list[Message]) -> bool:
        """The primary provider's :meth:`~cloudisense.llm.base.BaseProvider.prepare` (no budget is
        charged: nothing is asked of the model); False for a provider without one."""
        prepare = getattr(self.provider, "prepare", None)
        return bool(await prepare(messages)) if prepare is not None else False

    @property
    def fallback(self) -> Provider | None:
        """The fallback provider, if one is configured."""
        if self._fallback is not None:
            return self._fallback
        if self.settings.fallback and self._provider is None:
            return get_provider(self.settings.fallback, self.settings, with_fallback=False)
        return None

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the answer (events as in :mod:`.base`); raises ``BudgetExceeded`` before calling a model."""
        return self._run(request, [])

    async def _run(self, request: ChatRequest, answered: list[Provider]) -> AsyncIterator[StreamEvent]:
        estimate = estimate_tokens(request)
        self.ledger.check(request.session_id, request.user_id, estimate)
        primary, fallback = self.provider, self.fallback
        span = ChatSpan(primary.name, request.model or primary.model, request, self._tracer)
        usage: Usage | None = None
        reason: str | None = None
        out_chars = 0
        try:
            async for event in stream_with_fallback(primary, fallback, request, answered):
                if isinstance(event, TextDelta):
                    out_chars += len(event.text)
                elif isinstance(event, UsageEvent):
                    usage = event.usage
                elif isinstance(event, Finish):
                    reason = event.reason
                yield event
        except BaseException as exc:
            # Includes GeneratorExit / CancelledError: the caller gave up; nothing is charged.
            span.fail(exc)
            self.ledger.failed(answered[-1].name if answered else primary.name)
            raise
        chosen = answered[-1] if answered else primary
        if usage is None:
            usage = Usage(estimate, out_chars // 4)
        await self.ledger.record(
            usage,
            provider=chosen.name,
            model=request.model or chosen.model,
            session_id=request.session_id,
            user_id=request.user_id,
        )
        span.finish(usage, reason)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The whole answer at once (collected from :meth:`stream`)."""
        answered: list[Provider] = []
        response = await collect(self._run(request, answered))
        chosen = answered[-1] if answered else self.provider
        response.provider, response.model = chosen.name, request.model or chosen.model
        return response
