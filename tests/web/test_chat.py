"""The dashboard's shell and chat in Debian's headless Chromium, against the real server.

The main flow runs on a fresh copy of the demo node (its real services): log in, ask "is nginx
up?" and see the streamed answer, stop the web app, ask why the site returns 502, see the
evidence and the proposed fix in a card kept in view, approve it, see the steps complete and the
service run again. Every view is screenshotted (build/screenshots/), checked with axe-core and
for console errors, at 1280x800 and 390x844.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.scenarios import demo_node

from cloudisense.core.roles import Role
from cloudisense.llm.testing import ScriptedModel
from cloudisense.store.users import client_credential
from tests.assistant.conftest import agent_settings, serving
from tests.conftest import PASSWORDS
from tests.web.conftest import (
    DESKTOP,
    PHONE,
    ROOT,
    axe_violations,
    login,
    needs_chromium,
    no_horizontal_scroll,
    screenshot,
    watched_page,
)

pytestmark = needs_chromium

PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_vendored_files_match_their_recorded_hashes() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "vendor_web.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_login_failure_is_shown_and_nothing_else(tmp_path: Path, browser: Any) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        w = await watched_page(browser)
        await w.page.goto(running.url + "/")
        await w.page.fill("#login-user", "oper")
        await w.page.fill("#login-password", "wrong password")
        await w.page.click("#login-submit")
        await w.page.wait_for_selector("#login-error:has-text('invalid username or password')")
        assert await w.page.is_hidden("#app-view")
        assert await axe_violations(w.page) == []
        await screenshot(w.page, "login-failed")
        # The 401 of /authorize is the answer shown, not a fault of the page.
        assert all("401" in e for e in w.errors), w.errors
        # core.js's figures read as a person expects (en-US locale in this browser).
        shown = await w.page.evaluate("""async () => { const {fmt} = await import('/ui/js/core.js');
            return [fmt.pct(42.345), fmt.bytes(1.2e9), fmt.bytes(512), fmt.rate(2.5e6), fmt.duration(11100),
                    fmt.duration(42), fmt.duration(90061), fmt.pct(undefined)]; }""")
        assert shown == ["42.3 %", "1.2 GB", "512 B", "2.5 MB/s", "3 h 5 min", "42 s", "1 d 1 h", "–"]


def _frames(page: Any) -> list[dict[str, Any]]:
    """Every frame the page's WebSocket receives, decoded, in order (arrays of events flattened)."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: Any) -> None:
        def on_frame(payload: Any) -> None:
            data = json.loads(payload)
            frames.extend(data if isinstance(data, list) else [data])
        ws.on("framereceived", on_frame)
    page.on("websocket", on_socket)
    return frames


async def _target_state(demo: Any, name: str) -> str:
    conn = await demo.connect("admin")
    try:
        targets = (await conn.call("list_targets", {"details": True}))["targets"]
        return next(t["state"] for t in targets if t["name"] == name)
    finally:
        conn.close()


async def _in_view(page: Any, selector: str) -> bool:
    box = await page.locator(selector).first.bounding_box()
    viewport = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= viewport["height"]


