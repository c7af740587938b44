"""`lora-audio listen build|score` through the real command-line entry point."""

from __future__ import annotations

import json

import pytest

from lora_audio.cli import main
from lora_audio.listen import RATINGS_FORMAT

pytestmark = pytest.mark.integration


def test_build_then_score(compare_dir, ref_file, tmp_path, capsys):
    (compare_dir / "base" / "p002_s0.wav").unlink()  # one stimulus missing in one system
    out = tmp_path / "test"
    rc = main(["listen", "build", str(compare_dir), "-o", str(out), "--ref", str(ref_file), "--ab"])
    printed, errors = capsys.readouterr()
    assert rc == 0
    assert "2 systems (base, jazzlora_v2), 2 stimuli, 4 rating + 2 A/B trials" in printed
    assert "p002_s0.wav: missing in system(s) base; stimulus dropped" in errors

    key = json.loads((out / "key.json").read_text())
    answers = []
    for tid, t in key["trials"].items():
        if t["kind"] == "rate":
            good = key["clips"][t["clips"][0]]["system"] != "base"
            answers.append(
                {"trial": tid, "clip": t["clips"][0], "musicality": 4 if good else 2, "style": 3}
            )
        else:
            answers.append({"trial": tid, "kind": "ab", "choice": t["clips"][0]})
    doc = {"format": RATINGS_FORMAT, "test_id": key["test_id"], "rater": "ann", "answers": answers}
    (tmp_path / "ratings").mkdir()
    (tmp_path / "ratings" / "ann.json").write_text(json.dumps(doc))

    scores_path = tmp_path / "scores.json"
    rc = main(
        [
            "listen",
            "score",
            str(tmp_path / "ratings"),
            "--key",
            str(out / "key.json"),
            "-o",
            str(scores_path),
        ]
    )
    printed, _ = capsys.readouterr()
    assert rc == 0
    scores = json.loads(scores_path.read_text())
    assert scores["mos"]["musicality"]["jazzlora_v2"]["change_vs_base_pct"] == 100.0
    assert "| jazzlora_v2 | 4.00 [4.00, 4.00] | 2 | +100.0 % |" in printed
    assert scores_path.with_suffix(".md").read_text() in printed


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["listen", "build", str(empty), "-o", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(empty) in err and "\n" not in err
    assert main(["listen", "score", "x.json", "--key", str(tmp_path / "key.json")]) == 1
    assert "key not found" in capsys.readouterr().err


def test_listen_without_subcommand_is_usage_error(capsys):
    assert main(["listen"]) == 2
    assert "usage" in capsys.readouterr().err
