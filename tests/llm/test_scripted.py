"""ScriptedModel: the deterministic test provider shipped in the package."""

from __future__ import annotations

import pytest

from cloudisense.llm import (
    ChatRequest,
    Message,
    ProviderUnavailable,
    ScriptExhausted,
    StreamInterrupted,
    TextDelta,
    ToolSpec,
    Usage,
    get_provider,
)
from cloudisense.llm.base import Finish, ToolCallEvent, UsageEvent
from cloudisense.llm.testing import ScriptedModel, ScriptedTurn, tool_call


async def test_turns_play_in_order_and_requests_are_recorded() -> None:
    model = ScriptedModel(
        [
            tool_call("get_stats", {"host": "a"}),
            lambda req: f"saw {len(req.messages)} messages",
            "All good here.",
        ]
    )
    tools = [ToolSpec("get_stats", "stats", {"type": "object"})]
    first = await model.complete(ChatRequest([Message.user("stats?")], tools=tools))
    assert first.finish_reason == "tool_calls" and first.tool_calls[0].arguments == {"host": "a"}
    history = [Message.user("stats?"), Message.assistant(None, first.tool_calls), Message.tool(first.tool_calls[0].id, "{}")]
    second = await model.complete(ChatRequest(history))
    assert second.text == "saw 3 messages"
    third = await model.complete(ChatRequest([Message.user("x")]))
    assert third.text == "All good here." and third.finish_reason == "stop"
    model.assert_all_used()
    assert len(model.requests) == 3 and model.requests[0].tools[0].name == "get_stats"


async def test_text_streams_in_several_deltas() -> None:
    model = ScriptedModel(["The quick brown fox jumps."], chunk_size=5)
    events = [e async for e in model.stream(ChatRequest([Message.user("go")]))]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3 and "".join(deltas) == "The quick brown fox jumps."
    assert isinstance(events[-2], UsageEvent) and events[-1] == Finish("stop")


async def test_no_turns_left_fails_loudly() -> None:
    model = ScriptedModel(["only one"])
    await model.complete(ChatRequest([Message.user("1")]))
    with pytest.raises(ScriptExhausted, match="no scripted turns left.*'2'"):
        await model.complete(ChatRequest([Message.user("2")]))


def test_leftover_turns_fail_the_check() -> None:
    model = ScriptedModel(["a", "b"])
    with pytest.raises(AssertionError, match="2 unused turn"):
        model.assert_all_used()


async def test_errors_before_and_after_output() -> None:
    model = ScriptedModel(
        [
            ProviderUnavailable("down", provider="scripted"),
            ScriptedTurn(text="partial answer", error=StreamInterrupted("cut", started=True)),
            ScriptedTurn(text="x", usage=Usage(100, 5), finish="length"),
        ]
    )
    with pytest.raises(ProviderUnavailable):
        await model.complete(ChatRequest([Message.user("1")]))
    got: list[str] = []
    with pytest.raises(StreamInterrupted):
        async for event in model.stream(ChatRequest([Message.user("2")])):
            if isinstance(event, TextDelta):
                got.append(event.text)
    assert "".join(got) == "partial answer"
    last = await model.complete(ChatRequest([Message.user("3")]))
    assert last.usage == Usage(100, 5) and last.finish_reason == "length"


async def test_invalid_scripted_arguments_are_flagged_like_model_output() -> None:
    model = ScriptedModel([tool_call("get_stats", '{"host": ')])
    events = [e async for e in model.stream(ChatRequest([Message.user("x")]))]
    (call,) = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert not call.ok and call.raw_arguments == '{"host": '


async def test_recorded_requests_are_snapshots() -> None:
    model = ScriptedModel(["a"])
    messages = [Message.user("first")]
    await model.complete(ChatRequest(messages))
    messages.append(Message.user("mutated later"))
    assert len(model.requests[0].messages) == 1


def test_available_by_spec(make_settings) -> None:
    provider = get_provider("scripted", make_settings())
    assert isinstance(provider, ScriptedModel)
    assert get_provider("scripted", make_settings()) is provider  # cached: tests can script it via the spec
