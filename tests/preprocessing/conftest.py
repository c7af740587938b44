"""Synthetic audio for the preprocessing tests: tones, noise, silence gaps, any rate/channels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _tone(
    seconds: float, sr: int, channels: int = 1, freq: float = 440.0, amp: float = 0.3
) -> np.ndarray:
    """A sine ``float32 [channels, round(seconds * sr)]`` (channel c at ``freq * (c + 1)``)."""
    t = np.arange(round(seconds * sr)) / sr
    return np.stack([amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]).astype(
        np.float32
    )


@pytest.fixture
def tone() -> Callable[..., np.ndarray]:
    """``tone(seconds, sr, channels=1, freq=440, amp=0.3)`` -> ``float32 [C, T]`` sine."""
    return _tone


@pytest.fixture
def write_audio() -> Callable[..., Path]:
    """``write_audio(path, x [C, T], sr, subtype=None)`` -> path (folders created)."""

    def write(path: Path, x: np.ndarray, sr: int, subtype: str | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), x.T, sr, subtype=subtype)
        return path

    return write
