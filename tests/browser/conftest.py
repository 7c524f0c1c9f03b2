"""The headless Chromium every browser test drives (Debian's, never a downloaded one)."""

from __future__ import annotations

import pytest

from tests.browser.serving import CHROMIUM


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()
