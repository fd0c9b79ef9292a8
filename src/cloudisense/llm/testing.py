"""A deterministic provider for tests, shipped with the package.

After openai-agents' ``ScriptedModel`` / pydantic-ai's ``FunctionModel``: a test
scripts the model's turns, the model records every request it was sent, and a
test that leaves turns unused (or runs out of them) fails. Tests can never
reach a paid API this way.

Example::

    model = ScriptedModel([
        tool_call("get_stats", {"host": "a"}),       # turn 1: a tool call
        lambda req: f"saw {len(req.messages)} msgs",  # turn 2: computed from the request
        "All good.",                                  # turn 3: plain text
    ])
    ...
    model.assert_all_used()
    assert model.requests[0].tools[0].name == "get_stats"

A turn may also be an exception (raised before any output, e.g. to test a
fallback) or a :class:`ScriptedTurn` with ``error`` set (raised after its text
streamed, to test a stream broken midway).
"""

from __future__ import annotations

import copy
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cloudisense.llm.base import (
    BaseProvider,
    ChatRequest,
    Finish,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
    UsageEvent,
)
from cloudisense.llm.errors import ScriptExhausted


@dataclass(slots=True)
class ScriptedTurn:
    """One scripted model turn: text and/or tool calls, optional usage, finish, error."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish: FinishReason | None = None
    #: Raised after ``text`` has streamed (a stream broken midway).
    error: BaseException | None = None


#: What a test may put in a script.
Turn = str | ToolCall | list[ToolCall] | ScriptedTurn | BaseException | Callable[[ChatRequest], Any]

_ids = itertools.count(1)


def tool_call(name: str, arguments: dict[str, Any] | str | None = None, *, id: str | None = None) -> ToolCall:
    """A scripted tool call; a ``str`` for ``arguments`` is parsed like model output (may be invalid)."""
    return ToolCall.parse(id or f"call_{next(_ids)}", name, arguments if arguments is not None else {})


def _estimate_tokens(text: str) -> int:
    # Same rough rule as the budget estimate: about four characters per token.
    return max(1, len(text) // 4) if text else 0


class ScriptedModel(BaseProvider):
    """A provider that plays back scripted turns (see the module docstring)."""

    name = "scripted"
    supports_grammar = True  # it follows nothing, but agent-logic tests send what the local model gets

    def __init__(self, turns: Iterable[Turn] = (), *, model: str = "scripted", chunk_size: int = 4) -> None:
        super().__init__(model)
        self._turns: deque[Turn] = deque(turns)
        self.chunk_size = max(1, chunk_size)
        #: Every request received, in order (deep copies: later mutation by the caller does not show).
        self.requests: list[ChatRequest] = []

    def add(self, *turns: Turn) -> ScriptedModel:
        """Append turns to the script; returns self for chaining."""
        self._turns.extend(turns)
        return self

    @property
    def remaining(self) -> int:
        """Turns not played yet."""
        return len(self._turns)

    def assert_all_used(self) -> None:
        """Fail (``ScriptExhausted``, an ``AssertionError``) if scripted turns are left over."""
        if self._turns:
            raise ScriptExhausted(
                f"ScriptedModel has {len(self._turns)} unused turn(s) after {len(self.requests)} request(s): "
                f"{list(self._turns)!r}"
            )

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        self._turns.clear()
        self.requests.clear()

    def _next_turn(self, request: ChatRequest) -> ScriptedTurn:
        if not self._turns:
            last = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
            raise ScriptExhausted(
                f"ScriptedModel got request #{len(self.requests)} but has no scripted turns left "
                f"(last user message: {last!r}); add a turn with .add(...)"
            )
        turn: Any = self._turns.popleft()
        if callable(turn) and not isinstance(turn, (BaseException, ToolCall, ScriptedTurn)):
            turn = turn(request)
        if isinstance(turn, BaseException):
            raise turn
        if isinstance(turn, str):
            return ScriptedTurn(text=turn)
        if isinstance(turn, ToolCall):
            return ScriptedTurn(tool_calls=[turn])
        if isinstance(turn, list):
            return ScriptedTurn(tool_calls=list(turn))
        if isinstance(turn, ScriptedTurn):
            return turn
        raise TypeError(f"unsupported scripted turn {turn!r}")

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(copy.deepcopy(request))
        turn = self._next_turn(request)
        # Several deltas, like a real model, so streaming consumers are exercised.
        for start in range(0, len(turn.text), self.chunk_size):
            yield TextDelta(turn.text[start : start + self.chunk_size])
        if turn.error is not None:
            raise turn.error
        for call in turn.tool_calls:
            yield ToolCallEvent(call)
        prompt = " ".join(m.content or "" for m in request.messages)
        usage = turn.usage or Usage(_estimate_tokens(prompt), _estimate_tokens(turn.text))
        yield UsageEvent(usage)
        yield Finish(turn.finish or ("tool_calls" if turn.tool_calls else "stop"))
