"""UsageLedger budgets and accounting, LLMService around a provider, telemetry, base types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from cloudisense.llm import (
    BaseProvider,
    BudgetExceeded,
    ChatRequest,
    LLMService,
    Message,
    TextDelta,
    ToolCall,
    ToolSpec,
    UnsupportedFeature,
    Usage,
    UsageLedger,
    UsageRecord,
    collect,
)
from cloudisense.llm.base import Finish, StreamEvent
from cloudisense.llm.testing import ScriptedModel, ScriptedTurn


def _req(text: str = "hello", session: str | None = "s1", user: str | None = "u1") -> ChatRequest:
    return ChatRequest([Message.user(text)], session_id=session, user_id=user)


async def test_session_budget_refuses_before_calling_the_model(make_settings) -> None:
    model = ScriptedModel([ScriptedTurn("ok", usage=Usage(60, 35)), "never sent"])
    service = LLMService(make_settings(session_token_budget=100), provider=model)
    await service.complete(_req())
    assert service.ledger.session_used("s1") == 95
    with pytest.raises(BudgetExceeded) as info:
        await service.complete(_req("a question long enough to need more than five tokens"))
    assert info.value.code == 429 and info.value.scope == "session"
    assert "session token budget is spent (95 of 100" in info.value.message
    assert "session_token_budget" in info.value.message
    assert len(model.requests) == 1 and model.remaining == 1  # the model was not called
    # Another session of the same user is fine (no user budget set).
    await service.complete(_req(session="s2"))
    model.assert_all_used()


async def test_user_budget_spans_sessions(make_settings) -> None:
    model = ScriptedModel([ScriptedTurn("a", usage=Usage(30, 30)), ScriptedTurn("b", usage=Usage(30, 30))])
    service = LLMService(make_settings(user_token_budget=100), provider=model)
    await service.complete(_req(session="s1"))
    await service.complete(_req(session="s2"))
    with pytest.raises(BudgetExceeded) as info:
        await service.complete(_req(session="s3"))
    assert info.value.scope == "user" and info.value.used == 120


async def test_ledger_hook_metrics_and_restore() -> None:
    records: list[UsageRecord] = []

    async def persist(record: UsageRecord) -> None:
        records.append(record)

    ledger = UsageLedger(session_budget=1000, on_record=persist)
    ledger.load(sessions={"old": 990}, users={"u1": 5})
    with pytest.raises(BudgetExceeded):
        ledger.check("old", None, estimate=20)
    await ledger.record(Usage(10, 4), provider="openai", model="m", session_id="s", user_id="u1")
    await ledger.record(Usage(1, 1), provider="local", session_id="s", user_id="u1")
    assert records[0] == UsageRecord("s", "u1", "openai", "m", 10, 4, records[0].at)
    assert ledger.user_used("u1") == 5 + 14 + 2 and ledger.session_used("s") == 16
    assert ledger.provider_usage()["openai"] == Usage(10, 4)
    sample = ledger.registry.get_sample_value
    assert sample("cloudisense_llm_tokens_total", {"provider": "openai", "kind": "input"}) == 10
    assert sample("cloudisense_llm_tokens_total", {"provider": "openai", "kind": "output"}) == 4
    assert sample("cloudisense_llm_requests_total", {"provider": "local", "outcome": "ok"}) == 1
    assert sample("cloudisense_llm_budget_refusals_total", {"scope": "session"}) == 1
    ledger.reset_session("s")
    assert ledger.session_used("s") == 0 and ledger.user_used("u1") == 21


async def test_failing_hook_does_not_fail_the_answer(caplog) -> None:
    def broken(record: UsageRecord) -> None:
        raise OSError("disk full")

    service = LLMService(
        __import__("cloudisense.config", fromlist=["LLMSettings"]).LLMSettings(),
        provider=ScriptedModel(["fine"]),
        ledger=UsageLedger(on_record=broken),
    )
    assert (await service.complete(_req())).text == "fine"
    assert "persisting llm usage failed" in caplog.text


class _NoUsage(BaseProvider):
    """A provider that reports no usage and cannot call tools."""

    name = "plain"
    supports_tools = False

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta("x" * 40)
        yield Finish("stop")


async def test_missing_usage_is_estimated_and_unsupported_features_refused(make_settings) -> None:
    service = LLMService(make_settings(), provider=_NoUsage("p"))
    response = await service.complete(_req("y" * 80))
    assert response.provider == "plain" and response.model == "p"
    assert service.ledger.provider_usage()["plain"] == Usage(20, 10)
    with pytest.raises(UnsupportedFeature, match="cannot call tools"):
        await service.complete(ChatRequest([Message.user("x")], tools=[ToolSpec("t", "d")]))
    sample = service.ledger.registry.get_sample_value
    assert sample("cloudisense_llm_requests_total", {"provider": "plain", "outcome": "error"}) == 1


def _sdk_tracer() -> tuple[Any, Any]:
    """A real OpenTelemetry SDK tracer whose finished spans are kept in memory."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def test_genai_span_attributes(make_settings) -> None:
    tracer, exporter = _sdk_tracer()
    model = ScriptedModel([ScriptedTurn("hi", usage=Usage(12, 3)), RuntimeError("boom")], model="tiny")
    service = LLMService(make_settings(), provider=model, tracer=tracer)
    await service.complete(ChatRequest([Message.user("x")], max_tokens=50, temperature=0.1))
    with pytest.raises(RuntimeError):
        await service.complete(ChatRequest([Message.user("x")]))
    ok, failed = exporter.get_finished_spans()
    assert ok.name == "chat tiny"
    assert dict(ok.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "scripted",
        "gen_ai.request.model": "tiny",
        "gen_ai.request.temperature": 0.1,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert failed.attributes["error.type"] == "RuntimeError"
    assert not failed.status.is_ok
    # Prompts and answers are never recorded.
    assert all("x" != v and "hi" != v for span in (ok, failed) for v in span.attributes.values())


async def test_without_a_tracer_spans_are_a_noop(make_settings) -> None:
    # opentelemetry-api without an SDK gives non-recording spans; nothing must break either way.
    service = LLMService(make_settings(), provider=ScriptedModel(["ok"]))
    assert (await service.complete(_req())).text == "ok"


# --- base types -----------------------------------------------------------------------------------


def test_tool_call_parsing_never_raises() -> None:
    assert ToolCall.parse("1", "t", '{"a": 1}').arguments == {"a": 1}
    assert ToolCall.parse("1", "t", "").ok and ToolCall.parse("1", "t", None).arguments == {}
    assert ToolCall.parse("1", "t", {"a": 2}).raw_arguments == '{"a": 2}'
    bad = ToolCall.parse("1", "t", "[1, 2]")
    assert not bad.ok and "must be a JSON object" in (bad.error or "")
    worse = ToolCall.parse("1", "t", "{'a': 1}")
    assert not worse.ok and worse.raw_arguments == "{'a': 1}"


def test_tool_spec_from_pydantic_model() -> None:
    class Params(BaseModel):
        host: str
        lines: int = 10

    spec = ToolSpec.from_model("tail", "Last lines of a log.", Params)
    assert spec.parameters["required"] == ["host"] and "lines" in spec.parameters["properties"]


async def test_collect_folds_events() -> None:
    async def events() -> AsyncIterator[StreamEvent]:
        yield TextDelta("a")
        yield TextDelta("b")
        yield Finish("length")

    response = await collect(events(), provider="p", model="m")
    assert (response.text, response.finish_reason, response.usage) == ("ab", "length", Usage())


def test_service_is_a_drop_in_provider(make_settings) -> None:
    from cloudisense.llm import Provider

    service = LLMService(make_settings(), provider=ScriptedModel(model="m"))
    assert isinstance(service, Provider) and (service.name, service.model) == ("scripted", "m")
