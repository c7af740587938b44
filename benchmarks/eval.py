"""Batched torch feature extraction vs a per-file librosa loop, on the same files, same run.

    .venv/bin/python benchmarks/eval.py [--files 32] [--seconds 5] [--device cpu]

Both sides read the same WAV files and compute the same AFD feature set (MFCC, centroid,
bandwidth, roll-off, flatness, contrast, ZCR, RMS, chroma, onset strength: mean and std over
frames, plus tempo). Prints both times and their ratio (goal: >= 5x).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named eval.py: keep its folder off sys.path so `import eval` finds the package.
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval.features import SpectralConfig, clip_feature_vectors  # noqa: E402
from lora_audio.audio import load_audio, write_audio  # noqa: E402


def librosa_vector(y: np.ndarray, sr: int) -> np.ndarray:
    """The per-file reference: the same features with librosa's own functions."""
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    onset = librosa.onset.onset_strength(y=y, sr=sr)
    feats = [
        librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20),
        librosa.feature.spectral_centroid(S=S, sr=sr),
        librosa.feature.spectral_bandwidth(S=S, sr=sr),
        librosa.feature.spectral_rolloff(S=S, sr=sr),
        librosa.feature.spectral_flatness(S=S),
        librosa.feature.spectral_contrast(S=S, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        librosa.feature.rms(y=y),
        librosa.feature.chroma_stft(S=S**2, sr=sr),
        onset[None],
    ]
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr)
    return np.concatenate(
        [*[f.mean(1) for f in feats], *[f.std(1) for f in feats], np.atleast_1d(tempo)]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sr = SpectralConfig().sample_rate
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        t = np.arange(int(sr * args.seconds)) / sr
        for i in range(args.files):
            x = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.05 * rng.standard_normal(t.size)
            x *= 0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 2 * t))
            paths.append(write_audio(Path(d) / f"c{i}.wav", x[None].astype(np.float32), sr))
        # warm-up both paths (numba JIT in librosa, torch kernels) outside the timings
        y0 = load_audio(paths[0], sr, 1)[0][0]
        librosa_vector(y0, sr)
        clip_feature_vectors([y0], device=args.device)

        t0 = time.perf_counter()
        ref = [librosa_vector(load_audio(p, sr, 1)[0][0], sr) for p in paths]
        t_librosa = time.perf_counter() - t0

        t0 = time.perf_counter()
        ours = []
        for s in range(0, len(paths), args.batch_size):
            clips = [load_audio(p, sr, 1)[0][0] for p in paths[s : s + args.batch_size]]
            ours.append(clip_feature_vectors(clips, device=args.device))
        if args.device != "cpu":
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t0
    ours_v = np.concatenate(ours)
    mfcc_err = float(np.max(np.abs(ours_v[:, :20] - np.stack(ref)[:, :20])))
    print(
        f"files: {args.files} x {args.seconds:g} s at {sr} Hz, torch threads {torch.get_num_threads()}, device {args.device}"
    )
    print(f"per-file librosa loop: {t_librosa:.3f} s ({1000 * t_librosa / args.files:.1f} ms/file)")
    print(
        f"batched torch (batch {args.batch_size}): {t_ours:.3f} s ({1000 * t_ours / args.files:.1f} ms/file)"
    )
    print(f"max |MFCC mean difference|: {mfcc_err:.3g} dB")
    print(f"speed-up: {t_librosa / t_ours:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
