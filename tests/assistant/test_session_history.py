"""Resuming a conversation: the answer's text streams before the response, and get_assist_session
returns the questions and whole answers (each once), for the session's owner only."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudisense.client import RpcError
from cloudisense.llm.testing import ScriptedModel
from tests.assistant.conftest import agent_settings, serving


def drain(conn: object) -> list[dict]:
    """Events received so far."""
    out = []
    while not conn.events.empty():
        out.append(conn.events.get_nowait())
    return out


async def test_answer_text_is_an_event_before_the_response_and_the_session_resumes(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        data = await oper.call("query_assist", {"query": "is the web service up?", "session": "h1"})
        deltas = [e for e in drain(oper) if e["name"] == "assist_delta"]
        assert [d["data"]["text"] for d in deltas] == [data["answer"]]
        assert deltas[0]["topic"] == "/assist/h1"
        await oper.call("query_assist", {"query": "show errors in the app log", "session": "h1"})

        history = await oper.call("get_assist_session", {"session": "h1"})
        entries = history["entries"]
        assert [e["role"] for e in entries] == ["user", "assistant", "user", "assistant"]
        assert entries[0]["text"] == "is the web service up?"
        assert entries[1]["turn"]["steps"][0]["intent"] == "target_status"
        assert entries[1]["text"] == data["answer"]
        assert "upstream timeout" in entries[3]["text"]
        assert all(isinstance(e["ts"], float) for e in entries)

        await oper.call("clear_assist_session", {"session": "h1"})
        assert (await oper.call("get_assist_session", {"session": "h1"}))["entries"] == []
        oper.close()


async def test_another_users_session_is_refused(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        await oper.call("query_assist", {"query": "is the web service up?", "session": "mine"})
        viewer = await running.connect("viewer")
        with pytest.raises(RpcError) as err:
            await viewer.call("get_assist_session", {"session": "mine"})
        assert err.value.code == 403
        with pytest.raises(RpcError) as bad:
            await viewer.call("get_assist_session", {"session": "no spaces allowed"})
        assert bad.value.code == 400
        oper.close()
        viewer.close()


async def test_an_approved_plan_keeps_its_answer_once(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        asked = await oper.call("query_assist", {"query": "restart the web service", "session": "h2"})
        assert asked["outcome"] == "awaiting_approval"
        done = await oper.call("confirm_action", {"approval_id": asked["approval"]["approval_id"], "approve": True})
        entries = (await oper.call("get_assist_session", {"session": "h2"}))["entries"]
        assert [e["role"] for e in entries] == ["user", "assistant", "assistant"]
        assert entries[1]["turn"]["outcome"] == "awaiting_approval"
        assert entries[2]["turn"]["decided"]["approval_id"] == asked["approval"]["approval_id"]
        assert entries[2]["text"] == done["answer"]
        oper.close()


async def test_a_models_answer_streams_in_pieces_then_the_whole_answer(tmp_path: Path) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        agent = running.node.module("assistant")
        agent.assistant.provider = ScriptedModel(["The web service serves the site on port 8081."], chunk_size=5)
        oper = await running.connect("oper")
        data = await oper.call("agent_ask", {"query": "tell me about the web service", "mode": "react",
                                             "session": "m1"})
        deltas = [e["data"] for e in drain(oper) if e["name"] == "assist_delta"]
        pieces = [d["text"] for d in deltas if d.get("partial")]
        assert len(pieces) > 1 and "".join(pieces) == "The web service serves the site on port 8081."
        assert deltas[-1] == {"session": "m1", "text": data["answer"], "final": True}
        oper.close()