async def test_demo_node_ask_diagnose_approve_and_resume(tmp_path: Path, browser: Any) -> None:
    async with demo_node(tmp_path) as demo:
        w = await watched_page(browser, DESKTOP)
        page = w.page
        frames = _frames(page)
        await login(page, demo.url, "oper", demo.passwords["oper"])
        await page.wait_for_selector(".msg.assistant:has-text('CloudiSENSE assistant')")
        assert await axe_violations(page) == []
        await screenshot(page, "chat-desktop-intro")

        # "is nginx up?": the answer's text arrives as an event before the response, then the whole turn.
        await page.fill("#chat-input", "is nginx up?")
        await page.press("#chat-input", "Enter")
        await page.wait_for_selector(".msg.user:has-text('is nginx up?')")
        answer = page.locator(".msg.user:has-text('is nginx up?') ~ .msg.assistant:not(.pending)").first
        await answer.locator(".text:has-text('nginx')").wait_for()
        delta = next(i for i, f in enumerate(frames) if f.get("name") == "assist_delta")
        response = next(i for i, f in enumerate(frames)
                        if f.get("type") == "rpc_response" and "outcome" in f.get("data", {}))
        assert delta < response
        assert "nginx" in frames[delta]["data"]["text"]
        assert "running" in (await answer.inner_text()).lower()
        assert await answer.locator("time").count() == 1  # every message carries its time

        # Stop the web app; the question about the 502 gets evidence, a confidence and a fix to approve.
        admin = await demo.connect("admin")
        await admin.call("stop_target", {"name": "web"})
        admin.close()
        await page.fill("#chat-input", "why is the site returning 502?")
        await page.press("#chat-input", "Enter")
        diagnosis = page.locator(".diagnosis").last
        await diagnosis.wait_for(timeout=120_000)
        assert "web" in (await diagnosis.locator(".cause").inner_text())
        assert await diagnosis.locator(".evidence li").count() >= 1
        assert await diagnosis.locator(".confidence").inner_text() in ("high", "medium", "low")
        assert "restart_target" in await diagnosis.locator(".fix").inner_text()
        card = page.locator("#approval-dock .approval-card")
        await card.wait_for()
        card_text = await card.inner_text()
        assert "restart_target" in card_text and "node demo" in card_text and "write" in card_text.lower()
        assert await _in_view(page, "#approval-dock .approval-card")  # kept in view, not below the fold
        assert await axe_violations(page) == []
        await screenshot(page, "chat-desktop-diagnosis-approval")

        # Approve: the restart runs, its step shows done, the card goes, the service runs again.
        await page.fill("#approval-dock .reason", "the web app is down")
        await page.click("#approval-dock button[data-approve]")
        await page.wait_for_selector(".msg.assistant .step[data-intent='restart_target'][data-status='ok']",
                                     timeout=60_000)
        await page.wait_for_selector("#approval-dock", state="hidden")
        assert await _target_state(demo, "web") == "running"
        await page.wait_for_selector(".msg.assistant .badge:has-text('Approved by oper')")
        await screenshot(page, "chat-desktop-approved")

        # Reload: the conversation comes back from the server.
        await page.reload()
        await page.wait_for_selector("#conn-state.on")
        await page.wait_for_selector(".msg.note:has-text('Earlier conversation restored')")
        assert await page.locator(".msg.user").count() == 2
        assert await page.locator(".diagnosis").count() == 1
        await page.wait_for_selector(".step[data-intent='restart_target'][data-status='ok']")
        # Clear: the conversation is gone, on the server too.
        await page.click("#chat-clear")
        await page.wait_for_selector(".msg.note:has-text('Conversation cleared')")
        assert await page.locator(".msg.user").count() == 0
        await page.reload()
        await page.wait_for_selector(".msg.assistant:has-text('CloudiSENSE assistant')")
        assert await page.locator(".msg.user").count() == 0
        w.assert_clean()

        # A viewer sees no action buttons in the chat, and their restart request is refused in words.
        password = secrets.token_urlsafe(12)
        await demo.node.users.add("viewer", client_credential(password), Role.VIEWER)
        v = await watched_page(browser, PHONE, color_scheme="light")
        await login(v.page, demo.url, "viewer", password)
        await v.page.fill("#chat-input", "restart the web service")
        await v.page.press("#chat-input", "Enter")
        await v.page.wait_for_selector(".msg.assistant:not(.pending) >> nth=1")
        await v.page.wait_for_selector(".msg.assistant .badge:has-text('Not allowed')")
        assert await v.page.locator("#chat-view button[data-approve], #chat-view button[data-reject]").count() == 0
        assert await _target_state(demo, "web") == "running"
        assert await no_horizontal_scroll(v.page)
        assert await axe_violations(v.page) == []
        await screenshot(v.page, "chat-phone-viewer-light")
        v.assert_clean()


