"""Browser fixtures: Debian's Chromium driven by Playwright (its own browser download never
used), with fake camera and a WAV as the microphone, against the session's real stack serving
the console built by ``make web``. Screenshots go to tests/output/browser/ (and, with
MEDIAI_UPDATE_SCREENSHOTS=1, to docs/console/ for the README)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
WEB_DIST = ROOT / "web" / "dist" / "index.html"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SPEECH = ROOT / "tests" / "data" / "patient-headache.pt-BR.wav"
OUTPUT = ROOT / "tests" / "output" / "browser"
DOCS = ROOT / "docs" / "console"
# What the machine notes say Chromium needs here (no sandbox as root, no network of its own),
# plus fake media: a test pattern as the camera, the WAV as the microphone: said once each time
# a page opens the microphone (%noloop), so a person speaks when the test turns it on.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    # Five frames a second: the camera's test pattern is encoded and decoded by every page, on
    # a small machine shared with other stacks.
    "--use-fake-device-for-media-stream=fps=5",
    f"--use-file-for-fake-audio-capture={SPEECH}%noloop",
    "--autoplay-policy=no-user-gesture-required",
]


# Waits for what a page shows, as long as the context's actions wait (Playwright's own default,
# 5 s, is short for a machine that runs several stacks at once).
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (make chromium)"
    if not WEB_DIST.exists() or not AXE.exists():
        return "the console is not built (make web)"
    return None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)  # make test builds both: in CI this is a broken build
        pytest.skip(missing)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        await launched.close()


async def new_page(browser: Browser, width: int = 1280) -> Page:
    """A page in a context of its own (its own storage: another person)."""
    context = await browser.new_context(viewport={"width": width, "height": 900}, locale="pt-BR")
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical accessibility violations of the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


async def screenshots(page: Page, name: str) -> None:
    """The page at 1280 and 375 px wide, with nothing wider than the screen, saved by the run
    (and into docs/ when asked)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": 1280, "height": 900}
    for width in (1280, 375):
        await page.set_viewport_size({"width": width, "height": 900})
        # Patients join from phones: nothing may be wider than the screen.
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"{name}: {wide} px wide on a {width} px screen"
        path = OUTPUT / f"{name}-{width}.png"
        await page.screenshot(path=str(path), full_page=True)
        if os.environ.get("MEDIAI_UPDATE_SCREENSHOTS"):
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS / path.name)
    await page.set_viewport_size(size)
