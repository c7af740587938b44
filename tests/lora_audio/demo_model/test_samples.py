"""The samples script: clips, spectrogram picture and numbers, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from lora_audio.demo_model.samples import render, spectral_flatness
from lora_audio.testing import tiny_model_dir


def test_flatness_tells_tones_from_noise() -> None:
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert spectral_flatness(tone) < 0.01 < 0.3 < spectral_flatness(noise)


def test_render_writes_clips_picture_and_report(corpus: Path, tmp_path: Path) -> None:
    folder = tiny_model_dir("demo", tmp_path / "models")
    report = render(str(folder), corpus, tmp_path / "out", seconds=1.0, steps=2)
    captions = [c["caption"] for c in report["clips"]]
    assert captions == ["bach chorale, piano", "scottish air, flute"]
    for clip in report["clips"]:
        assert np.isfinite(clip["reconstruction_mel_db_mse"])
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"spectrograms.png", "samples.json", "gen-bach-chorale-piano.wav"} <= names
    audio, sr = sf.read(tmp_path / "out" / "gen-scottish-air-flute.wav")
    assert sr == 16000 and len(audio) == 16000
    assert json.loads((tmp_path / "out" / "samples.json").read_text()) == report
