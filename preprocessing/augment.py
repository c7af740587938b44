"""Augmentation before encoding: each augmentation is one extra cached *variant* of a segment.

A variant is named by a short string that goes into the cache key:

* ``clean``       the segment as it is;
* ``pitch+2``     pitch shifted up 2 semitones (``pitch-1.5``: down 1.5), duration unchanged:
                  the audio analogue of the 12-key transposition of symbolic-music training;
* ``gain-6``      6 dB quieter (``gain+3``: louder, capped so the peak stays <= 0 dBFS).

Variants are not combined (a pitch shift is applied to the clean audio, not to a gain
variant), so a segment has ``1 + len(pitch_shifts) + len(gains_db)`` variants in the splits
that are augmented, and only ``clean`` elsewhere. Every function is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bump when a change here changes the audio of a variant (it is part of the cache params).
AUGMENT_VERSION = 1
CLEAN = "clean"


@dataclass(frozen=True)
class Variant:
    """One augmentation: ``kind`` is ``clean``, ``pitch`` (semitones) or ``gain`` (dB)."""

    kind: str
    amount: float = 0.0

    @property
    def name(self) -> str:
        """``clean``, ``pitch+2``, ``pitch-1.5``, ``gain-6`` ..."""
        if self.kind == CLEAN:
            return CLEAN
        return f"{self.kind}{self.amount:+g}"


def variants_for(
    split: str,
    pitch_shifts: Sequence[float] = (),
    gains_db: Sequence[float] = (),
    splits: Sequence[str] = ("train",),
) -> list[Variant]:
    """The variants of a segment in ``split``: ``clean`` first, then pitch, then gain."""
    out = [Variant(CLEAN)]
    if split in splits:
        out += [Variant("pitch", float(s)) for s in pitch_shifts]
        out += [Variant("gain", float(g)) for g in gains_db]
    return out


def apply_variant(audio: np.ndarray, sample_rate: int, variant: Variant) -> np.ndarray:
    """Apply ``variant`` to ``float32 [C, T]`` audio; returns ``float32 [C, T]`` (same T)."""
    if variant.kind == CLEAN:
        return audio
    if variant.kind == "pitch":
        return pitch_shift(audio, sample_rate, variant.amount)
    if variant.kind == "gain":
        return apply_gain(audio, variant.amount)
    raise ValueError(f"unknown variant kind {variant.kind!r}")


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift ``[C, T]`` by ``semitones`` keeping its length (librosa phase vocoder + soxr).

    Clips shorter than the STFT window use a smaller window (a power of two, >= 32 samples).
    """
    import librosa

    n_fft = 2048
    while n_fft > 32 and n_fft > audio.shape[-1]:
        n_fft //= 2
    y = librosa.effects.pitch_shift(
        np.ascontiguousarray(audio, dtype=np.float32),
        sr=sample_rate,
        n_steps=float(semitones),
        n_fft=n_fft,
        hop_length=n_fft // 4,
        res_type="soxr_hq",
    )
    return np.ascontiguousarray(y[..., : audio.shape[-1]], dtype=np.float32)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale ``[C, T]`` by ``gain_db``; a boost is capped so the peak stays <= 0 dBFS.

    Cuts are applied as asked. Boosting digital silence leaves it silent.
    """
    factor = 10.0 ** (gain_db / 20.0)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if factor > 1.0 and peak > 0.0:
        factor = min(factor, max(1.0, 1.0 / peak))
    return (audio * np.float32(factor)).astype(np.float32)
