"""The anthropic provider against a fake peer speaking the Messages API (SSE streaming)."""

from __future__ import annotations

import pytest

from cloudisense.llm import (
    ChatRequest,
    Message,
    ProviderNotConfigured,
    TextDelta,
    ToolCall,
    ToolSpec,
    UnsupportedFeature,
    get_provider,
)
from cloudisense.llm.base import Finish, ToolCallEvent, UsageEvent
from tests.llm.peers import SSE, FakePeer, an_end, an_start, an_text_block, an_tool_block

WEATHER = ToolSpec(
    "get_weather",
    "Weather of a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _anthropic(make_settings, peer: FakePeer, **kw):
    settings = make_settings(
        providers={"anthropic_base_url": peer.url, "anthropic_api_key": "sk-ant-secret-999"}, **kw
    )
    return get_provider("anthropic:claude-test", settings)


async def test_streams_text_deltas_and_usage(make_settings) -> None:
    frames = [an_start(input_tokens=12), *an_text_block(0, "Hel", "lo", " there"), *an_end("end_turn", 6)]
    with FakePeer(SSE(frames)) as peer:
        provider = _anthropic(make_settings, peer)
        events = [e async for e in provider.stream(ChatRequest([Message.system("be kind"), Message.user("hi")]))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo", " there"]
    (usage,) = [e.usage for e in events if isinstance(e, UsageEvent)]
    assert (usage.input_tokens, usage.output_tokens) == (12, 6)
    assert events[-1] == Finish("stop")
    seen = peer.requests[0]
    assert seen.path == "/v1/messages"
    # The key reaches the peer (this SDK version sends it as a bearer token, older ones as x-api-key).
    assert "sk-ant-secret-999" in (seen.headers.get("x-api-key", "") + seen.headers.get("authorization", ""))
    # System goes in its own parameter, not in messages.
    assert seen.body["system"] == "be kind"
    assert seen.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert seen.body["stream"] is True and seen.body["max_tokens"] == 512


async def test_tool_use_blocks_become_tool_calls(make_settings) -> None:
    frames = [
        an_start(),
        *an_text_block(0, "Let me check."),
        *an_tool_block(1, "toolu_1", "get_weather", '{"ci', 'ty": "Pa', 'ris"}'),
        *an_tool_block(2, "toolu_2", "get_weather", '{"city": nope'),
        *an_end("tool_use", 30),
    ]
    with FakePeer(SSE(frames)) as peer:
        response = await _anthropic(make_settings, peer).complete(ChatRequest([Message.user("weather?")], tools=[WEATHER]))
    assert response.text == "Let me check." and response.finish_reason == "tool_calls"
    good, bad = response.tool_calls
    assert (good.id, good.name, good.arguments) == ("toolu_1", "get_weather", {"city": "Paris"})
    assert not bad.ok and "not valid JSON" in (bad.error or "")
    assert peer.requests[0].body["tools"] == [
        {"name": "get_weather", "description": "Weather of a city.", "input_schema": WEATHER.parameters}
    ]


async def test_tool_results_sent_as_tool_result_blocks(make_settings) -> None:
    history = [
        Message.user("weather in Paris and Oslo?"),
        Message.assistant("Checking.", [ToolCall.parse("toolu_1", "get_weather", {"city": "Paris"}),
                                        ToolCall.parse("toolu_2", "get_weather", {"city": "Oslo"})]),
        Message.tool("toolu_1", "sunny"),
        Message.tool("toolu_2", "rain"),
    ]
    with FakePeer(SSE([an_start(), *an_text_block(0, "Sunny and rainy."), *an_end()])) as peer:
        await _anthropic(make_settings, peer).complete(ChatRequest(history, tools=[WEATHER]))
    messages = peer.requests[0].body["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    }
    # Both results in one user message, as the API requires.
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
        ],
    }


async def test_response_schema_uses_a_forced_tool(make_settings) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    frames = [an_start(), *an_tool_block(0, "toolu_s", "structured_output", '{"ok"', ": true}"), *an_end("tool_use")]
    with FakePeer(SSE(frames)) as peer:
        provider = _anthropic(make_settings, peer)
        events = [e async for e in provider.stream(ChatRequest([Message.user("ok?")], response_schema=schema))]
    # The forced tool's input streams out as plain JSON text, not as a tool call.
    assert [e.text for e in events if isinstance(e, TextDelta)] == ['{"ok"', ": true}"]
    assert not [e for e in events if isinstance(e, ToolCallEvent)]
    assert events[-1] == Finish("stop")
    body = peer.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "structured_output"}
    assert body["tools"][0]["input_schema"] == schema


async def test_schema_with_tools_is_refused_clearly(make_settings) -> None:
    with FakePeer() as peer:
        provider = _anthropic(make_settings, peer)
        with pytest.raises(UnsupportedFeature, match="forced tool"):
            await provider.complete(ChatRequest([Message.user("x")], tools=[WEATHER], response_schema={"type": "object"}))
        assert peer.attempts() == 0


async def test_missing_key_says_how_to_set_it(make_settings) -> None:
    with pytest.raises(ProviderNotConfigured, match=r"set ANTHROPIC_API_KEY or \[llm.providers\] anthropic_api_key"):
        get_provider("anthropic:claude-test", make_settings())
