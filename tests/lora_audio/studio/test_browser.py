"""Drive the studio page in a real headless Chromium (Playwright) against uvicorn.

The ``browser`` fixture (tests/conftest.py) skips with the reason when Chromium or Playwright
is missing. The page's screenshot after a generation is saved as ``studio.png`` in the test's
temporary folder (docs/images/studio.png comes from there).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from lora_audio.generation import TINY_NOTE

pytestmark = pytest.mark.integration

#: records every text the job cards' percentage shows, in order
WATCH_PERCENT = """
window.seenPercent = [];
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.classList && r.target.classList.contains('pct')) {
      for (const n of r.addedNodes) window.seenPercent.push(n.textContent);
    }
  }
}).observe(document.querySelector('#jobs'), {childList: true, subtree: true});
"""


def test_generate_watch_progress_play_and_download(browser, live: str, tmp_path: Path) -> None:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live)
    page.wait_for_selector("body[data-ready]")
    assert TINY_NOTE in page.inner_text("#note") and page.is_visible("#note")
    assert page.is_checked('[data-adapter="styleA"]') and page.is_checked("#compare")
    assert page.input_value('[data-scale="styleA"]') == "0.8"

    # A bad request shows the server's message on the page.
    page.fill("#seconds", "1")
    page.fill("#steps", "4")
    page.fill("#guidance", "3")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent !== ''")
    assert "the prompt is empty" in page.inner_text("#error")
    page.fill("#prompt", "calm piano, warm")
    page.fill("#seconds", "999")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent.includes('999')")
    assert "seconds must be above 0 and at most 300" in page.inner_text("#error")
    assert page.locator(".job").count() == 0

    page.fill("#seconds", "1")
    page.evaluate(WATCH_PERCENT)
    page.click("#generate")
    page.wait_for_selector('.job[data-state="done"]', timeout=60_000)
    assert page.inner_text("#error") == ""
    assert page.inner_text(".job .pct") == "100 %"
    assert page.eval_on_selector(".job progress", "p => p.value") == 100
    seen = page.evaluate("window.seenPercent")
    assert seen[-1] == "100 %" and len(set(seen)) >= 4, seen  # steps streamed, not just the end

    systems = page.eval_on_selector_all(".player", "cells => cells.map(c => c.dataset.system)")
    assert systems == ["base", "styleA"]  # side by side, same seed
    page.wait_for_function(
        "[...document.querySelectorAll('.player audio')]"
        ".every(a => a.readyState >= 1 && a.duration > 0)",
        timeout=30_000,
    )
    durations = page.eval_on_selector_all(".player audio", "as => as.map(a => a.duration)")
    assert all(d == pytest.approx(1.0, abs=0.05) for d in durations), durations
    page.evaluate("document.querySelector('.player[data-system=styleA] audio').play()")
    page.wait_for_function(
        "document.querySelector('.player[data-system=styleA] audio').ended", timeout=30_000
    )

    with page.expect_download() as info:
        page.click(".player[data-system=styleA] a[download]")
    saved = tmp_path / "download.wav"
    info.value.save_as(saved)
    assert info.value.suggested_filename.endswith("-styleA-p000_s7.wav")
    audio, sr = sf.read(saved, always_2d=True)
    assert sr == 16000 and audio.shape == (16000, 1)

    page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
    context.close()
    assert not errors, errors
