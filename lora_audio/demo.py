"""`lora-audio demo`: the whole path on the built-in default, offline, on music made here.

Steps (each prints what it did and where its files are):

1. build an offline corpus: public-domain scores from music21's corpus rendered with a General
   MIDI soundfont (:mod:`preprocessing.corpus`); no download;
2. ``cut-music`` it into training segments with captions and song-level splits.

Later steps (latent cache, LoRA training, generation, evaluation) join this list as they land.
Re-running is cheap: every step reuses what is already there.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path

from lora_audio.files import atomic_path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--out", default="demo-output", help="folder for everything the demo writes"
    )
    p.add_argument(
        "--recipe",
        default="demo-mini",
        help="corpus recipe to adapt to (see `lora-audio corpus list`); default: demo-mini",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")


def run(args: argparse.Namespace) -> int:
    return run_demo(Path(args.out), recipe=args.recipe, jobs=args.jobs)


def run_demo(out: Path, recipe: str = "demo-mini", jobs: int = 2) -> int:
    """Run every demo step into ``out``; returns an exit code."""
    out.mkdir(parents=True, exist_ok=True)
    state: dict = {"out": out, "recipe": recipe, "jobs": jobs}
    steps: list[tuple[str, Callable[[dict], None]]] = [
        ("build the offline corpus", _build_corpus),
        ("cut it into training segments", _cut_segments),
    ]
    t_all = time.perf_counter()
    for i, (title, step) in enumerate(steps, start=1):
        print(f"[{i}/{len(steps)}] {title}", flush=True)
        t0 = time.perf_counter()
        step(state)
        print(f"      done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.1f} s; everything is in {out}/")
    print(
        "The audio is music rendered on this machine from public-domain scores; no model has "
        "been trained yet in this version of the demo."
    )
    return 0


def _build_corpus(state: dict) -> None:
    from preprocessing.corpus import build_corpus

    result = build_corpus(state["recipe"], jobs=state["jobs"], progress=True)
    state["corpus"] = result
    status = "up to date" if result.up_to_date else f"{result.rendered} rendered"
    print(
        f"      {len(result.pieces)} pieces, {result.seconds / 60:.1f} min of music ({status}) "
        f"in {result.dir}"
    )
    for piece in result.pieces:
        print(f"        {piece['id']}: {piece['seconds']:.0f} s, {piece['caption']}")


def _cut_segments(state: dict) -> None:
    from preprocessing.cut_music import CutParams, cut_music

    corpus = state["corpus"]
    out: Path = state["out"]
    captions = out / "captions.csv"
    with atomic_path(captions) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "caption"])
        for piece in corpus.pieces:
            writer.writerow([Path(piece["path"]).name, piece["caption"]])
    params = CutParams(
        length=10.0,
        hop=5.0,
        sample_rate=16000,
        channels=1,
        loudness=-23.0,
        captions_csv=str(captions),
        split=(0.7, 0.3, 0.0),
        seed=42,
        jobs=state["jobs"],
    )
    summary = cut_music([Path(corpus.dir) / "audio"], out / "segments", params)
    for line in summary.format().splitlines():
        print(f"      {line}")
    state["segments"] = summary
