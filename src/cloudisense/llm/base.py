"""The provider interface of llmcore: request, response and stream-event types.

One small async interface (after openai-agents ``models/interface.py``): a
provider *streams* a :class:`ChatRequest` as :data:`StreamEvent` items, and
:meth:`BaseProvider.complete` is built once, here, on top of that stream
(:func:`collect`), so no provider writes its own non-streaming path.

These are internal records, hence dataclasses; nothing here is on the wire.

Stream contract (every provider, tested):

* zero or more :class:`TextDelta` / :class:`ToolCallEvent`, then at most one
  :class:`UsageEvent`, then exactly one :class:`Finish` as the last event;
* a failure raises a typed exception from :mod:`cloudisense.llm.errors` out of
  the ``async for`` (there is no error event). After output has begun that is
  :class:`~cloudisense.llm.errors.StreamInterrupted`, and it is never retried.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from cloudisense.core.errors import BadRequest
from cloudisense.llm.errors import UnsupportedFeature

if TYPE_CHECKING:
    from pydantic import BaseModel

Role = Literal["system", "user", "assistant", "tool"]
#: Normalised reasons a generation ended (each provider maps its own names).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "other"]


@dataclass(slots=True)
class ToolCall:
    """A tool call the model asked for.

    The model's output is untrusted: when its arguments are not a JSON object,
    ``arguments`` is ``{}``, ``raw_arguments`` keeps what the model wrote and
    ``error`` says what is wrong, so the caller can report it back to the model
    instead of crashing. Check :attr:`ok` before acting.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the arguments parsed as a JSON object."""
        return self.error is None

    @classmethod
    def parse(cls, id: str, name: str, raw: str | dict[str, Any] | None) -> ToolCall:
        """Build a call from the model's raw arguments (a JSON string or an already parsed dict)."""
        if isinstance(raw, dict):
            return cls(id=id, name=name, arguments=raw, raw_arguments=json.dumps(raw))
        text = (raw or "").strip()
        if not text:
            # Models send "" for a tool without parameters.
            return cls(id=id, name=name, arguments={}, raw_arguments=raw or "")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:  # model output is untrusted: deep nesting is bad JSON too
            return cls(
                id=id,
                name=name,
                raw_arguments=raw or "",
                error=f"arguments of tool call {name!r} are not valid JSON: {exc}",
            )
        if not isinstance(value, dict):
            return cls(
                id=id,
                name=name,
                raw_arguments=raw or "",
                error=f"arguments of tool call {name!r} must be a JSON object, got {type(value).__name__}",
            )
        return cls(id=id, name=name, arguments=value, raw_arguments=raw or "")


@dataclass(slots=True)
class Message:
    """One message of a conversation.

    ``tool_calls`` only on assistant messages; ``tool_call_id`` (and optionally
    ``name``, the tool's name) only on ``tool`` messages carrying a tool result.
    """

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        """A system (instructions) message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        """A user message."""
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str | None = None, tool_calls: list[ToolCall] | None = None) -> Message:
        """An assistant message, possibly with the tool calls it made."""
        return cls("assistant", content, list(tool_calls or []))

    @classmethod
    def tool(cls, tool_call_id: str, content: str, name: str | None = None) -> Message:
        """The result of a tool call, sent back to the model."""
        return cls("tool", content, tool_call_id=tool_call_id, name=name)


@dataclass(slots=True)
class ToolSpec:
    """A tool the model may call: name, description and JSON-schema of its parameters."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @classmethod
    def from_model(cls, name: str, description: str, model: type[BaseModel]) -> ToolSpec:
        """A tool whose parameters are a pydantic model (one model, every provider's schema)."""
        return cls(name, description, model.model_json_schema())


@dataclass(slots=True)
class Usage:
    """Tokens of one request."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(slots=True, frozen=True)
class TextDelta:
    """A piece of the answer's text, as soon as the model produced it."""

    text: str


@dataclass(slots=True, frozen=True)
class ToolCallEvent:
    """A complete tool call (providers assemble streamed fragments before emitting it)."""

    call: ToolCall


@dataclass(slots=True, frozen=True)
class UsageEvent:
    """Token usage of the request (at most one per stream, before :class:`Finish`)."""

    usage: Usage