async def test_markup_from_a_model_or_a_log_line_never_runs(tmp_path: Path, browser: Any) -> None:
    settings = agent_settings(tmp_path)
    (tmp_path / "logs" / "app.log").write_text(f"2024-05-01 10:00:02 ERROR upstream said {PAYLOAD}\n")
    async with serving(settings) as running:
        agent = running.node.module("assistant")
        w = await watched_page(browser, DESKTOP)
        page = w.page
        frames = _frames(page)
        await login(page, running.url, "oper", PASSWORDS["oper"])

        # A log line with markup is shown as text in the step's result.
        await page.fill("#chat-input", "show errors in the app log")
        await page.press("#chat-input", "Enter")
        await page.wait_for_selector(".msg.assistant:not(.pending) :text('upstream said')")
        # The answer that shows the line, found by its text: the list may be re-rendered between two reads (a
        # fresh-clone CI run once read the introduction here as the last message).
        shown = await page.locator(".msg.assistant:not(.pending)", has_text="upstream said").last.inner_text()
        assert "<script>" in shown or "onerror" in shown  # the markup is visible as characters
        # The introduction keeps its place above a request typed before it arrived.
        assert "CloudiSENSE assistant" in await page.locator(".msg.assistant").first.inner_text()

        # A model's reply with markup is rendered as sanitized markdown.
        agent.assistant.provider = ScriptedModel([f"**Checked.** {PAYLOAD} [docs](javascript:alert(1))"] * 4)
        agent.assistant.planner = None
        await page.fill("#chat-input", "tell me about the web service")
        await page.press("#chat-input", "Enter")
        reply = page.locator(".msg.assistant:not(.pending) .text.md").last
        await reply.locator("strong:has-text('Checked.')").wait_for(timeout=60_000)
        assert "<script>" in await reply.inner_text()  # shown as characters, never parsed as markup
        # The model's text streamed in pieces before the response, then came whole.
        # (The panels' own answers share the socket: some carry a list.)
        data = [f.get("data") if isinstance(f.get("data"), dict) else {} for f in frames]
        pieces = [i for i, f in enumerate(frames) if f.get("name") == "assist_delta" and data[i].get("partial")]
        response = next(i for i, f in enumerate(frames)
                        if f.get("type") == "rpc_response" and data[i].get("strategy") == "react")
        assert len(pieces) > 1 and pieces[-1] < response

        assert await page.evaluate("() => window.__pwned") is None
        assert await page.locator("#messages img, #messages script, #messages [onerror]").count() == 0
        assert await page.locator("#messages a[href^='javascript']").count() == 0
        await screenshot(page, "chat-markup-is-data")
        w.assert_clean()


async def test_phone_layout_tabs_fit_and_keyboard(tmp_path: Path, browser: Any) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        w = await watched_page(browser, PHONE)
        page = w.page
        await login(page, running.url, "oper", PASSWORDS["oper"])
        await page.wait_for_selector(".msg.assistant:has-text('CloudiSENSE assistant')")
        tabs = page.locator("#tabs button")
        assert await tabs.count() >= 1 and await page.is_visible("#tabs")
        assert await no_horizontal_scroll(page)
        header = await page.locator(".topbar").bounding_box()
        assert header is not None and header["width"] <= PHONE["width"]
        # Every view is reachable from the tab bar and fits the phone's width.
        for i in range(await tabs.count()):
            tab = tabs.nth(i)
            if not await tab.is_visible():
                continue  # a panel with nothing to show on this node (the node switcher without federation)
            await tab.click()
            view = await tab.get_attribute("aria-controls")
            assert await page.is_visible(f"#{view}")
            assert await no_horizontal_scroll(page), view
            assert await axe_violations(page) == [], view
            await screenshot(page, f"phone-{view}")
        await tabs.first.click()
        # Keyboard: Enter sends; Shift+Enter does not.
        await page.focus("#chat-input")
        await page.keyboard.type("is the web service up?")
        await page.keyboard.press("Shift+Enter")
        assert await page.locator(".msg.user").count() == 0
        await page.keyboard.press("Enter")
        await page.wait_for_selector(".msg.assistant:not(.pending) :text('web is running')")
        # Light theme through the toggle, still readable by axe's contrast rules.
        await page.click("#theme-toggle")
        assert await page.evaluate("() => document.documentElement.dataset.theme") == "light"
        assert await axe_violations(page) == []
        await screenshot(page, "phone-chat-light")
        w.assert_clean()


