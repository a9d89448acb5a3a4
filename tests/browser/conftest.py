"""Fixtures for end-to-end tests in real headless Chromium (Debian's package) via Playwright.

Browser tests skip when Chromium is absent, unless STEDLOOP_REQUIRE_BROWSER=1 (CI), where a
missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared study builders live one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Read at import: the autouse fixture in tests/conftest.py clears STEDLOOP_* during tests.
CHROMIUM = os.environ.get("STEDLOOP_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("STEDLOOP_SCREENSHOTS")
REQUIRE_BROWSER = os.environ.get("STEDLOOP_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium_path() -> str | None:
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[object]:
    path = _chromium_path()
    if path is None:
        if REQUIRE_BROWSER:
            pytest.fail("Chromium is required (STEDLOOP_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(chromium_browser):  # type: ignore[no-untyped-def]
    """Factory of pages, each in a fresh context (own cookies), closed after the test."""
    contexts = []

    def make():  # type: ignore[no-untyped-def]
        context = chromium_browser.new_context(viewport={"width": 1100, "height": 760})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $STEDLOOP_SCREENSHOTS if set (to look at them), else tmp."""
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
