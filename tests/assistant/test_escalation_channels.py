"""Escalation channels: who is paged for which severity, with the evidence, through real local peers.

A recording webhook, a local peer speaking Telegram's ``sendMessage`` and a real SMTP server
(aiosmtpd) receive the notices of one node whose ``[agent.escalation]`` routes severities to them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudisense.assistant.escalation import diagnosis_evidence, notice
from cloudisense.assistant.plan import Plan
from cloudisense.core.errors import ConfigError
from cloudisense.core.roles import Role
from tests.assistant.conftest import agent_settings, audit_rows, recording_webhook, serving
from tests.conftest import Running, make_settings, start_server, until
from tests.modules.test_notify import TOKEN, Peer, peer
from tests.modules.test_notify_email import Mailbox, body, smtp_server

MODULES = ["pubsub", "audit", "system", "targets", "logs", "notify", "assistant"]
ALERT = {"id": 7, "fingerprint": "target:service-down:web", "severity": "critical", "source": "target",
         "subject": "web", "summary": "web is stopped", "count": 3}


@dataclass
class Channels:
    """The three receivers and the running node."""

    running: Running
    hook: list[dict[str, Any]]
    telegram: Peer
    mail: Mailbox


class _Planner:
    """A planner that always returns the given plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan_ = plan

    async def plan(self, text: str, context: Any) -> Plan:
        return self.plan_


@asynccontextmanager
async def channels(tmp_path: Path, escalation: dict[str, Any], policy: str | None = None) -> AsyncIterator[Channels]:
    """A node whose notify module reaches a webhook, a Telegram peer and an SMTP server."""
    async with AsyncExitStack() as stack:
        url, received = await stack.enter_async_context(recording_webhook())
        telegram = await stack.enter_async_context(peer())
        box, port = stack.enter_context(smtp_server())
        notify = {"webhooks": [url], "retries": 0, "telegram_bot_token": TOKEN, "telegram_chat_id": "-100",
                  "telegram_base_url": telegram.url,
                  "email": {"host": "127.0.0.1", "port": port, "security": "none", "from_address": "node@example.com",
                            "recipients": ["oncall@example.com"]}}
        extra: dict[str, Any] = {"policy": policy} if policy is not None else {}
        settings = agent_settings(tmp_path, modules=MODULES, notify=notify, agent={"escalation": escalation}, **extra)
        running = await stack.enter_async_context(serving(settings))
        yield Channels(running, received, telegram, box)


async def test_severity_routes_page_the_right_channels_with_the_evidence(tmp_path: Path) -> None:
    routes = {"critical": ["telegram", "email", "webhook"], "warning": ["webhook"], "info": []}
    async with channels(tmp_path, routes) as c:
        escalator = c.running.node.module("assistant").escalator
        evidence = ["likely cause: web is stopped (confidence high)",
                    'app, 3 times 10:00:01 … 10:02:01: "ERROR upstream timeout"', "system: CPU 12 %, memory 40 %"]
        done = await escalator.escalate("s-crit", "oper", "restart of web did not fix it", "is the site up?",
                                        severity="critical", evidence=evidence, alert=ALERT)
        assert done.notified and done.severity == "critical" and not done.suppressed
        assert [(ch["intent"], ch["ok"]) for ch in done.channels] == [
            ("simple_telegram_notify", True), ("simple_email_notify", True), ("simple_http_notify", True)]
        # Every channel got the same plain-words notice: why, the alert, the request and the evidence.
        texts = [c.telegram.seen[-1].body["text"], body(c.mail.mails[-1][2]), c.hook[-1]["message"]]
        for text in texts:
            assert "the assistant needs a person (critical)" in text
            assert "Why: restart of web did not fix it" in text
            assert "Alert: alert 7 (critical, target): web is stopped; 3 time(s)" in text
            assert 'Request: "is the site up?" (user oper, session s-crit)' in text
            assert '  - app, 3 times 10:00:01 … 10:02:01: "ERROR upstream timeout"' in text
            assert "quoted as data, not instructions" in text and "{" not in text
        assert c.mail.mails[-1][2]["Subject"] == "[cloudisense test-node] critical: restart of web did not fix it"
        # Each notice ran through the router as the escalation client, allowed by the policy (the demo's
        # policy allows the webhook and telegram itself; the built-in rule allows e-mail).
        for intent, rule in (("simple_telegram_notify", "telegram-configured-allow"),
                             ("simple_email_notify", "builtin:escalation-notice"),
                             ("simple_http_notify", "notify-configured-allow")):
            rows = await audit_rows(c.running, intent)
            assert [(r["client_kind"], r["rule"], r["outcome"]) for r in rows] == [("escalation", rule, "success")]

        # The same alert again (its severity is the alert's): flagged, not paged again within repeat_after.
        again = await escalator.escalate("s-crit2", "oper", "still down", alert=ALERT)
        assert again.severity == "critical"
        assert again.suppressed and not again.notified and "repeat_after" in (again.error or "")
        assert len(c.hook) == 1 and len(c.telegram.seen) == 1 and len(c.mail.mails) == 1
        flagged = await c.running.node.module("assistant").memory.flagged(None)
        assert {"s-crit", "s-crit2"} <= {f["session"] for f in flagged}

        # Warnings (the assistant's own escalations) go to the webhook only; info pages nobody.
        agent = c.running.node.module("assistant")
        agent.assistant.planner = _Planner(Plan(outcome="escalate", reason="asks to wipe the database"))
        conn = await c.running.connect("oper")
        turn = await conn.call("agent_ask", {"query": "wipe the db"})
        assert turn["outcome"] == "escalated" and turn["escalation"]["notified"] is True
        assert turn["escalation"]["severity"] == "warning" and len(c.hook) == 2
        assert "Why: asks to wipe the database" in c.hook[-1]["message"] and len(c.telegram.seen) == 1
        info = await escalator.escalate("s-info", "oper", "fyi", severity="info")
        assert not info.notified and "[agent.escalation] info" in (info.error or "")
        conn.close()


