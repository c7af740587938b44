"""Benchmark cut-music against plain soundfile decode + write of the same files, side by side.

    .venv/bin/python benchmarks/cut_music.py [--minutes 8] [--files 6] [--repeat 2]
                                              [--long-minutes 120] [--no-memory]

Prints, for the same synthetic corpus in the same run:

* the bound: read each file in blocks with soundfile and write 10 s segments with soundfile
  (no resampling, no analysis): audio seconds per wall second (x realtime);
* cut-music with ``--jobs 1`` (default options: 10 s, silence check, LUFS/RMS measured), with
  ``--jobs 1 --sr 48000 --loudness -23`` and with ``--jobs 2``, each as x realtime and as a
  ratio to the bound (goal: >= 0.5 for jobs 1) and jobs 2 / jobs 1 (goal: near 2 on 2 free
  cores);
* peak resident memory (ru_maxrss of a fresh subprocess) cutting a 1-minute file and a long
  one, next to what holding the long file in memory as float32 would take.

Each timing is the best of ``--repeat`` runs. Input audio: 44.1 kHz stereo PCM_16 WAV, a
mix of tones and noise (the long file: 16 kHz mono, written block by block).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from preprocessing.cut_music import CutParams, cut_music  # noqa: E402

SEGMENT_S = 10.0


def synth(path: Path, seconds: float, sr: int, channels: int, seed: int) -> None:
    """Write a tones + noise signal block by block (constant memory)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(80, 2000, size=4)
    block = sr * 10
    with sf.SoundFile(str(path), "w", sr, channels, subtype="PCM_16") as f:
        for start in range(0, int(seconds * sr), block):
            n = min(block, int(seconds * sr) - start)
            t = (start + np.arange(n)) / sr
            x = sum(0.1 * np.sin(2 * np.pi * fr * t) for fr in freqs)
            x = x + 0.02 * rng.standard_normal(n)
            f.write(np.repeat(x[:, None], channels, axis=1).astype(np.float32))


def plain_bound(files: list[Path], out: Path) -> float:
    """soundfile only: stream each file and write SEGMENT_S segments. Returns seconds."""
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        with sf.SoundFile(str(path)) as f:
            n = int(SEGMENT_S * f.samplerate)
            k = 0
            while True:
                x = f.read(n, dtype="float32", always_2d=True)
                if x.shape[0] < n:
                    break
                sf.write(str(out / f"{i}-{k:05d}.wav"), x, f.samplerate, subtype="PCM_16")
                k += 1
    return time.perf_counter() - t0


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        times.append(fn())
    return min(times)


def timed_cut(files: list[Path], scratch: Path, params: CutParams) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    t0 = time.perf_counter()
    summary = cut_music(files, out / "cut", params)
    elapsed = time.perf_counter() - t0
    assert summary.ok and not summary.failed, summary.format()
    shutil.rmtree(out)
    return elapsed


def timed_plain(files: list[Path], scratch: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    elapsed = plain_bound(files, out)
    shutil.rmtree(out)
    return elapsed


def peak_rss_mb(args: list[str]) -> float:
    """Run cut-music in a fresh interpreter; its peak resident set size in MB."""
    code = (
        "import json, resource, sys; from preprocessing.cut_music import main; "
        "rc = main(sys.argv[1:]); "
        "print(json.dumps({'rc': rc, 'maxrss_kb': resource.getrusage(resource.RUSAGE_SELF)"
        ".ru_maxrss}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    line = r.stdout.strip().splitlines()[-1]
    result = json.loads(line)
    assert result["rc"] == 0, r.stderr
    return result["maxrss_kb"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="total corpus length")
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--long-minutes", type=float, default=120.0)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--scratch", default=None, help="folder for temporary files")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-cut-music-", dir=args.scratch))
    try:
        corpus = scratch / "corpus"
        corpus.mkdir()
        per_file = args.minutes * 60 / args.files
        files = [corpus / f"rec{i}.wav" for i in range(args.files)]
        for i, f in enumerate(files):
            synth(f, per_file, 44100, 2, seed=i)
        audio_s = per_file * args.files
        print(f"corpus: {args.files} files x {per_file:.0f} s, 44.1 kHz stereo PCM_16 WAV "
              f"({audio_s / 60:.1f} min); {os.cpu_count()} CPUs; best of {args.repeat}")  # fmt: skip

        base = CutParams(length=SEGMENT_S, progress=False)
        runs = {
            "plain soundfile decode + write (bound)": lambda: timed_plain(files, scratch),
            "cut-music --jobs 1": lambda: timed_cut(files, scratch, base),
            "cut-music --jobs 1 --sr 48000 --loudness -23": lambda: timed_cut(
                files,
                scratch,
                CutParams(length=SEGMENT_S, progress=False, sample_rate=48000, loudness=-23.0),
            ),
            "cut-music --jobs 1 --no-lufs": lambda: timed_cut(
                files, scratch, CutParams(length=SEGMENT_S, progress=False, measure_lufs=False)
            ),
            "cut-music --jobs 2": lambda: timed_cut(
                files, scratch, CutParams(length=SEGMENT_S, progress=False, jobs=2)
            ),
        }
        times: dict[str, float] = {name: float("inf") for name in runs}
        for _ in range(args.repeat):  # interleaved, so load changes hit every variant alike
            for name, fn in runs.items():
                times[name] = min(times[name], fn())
        bound = audio_s / times["plain soundfile decode + write (bound)"]
        j1 = audio_s / times["cut-music --jobs 1"]
        print(f"{'':48s} {'x realtime':>11s} {'/ bound':>8s}")
        for name, t in times.items():
            speed = audio_s / t
            print(f"{name:48s} {speed:11.1f} {speed / bound:8.2f}")
        print(f"jobs 2 / jobs 1 speed-up: {audio_s / times['cut-music --jobs 2'] / j1:.2f}")

        if not args.no_memory:
            short = scratch / "short.wav"
            long = scratch / "long.wav"
            synth(short, 60, 16000, 1, seed=10)
            synth(long, args.long_minutes * 60, 16000, 1, seed=11)
            flags = ["--length", "10s", "--no-progress", "-q"]
            rss_short = peak_rss_mb([str(short), "-o", str(scratch / "m1"), *flags])
            shutil.rmtree(scratch / "m1")
            rss_long = peak_rss_mb([str(long), "-o", str(scratch / "m2"), *flags])
            whole_mb = args.long_minutes * 60 * 16000 * 4 / 2**20
            print(f"peak RSS cutting a 1-min file: {rss_short:.0f} MB; a "
                  f"{args.long_minutes:.0f}-min file: {rss_long:.0f} MB (the long file as "
                  f"float32 would be {whole_mb:.0f} MB)")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
