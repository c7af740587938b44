"""Fixtures for the training tests: a tiny manifest of tones (train + val) and a config maker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora_audio.config import RunConfig, load_config
from lora_audio.testing import tiny_model_dir
from preprocessing.manifest import Segment, write_manifest

SR = 8000
TINY_CONFIG = Path(__file__).parents[3] / "configs" / "tiny" / "stable-audio.yaml"


def write_tone_manifest(root: Path, splits: list[str], seconds: float = 1.0) -> Path:
    """One segment per entry of ``splits``: a two-tone chord (different pitch per segment)."""
    rows = []
    t = np.arange(round(seconds * SR)) / SR
    for i, split in enumerate(splits):
        f = 220.0 * 2 ** (i / 12)
        x = 0.3 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(2 * np.pi * 1.5 * f * t)
        path = root / f"seg{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        rows.append(
            Segment(
                f"seg{i}", path.name, "src.wav", "0" * 64, 0.0, seconds, SR, 1, len(t),
                -12.0, -12.0, 1.0, caption="calm piano", split=split,
            )
        )  # fmt: skip
    return write_manifest(root / "manifest.jsonl", rows)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir("stable-audio", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train and 2 val segments of 1 s."""
    root = tmp_path_factory.mktemp("segments")
    return write_tone_manifest(root, ["train"] * 4 + ["val"] * 2)


@pytest.fixture
def make_cfg(tiny_dir: Path, manifest: Path, tmp_path: Path) -> Callable[..., RunConfig]:
    """``make_cfg(*overrides)``: the tiny config on the tone manifest, run folder in tmp_path."""

    def make(*overrides: str) -> RunConfig:
        return load_config(
            TINY_CONFIG,
            [
                f"model.path={tiny_dir}",
                f"data.manifest={manifest}",
                f"train.output_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )

    return make