async def test_results_as_tables_log_lines_and_questions(tmp_path: Path, browser: Any) -> None:
    async with serving(agent_settings(tmp_path)) as running:
        w = await watched_page(browser, DESKTOP, color_scheme="light")
        page = w.page
        await login(page, running.url, "oper", PASSWORDS["oper"])

        async def ask(text: str) -> Any:
            await page.fill("#chat-input", text)
            await page.press("#chat-input", "Enter")
            answer = page.locator(f".msg.user:has-text({json.dumps(text)}) ~ .msg.assistant:not(.pending)").first
            await answer.wait_for()
            return answer

        processes = await ask("show the top processes by memory")
        table = processes.locator("table.result")
        await table.wait_for()
        assert {"pid", "name"} <= set(await table.locator("th").all_inner_texts())
        assert await table.locator("tbody tr").count() >= 1

        errors = await ask("show errors in the app log")
        assert "upstream timeout" in await errors.locator("pre.log").first.inner_text()

        stats = await ask("how is the system doing?")
        terms = await stats.locator("dl.kv dt").all_inner_texts()
        assert "cpu percent" in terms and "memory percent" in terms
        assert "%" in await stats.locator("dl.kv dd").first.inner_text()

        question = await ask("restart it")
        await question.locator(".badge:has-text('Question for you')").wait_for()
        assert "Which target" in await question.inner_text()
        assert await page.locator("#approval-dock").is_hidden()  # nothing waits: nothing was asked to run

        # Nothing on this node can do it: shown as an escalation, with the reason a person was asked.
        escalated = await ask("create a new aws account")
        await escalated.locator(".badge:has-text('Escalated to a person')").wait_for()
        assert "A person was asked to look" in await escalated.locator("p.escalation").inner_text()
        assert await axe_violations(page) == []
        await screenshot(page, "chat-desktop-results-light")
        w.assert_clean()


async def test_token_refresh_and_reconnect_keep_the_page_working(tmp_path: Path, browser: Any,
                                                                 monkeypatch: Any) -> None:
    from cloudisense.server.ws import RpcSocket

    sockets: list[Any] = []
    original_open = RpcSocket.open

    def recording_open(self: Any, *args: Any, **kwargs: Any) -> None:
        sockets.append(self)
        original_open(self, *args, **kwargs)

    monkeypatch.setattr(RpcSocket, "open", recording_open)
    async with serving(agent_settings(tmp_path, auth={"access_ttl": 10})) as running:
        w = await watched_page(browser, DESKTOP)
        page = w.page
        refreshes: list[str] = []
        page.on("request", lambda req: refreshes.append(req.url) if req.url.endswith("/refresh") else None)
        await login(page, running.url, "oper", PASSWORDS["oper"])
        await page.wait_for_selector(".msg.assistant:has-text('CloudiSENSE assistant')")
        # Past the first access token's life: the page traded its refresh token for new ones.
        await page.wait_for_timeout(11_000)
        assert refreshes
        # The node drops the connection: the page says so, reconnects with its current token.
        sockets[-1].close()
        await page.wait_for_selector("#conn-state.on", state="detached", timeout=5_000)
        await page.wait_for_selector("#conn-state.on", timeout=30_000)
        assert len(sockets) >= 2
        await page.fill("#chat-input", "is the web service up?")
        await page.press("#chat-input", "Enter")
        await page.wait_for_selector(".msg.assistant:not(.pending) :text('web is running')")
        w.assert_clean()
