"""`lora-audio eval` end to end on tiny folders the test writes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lora_audio.audio import write_audio
from lora_audio.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def folders(tmp_path, synth):
    sr = 22050
    kinds = ["tone", "chirp", "clicks"]
    for i, k in enumerate(kinds):
        write_audio(tmp_path / "ref" / f"p{i}.wav", synth(k, seconds=1.0, seed=i)[None], sr)
        write_audio(
            tmp_path / "base" / f"p{i}.wav", synth("noise", seconds=1.0, seed=10 + i)[None], sr
        )
        write_audio(
            tmp_path / "lora" / f"p{i}.flac", (synth(k, seconds=1.0, seed=i) * 0.9)[None], sr
        )
        write_audio(tmp_path / "other" / f"x{i}.wav", synth(k, seconds=1.0, seed=20 + i)[None], sr)
    write_audio(tmp_path / "base" / "p3.wav", np.zeros((1, sr), np.float32), sr)  # silent
    (tmp_path / "lora" / "broken.wav").write_bytes(b"not audio at all")
    run = tmp_path / "train"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "loss": 1 / (s + 1), "val_loss": 1.2 / (s + 1)}) + "\n"
            for s in range(5)
        )
        + "garbage\n"
    )
    return tmp_path


def test_eval_runs_writes_all_report_files(folders, capsys):
    out = folders / "report"
    argv = ["eval", "--runs", f"base={folders / 'base'}", f"lora={folders / 'lora'}", "--ref", str(folders / "ref"),
            "-o", str(out), "--cache", str(folders / "cache"), "--bootstrap", "50", "--train-run", str(folders / "train")]  # fmt: skip
    assert main(argv) == 0
    for f in ("metrics.json", "per_file.csv", "report.md", "report.html"):
        assert (out / f).stat().st_size > 0
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["baseline"] == "base"
        and len(m["config_hash"]) == 16
        and m["embedding"]["id"].startswith("logmel")
    )
    assert m["systems"]["base"]["counts"] == {
        "ok": 3,
        "silent": 1,
        "bad": 0,
        "files": 4,
        "used": 4,
        "frames": m["systems"]["base"]["counts"]["frames"],
        "paired": 3,
    }
    assert (
        m["systems"]["lora"]["counts"]["bad"] == 1 and m["systems"]["lora"]["pairing"] == "paired"
    )
    lora, base = m["systems"]["lora"]["metrics"], m["systems"]["base"]["metrics"]
    assert lora["afd_paired"]["value"] < base["afd_paired"]["value"]
    assert (
        lora["fad"]["value"] < base["fad"]["value"] and lora["kad"]["value"] < base["kad"]["value"]
    )
    assert base["silence_ratio"]["value"] >= 0.25  # the silent file counts fully
    assert base["lufs_diff"]["value"] > lora["lufs_diff"]["value"]
    assert m["systems"]["lora"]["relative_change_pct"]["afd_paired"] < 0
    assert m["training_curves"] == ["loss", "val_loss"]
    rows = list(csv.DictReader((out / "per_file.csv").open()))
    assert {r["status"] for r in rows} == {"ok", "silent", "bad"}
    assert next(float(r["silence_ratio"]) for r in rows if r["status"] == "silent") == 1.0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Δ%" in html
    assert "base" in (out / "report.md").read_text()
    assert "lora:" in capsys.readouterr().out
    # refuses to overwrite, then overwrites with --overwrite; the cache is reused
    before = (out / "metrics.json").read_text()
    assert main(argv) == 1 and (out / "metrics.json").read_text() == before
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["cache"]["hits"] > 0


def test_eval_unpaired_single_dir(folders):
    out = folders / "r2"
    assert (
        main(
            [
                "eval",
                str(folders / "other"),
                "--ref",
                str(folders / "ref"),
                "-o",
                str(out),
                "--no-cache",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    s = m["systems"]["other"]
    assert (
        s["pairing"] == "unpaired"
        and "afd_paired" not in s["metrics"]
        and s["metrics"]["afd_set"]["value"] >= 0
    )
    assert "unpaired" in (out / "report.md").read_text()


def test_eval_bad_arguments(folders):
    assert (
        main(["eval", "--runs", "nodir", "--ref", str(folders / "ref"), "-o", str(folders / "x")])
        == 2
    )
    assert (
        main(
            [
                "eval",
                str(folders / "missing"),
                "--ref",
                str(folders / "ref"),
                "-o",
                str(folders / "x"),
            ]
        )
        == 2
    )
