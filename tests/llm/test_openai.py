"""The openai provider: wire format against a fake peer, and a real llama.cpp server."""

from __future__ import annotations

import json

import pytest

from cloudisense.llm import (
    ChatRequest,
    Message,
    ProviderNotConfigured,
    TextDelta,
    ToolCall,
    ToolSpec,
    get_provider,
)
from cloudisense.llm.base import Finish, UsageEvent
from tests.llm.peers import SSE, FakePeer, oa_text, oa_tools

WEATHER = ToolSpec(
    "get_weather",
    "Weather of a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def _openai(make_settings, peer: FakePeer, **kw):
    settings = make_settings(providers={"openai_base_url": peer.url + "/v1", "openai_api_key": "sk-test-123456"}, **kw)
    return get_provider("openai:gpt-test", settings)


async def test_streams_text_in_several_deltas_with_usage(make_settings) -> None:
    with FakePeer(SSE(oa_text("Hel", "lo ", "world"))) as peer:
        provider = _openai(make_settings, peer)
        events = [e async for e in provider.stream(ChatRequest([Message.user("hi")]))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo ", "world"]
    assert events[-1] == Finish("stop")
    usage = [e for e in events if isinstance(e, UsageEvent)]
    assert usage[0].usage.input_tokens == 7 and usage[0].usage.output_tokens == 3
    body = peer.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-test" and body["messages"] == [{"role": "user", "content": "hi"}]
    # A custom base_url is a compatible server: max_tokens, not max_completion_tokens.
    assert "max_tokens" in body and "max_completion_tokens" not in body
    assert peer.requests[0].headers["authorization"] == "Bearer sk-test-123456"


async def test_tool_calls_assembled_from_fragments(make_settings) -> None:
    frames = oa_tools(
        ("call_a", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
        ("call_b", "get_weather", ['{"city":', ' "Oslo"}']),
    )
    with FakePeer(SSE(frames)) as peer:
        provider = _openai(make_settings, peer)
        response = await provider.complete(ChatRequest([Message.user("weather?")], tools=[WEATHER]))
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Oslo"}),
    ]
    sent = peer.requests[0].body["tools"]
    assert sent == [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.", "parameters": WEATHER.parameters}}]


async def test_invalid_tool_arguments_are_flagged_not_raised(make_settings) -> None:
    with FakePeer(SSE(oa_tools(("call_x", "get_weather", ['{"city": Par'])))) as peer:
        response = await _openai(make_settings, peer).complete(ChatRequest([Message.user("?")], tools=[WEATHER]))
    (call,) = response.tool_calls
    assert not call.ok and call.arguments == {} and call.raw_arguments == '{"city": Par'
    assert "not valid JSON" in (call.error or "")


async def test_history_with_tool_calls_and_response_schema_on_the_wire(make_settings) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    history = [
        Message.system("be brief"),
        Message.user("weather?"),
        Message.assistant(None, [ToolCall.parse("call_1", "get_weather", {"city": "Paris"})]),
        Message.tool("call_1", "sunny", name="get_weather"),
    ]
    with FakePeer(SSE(oa_text('{"ok":', " true}"))) as peer:
        response = await _openai(make_settings, peer).complete(ChatRequest(history, response_schema=schema))
    assert response.json() == {"ok": True}
    body = peer.requests[0].body
    assert body["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema


async def test_missing_key_says_how_to_set_it(make_settings) -> None:
    with pytest.raises(ProviderNotConfigured) as info:
        get_provider("openai:gpt-4o-mini", make_settings())
    assert "set OPENAI_API_KEY or [llm.providers] openai_api_key in the config file" in str(info.value)
    assert info.value.code == 503


async def test_ollama_spec_points_at_ollama_host(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakePeer(SSE(oa_text("ok"))) as peer:
        monkeypatch.setenv("OLLAMA_HOST", peer.url.removeprefix("http://"))
        provider = get_provider("ollama:llama3", make_settings())
        response = await provider.complete(ChatRequest([Message.user("hi")]))
    assert response.text == "ok" and provider.name == "ollama"
    assert peer.requests[0].path == "/v1/chat/completions" and peer.requests[0].body["model"] == "llama3"


# --- a real OpenAI-compatible server: llama-cpp-python's, with the shipped model -------------------
# Tool calls are tested against the fake peer above: the tiny base model behind this server does not
# produce tool calls through the server's default (non-functionary) chat format reliably.


@pytest.mark.slow
async def test_real_server_streams_several_deltas(llama_server: str, make_settings) -> None:
    # Generous timeout: the machine may be busy, and the server generates one request at a time.
    settings = make_settings(providers={"openai_base_url": llama_server}, timeout=120, max_retries=0)
    provider = get_provider("openai:gemma", settings)
    request = ChatRequest([Message.user("Count from one to ten: one, two,")], max_tokens=16, temperature=0)
    events = [e async for e in provider.stream(request)]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    assert isinstance(events[-1], Finish) and events[-1].reason in ("stop", "length")


@pytest.mark.slow
async def test_real_server_schema_constrained_output(llama_server: str, make_settings) -> None:
    # llama-cpp-python's server takes the schema as {"type": "json_object", "schema": ...}.
    settings = make_settings(
        providers={"openai_base_url": llama_server, "openai_response_format": "json_object"}, timeout=120, max_retries=0
    )
    schema = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["up", "down"]}, "count": {"type": "integer"}},
        "required": ["status", "count"],
    }
    request = ChatRequest([Message.user("Is the web server up? Answer in JSON.")], response_schema=schema, max_tokens=40, temperature=0)
    response = await get_provider("openai:gemma", settings).complete(request)
    value = json.loads(response.text)
    assert value["status"] in ("up", "down") and isinstance(value["count"], int)
