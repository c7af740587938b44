"""Augmentation variants: names, counts per split, pitch shift and gain behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.augment import Variant, apply_gain, apply_variant, pitch_shift, variants_for

SR = 8000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return np.repeat((amp * np.sin(2 * np.pi * freq * t))[None], channels, 0).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x[0] * np.hanning(x.shape[1])))
    return float(np.fft.rfftfreq(x.shape[1], 1 / SR)[np.argmax(spectrum)])


def test_variant_names_and_counts_per_split() -> None:
    train = variants_for("train", [-2, 1.5], [-6], splits=["train"])
    assert [v.name for v in train] == ["clean", "pitch-2", "pitch+1.5", "gain-6"]
    assert [v.name for v in variants_for("val", [-2, 1.5], [-6], splits=["train"])] == ["clean"]
    assert len(variants_for("val", [-2], [3], splits=["train", "val"])) == 3
    assert variants_for("train") == [Variant("clean")]


@pytest.mark.parametrize(("semitones", "expected"), [(12, 880.0), (-12, 220.0), (2, 493.9)])
def test_pitch_shift_moves_the_pitch_and_keeps_the_length(
    semitones: float, expected: float
) -> None:
    x = sine(440.0, channels=2)
    y = pitch_shift(x, SR, semitones)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(peak_hz(y) - expected) < 6.0
    assert np.array_equal(y, pitch_shift(x, SR, semitones))  # deterministic


def test_pitch_shift_handles_clips_shorter_than_the_window() -> None:
    x = sine(440.0, seconds=0.02)  # 160 samples < n_fft 2048
    assert pitch_shift(x, SR, 1).shape == x.shape


def test_gain_cuts_as_asked_and_caps_boosts_at_full_scale() -> None:
    x = sine(440.0, amp=0.5)
    np.testing.assert_allclose(apply_gain(x, -6), x * 10 ** (-6 / 20), rtol=1e-6)
    np.testing.assert_allclose(apply_gain(x, 3), x * 10 ** (3 / 20), rtol=1e-6)
    assert np.max(np.abs(apply_gain(x, 12))) == pytest.approx(1.0, abs=1e-6)
    silence = np.zeros((1, 100), dtype=np.float32)
    assert not apply_gain(silence, 12).any()


def test_apply_variant_dispatches() -> None:
    x = sine(300.0)
    assert apply_variant(x, SR, Variant("clean")) is x
    np.testing.assert_allclose(apply_variant(x, SR, Variant("gain", -6)), apply_gain(x, -6))
    with pytest.raises(ValueError, match="unknown variant"):
        apply_variant(x, SR, Variant("reverse"))
