"""The assistant intents over the WebSocket: chat_llm streaming and history, query_assist, sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudisense.client import RpcError
from cloudisense.llm import ChatRequest, register
from cloudisense.llm.registry import clear_cache
from cloudisense.llm.testing import ScriptedModel
from tests.assistant.conftest import agent_settings, serving

MODULES = ["pubsub", "audit", "system", "targets", "logs", "assistant"]


class Probe:
    """A scripted provider shared by every node of a test, answering from the request it got."""

    def __init__(self) -> None:
        self.model = ScriptedModel(chunk_size=3)
        self.model.add(*(self.reply for _ in range(10)))

    @staticmethod
    def reply(request: ChatRequest) -> str:
        said = [m.content for m in request.messages if m.role == "user"]
        return f"I have seen {len(said)} user messages; the first was: {said[0]}"


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    register("probe", lambda model, settings: p.model, per_loop=False, replace=True)
    clear_cache()
    yield p
    clear_cache()


def settings_with(tmp_path: Path, provider: str, **extra: Any) -> Any:
    return agent_settings(tmp_path, modules=MODULES, llm={"provider": provider, **extra})


def drain(conn: Any) -> list[dict[str, Any]]:
    events = []
    while not conn.events.empty():
        events.append(conn.events.get_nowait())
    return events


async def test_chat_llm_streams_and_keeps_history_across_restart(tmp_path: Path, probe: Probe) -> None:
    settings = settings_with(tmp_path, "probe")
    async with serving(settings) as running:
        conn = await running.connect("oper")
        first = await conn.call("chat_llm", {"prompt": "my name is Ada", "params": {"session": "s1"}})
        deltas = [e for e in drain(conn) if e["name"] == "llm_delta"]
        # Every delta was sent before the response, and together they are the answer.
        assert len(deltas) > 1
        assert "".join(d["data"]["text"] for d in deltas) == first["text"]
        assert first["session"] == "s1" and first["usage"]["output_tokens"] > 0
        second = await conn.call("chat_llm", {"prompt": "what is my name?", "params": {"session": "s1"}})
        assert "seen 2 user messages" in second["text"] and "my name is Ada" in second["text"]
        conn.close()
    async with serving(settings) as running:  # a new server on the same data dir
        conn = await running.connect("oper")
        third = await conn.call("chat_llm", {"prompt": "still there?", "params": {"session": "s1"}})
        assert "seen 3 user messages" in third["text"] and "my name is Ada" in third["text"]
        other = await conn.call("chat_llm", {"prompt": "fresh start", "params": {"session": "s2"}})
        assert "seen 1 user messages" in other["text"]
        usage = await conn.call("llm_usage", {"session": "s1"})
        assert usage["session"]["used"] > 0  # reloaded from SQLite after the restart
        conn.close()
    sent = probe.model.requests
    assert len(sent) == 4
    assert sent[2].messages[-1].content == "still there?"


async def test_chat_llm_refuses_when_no_model_is_configured(tmp_path: Path) -> None:
    async with serving(settings_with(tmp_path, "offline")) as running:
        conn = await running.connect("viewer")
        with pytest.raises(RpcError) as err:
            await conn.call("intent_chat_llm", {"prompt": "hello"})
        assert err.value.code == 503 and "[llm] provider" in err.value.message
        conn.close()


async def test_session_budget_refuses_before_calling_the_model(tmp_path: Path, probe: Probe) -> None:
    async with serving(settings_with(tmp_path, "probe", session_token_budget=100)) as running:
        conn = await running.connect("oper")
        await conn.call("chat_llm", {"prompt": "one " * 20, "params": {"session": "b"}})
        with pytest.raises(RpcError) as err:
            await conn.call("chat_llm", {"prompt": "two " * 20, "params": {"session": "b"}})
        assert err.value.code == 429 and "budget" in err.value.message
        assert len(probe.model.requests) == 1
        conn.close()


async def test_query_assist_answers_from_real_results_and_clears(tmp_path: Path) -> None:
    async with serving(settings_with(tmp_path, "offline")) as running:
        conn = await running.connect("viewer")
        intro = await conn.call("assist_introduction")
        assert "web" in intro["text"] and intro["planner"] == "offline"
        data = await conn.call("query_assist", {"query": "is the web service up?"})
        assert data["steps"][0]["intent"] == "target_status"
        assert data["steps"][0]["params"] == {"name": "web"}
        assert "web is running" in data["answer"]
        errors = await conn.call("query_assist", {"query": "show errors in the app log"})
        assert "upstream timeout" in errors["answer"]
        help_ = await conn.call("query_assist", {"query": "what can you do?"})
        assert help_["strategy"] == "introduction" and help_["steps"] == []
        cleared = await conn.call("clear_assist_session")
        assert cleared["cleared"] is True and cleared["session"] == data["session"]
        conn.close()


async def test_query_assist_viewer_cannot_get_a_write_action_run(tmp_path: Path) -> None:
    async with serving(settings_with(tmp_path, "offline")) as running:
        conn = await running.connect("viewer")
        data = await conn.call("query_assist", {"query": "restart the web service"})
        ran = [s for s in data.get("steps", []) if s["status"] == "ok" and s["intent"] == "restart_target"]
        assert ran == []
        records = await conn.call("get_audit_log", {"intent": "restart_target"})
        assert all(r["outcome"] != "success" for r in records["records"])
        conn.close()


@pytest.mark.slow
async def test_chat_llm_with_the_real_local_model_streams(tmp_path: Path) -> None:
    async with serving(settings_with(tmp_path, "local", max_tokens=24)) as running:
        conn = await running.connect("oper")
        resp = await conn.request("chat_llm", {"prompt": "Servers are", "params": {"temperature": 0}}, timeout=300)
        deltas = [e for e in drain(conn) if e["name"] == "llm_delta"]
        assert resp["status"] == "success", resp
        assert len(deltas) > 1
        assert "".join(d["data"]["text"] for d in deltas) == resp["data"]["text"]
        assert resp["data"]["provider"] == "local"
        conn.close()


async def test_every_delta_arrives_before_the_response(tmp_path: Path, probe: Probe) -> None:
    async with serving(settings_with(tmp_path, "probe")) as running:
        conn = await running.connect("oper")
        for n in range(5):
            data = await conn.call("chat_llm", {"prompt": f"request {n} " + "x" * 200, "params": {"session": "o"}})
            # The reader queues events in frame order: all of them are here when the response is.
            streamed = "".join(e["data"]["text"] for e in drain(conn) if e["name"] == "llm_delta")
            assert streamed == data["text"]
        conn.close()
