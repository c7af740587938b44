"""The real `cut-music` command, end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def cut_music(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "preprocessing.cut_music", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_end_to_end(tmp_path, tone, write_audio):
    write_audio(tmp_path / "in" / "a" / "reel.flac", tone(25.0, 22050, channels=2), 22050)
    write_audio(tmp_path / "in" / "jig.wav", tone(12.0, 11025), 11025)
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFFnonsense")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "-o", str(out), "--length", "5s", "--sr", "16k",
            "--channels", "1", "--loudness", "-20", "--caption", "{stem}, fiddle",
            "--split", "0.5,0.5", "--seed", "1", "--no-progress"]  # fmt: skip
    r = cut_music(*args)
    assert r.returncode == 0, r.stderr
    assert "3 recordings (2 ok, 1 skipped) -> 7 segments" in r.stdout
    assert "broken.wav: not readable as audio" in r.stdout and "broken.wav" in r.stderr
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["id"].split("-")[0] for r in rows) == ["jig"] * 2 + ["reel"] * 5
    assert {r["sample_rate"] for r in rows} == {16000} and {r["channels"] for r in rows} == {1}
    assert {r["split"] for r in rows} == {"train", "val"}
    for row in rows:
        assert sf.info(out / row["path"]).frames == 5 * 16000
    # the same command again: nothing written, same manifest
    manifest = (out / "manifest.jsonl").read_text()
    r = cut_music(*args)
    assert r.returncode == 0 and "(0 written, 7 already there)" in r.stdout
    assert (out / "manifest.jsonl").read_text() == manifest
    # other audio parameters: refused with exit code 2 and a hint
    r = cut_music(*[a if a != "5s" else "4s" for a in args])
    assert r.returncode == 2 and "--overwrite" in r.stderr


def test_cli_exit_code_when_nothing_usable(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.wav").write_bytes(b"\x00" * 100)
    r = cut_music(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 1 and "0 segments" in r.stdout
    r = cut_music(str(tmp_path / "in"), "-o", str(tmp_path / "in" / "o"))
    assert r.returncode == 2 and "overlaps" in r.stderr
    r = cut_music(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--length", "ten")
    assert r.returncode == 2 and "not a duration" in r.stderr


def test_killed_run_resumes_to_the_same_result(tmp_path, write_audio):
    rng = np.random.default_rng(0)
    for i in range(3):
        x = (rng.standard_normal((2, 20 * 16000)) * 0.1).astype(np.float32)
        write_audio(tmp_path / "in" / f"n{i}.wav", x, 16000)
    common = ["--length", "1s", "--format", "flac", "--no-progress"]
    assert cut_music(str(tmp_path / "in"), "-o", str(tmp_path / "clean"), *common).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "preprocessing.cut_music", str(tmp_path / "in"), "-o", str(out),
         *common], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.rglob("*.flac"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in out.rglob("*.flac"):  # every segment under its final name is complete
        if not p.name.startswith("."):
            assert sf.info(p).frames == 16000
    r = cut_music(str(tmp_path / "in"), "-o", str(out), *common)
    assert r.returncode == 0
    assert not [p for p in out.rglob(".*") if p.is_file()]  # stale temp files cleaned
    clean = (tmp_path / "clean" / "manifest.jsonl").read_text()
    assert (out / "manifest.jsonl").read_text() == clean
