"""Batched torch feature extraction vs a per-file librosa loop, on the same files, same run.

    .venv/bin/python benchmarks/eval.py [--files 32] [--seconds 5] [--repeats 5] [--device cpu]

All sides read the same WAV files with the same loader (``lora_audio.audio.load_audio``) and
compute the same AFD feature vector (MFCC, centroid, bandwidth, roll-off, flatness, contrast,
ZCR, RMS, chroma with tuning 0, onset strength: mean and std over frames, plus tempo); the
script prints how far apart the vectors are. Two per-file librosa loops are timed:

* the natural one (the goal's reference): one ``librosa.stft`` shared by the spectral
  features, MFCC and onset strength from ``y`` as in librosa's examples (each computes its
  own mel spectrogram), ``librosa.feature.tempo`` for the tempo;
* a tuned one: one STFT and one log-mel per file, shared by MFCC and onset strength too.

Our tempo is a cheaper estimator than ``librosa.feature.tempo`` (a global autocorrelation
with the same log-normal prior; see ``eval.features.tempo_bpm``): a few % of the librosa
loops' time. The librosa loops run with BLAS limited to one thread (threadpoolctl): the
matrices of one file are small, and a 2-thread BLAS made the loop ~3x slower on a shared
2-core machine, which would flatter the batched side. The sides run alternately
``--repeats`` times (the machine may be shared) and the medians are compared (goal: >= 5x).
Thread settings are printed: run once with ``OMP_NUM_THREADS=1`` and once with the default.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named eval.py: keep its folder off sys.path so `import eval` finds the package.
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import librosa  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from eval.features import (  # noqa: E402
    FRAME_FEATURES,
    SpectralConfig,
    clip_feature_vectors,
    feature_names,
)
from lora_audio.audio import load_audio, write_audio  # noqa: E402


def librosa_vector(y: np.ndarray, sr: int, shared_mel: bool = False) -> np.ndarray:
    """The per-file reference: the same features with librosa's own functions.

    ``shared_mel``: MFCC and onset strength from one log-mel computed from the shared STFT
    (the tuned loop) instead of from ``y`` (each then computes its own).
    """
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    if shared_mel:
        logmel = librosa.power_to_db(librosa.feature.melspectrogram(S=S**2, sr=sr))
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=20)
        onset = librosa.onset.onset_strength(S=logmel, sr=sr)
    else:
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
        onset = librosa.onset.onset_strength(y=y, sr=sr)
    feats = [
        mfcc,
        librosa.feature.spectral_centroid(S=S, sr=sr),
        librosa.feature.spectral_bandwidth(S=S, sr=sr),
        librosa.feature.spectral_rolloff(S=S, sr=sr),
        librosa.feature.spectral_flatness(S=S),
        librosa.feature.spectral_contrast(S=S, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        librosa.feature.rms(y=y),
        # tuning=0.0 as the batched side (librosa would otherwise estimate the tuning per file)
        librosa.feature.chroma_stft(S=S**2, sr=sr, tuning=0.0),
        onset[None],
    ]
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr)
    return np.concatenate(
        [*[f.mean(1) for f in feats], *[f.std(1) for f in feats], np.atleast_1d(tempo)]
    )


def run_librosa(paths: list[Path], sr: int, shared_mel: bool = False) -> np.ndarray:
    with threadpool_limits(1):
        return np.stack([librosa_vector(load_audio(p, sr, 1)[0][0], sr, shared_mel) for p in paths])


def run_batched(paths: list[Path], sr: int, batch_size: int, device: str) -> np.ndarray:
    out = []
    for s in range(0, len(paths), batch_size):
        clips = [load_audio(p, sr, 1)[0][0] for p in paths[s : s + batch_size]]
        out.append(clip_feature_vectors(clips, device=device))
    if device != "cpu":
        torch.cuda.synchronize()
    return np.concatenate(out)


def differences(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Largest relative difference ``|a - b| / max(|b|, 1e-3 max|b|)`` per feature group."""
    names = feature_names()
    scale = np.maximum(np.abs(ref), 1e-3 * np.abs(ref).max(0, keepdims=True) + 1e-12)
    rel = np.abs(ours - ref) / scale
    groups = {}
    for g in (*FRAME_FEATURES, "tempo"):
        cols = [i for i, n in enumerate(names) if re.sub(r"\d*_(mean|std)$", "", n) == g]
        groups[g] = float(rel[:, cols].max())
    return groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sr = SpectralConfig().sample_rate
    rng = np.random.default_rng(0)
    natural, tuned = "per-file librosa loop, natural", "per-file librosa loop, tuned"
    ours = f"batched torch (batch {args.batch_size})"
    wall: dict[str, list[float]] = {n: [] for n in (natural, tuned, ours)}
    cpu: dict[str, list[float]] = {n: [] for n in (natural, tuned, ours)}
    out: dict[str, np.ndarray] = {}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        paths = []
        t = np.arange(int(sr * args.seconds)) / sr
        for i in range(args.files):
            x = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t) + 0.05 * rng.standard_normal(t.size)
            x *= 0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 2 * t))
            paths.append(write_audio(Path(d) / f"c{i}.wav", x[None].astype(np.float32), sr))
        sides = {
            natural: lambda: run_librosa(paths, sr),
            tuned: lambda: run_librosa(paths, sr, shared_mel=True),
            ours: lambda: run_batched(paths, sr, args.batch_size, args.device),
        }
        # warm-up every side (numba JIT in librosa and eval.features, torch kernels) untimed
        y0 = load_audio(paths[0], sr, 1)[0][0]
        librosa_vector(y0, sr)
        librosa_vector(y0, sr, shared_mel=True)
        clip_feature_vectors([y0, y0], device=args.device)
        names = list(sides)
        for r in range(args.repeats):  # rotate the order; each side recomputes everything
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0, c0 = time.perf_counter(), time.process_time()
                out[name] = sides[name]()
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"files: {args.files} x {args.seconds:g} s at {sr} Hz, device {args.device}, "
        f"{args.repeats} interleaved repeats (medians)"
    )
    print(
        f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {cores} cores available; "
        f"load average {load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    for name in names:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:34s} {1000 * w / args.files:6.1f} ms/file wall, "
            f"{1000 * c / args.files:6.1f} ms/file CPU (all threads)"
        )
    mfcc_err = float(np.max(np.abs(out[ours][:, :20] - out[natural][:, :20])))
    print(f"max |MFCC mean difference|: {mfcc_err:.3g} dB")
    diffs = differences(out[ours], out[natural])
    print(
        "max relative difference per feature: "
        + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
    )
    for ref, goal in ((natural, " (goal >= 5x)"), (tuned, "")):
        ratios = sorted(a / b for a, b in zip(wall[ref], wall[ours], strict=True))
        cpu_ratio = statistics.median(cpu[ref]) / statistics.median(cpu[ours])
        print(
            f"speed-up vs the {ref.split(', ')[1]} loop: {statistics.median(ratios):.1f}x{goal}, "
            f"per-repeat {ratios[0]:.1f}x-{ratios[-1]:.1f}x; CPU time ratio {cpu_ratio:.1f}x"
        )


if __name__ == "__main__":
    main()
