"""Browser test harness: Debian's headless Chromium driven by Playwright against the real server.

Fixtures and helpers shared by the dashboard tests: a browser, pages that record console errors
and failed requests, logging in, screenshots under build/screenshots/, and an axe-core check
(vendored under tests/web/vendor/, injected into the page) at each view.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "build" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
AXE_ROUTE = "/__tests__/axe.min.js"

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason="Debian chromium is not installed (scripts/test.sh installs it)")


@dataclass
class Watched:
    """A page and what went wrong in it: console errors, uncaught exceptions, failed requests."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """No console error, page error or failed request happened so far."""
        assert self.errors == [], "\n".join(self.errors)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Debian's, never a downloaded build)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        await b.close()


async def watched_page(browser: Any, viewport: dict[str, int] = DESKTOP, color_scheme: str = "dark") -> Watched:
    """A new page in its own context, recording every console error, page error and failed request."""
    context = await browser.new_context(viewport=viewport, color_scheme=color_scheme)
    # axe-core is served to the page from the tests' vendor folder at a same-origin URL only the
    # browser sees (the page's CSP refuses inline scripts, and the server never ships axe).
    await context.route(f"**{AXE_ROUTE}", lambda route: route.fulfill(
        body=AXE.read_bytes(), content_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"}))
    page = await context.new_page()
    watched = Watched(page)
    page.on("console", lambda msg: watched.errors.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watched.errors.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: watched.errors.append(f"request failed: {req.url} {req.failure}")
            if not req.url.startswith(("ws:", "wss:")) else None)
    return watched


async def login(page: Any, url: str, user: str, password: str) -> None:
    """Log in through the form and wait for the live connection."""
    await page.goto(url + "/ui/")
    await page.fill("#login-user", user)
    await page.fill("#login-password", password)
    await page.press("#login-password", "Enter")
    await page.wait_for_selector("#conn-state.on")


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (build/screenshots/<name>.png)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """The axe-core violations of at least ``impacts`` on the page as it is now, one line each."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        origin = await page.evaluate("() => location.origin")
        await page.add_script_tag(url=origin + AXE_ROUTE)
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    return [f"{v['impact']} {v['id']}: {v['help']} at {v['nodes']}" for v in result if v["impact"] in impacts]


async def no_horizontal_scroll(page: Any) -> bool:
    """Whether the page fits its viewport's width (nothing to scroll sideways)."""
    return await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
