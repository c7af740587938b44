"""Fixtures shared by several test packages: the headless browser for the page tests.

Browser tests need Debian's ``chromium`` (``apt-get install -y chromium``, or
``scripts/setup-browser.sh``) and Playwright for Python (``pip install playwright``; never
``playwright install``: the system browser is used). They skip with the reason when either is
missing. ``LORA_AUDIO_CHROMIUM`` overrides the browser's path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LORA_AUDIO_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) for one test module's page tests."""
    if CHROMIUM is None or not Path(CHROMIUM).is_file():
        pytest.skip(
            f"chromium not installed ({CHROMIUM or 'not on PATH'}): apt-get install -y chromium"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (.venv/bin/pip install playwright)"
    )
    with sync_api.sync_playwright() as pw:
        # launch() gives every run a fresh temporary --user-data-dir.
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()
