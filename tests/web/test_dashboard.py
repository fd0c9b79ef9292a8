"""The dashboard in a real headless Chromium (Debian's), against the real server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.assistant.conftest import agent_settings, serving
from tests.conftest import PASSWORDS, Running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MODULES = ["pubsub", "audit", "system", "targets", "logs", "assistant"]
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/test.sh installs it)")


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        await b.close()


async def login(page: object, running: Running, user: str = "oper") -> None:
    await page.goto(running.url + "/ui/")
    await page.fill("#login-user", user)
    await page.fill("#login-password", PASSWORDS[user])
    await page.click("#login-submit")
    await page.wait_for_selector("#conn-state.on")


async def test_login_failure_is_shown(tmp_path: Path, browser: object) -> None:
    async with serving(agent_settings(tmp_path, modules=MODULES)) as running:
        page = await browser.new_page()
        await page.goto(running.url + "/")
        await page.fill("#login-user", "oper")
        await page.fill("#login-password", "wrong password")
        await page.click("#login-submit")
        await page.wait_for_selector("#login-error:has-text('invalid username or password')")
        assert await page.is_hidden("#app-view")


async def test_chat_answer_stats_and_approval_flow(tmp_path: Path, browser: object) -> None:
    async with serving(agent_settings(tmp_path, modules=MODULES)) as running:
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await login(page, running)
        # The introduction, live stats and the services panel fill in by themselves.
        await page.wait_for_selector(".msg.assistant:has-text('CloudiSENSE assistant')")
        await page.wait_for_selector("#targets li:has-text('web')")
        await page.wait_for_selector("#stat-cpu:has-text('%')")  # no string eval: the page's CSP forbids it
        # The /stats event is the existing client's shape: per-disk list and the os block's load.
        await page.wait_for_selector("#stat-disk:has-text('%')")
        await page.wait_for_selector("#stat-load:has-text('.')")

        await page.fill("#chat-input", "is the web service up?")
        await page.press("#chat-input", "Enter")
        await page.wait_for_selector(".msg.assistant:has-text('web is running')")

        await page.fill("#chat-input", "restart the web service")
        await page.press("#chat-input", "Enter")
        approve = page.locator("button[data-approve]").first
        await approve.wait_for()
        pid_before = (await running.node.module("targets").backends["web"].status())["pid"]
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "dashboard-approval.png"))
        await approve.click()
        await page.wait_for_selector(".msg.assistant:has-text('web is running')>> nth=1")
        pid_after = (await running.node.module("targets").backends["web"].status())["pid"]
        assert pid_after != pid_before  # the restart really ran, once approved
        await page.wait_for_selector("#audit li:has-text('restart_target')")
        await page.screenshot(path=str(SHOTS / "dashboard-after.png"))
