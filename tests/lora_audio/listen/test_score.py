"""Tests for lora_audio.listen.score against hand-computed values."""

from __future__ import annotations

import csv
import json
import math

import pytest

from lora_audio.listen import RATINGS_FORMAT, ListenError
from lora_audio.listen.build import build_test
from lora_audio.listen.score import (
    Answer,
    dedupe,
    krippendorff_alpha_interval,
    markdown_table,
    mos_interval,
    report_summary,
    score_files,
    wilson_interval,
)


def test_mos_interval_hand_computed():
    # [3, 4, 5, 4]: mean 4, s = sqrt(2/3) = 0.81650, se = s/2 = 0.40825,
    # t(0.975, 3) = 3.18245 -> half width 1.29923
    m = mos_interval([3, 4, 5, 4])
    assert m.n == 4 and m.mean == 4.0
    assert m.sd == pytest.approx(math.sqrt(2 / 3))
    assert m.ci_low == pytest.approx(4 - 1.29923, abs=1e-5)
    assert m.ci_high == pytest.approx(4 + 1.29923, abs=1e-5)
    one = mos_interval([5])
    assert one.mean == 5 and one.ci_low is None and one.sd is None


def test_wilson_interval_hand_computed():
    # 7 of 10, z = 1.95996: centre (0.7 + 0.19207)/1.38415 = 0.64449,
    # half 1.95996·sqrt(0.021 + 0.0096036)/1.38415 = 0.24772
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.39678, abs=1e-5) and hi == pytest.approx(0.89221, abs=1e-5)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and 0 < hi < 0.5


def test_krippendorff_alpha_interval_hand_computed():
    # units (1,2), (3,3), (5,4); n = 6.
    # D_o = (2 + 0 + 2)/6 = 2/3.  All values 1,2,3,3,5,4: Σ_{i<j}(vi-vj)² = 6·64 - 18² = 60,
    # ordered pairs -> 120, D_e = 120/(6·5) = 4.  alpha = 1 - (2/3)/4 = 5/6.
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [5, 4]]) == pytest.approx(5 / 6)
    # single-rated units are not pairable and do not change alpha
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [5, 4], [2]]) == pytest.approx(5 / 6)
    assert krippendorff_alpha_interval([[4, 4], [2, 2]]) == pytest.approx(1.0)
    assert krippendorff_alpha_interval([[3, 3], [3, 3]]) is None  # no variation at all
    assert krippendorff_alpha_interval([[1], [2]]) is None  # nothing pairable


def test_krippendorff_alpha_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units,
    # missing values; interval alpha = 0.849.
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[c[u] for c in coders if c[u] is not None] for u in range(12)]
    assert krippendorff_alpha_interval(units) == pytest.approx(0.849, abs=5e-4)


def test_dedupe_keeps_latest_answer_per_rater_and_trial():
    old = Answer("ann", "r001", "rate", time="2025-01-01T10:00:00.000Z", scores={"musicality": 1})
    new = Answer("ann", "r001", "rate", time="2025-01-01T10:05:00.000Z", scores={"musicality": 4})
    other = Answer("bob", "r001", "rate", time="2025-01-01T10:00:00.000Z")
    kept, dropped = dedupe([new, old, other])
    assert dropped == 1 and {a.scores.get("musicality") for a in kept if a.rater == "ann"} == {4}


# ----------------------------------------------------------------- scoring a built test


@pytest.fixture
def built(compare_dir, ref_file, tmp_path):
    out = tmp_path / "test"
    build_test([str(compare_dir)], out, ref=ref_file, ab=True, seed=1)
    return out, json.loads((out / "key.json").read_text())


def ratings_doc(key: dict, rater: str, rule) -> dict:
    """A ratings file as the page writes it; ``rule(system) -> (musicality, style)``."""
    answers = []
    for tid, trial in key["trials"].items():
        if trial["kind"] == "rate":
            clip = trial["clips"][0]
            mu, st = rule(key["clips"][clip]["system"])
            answers.append(
                {"trial": tid, "kind": "rate", "clip": clip, "musicality": mu, "style": st}
                | {"played": True, "time": "2025-01-01T10:00:00.000Z"}
            )
        else:
            a, b = trial["clips"]
            pick = a if key["clips"][a]["system"] == "jazzlora_v2" else b
            answers.append(
                {"trial": tid, "kind": "ab", "a": a, "b": b, "choice": pick, "played": False}
            )
    return {"format": RATINGS_FORMAT, "version": 1, "test_id": key["test_id"], "rater": rater} | {
        "answers": answers
    }


