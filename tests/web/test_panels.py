"""The dashboard's live panels in Debian's headless Chromium, against a real demo-like node.

The shell mounts each panel as ``<section class="panel" id="panel-<id>">`` (tabs below 900 px);
selectors stay inside each panel's section.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.assistant.conftest import agent_settings, serving
from tests.conftest import PASSWORDS, Running, make_settings, start_server, until
from tests.federation.conftest import broker  # noqa: F401 - the real mosquitto fixture
from tests.web.conftest import Watched, axe_violations, login, needs_chromium, screenshot, watched_page

MODULES = ["pubsub", "audit", "system", "targets", "logs", "alerts", "assistant"]
PANEL_IDS = ["approvals", "alerts", "services", "stats", "logs", "chatops", "audit"]

pytestmark = needs_chromium


def demo_settings(tmp_path: Path, **overrides: Any) -> Any:
    """The test node of the assistant tests (web and nginx targets, an app log, the demo policy) plus
    an alert rule that fires while web is stopped."""
    alerts = {"interval": 0.2, "targets": [{"name": "web-down", "target": "web", "condition": "stopped"}]}
    return agent_settings(tmp_path, modules=MODULES, alerts=alerts, **overrides)


class Page:
    """A logged-in dashboard (tests/web/conftest.py's watched page) seen panel by panel."""

    def __init__(self, watched: Watched) -> None:
        self.page = watched.page
        self.errors = watched.errors  # console errors, page errors, failed requests

    def panel(self, panel_id: str, selector: str = "") -> Any:
        return self.page.locator(f"#panel-{panel_id} {selector}".strip())

    async def show(self, panel_id: str) -> None:
        """On a narrow screen the panels are tabs: open this one's (a no-op beside the chat)."""
        tab = self.page.locator(f"#tabs button[aria-controls='panel-{panel_id}']")
        if await tab.is_visible():
            await tab.click()

    async def shot(self, name: str) -> None:
        await screenshot(self.page, f"panels-{name}")

    async def axe(self) -> list[str]:
        """Serious and critical accessibility violations (axe-core) of the page as it is now."""
        return await axe_violations(self.page)


async def open_panels(browser: Any, running: Running, user: str = "oper", *, width: int = 1280,
                      height: int = 800, scheme: str = "light") -> Page:
    watched = await watched_page(browser, {"width": width, "height": height}, scheme)
    p = Page(watched)
    await login(p.page, running.url, user, PASSWORDS[user])
    await p.show("services")
    await p.panel("services", "tr[data-target='web']").wait_for()
    return p


async def target_pid(running: Running, name: str) -> int | None:
    status = await running.node.module("targets").backends[name].status()
    return status.get("pid") if status.get("state") == "running" else None


async def test_operator_sees_charts_services_and_restarts_through_an_approval(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        p = await open_panels(browser, running, "oper")
        # Charts fill in from /stats (stats every 0.2 s in tests) and show the latest figure.
        await p.panel("stats", "figure[data-chart='cpu']").wait_for()
        await until(lambda: _points_at_least(p, 3), timeout=20)
        for chart in ("cpu", "memory", "disk"):
            assert (await p.panel("stats", f"[data-now='{chart}']").text_content()).endswith("%")
        assert "/s" in await p.panel("stats", "[data-now='network']").text_content()
        assert await p.panel("stats", "figure[data-chart='cpu'] canvas").count() == 1  # uPlot drew it

        # Services: state, health, uptime, and the buttons an operator may press.
        web = p.panel("services", "tr[data-target='web']")
        assert await web.get_attribute("data-state") == "running"
        assert await web.locator("[data-health]").text_content() == "unknown"
        await until(lambda: _text(web.locator("[data-uptime]"), lambda t: t.endswith(" s") or "min" in t))
        assert await web.locator("button[data-action]").all_text_contents() == ["Restart", "Stop"]

        # The demo policy makes a restart wait for approval: the row says so, the approvals panel shows it.
        pid_before = await target_pid(running, "web")
        await web.locator("button[data-action='restart_target']").click()
        await web.locator("[data-waiting]").wait_for()
        card = p.panel("approvals", "li[data-approval]")
        await card.wait_for()
        assert "restart_target web" in await card.text_content()
        assert await card.locator("[data-approve]").count() == 1
        assert await target_pid(running, "web") == pid_before  # nothing ran before the approval
        await p.shot("approval-waiting")
        assert await p.axe() == []

        await card.locator("[data-reason]").fill("deploy window")
        await card.locator("[data-approve]").click()
        await p.panel("approvals", ".panel-note:has-text('Nothing waits')").wait_for()
        await until(lambda: _pid_changed(running, pid_before), timeout=20)
        await p.panel("services", "tr[data-target='web'][data-state='running']").wait_for()
        await p.panel("services", "tr[data-target='web'] [data-waiting]").wait_for(state="detached")
        rows = await running.node.audit.query(intent="confirm_action")
        assert rows and rows[0]["user"] == "oper"
        decided = await running.node.module("assistant").approvals.list(status="consumed")
        assert decided and decided[0].reason == "deploy window"

        # The audit panel shows what was done (its own reads hidden), with the filters a person uses.
        audit = p.panel("audit", "tr[data-audit-row][data-intent='restart_target'][data-outcome='success']")
        await audit.first.wait_for()
        assert "success" in await audit.first.text_content()
        assert await p.panel("audit", "tr[data-intent='list_targets']").count() == 0
        await p.shot("after-restart")
        assert p.errors == []


async def _points_at_least(p: Page, n: int) -> bool:
    return int(await p.panel("stats", "figure[data-chart='cpu']").get_attribute("data-points") or 0) >= n


async def _text(locator: Any, pred: Any) -> bool:
    return bool(pred((await locator.text_content()) or ""))


async def _pid_changed(running: Running, before: int | None) -> bool:
    now = await target_pid(running, "web")
    return now is not None and now != before


ALLOW_RESTART = """
[[rule]]
name = "restart-allow"
intent = "restart_target"
decision = "allow"
reason = "restarts are fine here"

[[rule]]
name = "read-allow"
risk = "read"
decision = "allow"
"""


async def test_restart_allowed_by_policy_runs_at_once_and_a_stop_denied_says_why(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path, policy=ALLOW_RESTART)) as running:
        p = await open_panels(browser, running, "oper")
        pid_before = await target_pid(running, "nginx")
        nginx = p.panel("services", "tr[data-target='nginx']")
        await nginx.locator("button[data-action='restart_target']").click()
        await p.page.locator(".toast:has-text('nginx')").first.wait_for()
        new_pid = await target_pid(running, "nginx")
        assert new_pid is not None and new_pid != pid_before
        assert await p.panel("approvals", "li[data-approval]").count() == 0
        # No rule for stop: the policy's default for a destructive intent is deny, and the toast says why.
        await nginx.locator("button[data-action='stop_target']").click()
        toast = p.page.locator(".toast.error")
        await toast.first.wait_for()
        assert "deny" in (await toast.first.text_content()).lower() or "denied" in (await toast.first.text_content()).lower()
        assert await target_pid(running, "nginx") == new_pid  # still running
        assert p.errors == []


async def test_viewer_sees_state_but_no_action_buttons(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        await running.node.module("targets").backends["web"].stop()
        p = await open_panels(browser, running, "viewer")
        await p.panel("alerts", "li[data-alert]").wait_for()
        assert await p.panel("services", "tr[data-target='nginx']").get_attribute("data-state") == "running"
        for panel_id in PANEL_IDS:
            # Investigate only hands a question to the chat; nothing that acts on the node is offered.
            acting = p.panel(panel_id, "button:not([data-investigate]):not([data-audit-apply]):not([type='reset'])"
                                       ":not([data-log-pause]):not([type='submit'])")
            assert await acting.count() == 0, panel_id
        assert await p.panel("services", "th:has-text('Actions')").count() == 0
        # The audit filter says a viewer reads only their own records.
        assert await p.panel("audit", "[data-audit-user]").input_value() == "viewer"
        assert await p.panel("audit", "[data-audit-user]").get_attribute("readonly") is not None
        await p.shot("viewer")
        assert await p.axe() == []
        assert p.errors == []


async def test_log_tail_follows_filters_pauses_and_shows_markup_as_text(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        log_file = Path(running.node.module("logs").files["app"])
        p = await open_panels(browser, running, "oper")
        lines = p.panel("logs", "[data-log-lines]")
        await lines.locator(".logline:has-text('upstream timeout')").wait_for()  # the backlog

        with log_file.open("a") as f:
            f.write("2024-05-01 10:00:02 INFO first live line\n")
        await lines.locator(".logline:has-text('first live line')").wait_for()

        # Markup in a log line is text: nothing runs, no element is made from it.
        hostile = ['<script>window.__pwned = "script"</script>', '<img src=x onerror="window.__pwned = \'img\'">']
        with log_file.open("a") as f:
            f.writelines(f"2024-05-01 10:00:03 WARN {h}\n" for h in hostile)
        await lines.locator(".logline:has-text('onerror')").wait_for()
        assert await p.page.evaluate("window.__pwned === undefined")
        assert await lines.locator("img, script").count() == 0
        assert hostile[1] in await lines.locator(".logline").last.text_content()

        # Filter: only matching lines show; Esc clears it.
        await p.panel("logs", "[data-log-filter]").fill("live line")
        assert await lines.locator(".logline:visible").all_text_contents() == ["2024-05-01 10:00:02 INFO first live line"]
        await p.panel("logs", "[data-log-filter]").press("Escape")
        assert await lines.locator(".logline:visible").count() == 5

        # Pause holds new lines (counted), Resume shows them.
        await p.panel("logs", "[data-log-pause]").click()
        with log_file.open("a") as f:
            f.write("2024-05-01 10:00:04 INFO while paused\n")
        await p.panel("logs", "[data-log-status]:has-text('1 new line(s) held')").wait_for()
        assert await lines.locator(".logline:has-text('while paused')").count() == 0
        await p.panel("logs", "[data-log-pause]").click()
        await lines.locator(".logline:has-text('while paused')").wait_for()

        # Bounded: a burst of 700 lines keeps the newest 500 on screen.
        with log_file.open("a") as f:
            f.writelines(f"2024-05-01 10:01:00 INFO burst {i}\n" for i in range(700))
        await lines.locator(".logline:has-text('burst 699')").wait_for()
        assert await lines.locator(".logline").count() == 500
        assert await lines.locator(".logline").first.text_content() == "2024-05-01 10:01:00 INFO burst 200"
        await p.shot("log-tail")
        assert p.errors == []


async def test_alert_fires_is_acknowledged_silenced_investigated_and_resolves(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        p = await open_panels(browser, running, "oper")
        await p.panel("alerts", ".panel-note:has-text('No alerts are firing')").wait_for()
        await running.node.module("targets").backends["web"].stop()
        alert = p.panel("alerts", "li[data-alert][data-state='firing']")
        await alert.wait_for()
        text = await alert.text_content()
        assert "critical" in text and "web" in text and "since" in text and "once" in text

        await alert.locator("[data-investigate]").click()
        # The question goes to the chat, as the operator's, and the assistant answers it there.
        asked = p.page.locator(".msg.user:has-text('why is alert ')")
        await asked.wait_for()
        await p.page.locator(".msg.user:has-text('why is alert ') ~ .msg.assistant:not(.pending)").first.wait_for()

        await alert.locator("[data-ack]").click()
        await p.panel("alerts", "li[data-alert]:has-text('acknowledged by oper')").wait_for()
        await p.panel("audit", "tr[data-intent='ack_alert'][data-outcome='success']").wait_for()  # what was done
        await alert.locator("[data-silence-for]").select_option("15")
        await alert.locator("[data-silence]").click()
        await p.panel("alerts", "li[data-alert]:has-text('silenced until')").wait_for()
        (row,) = [a for a in (await running.node.module("alerts").book.query(
            state="firing", severity=None, source=None, acknowledged=None, limit=5))[0]]
        assert row.acked_by == "oper" and row.silenced()
        await p.shot("alert-silenced")
        assert await p.axe() == []

        # Lifting the silence, then starting web: the alert resolves and leaves the firing list.
        await alert.locator("[data-unsilence]").click()
        await p.panel("alerts", "[data-silence]").wait_for()
        await running.node.module("targets").backends["web"].start()
        await p.panel("alerts", ".panel-note:has-text('No alerts are firing')").wait_for(timeout=20000)
        await p.panel("alerts", "[data-alerts-resolved]").check()
        await p.panel("alerts", "li[data-alert][data-state='resolved']").wait_for()
        assert p.errors == []


async def test_audit_filters(tmp_path: Path, browser: Any) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        oper = await running.connect("oper")
        viewer = await running.connect("viewer")
        try:
            await oper.call("target_status", {"name": "web"})
            await oper.request("target_status", {"name": "nope"})  # an error row of oper
            await viewer.call("get_system_stats")
        finally:
            oper.close()
            viewer.close()
        p = await open_panels(browser, running, "admin")
        rows = p.panel("audit", "tr[data-audit-row]")
        await p.panel("audit", "tr[data-intent='get_system_stats']").wait_for()

        await p.panel("audit", "[data-audit-user]").fill("oper")
        await p.panel("audit", "[data-audit-apply]").click()
        await until(lambda: _all_attr(rows, "data-user", {"oper"}))
        await p.panel("audit", "[data-audit-outcome]").select_option("error")
        await p.panel("audit", "[data-audit-intent]").press("Enter")  # Enter applies the filters too
        await until(lambda: _all_attr(rows, "data-outcome", {"error"}))
        assert await rows.count() == 1 and "target_status" in await rows.first.text_content()

        # A time range in the past matches nothing; clearing the filters shows everyone again.
        await p.panel("audit", "[data-audit-until]").fill("2001-01-01T00:00:00")
        await p.panel("audit", "[data-audit-apply]").click()
        await p.panel("audit", ".panel-note:has-text('No records match')").wait_for()
        await p.panel("audit", "button[type='reset']").click()
        await p.panel("audit", "tr[data-user='viewer']").wait_for()

        # Federation is off: the node switcher stays hidden.
        assert await p.page.locator("#panel-nodes").is_hidden()
        assert p.errors == []


async def _all_attr(rows: Any, attr: str, wanted: set[str]) -> bool:
    # Read every row in one go: counting and then reading row by row races a re-render that
    # leaves fewer rows (then nth(i) waits out the 30 s timeout for a row that is gone).
    values = await rows.evaluate_all(f"rows => rows.map(r => r.getAttribute({attr!r}))")
    return bool(values) and set(values) == wanted


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_phone_layout_shows_every_panel_without_sideways_scroll(tmp_path: Path, browser: Any, scheme: str) -> None:
    async with serving(demo_settings(tmp_path)) as running:
        p = await open_panels(browser, running, "oper", width=390, height=844, scheme=scheme)
        await asyncio.sleep(0.5)  # a few /stats points
        for panel_id in PANEL_IDS:
            await p.show(panel_id)
            section = p.panel(panel_id)
            await section.scroll_into_view_if_needed()
            assert await section.is_visible(), panel_id
            box = await section.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, panel_id
            overflow = await p.page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, panel_id
            await p.shot(f"phone-{scheme}-{panel_id}")
            assert await p.axe() == [], panel_id
        assert p.errors == []


async def test_chatops_log_lists_and_follows_entries_as_text(tmp_path: Path, browser: Any) -> None:
    """The agent's ChatOps log (list_chatops, /chatops): entries in order, live ones appended, text only."""
    async with serving(demo_settings(tmp_path)) as running:
        log = running.node.module("assistant").chatops
        await log.add("observed", "alert 7 fired: web is stopped", alert_id=7)
        await log.add("proposed", 'restart web <img src=x onerror="window.__pwned = 1">', alert_id=7)
        p = await open_panels(browser, running, "oper")
        items = p.panel("chatops", "li[data-chatops-entry]")
        await items.nth(1).wait_for()
        assert [await items.nth(i).get_attribute("data-kind") for i in range(2)] == ["observed", "proposed"]
        assert "onerror" in await items.nth(1).text_content()
        assert await p.panel("chatops", "img").count() == 0 and await p.page.evaluate("window.__pwned === undefined")

        live = await log.add("did", "ran restart_target web", alert_id=7)  # published on /chatops as it is stored
        await p.panel("chatops", f"li[data-chatops-entry='{live['id']}'][data-kind='did']").wait_for()
        assert await items.count() == 3 and "ran restart_target web" in await items.last.text_content()

        await p.panel("chatops", "[data-chatops-query]").fill("restart")
        await p.panel("chatops", "[data-chatops-query]").press("Enter")
        await until(lambda: _count_is(items, 2))
        texts = [await items.nth(i).text_content() for i in range(2)]
        assert all("restart" in (t or "") for t in texts), texts
        assert p.errors == []


async def _count_is(locator: Any, n: int) -> bool:
    return await locator.count() == n


async def test_node_switcher_shows_the_other_nodes_services(tmp_path: Path, browser: Any, broker: Any) -> None:
    """Two federated nodes on a real mosquitto: choosing node-b makes the panels show node-b."""
    prefix = f"t{uuid.uuid4().hex[:8]}/cs"
    a = await start_server(federated(tmp_path, "node-a", broker, prefix, "web"))
    b = await start_server(federated(tmp_path, "node-b", broker, prefix, "worker"))
    try:
        await until(lambda: a.node.module("federation").bridge.knows("node-b"), timeout=15)
        p = await open_panels(browser, a, "oper")
        switcher = p.panel("nodes", "[data-node-choice]")
        await switcher.wait_for()
        assert await p.page.locator("#panel-nodes").is_visible()
        assert await p.panel("services", "tr[data-target]").count() == 1  # node-a: web
        await switcher.select_option("node-b")
        await p.panel("services", "tr[data-target='worker'][data-state='running']").wait_for()
        assert await p.panel("services", "tr[data-target='web']").count() == 0
        # node-b's /stats arrive here as /node-b/stats: the charts fill in again.
        await until(lambda: _points_at_least(p, 2), timeout=20)
        await p.shot("node-b")
        await switcher.select_option("")
        await p.panel("services", "tr[data-target='web']").wait_for()
        assert p.errors == []
    finally:
        await b.server.stop()
        await a.server.stop()


def federated(tmp_path: Path, identity: str, broker: Any, prefix: str, target: str) -> Any:
    """A federated test node with one sleeper target."""
    fed = {"enabled": True, "broker_port": broker.port, "topic_prefix": prefix, "request_timeout": 5.0}
    sleeper = ["{python}", "-c", "import time\nwhile True: time.sleep(1)"]
    return make_settings(tmp_path / identity, identity=identity, federation=fed,
                         modules=["pubsub", "system", "audit", "targets", "federation"],
                         targets={target: {"command": sleeper, "autostart": True, "stop_timeout": 1}})
