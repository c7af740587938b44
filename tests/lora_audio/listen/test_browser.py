"""Drive the built listening page in a real headless Chromium (Playwright), then score it.

The ``browser`` fixture (tests/conftest.py) skips with the reason when Chromium or Playwright
is missing.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lora_audio.listen.build import build_test
from lora_audio.listen.score import score_files

pytestmark = pytest.mark.integration


@pytest.fixture
def served(compare_dir, ref_file, tmp_path) -> Iterator[tuple[Path, str]]:
    """Build a test (2 systems x 3 stimuli, reference, A/B) and serve it on 127.0.0.1."""
    out = tmp_path / "test"
    build_test([str(compare_dir)], out, ref=ref_file, ab=True, seed=2)
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def answer_current_trial(page, key: dict, rule) -> str:
    """Answer the trial on screen as ``rule(system)`` says; return its id."""
    stage = page.locator("#stage")
    tid = stage.get_attribute("data-trial")
    trial = key["trials"][tid]
    if trial["kind"] == "rate":
        mu, st = rule(key["clips"][trial["clips"][0]]["system"])
        page.click(f'label[data-q="musicality"][data-v="{mu}"]')
        page.click(f'label[data-q="style"][data-v="{st}"]')
    else:
        a, _ = trial["clips"]
        side = "a" if key["clips"][a]["system"] == "jazzlora_v2" else "b"
        page.click(f'label[data-q="ab"][data-v="{side}"]')
    return tid


def run_session(page, url: str, key: dict, rater: str, rule, reload_after: int | None = None):
    """Complete the whole test as ``rater``; returns the trial ids in the order seen."""
    page.goto(url + "index.html")
    page.fill("#rater", rater)
    page.click("#begin")
    seen: list[str] = []
    total = len(key["trials"])
    while len(seen) < total:
        assert page.is_disabled("#next"), "Next must wait for the answers"
        seen.append(answer_current_trial(page, key, rule))
        page.click("#next")
        if reload_after is not None and len(seen) == reload_after:
            page.reload()
            assert page.input_value("#rater") == rater, "last rater id not remembered"
            page.click("#begin")
            assert page.locator("#counter").inner_text() == f"Trial {reload_after + 1} of {total}"
    assert page.is_visible("#done")
    return seen


def download(page, button: str, dest: Path) -> Path:
    with page.expect_download() as info:
        page.click(button)
    info.value.save_as(dest)
    return dest


def test_complete_listening_test_in_browser_and_score(browser, served, tmp_path):
    out, url = served
    key = json.loads((out / "key.json").read_text())
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url[len(url) :]))

    # Rater ann: base clips (2, 1), adapter clips (4, 5); reloads half-way.
    ann_rule = lambda s: (2, 1) if s == "base" else (4, 5)  # noqa: E731
    order_ann = run_session(page, url, key, "ann", ann_rule, reload_after=4)
    # Play one clip through the page to check the "played" flag (muted, autoplay allowed).
    page.click("#review")
    page.evaluate("document.querySelector('#stage audio').play()")
    page.wait_for_function("document.querySelector('#stage audio').ended", timeout=5000)
    played_trial = page.locator("#stage").get_attribute("data-trial")
    ann_json = download(page, "#save-json", tmp_path / "ann.json")
    ann_csv = download(page, "#save-csv", tmp_path / "ann.csv")

    bob_rule = lambda s: (3, 1) if s == "base" else (4, 4)  # noqa: E731
    order_bob = run_session(page, url, key, "bob", bob_rule)
    bob_json = download(page, "#done-json", tmp_path / "bob.json")
    context.close()

    assert not errors, errors
    assert sorted(order_ann) == sorted(key["trials"]) == sorted(order_bob)
    assert order_ann != order_bob, "order should be shuffled per rater"
    n_rate = sum(t["kind"] == "rate" for t in key["trials"].values())
    assert all(key["trials"][t]["kind"] == "rate" for t in order_ann[:n_rate])

    # The page never asked for the key; it loaded only page files and opaque audio.
    assert "key.json" not in " ".join(requested)
    page_files = {"index.html", "listen.css", "trials.js", "listen.js"}
    assert page_files <= set(requested)
    assert all(r in page_files or r.startswith("audio/") for r in requested), requested

    doc = json.loads(ann_json.read_text())
    assert doc["rater"] == "ann" and doc["complete"] and doc["test_id"] == key["test_id"]
    played = {a["trial"]: a["played"] for a in doc["answers"]}
    assert played[played_trial] is True and sum(played.values()) == 1

    scores = score_files([ann_json, bob_json], out / "key.json", base=None)
    mu = scores["mos"]["musicality"]
    assert (mu["base"]["mean"], mu["jazzlora_v2"]["mean"]) == (2.5, 4.0)
    assert mu["jazzlora_v2"]["change_vs_base_pct"] == 60.0
    assert scores["mos"]["style"]["jazzlora_v2"]["mean"] == 4.5
    assert scores["preference"][0]["rate"] == 1.0 and scores["preference"][0]["n"] == 6
    assert scores["agreement"]["musicality"]["alpha"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["raters"] == ["ann", "bob"] and scores["problems"] == []

    from_csv = score_files([ann_csv], out / "key.json")
    from_json = score_files([ann_json], out / "key.json")
    assert from_csv["mos"] == from_json["mos"]
    assert from_csv["preference"] == from_json["preference"]


def test_page_works_from_file_url(browser, served):
    out, _ = served
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "index.html").as_uri())
    page.fill("#rater", "carol")
    page.click("#begin")
    assert page.locator("#counter").inner_text() == "Trial 1 of 9"
    assert page.is_visible("#reference") and page.locator("#stage audio").count() == 1
    page.close()
    assert not errors, errors
