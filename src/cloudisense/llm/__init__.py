"""llmcore: the one way CloudiSENSE talks to language models.

Start with :class:`LLMService` (budgets, fallback, accounting, telemetry around
the configured provider) or :func:`get_provider` (a bare provider by
``"provider:model"`` spec). Tests use :class:`~cloudisense.llm.testing.ScriptedModel`.
See ``docs/llm.md``.
"""

from cloudisense.llm.base import (
    BaseProvider,
    ChatRequest,
    ChatResponse,
    Finish,
    FinishReason,
    Message,
    Provider,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
    UsageEvent,
    collect,
)
from cloudisense.llm.budget import UsageLedger, UsageRecord, estimate_tokens
from cloudisense.llm.errors import (
    BudgetExceeded,
    ProviderAuthFailed,
    ProviderFailure,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    ScriptExhausted,
    StreamInterrupted,
    UnknownProvider,
    UnsupportedFeature,
)
from cloudisense.llm.faults import FallbackProvider, stream_with_fallback
from cloudisense.llm.registry import (
    ENTRY_POINT_GROUP,
    aclose_all,
    clear_cache,
    get_provider,
    is_offline,
    parse_spec,
    register,
    registered,
)
from cloudisense.llm.service import LLMService

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseProvider",
    "BudgetExceeded",
    "ChatRequest",
    "ChatResponse",
    "FallbackProvider",
    "Finish",
    "FinishReason",
    "LLMService",
    "Message",
    "Provider",
    "ProviderAuthFailed",
    "ProviderFailure",
    "ProviderNotConfigured",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderTimeout",
    "ProviderUnavailable",
    "ScriptExhausted",
    "StreamEvent",
    "StreamInterrupted",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolSpec",
    "UnknownProvider",
    "UnsupportedFeature",
    "Usage",
    "UsageEvent",
    "UsageLedger",
    "UsageRecord",
    "aclose_all",
    "clear_cache",
    "collect",
    "estimate_tokens",
    "get_provider",
    "is_offline",
    "parse_spec",
    "register",
    "registered",
    "stream_with_fallback",
]
