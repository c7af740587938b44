"""Render speed of the offline corpora, as multiples of real time, measured side by side.

    .venv/bin/python benchmarks/corpus_render.py [--recipe demo-mini] [--jobs 1]

Times, on the same pieces in one run: planning (music21 parse + MIDI), each available renderer
at 44.1 kHz and at 16 kHz (synthesis + resampling + loudness), and a whole build into a fresh
folder. Prints seconds of audio per second of wall time (higher is faster).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from preprocessing.corpus import RenderSettings, build_corpus, get_recipe, plan_recipe, render_piece


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="demo-mini")
    ap.add_argument("--max-pieces", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    recipe = get_recipe(args.recipe)

    t = time.perf_counter()
    planned, _ = plan_recipe(recipe, max_pieces=args.max_pieces)
    plan_s = time.perf_counter() - t
    audio_s = sum(p.piece.seconds for p in planned)
    print(f"{recipe.name}: {len(planned)} pieces, {audio_s:.0f} s of audio")
    print(f"  plan (parse + MIDI)           {audio_s / plan_s:8.1f} x realtime")

    renderers = ["rustysynth"] + (["fluidsynth"] if shutil.which("fluidsynth") else [])
    for renderer in renderers:
        for sr in (44100, 16000):
            settings = RenderSettings(sample_rate=sr, renderer=renderer)
            render_piece(planned[0].piece.midi, settings)  # warm up (soundfont load)
            t = time.perf_counter()
            for p in planned:
                render_piece(p.piece.midi, settings)
            dt = time.perf_counter() - t
            print(f"  render {renderer:10s} {sr:5d} Hz {audio_s / dt:8.1f} x realtime")

    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(RenderSettings(), sample_rate=44100)
        t = time.perf_counter()
        r = build_corpus(
            recipe, Path(tmp) / "c", settings, max_pieces=args.max_pieces, jobs=args.jobs
        )
        dt = time.perf_counter() - t
        print(f"  build (jobs={args.jobs}, 44.1 kHz flac) {r.seconds / dt:8.1f} x realtime")


if __name__ == "__main__":
    main()