def write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def test_score_files_hand_computed(built, tmp_path):
    out, key = built
    # ann: base (2, 1), lora (4, 5); bob: base (3, 1), lora (4, 4)  -- 3 stimuli each
    f1 = write(
        tmp_path / "ann.json", ratings_doc(key, "ann", lambda s: (2, 1) if s == "base" else (4, 5))
    )
    f2 = write(
        tmp_path / "bob.json", ratings_doc(key, "bob", lambda s: (3, 1) if s == "base" else (4, 4))
    )
    scores = score_files([f1, f2], out / "key.json")
    mu = scores["mos"]["musicality"]
    # base musicality: [2,2,2,3,3,3] mean 2.5, s = sqrt(6·0.25/5) = 0.547723,
    # t(0.975,5) = 2.570582 -> half 2.570582·0.547723/sqrt(6) = 0.574799
    assert mu["base"]["mean"] == 2.5 and mu["base"]["n"] == 6
    assert mu["base"]["ci_low"] == pytest.approx(2.5 - 0.574799, abs=1e-4)
    assert mu["jazzlora_v2"]["mean"] == 4.0 and mu["jazzlora_v2"]["ci_low"] == 4.0
    assert mu["jazzlora_v2"]["change_vs_base_pct"] == 60.0  # (4 - 2.5)/2.5
    assert mu["base"]["change_vs_base_pct"] is None
    assert scores["mos"]["style"]["jazzlora_v2"]["mean"] == 4.5
    assert scores["mos"]["style"]["jazzlora_v2"]["change_vs_base_pct"] == 350.0
    pref = scores["preference"]
    assert len(pref) == 1 and pref[0]["system"] == "jazzlora_v2" and pref[0]["versus"] == "base"
    assert (pref[0]["wins"], pref[0]["n"], pref[0]["rate"]) == (6, 6, 1.0)
    assert pref[0]["p_value"] == pytest.approx(2 / 64, abs=1e-4)  # two-sided binomial 6/6
    assert scores["raters"] == ["ann", "bob"] and scores["n_unplayed"] == 6
    # musicality units: base clips (2,3) x3, lora clips (4,4) x3; n = 12.
    # D_o = 3·2/12 = 0.5.  Values 2,2,2,3,3,3,4x6: Σv = 39, Σv² = 135,
    # Σ_{i≠j}(vi-vj)² = 2·(12·135 - 39²) = 198, D_e = 198/(12·11) = 1.5 -> alpha = 2/3.
    assert scores["agreement"]["musicality"]["alpha"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["agreement"]["musicality"]["units"] == 6

    md = markdown_table(scores)
    assert "| jazzlora_v2 | 4.00 [4.00, 4.00] | 6 | +60.0 % |" in md
    assert "Krippendorff" in md and "t(0.975" in md
    summary = report_summary(scores)
    row = {r["system"]: r for r in summary["rows"]}["jazzlora_v2"]
    assert row["musicality_mos"] == 4.0 and row["preferred_over_base"] == 1.0
    assert row["musicality_vs_base_pct"] == 60.0 and summary["raters"] == 2


def test_csv_export_scores_like_json(built, tmp_path):
    out, key = built
    doc = ratings_doc(key, "ann", lambda s: (2, 1) if s == "base" else (5, 4))
    path = tmp_path / "ann.csv"
    cols = ["test_id", "rater", "trial", "kind", "clip", "musicality", "style", "a", "b"]
    cols += ["choice", "played", "time"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for a in doc["answers"]:
            w.writerow({"test_id": key["test_id"], "rater": "ann"} | a)
    from_csv = score_files([path], out / "key.json")
    from_json = score_files([write(tmp_path / "ann.json", doc)], out / "key.json")
    assert from_csv["mos"] == from_json["mos"] and from_csv["preference"] == from_json["preference"]


def test_ratings_for_another_test_are_reported_and_skipped(built, tmp_path):
    out, key = built
    good = write(tmp_path / "ann.json", ratings_doc(key, "ann", lambda s: (3, 3)))
    alien = ratings_doc(key, "eve", lambda s: (1, 1)) | {"test_id": "0123456789abcdef"}
    bad = write(tmp_path / "eve.json", alien)
    scores = score_files([good, bad], out / "key.json")
    assert scores["raters"] == ["ann"]
    assert len(scores["problems"]) == 1
    msg = scores["problems"][0]
    assert "eve.json" in msg and "0123456789abcdef" in msg and "\n" not in msg
    with pytest.raises(ListenError, match="no usable ratings"):
        score_files([bad], out / "key.json")


def test_bad_answers_are_skipped_with_a_line_each(built, tmp_path):
    out, key = built
    doc = ratings_doc(key, "ann", lambda s: (3, 3))
    doc["answers"][0]["musicality"] = 7
    doc["answers"][1]["trial"] = "r999"
    scores = score_files([write(tmp_path / "ann.json", doc)], out / "key.json")
    assert len(scores["problems"]) == 2
    assert "not 1..5" in scores["problems"][0] and "not in the key" in scores["problems"][1]
    assert scores["n_answers"] == len(key["trials"]) - 2


def test_bad_key_and_bad_files_are_one_line_errors(built, tmp_path):
    out, _ = built
    with pytest.raises(ListenError, match="key not found"):
        score_files([out / "key.json"], tmp_path / "nope.json")
    with pytest.raises(ListenError, match="not a readable JSON key"):
        score_files([out / "key.json"], out / "trials.js")
    with pytest.raises(ListenError, match="not a listening-test key"):
        score_files([out / "key.json"], write(tmp_path / "other.json", {"format": "x"}))
    scores_path = write(tmp_path / "junk.json", {"hello": 1})
    with pytest.raises(ListenError, match="no usable ratings"):
        score_files([scores_path], out / "key.json")


def test_eval_report_shows_the_listening_scores(built, compare_dir, ref_file, tmp_path):
    from lora_audio.cli import main

    out, key = built
    f1 = write(
        tmp_path / "ann.json", ratings_doc(key, "ann", lambda s: (2, 1) if s == "base" else (4, 5))
    )
    f2 = write(
        tmp_path / "bob.json", ratings_doc(key, "bob", lambda s: (3, 1) if s == "base" else (4, 4))
    )
    scores = tmp_path / "scores.json"
    assert main(["listen", "score", str(f1), str(f2), "--key", str(out / "key.json"),
                 "-o", str(scores)]) == 0  # fmt: skip
    report = tmp_path / "report"
    runs = [f"{d.name}={d}" for d in sorted(compare_dir.iterdir()) if d.is_dir()]
    argv = ["eval", "--runs", *runs, "--ref", str(ref_file.parent), "-o", str(report),
            "--no-cache", "--bootstrap", "20", "--listening", str(scores)]  # fmt: skip
    assert main(argv) == 0
    md = (report / "report.md").read_text()
    assert "## Blind listening test (MOS, 1–5)" in md
    # base musicality 2.5 ± 0.5748 (hand-computed above); the adapter +60 %, preferred 6/6
    assert "| base | 2.50 [1.93, 3.07] | – | 1.00 [1.00, 1.00] | – | – |" in md
    assert (
        "| jazzlora_v2 | 4.00 [4.00, 4.00] | +60.0 % | 4.50 [3.93, 5.07] | +350.0 % | 100 % |" in md
    )
    assert "Krippendorff" in md and "Blind listening test" in (report / "report.html").read_text()
    listening = json.loads((report / "metrics.json").read_text())["listening"]
    assert listening["rows"][1]["musicality_mos"] == 4.0

    # a file that is not a scores.json: one line naming it, no report written
    bad = tmp_path / "ratings-not-scores.json"
    bad.write_text("{}")
    argv[-1] = str(bad)
    argv[argv.index("-o") + 1] = str(tmp_path / "report2")
    assert main(argv) == 2
    assert not (tmp_path / "report2").exists()