async def test_an_investigations_evidence_travels_with_the_escalation(tmp_path: Path) -> None:
    async with channels(tmp_path, {"warning": ["email"]}) as c:
        node = c.running.node
        conn = await c.running.connect("oper")
        await conn.call("stop_target", {"name": "web"})
        await until(lambda: (node.module("targets").states.get("web") or {}).get("state") == "stopped")
        agent = node.module("assistant")
        diagnosis = await agent.assistant.diagnoser.investigate("what's wrong with web?", user="oper",
                                                                 role=Role.OPERATOR, session=None)
        evidence = diagnosis_evidence(diagnosis)
        assert evidence[0].startswith("likely cause: web is stopped")
        done = await agent.escalator.escalate("s-web", "oper", "web stays down", "what's wrong with web?",
                                              evidence=evidence)
        assert done.notified and [ch["intent"] for ch in done.channels] == ["simple_email_notify"]
        text = body(c.mail.mails[-1][2])
        assert "  - likely cause: web is stopped" in text and "targets: " in text and "web stopped" in text
        assert c.hook == [] and c.telegram.seen == []
        conn.close()


async def test_a_policy_rule_can_still_stop_one_channel(tmp_path: Path) -> None:
    policy = ('[[rule]]\nname = "no-telegram-pages"\nintent = "simple_telegram_notify"\nclient = "escalation"\n'
              'decision = "deny"\nreason = "telegram is for humans only"\n')
    async with channels(tmp_path, {"warning": ["telegram", "webhook"]}, policy=policy) as c:
        done = await c.running.node.module("assistant").escalator.escalate("s", "oper", "needs a look")
        assert done.notified and [(ch["intent"], ch["ok"]) for ch in done.channels] == [
            ("simple_telegram_notify", False), ("simple_http_notify", True)]
        assert "telegram is for humans only" in (done.error or "") and c.telegram.seen == []


async def test_escalate_via_alone_still_works_and_bad_routes_stop_start_up(tmp_path: Path) -> None:
    async with recording_webhook() as (url, received):
        settings = agent_settings(tmp_path, modules=MODULES, notify={"webhooks": [url], "retries": 0},
                                  agent={"escalate_via": "simple_http_notify"})
        async with serving(settings) as running:
            escalator = running.node.module("assistant").escalator
            for severity in ("info", "warning", "critical"):
                assert (await escalator.escalate(f"s-{severity}", "oper", f"look {severity}",
                                                 severity=severity)).notified  # type: ignore[arg-type]
            assert len(received) == 3
    for routes, words in (({"critical": ["pager"]}, "no channel or intent 'pager'"),
                          ({"warning": ["list_targets"]}, "takes no message")):
        with pytest.raises(ConfigError) as info:
            await start_server(make_settings(tmp_path / "bad", modules=MODULES, agent={"escalation": routes}))
        assert words in str(info.value)


def test_a_long_notice_fits_every_channel_and_says_what_it_left_out() -> None:
    subject, text = notice("n", session="s", user="u", reason="r" * 600, request="q" * 400, severity="critical",
                           evidence=["line\n\x1b[31m" + "x" * 500] * 30, alert=ALERT)
    assert len(text) <= 3900 and len(subject) <= 180 and "\x1b" not in text
    assert text.endswith("more line(s): see the session s)\nSee it with list_escalations on node n.")
