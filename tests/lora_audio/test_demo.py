"""The README's main command, end to end, on the built-in default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from preprocessing.manifest import read_manifest


@pytest.mark.integration
def test_demo_runs_the_whole_path(tmp_path):
    env = {**os.environ, "LORA_AUDIO_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "lora_audio.cli", "demo", "-o", str(out), "--jobs", "1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    segments = read_manifest(out / "segments" / "manifest.jsonl")
    assert len(segments) >= 10
    assert {s.split for s in segments} == {"train", "val"}
    assert all(s.caption for s in segments)
    by_source = {}
    for s in segments:
        by_source.setdefault(s.source, set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_source.values())
    # a second run reuses everything
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "up to date" in second.stdout and "0 written" in second.stdout