@dataclass(slots=True, frozen=True)
class Finish:
    """The last event of every successful stream."""

    reason: FinishReason


StreamEvent = TextDelta | ToolCallEvent | UsageEvent | Finish


@dataclass(slots=True)
class ChatRequest:
    """What to ask a model.

    ``temperature`` / ``max_tokens`` default to ``[llm]`` settings when None;
    ``model`` overrides the model named in the provider spec. ``response_schema``
    asks for a JSON answer matching that JSON-schema (structured output); ``grammar``
    (GBNF text) constrains the answer to a grammar, which only the in-process ``local``
    provider can do (others refuse a request that carries one).
    ``forcing`` goes with a ``grammar``: given the answer so far, it returns the text the
    grammar admits as the only way on, which the ``local`` provider reads as prompt instead
    of writing it token by token (other providers ignore it).
    ``session_id`` / ``user_id`` are never sent to the model: they are what
    token budgets and usage accounting are kept by (see :mod:`.budget`).
    """

    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    grammar: str | None = None
    forcing: Callable[[str], str] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    model: str | None = None
    session_id: str | None = None
    user_id: str | None = None


@dataclass(slots=True)
class ChatResponse:
    """The collected result of one request."""

    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: FinishReason
    provider: str = ""
    model: str = ""

    def json(self) -> Any:
        """The text parsed as JSON (for ``response_schema`` requests); raises ``ValueError``."""
        return json.loads(self.text)


@runtime_checkable
class Provider(Protocol):
    """What every provider offers. Subclass :class:`BaseProvider` to get ``complete`` for free."""

    #: Registry name, e.g. ``"openai"``.
    name: str
    #: Default model of this provider instance.
    model: str

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the answer (an async generator; see the module docstring for the contract)."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The whole answer at once."""
        ...

    async def aclose(self) -> None:
        """Release connections / models."""
        ...


async def collect(events: AsyncIterable[StreamEvent], *, provider: str = "", model: str = "") -> ChatResponse:
    """Fold a stream into a :class:`ChatResponse` (the one shared non-streaming path)."""
    text: list[str] = []
    calls: list[ToolCall] = []
    usage = Usage()
    reason: FinishReason = "other"
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCallEvent):
            calls.append(event.call)
        elif isinstance(event, UsageEvent):
            usage = usage + event.usage
        elif isinstance(event, Finish):
            reason = event.reason
    return ChatResponse("".join(text), calls, usage, reason, provider, model)


class BaseProvider(ABC):
    """Shared behaviour: capability checks before streaming, ``complete`` built on ``stream``.

    Subclasses set ``supports_tools`` / ``supports_response_schema`` / ``supports_grammar`` and implement
    :meth:`_stream`.
    """

    name: str = "base"
    supports_tools: bool = True
    supports_response_schema: bool = True
    supports_grammar: bool = False

    def __init__(self, model: str) -> None:
        self.model = model

    def check(self, request: ChatRequest) -> None:
        """Refuse features this provider cannot honour (never silently ignore them)."""
        if request.tools and not self.supports_tools:
            raise UnsupportedFeature(f"provider {self.name!r} cannot call tools; use a provider that can")
        if request.response_schema is not None and not self.supports_response_schema:
            raise UnsupportedFeature(
                f"provider {self.name!r} cannot produce structured output (response_schema)"
            )
        if request.grammar is not None and not self.supports_grammar:
            raise UnsupportedFeature(f"provider {self.name!r} cannot follow a grammar; only the local provider can")
        if not request.messages:
            raise BadRequest("a chat request needs at least one message")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Check the request, then stream the provider's events."""
        self.check(request)
        async for event in self._stream(request):
            yield event

    @abstractmethod
    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """The provider-specific stream (an async generator)."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """The whole answer, collected from :meth:`stream`."""
        return await collect(self.stream(request), provider=self.name, model=request.model or self.model)

    async def prepare(self, messages: list[Message]) -> bool:
        """Compute and keep the state of a prompt beginning with ``messages``, so a later request
        that begins alike reads only the rest; False when this provider keeps no such state
        (the default: a remote service reads every prompt itself)."""
        return False

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Nothing to release by default."""

    def __repr__(self) -> str:
        # Never include clients or keys here: reprs end up in logs.
        return f"<{type(self).__name__} {self.name}:{self.model}>"
