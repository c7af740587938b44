"""Synthetic `infer --compare` outputs for the listening-test tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lora_audio.audio import write_audio

SR = 8000
#: Distinctive names, so that a leak into the page is easy to spot.
SYSTEMS = ("base", "jazzlora_v2")
STEMS = ("p000_s0", "p001_s0", "p002_s0")


def tone(freq: float, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    """``float32 [1, T]`` sine with a short fade."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * np.minimum(1.0, 20 * t)
    return x.astype(np.float32)[None]


def make_compare_dir(
    root: Path, systems: tuple[str, ...] = SYSTEMS, stems: tuple[str, ...] = STEMS
) -> Path:
    """Write ``root/<system>/<stem>.wav`` + JSON sidecars + ``root/index.json``."""
    index = []
    for i, system in enumerate(systems):
        folder = root / system
        folder.mkdir(parents=True, exist_ok=True)
        for j, stem in enumerate(stems):
            write_audio(folder / f"{stem}.wav", tone(200 + 100 * j + 37 * i), SR)
            meta = {"prompt": f"secret prompt {j}", "seed": 0, "system": system}
            (folder / f"{stem}.json").write_text(json.dumps(meta))
            index.append({"system": system, "file": f"{system}/{stem}.wav"})
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def compare_dir(tmp_path: Path) -> Path:
    return make_compare_dir(tmp_path / "out")


@pytest.fixture
def ref_file(tmp_path: Path) -> Path:
    path = tmp_path / "refs" / "refclip_original.wav"
    path.parent.mkdir(parents=True)
    write_audio(path, tone(330, 0.6), SR)
    return path


@pytest.fixture
def make_runs():
    """The :func:`make_compare_dir` factory (test modules cannot import conftest)."""
    return make_compare_dir
