"""Benchmark cut-music against plain soundfile decode + write of the same files, side by side.

    .venv/bin/python benchmarks/cut_music.py [--minutes 8] [--files 6] [--repeat 5]
                                              [--long-minutes 120] [--no-memory]

Prints, for the same synthetic corpus in the same run:

* the bound: read each file in blocks with soundfile and write 10 s segments with soundfile
  (no resampling, no analysis): audio seconds per wall second (x realtime);
* cut-music with ``--jobs 1`` (default options: 10 s, silence check, LUFS/RMS measured), with
  ``--jobs 1 --sr 48000 --loudness -23``, with ``--no-lufs`` and with ``--jobs 2``, each as x
  realtime and as a ratio to the bound of the same repeat (goal: >= 0.5 for jobs 1);
* jobs 2 / jobs 1 (goal: near 2 on 2 free cores) next to the same ratio for the bound run two
  files at a time in two threads: on a shared machine that is what two workers could get, and
  the CPU seconds per audio second of jobs 1 and jobs 2 (parallel overhead shows there);
* peak resident memory (ru_maxrss of a fresh subprocess) cutting a 1-minute file and a long
  one, next to what holding the long file in memory as float32 would take.

The variants run ``--repeat`` times, interleaved in a rotating order so that load from other
processes hits every variant alike; figures are medians with the min-max range in brackets.
Input audio: 44.1 kHz stereo PCM_16 WAV, a mix of tones and noise (the long file: 16 kHz
mono, written block by block).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
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


def plain_bound_threads(files: list[Path], out: Path, threads: int) -> None:
    """:func:`plain_bound` with ``threads`` files at a time (soundfile releases the GIL)."""
    with ThreadPoolExecutor(threads) as pool:
        subsets = [files[i::threads] for i in range(threads)]
        outs = [out / str(i) for i in range(threads)]
        for o in outs:
            o.mkdir()
        list(pool.map(plain_bound, subsets, outs))


def timed_cut(files: list[Path], scratch: Path, params: CutParams) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of one cut-music run."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    t0, c0 = time.perf_counter(), time.process_time()
    summary = cut_music(files, out / "cut", params)
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    assert summary.ok and not summary.failed, summary.format()
    shutil.rmtree(out)
    return elapsed


def timed_plain(files: list[Path], scratch: Path, threads: int = 1) -> tuple[float, float]:
    out = Path(tempfile.mkdtemp(dir=scratch))
    t0, c0 = time.perf_counter(), time.process_time()
    if threads == 1:
        plain_bound(files, out)
    else:
        plain_bound_threads(files, out, threads)
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(out)
    return elapsed


def med(values: list[float]) -> str:
    """``median [min-max]``."""
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


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
    ap.add_argument("--repeat", type=int, default=5)
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
              f"({audio_s / 60:.1f} min); {os.cpu_count()} CPUs; {args.repeat} interleaved "
              f"repeats; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")  # fmt: skip

        base = CutParams(length=SEGMENT_S, progress=False)
        bound = "plain soundfile decode + write (bound)"
        bound2 = "plain soundfile, 2 files at a time in 2 threads"
        j1, j2 = "cut-music --jobs 1", "cut-music --jobs 2"
        runs = {
            bound: lambda: timed_plain(files, scratch),
            j1: lambda: timed_cut(files, scratch, base),
            "cut-music --jobs 1 --sr 48000 --loudness -23": lambda: timed_cut(
                files, scratch, replace(base, sample_rate=48000, loudness=-23.0)
            ),
            "cut-music --jobs 1 --no-lufs": lambda: timed_cut(
                files, scratch, replace(base, measure_lufs=False)
            ),
            j2: lambda: timed_cut(files, scratch, replace(base, jobs=2)),
            bound2: lambda: timed_plain(files, scratch, threads=2),
        }
        for fn in runs.values():  # warm-up (imports, compiled kernels, page cache), untimed
            fn()
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(args.repeat):  # interleaved, rotating, so load hits every variant alike
            for name in names[r % len(names) :] + names[: r % len(names)]:
                w, c = runs[name]()
                wall[name].append(w)
                cpu[name].append(c)
        print(f"{'':48s} {'x realtime':>22s} {'/ bound (same repeat)':>22s} "
              f"{'CPU ms / audio s':>20s}")  # fmt: skip
        for name in names:
            speed = [audio_s / t for t in wall[name]]
            ratio = [b / t for b, t in zip(wall[bound], wall[name], strict=True)]
            per_s = [1000 * c / audio_s for c in cpu[name]]
            print(f"{name:48s} {med(speed):>22s} {med(ratio):>22s} {med(per_s):>20s}")
        scale = [a / b for a, b in zip(wall[j1], wall[j2], strict=True)]
        scale_bound = [a / b for a, b in zip(wall[bound], wall[bound2], strict=True)]
        print(f"jobs 2 / jobs 1 speed-up: {med(scale)}; the bound in 2 threads / 1: "
              f"{med(scale_bound)} (what this machine gave two workers)")  # fmt: skip
        print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

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
