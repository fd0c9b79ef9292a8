"""Faults against local peers: retries are the SDKs' own, counted at the peer; fallback rules."""

from __future__ import annotations

import pytest

from cloudisense.llm import (
    ChatRequest,
    FallbackProvider,
    LLMService,
    Message,
    ProviderAuthFailed,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamInterrupted,
    TextDelta,
    get_provider,
)
from tests.llm.peers import SSE, FakePeer, Hang, Reply, an_end, an_start, an_text_block, oa_text

# Peers ask the SDK to wait 10 ms between attempts instead of its exponential back-off.
FAST = {"retry-after-ms": "10"}
REQUEST = ChatRequest([Message.user("hello")])


def _openai_settings(make_settings, peer: FakePeer, **kw):
    return make_settings(providers={"openai_base_url": peer.url + "/v1", "openai_api_key": "sk-live-abcdef123456"}, **kw)


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_429_retried_by_the_sdk_then_rate_limited(make_settings, max_retries: int) -> None:
    with FakePeer(Reply(429, {"error": {"message": "slow down"}}, FAST)) as peer:
        provider = get_provider("openai:m", _openai_settings(make_settings, peer, max_retries=max_retries))
        with pytest.raises(ProviderRateLimited) as info:
            await provider.complete(REQUEST)
    assert peer.attempts() == 1 + max_retries
    assert info.value.code == 429 and "429" in info.value.message


async def test_500_retried_then_unavailable(make_settings) -> None:
    with FakePeer(Reply(500, {"error": {"message": "boom"}}, FAST)) as peer:
        provider = get_provider("openai:m", _openai_settings(make_settings, peer, max_retries=1))
        with pytest.raises(ProviderUnavailable) as info:
            await provider.complete(REQUEST)
    assert peer.attempts() == 2
    assert info.value.code == 503 and not info.value.started


async def test_500_then_success_is_invisible_to_the_caller(make_settings) -> None:
    with FakePeer(Reply(500, {}, FAST), SSE(oa_text("fine"))) as peer:
        response = await get_provider("openai:m", _openai_settings(make_settings, peer)).complete(REQUEST)
    assert response.text == "fine" and peer.attempts() == 2


async def test_hanging_peer_times_out_after_each_attempt(make_settings) -> None:
    with FakePeer(Hang(30)) as peer:
        provider = get_provider("openai:m", _openai_settings(make_settings, peer, timeout=0.4, max_retries=1))
        with pytest.raises(ProviderTimeout) as info:
            await provider.complete(REQUEST)
    assert peer.attempts() == 2
    assert info.value.code == 504


async def test_stream_cut_midway_is_not_retried(make_settings) -> None:
    frames = oa_text("one ", "two ", "three ", "four")
    with FakePeer(SSE(frames, cut_after=3)) as peer:
        provider = get_provider("openai:m", _openai_settings(make_settings, peer))
        got: list[str] = []
        with pytest.raises(StreamInterrupted) as info:
            async for event in provider.stream(REQUEST):
                if isinstance(event, TextDelta):
                    got.append(event.text)
    assert got == ["one ", "two "]  # frame 0 is the role-only chunk
    assert peer.attempts() == 1
    assert info.value.partial_text == "one two " and info.value.started
    assert "incomplete" in info.value.message


async def test_anthropic_cut_midway_and_overloaded(make_settings) -> None:
    frames = [an_start(), *an_text_block(0, "a", "b", "c"), *an_end()]
    settings_kw = {"anthropic_api_key": "sk-ant-xyz-7890"}
    with FakePeer(SSE(frames, cut_after=3)) as peer:
        settings = make_settings(providers={**settings_kw, "anthropic_base_url": peer.url})
        with pytest.raises(StreamInterrupted):
            await get_provider("anthropic:c", settings).complete(REQUEST)
        assert peer.attempts() == 1
    with FakePeer(Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, FAST)) as peer:
        settings = make_settings(providers={**settings_kw, "anthropic_base_url": peer.url}, max_retries=2)
        with pytest.raises(ProviderUnavailable):
            await get_provider("anthropic:c", settings).complete(REQUEST)
        assert peer.attempts() == 3


async def test_rejected_key_never_leaks(make_settings) -> None:
    key = "sk-live-abcdef123456"
    body = {"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}
    with FakePeer(Reply(401, body)) as peer:
        provider = get_provider("openai:m", _openai_settings(make_settings, peer))
        with pytest.raises(ProviderAuthFailed) as info:
            await provider.complete(REQUEST)
    assert peer.attempts() == 1  # 401 is not retryable
    assert key not in str(info.value) and key not in repr(info.value)
    assert "OPENAI_API_KEY" in str(info.value)
    assert key not in repr(provider)
    settings = _openai_settings(make_settings, peer)
    assert key not in repr(settings) and key not in str(settings.model_dump())


# --- fallback -------------------------------------------------------------------------------------


def _pair(make_settings, primary: FakePeer, fallback: FakePeer, **kw):
    return make_settings(
        provider="openai:m",
        fallback="anthropic:c",
        providers={
            "openai_base_url": primary.url + "/v1",
            "openai_api_key": "sk-1234",
            "anthropic_base_url": fallback.url,
            "anthropic_api_key": "sk-ant-1234",
        },
        **kw,
    )


async def test_fallback_used_when_primary_fails_before_output(make_settings) -> None:
    backup = [an_start(), *an_text_block(0, "from ", "backup"), *an_end()]
    with FakePeer(Reply(503, {}, FAST)) as primary, FakePeer(SSE(backup)) as fallback:
        settings = _pair(make_settings, primary, fallback, max_retries=1)
        provider = get_provider(None, settings)
        assert isinstance(provider, FallbackProvider)
        response = await provider.complete(REQUEST)
        assert response.text == "from backup" and response.provider == "anthropic"
        # Through the service too: usage is charged to the provider that answered.
        service = LLMService(settings)
        response = await service.complete(REQUEST)
        assert response.provider == "anthropic"
        assert set(service.ledger.provider_usage()) == {"anthropic"}
    assert primary.attempts() == 2 * 2  # two calls, 1 + max_retries attempts each
    assert fallback.attempts() == 2


async def test_fallback_not_used_after_output_began(make_settings) -> None:
    backup = [an_start(), *an_text_block(0, "backup"), *an_end()]
    with FakePeer(SSE(oa_text("par", "tial", "more"), cut_after=3)) as primary, FakePeer(SSE(backup)) as fallback:
        provider = get_provider(None, _pair(make_settings, primary, fallback))
        with pytest.raises(StreamInterrupted):
            await provider.complete(REQUEST)
    assert primary.attempts() == 1
    assert fallback.attempts() == 0


async def test_fallback_not_used_for_a_rejected_request(make_settings) -> None:
    with FakePeer(Reply(400, {"error": {"message": "bad model"}})) as primary, FakePeer() as fallback:
        provider = get_provider(None, _pair(make_settings, primary, fallback))
        with pytest.raises(Exception) as info:
            await provider.complete(REQUEST)
    assert info.value.code == 400  # type: ignore[attr-defined]
    assert fallback.attempts() == 0
