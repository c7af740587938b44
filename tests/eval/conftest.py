"""Deterministic synthetic clips for the eval tests (nothing is stored as audio).

Tests get the generator through the ``synth`` fixture."""

from __future__ import annotations

import numpy as np
import pytest


def synth_clip(kind: str, sr: int = 22050, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Mono float32 ``[T]``: ``tone`` (A3 + harmonics), ``chirp``, ``noise``, ``clicks`` (120 BPM), ``silence``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    if kind == "tone":
        x = sum(0.3 / k * np.sin(2 * np.pi * 220.0 * k * t) for k in (1, 2, 3))
    elif kind == "chirp":
        x = 0.4 * np.sin(2 * np.pi * (100.0 * t + 0.5 * 1500.0 * t**2 / seconds))
    elif kind == "noise":
        x = 0.2 * rng.standard_normal(t.size)
    elif kind == "clicks":
        x = np.zeros(t.size)
        period = int(sr * 0.5)
        for start in range(0, t.size, period):
            n = min(400, t.size - start)
            x[start : start + n] = 0.8 * np.exp(-np.arange(n) / 60.0) * rng.standard_normal(n)
    elif kind == "silence":
        x = np.zeros(t.size)
    else:
        raise ValueError(kind)
    return np.asarray(x, dtype=np.float32)


@pytest.fixture
def synth():
    """The :func:`synth_clip` generator."""
    return synth_clip
