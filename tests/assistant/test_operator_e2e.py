""""Tried as a new operator would" (issue 8), end to end over the WebSocket against a real node.

Real targets (sleeper processes), the demo policy, a real webhook receiver, the offline planner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.assistant.conftest import SLEEPER, agent_settings, audit_rows, recording_webhook, running_pid, serving
from tests.conftest import PASSWORDS, Running
from tests.test_cli import run

MODULES = ["pubsub", "audit", "system", "targets", "logs", "notify", "assistant"]


@asynccontextmanager
async def operator_node(tmp_path: Path) -> AsyncIterator[tuple[Running, list[dict[str, Any]]]]:
    """A node like the demo: four services, the demo policy, aliases, a webhook that records what it gets."""
    sleeper = {"command": SLEEPER, "autostart": True, "stop_timeout": 1}
    async with recording_webhook() as (url, received):
        settings = agent_settings(tmp_path, modules=MODULES, notify={"webhooks": [url], "retries": 0},
                                  targets={"worker": sleeper, "redis": sleeper},
                                  agent={"aliases": {"kv store": "redis", "web tier": "nginx"}})
        async with serving(settings) as running:
            yield running, received


def plain(answer: str) -> None:
    """An answer in words: no JSON objects, no API wording."""
    assert answer and "{" not in answer and "confirm_action" not in answer, answer


async def test_conditions_are_checked_on_real_results(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, received):
        oper = await running.connect("oper")
        out = await oper.call("query_assist", {"query": "check disk and memory, then tell the team if disk is above 90%"})
        steps = out["steps"]
        percent = steps[0]["data"]["disk"]["percent"] if "disk" in steps[0]["data"] else steps[0]["data"]["percent"]
        if percent <= 90:
            # The condition is false on the real figure: the notification is skipped, nobody is paged.
            assert [s["status"] for s in steps] == ["ok", "skipped"], out
        else:
            assert out["status"] == "paused"  # true: still asks before notifying
        assert received == []
        plain(out["answer"])
        # A condition that holds on the real figure: the notification goes out (the demo policy allows it), once.
        out = await oper.call("query_assist", {"query": "check disk and memory, then tell the team if disk is above 0%"})
        assert [s["status"] for s in out["steps"]] == ["ok", "ok"], out
        assert len(received) == 1 and received[0]["message"]
        oper.close()


async def test_restart_only_if_down(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, _):
        pid = await running_pid(running, "redis")
        oper = await running.connect("oper")
        out = await oper.call("query_assist", {"query": "check redis and restart it if it's down"})
        assert [(s["intent"], s["status"]) for s in out["steps"]] == [("target_status", "ok"),
                                                                       ("restart_target", "skipped")], out
        assert out.get("approval") is None  # a healthy redis: no approval asked, nothing restarted
        assert await running_pid(running, "redis") == pid
        plain(out["answer"])
        admin = await running.connect("admin")
        await admin.call("stop_target", {"name": "redis"})
        out = await oper.call("query_assist", {"query": "check the kv store and restart it if it's down"})
        assert out["status"] == "paused" and out["approval"]["intent"] == "restart_target", out
        admin.close()
        oper.close()


async def test_typo_question_reads_and_never_writes(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, _):
        oper = await running.connect("oper")
        out = await oper.call("query_assist", {"query": "is ngnix runing?"})
        assert [s["intent"] for s in out["steps"]] == ["target_status"] and out["steps"][0]["params"] == {"name": "nginx"}
        assert "nginx is running" in out["answer"]
        plain(out["answer"])
        # A typo that leads to a write asks first, and runs nothing.
        out = await oper.call("query_assist", {"query": "restrat the worker"})
        assert out["outcome"] == "clarify" and "restart" in out["answer"] and not out.get("steps")
        assert await audit_rows(running, "restart_target") == []
        oper.close()


async def test_unclear_questions_are_clarified_not_answered_with_json(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, received):
        oper = await running.connect("oper")
        # No alias says what "the site" is here: asked, not guessed.
        out = await oper.call("query_assist", {"query": "is the site up?"})
        assert out["outcome"] == "clarify" and not out.get("steps"), out
        plain(out["answer"])
        # An open question is investigated with reads only (issue 14), and answered in words.
        out = await oper.call("query_assist", {"query": "why is the site slow?"})
        assert out["strategy"] == "diagnose" and out["outcome"] in ("answered", "awaiting_approval"), out
        assert out["steps"] and all(running.node.registry.get(s["intent"]).risk.value == "read"
                                    for s in out["steps"]), out["steps"]
        plain(out["answer"])
        assert received == []
        assert await audit_rows(running, "restart_target") == []
        oper.close()


async def test_viewer_is_told_what_the_role_may_not_do(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, _):
        pid = await running_pid(running, "worker")
        viewer = await running.connect("viewer")
        out = await viewer.call("query_assist", {"query": "restart the worker"})
        assert out["outcome"] == "refused" and "Viewers can't" in out["answer"] and "operator" in out["answer"], out
        assert not out.get("steps")
        assert await audit_rows(running, "list_approvals") == []
        assert await running_pid(running, "worker") == pid
        # What the viewer may do still works.
        out = await viewer.call("query_assist", {"query": "is the worker up?"})
        assert out["steps"][0]["intent"] == "target_status" and "worker is running" in out["answer"]
        viewer.close()


async def test_small_talk_is_understood_and_never_escalates(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, received):
        oper = await running.connect("oper")
        for text, words in (("thanks", "welcome"), ("help", ""), ("quit", "Goodbye"), ("hello", "")):
            out = await oper.call("query_assist", {"query": text})
            # "help" may be the assistant's introduction; either way a plain answer.
            assert out["outcome"] == "answered" and words in out["answer"], (text, out)
            assert "escalation" not in out
        assert (await oper.call("list_escalations"))["escalations"] == []
        assert received == []
        oper.close()


async def test_chat_exits_on_quit(tmp_path: Path) -> None:
    async with operator_node(tmp_path) as (running, received):
        pid = await running_pid(running, "nginx")
        env = {"CLOUDISENSE_URL": running.url, "CLOUDISENSE_USER": "oper", "CLOUDISENSE_PASSWORD": PASSWORDS["oper"]}
        code, out, err = await run("chat", stdin="thanks\nquit\nrestart nginx\n", env=env)
        assert code == 0 and "welcome" in out, (out, err)
        # "quit" ended the chat: the line after it was never sent.
        assert await audit_rows(running, "restart_target") == []
        assert await running_pid(running, "nginx") == pid
        assert received == []
        code, out, _ = await run("ask", "restart the worker", env={**env, "CLOUDISENSE_USER": "viewer",
                                                                   "CLOUDISENSE_PASSWORD": PASSWORDS["viewer"]},
                                 stdin="")
        assert code == 1 and "Viewers can't" in out


async def test_which_services_are_running_answers_with_their_states(tmp_path: Path) -> None:
    # list_targets answers the existing client with names only; the assistant asks for the details.
    async with operator_node(tmp_path) as (running, _):
        viewer = await running.connect("viewer")
        out = await viewer.call("query_assist", {"query": "which services are running"})
        assert out["outcome"] == "executed" and out["steps"][0]["params"]["details"] is True
        plain(out["answer"])
        assert "redis running" in out["answer"] and "worker running" in out["answer"], out["answer"]
        names = await viewer.call("list_targets", {})
        assert all(isinstance(n, str) for n in names) and {"redis", "worker"} <= set(names)
        viewer.close()
