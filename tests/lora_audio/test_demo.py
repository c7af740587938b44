"""The README's main command, end to end, on the built-in default (small settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from preprocessing.manifest import read_manifest


@pytest.mark.integration
def test_demo_runs_the_whole_path(tmp_path):
    env = {**os.environ, "LORA_AUDIO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "demo"
    cmd = [
        sys.executable, "-m", "lora_audio.cli", "demo", "-o", str(out), "--recipe", "demo-mini",
        "--steps", "4", "--clips", "2", "--denoise-steps", "3", "--jobs", "1",
    ]  # fmt: skip
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]

    # cut-music: captions, and each recording in exactly one split
    segments = read_manifest(out / "segments" / "manifest.jsonl")
    assert {s.split for s in segments} == {"train", "val", "test"}
    assert all(s.caption for s in segments)
    by_source: dict[str, set[str]] = {}
    for s in segments:
        by_source.setdefault(s.source, set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_source.values())
    # the eval reference is exactly the held-out split
    held = sorted(p.name for p in (out / "heldout").iterdir())
    assert held == sorted(s.path.rsplit("/", 1)[-1] for s in segments if s.split == "test")

    # train -> adapter; infer --compare -> same files for base and adapter; eval -> report
    assert (out / "train" / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "train" / "prior.safetensors").is_file()  # prior preservation (demo.yaml)
    assert "prior preservation:" in (out / "train" / "README.md").read_text()
    base = sorted(p.name for p in (out / "generated" / "base").glob("*.wav"))
    adapted = sorted(p.name for p in (out / "generated" / "adapter").glob("*.wav"))
    assert base == adapted and len(base) == 2
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics["systems"]) == {"base", "adapter"}
    assert (out / "report" / "report.html").is_file()
    for line in ("report:", "audio:", "adapter:", "demo:base is a 4 M-parameter model"):
        assert line in first.stdout
    assert "$ lora-audio train --config" in first.stdout

    # a second run reuses the corpus, the segments and the trained adapter
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "up to date" in second.stdout and "0 written" in second.stdout
    assert "is already trained" in second.stdout and "already holds these clips" in second.stdout
