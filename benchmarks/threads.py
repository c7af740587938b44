"""Two torch jobs on the same cores: how much does each slow down, per OpenMP spin setting?

torch's CPU wheel runs its thread pools on GNU OpenMP, whose idle threads spin before they
sleep. Two jobs with a thread per core each (a training next to an eval, the studio next to a
training) then burn each other's time slices spinning. This runs the same job — ``lora-audio
train`` on the demo model for ``--steps`` steps, on the demo-mini corpus that ``lora-audio demo``
cuts first — alone and two at once, for each ``GOMP_SPINCOUNT`` (interleaved repeats), and
prints the training time (the run's ``time:`` line) alone and two at once, the slowdown of two
at once over alone (ideal: about 2x on a machine the two jobs share), and each setting's alone
time vs libgomp's default.

    .venv/bin/python benchmarks/threads.py --steps 60 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lora_audio.cli"]

#: label -> GOMP_SPINCOUNT (300000 is libgomp's default; lora-audio's CLI sets 10000)
SETTINGS = {"libgomp default 300000": "300000", "10000 (lora-audio)": "10000"}


def prepare(out: Path) -> Path:
    """The demo-mini segments (``lora-audio demo`` on its smallest corpus); their manifest."""
    manifest = out / "demo" / "segments" / "manifest.jsonl"
    if not manifest.is_file():
        subprocess.run(
            [*CLI, "demo", "-o", str(out / "demo"), "--recipe", "demo-mini", "--steps", "4",
             "--clips", "2", "--denoise-steps", "3", "--jobs", "1"],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return manifest


def run_jobs(n: int, steps: int, spincount: str, manifest: Path, out: Path) -> list[float]:
    """Start ``n`` trainings at once; the training time each reports."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["GOMP_SPINCOUNT"] = spincount
    procs = []
    for i in range(n):
        argv = [
            *CLI, "train", "--config", "configs/demo.yaml", f"data.manifest={manifest}",
            f"train.output_dir={out / f'run-{i}'}", f"train.max_steps={steps}",
            "train.eval_every=100000", "train.warmup_steps=2", "train.prior_prompts=[]",
            "train.progress_bar=false", "--overwrite",
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    times = []
    for p in procs:
        stdout, _ = p.communicate()
        found = re.search(r"^time: ([0-9.]+) s", stdout, re.M)
        if p.returncode != 0 or not found:
            raise SystemExit(f"training failed (exit {p.returncode}):\n{stdout[-2000:]}")
        times.append(float(found.group(1)))
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmark-output" / "threads")
    args = ap.parse_args()
    manifest = prepare(args.out)
    alone: dict[str, list[float]] = {k: [] for k in SETTINGS}
    pair: dict[str, list[float]] = {k: [] for k in SETTINGS}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        for label, spincount in SETTINGS.items():  # interleaved: load drifts hit all alike
            alone[label] += run_jobs(1, args.steps, spincount, manifest, args.out)
            pair[label] += run_jobs(2, args.steps, spincount, manifest, args.out)
            print(f"repeat {r + 1}: {label}: alone {alone[label][-1]:.1f} s, "
                  f"two at once {pair[label][-2]:.1f} / {pair[label][-1]:.1f} s", flush=True)  # fmt: skip
    base_alone = statistics.median(alone[next(iter(SETTINGS))])
    print(f"\nlora-audio train, {args.steps} steps of the demo model, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} (two at once: of {2 * args.repeats} jobs):")  # fmt: skip
    for label in SETTINGS:
        a, p = statistics.median(alone[label]), statistics.median(pair[label])
        print(
            f"  {label:<22s} alone {a:7.1f} s ({a / base_alone:.2f}x the default)   "
            f"two at once {p:7.1f} s each = {p / a:5.1f}x alone (ideal ~2x)"
        )
    print(f"{(time.perf_counter() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
