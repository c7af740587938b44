"""`lora-audio corpus`: list, build and check the offline demo corpora (see preprocessing.corpus).

lora-audio corpus list
lora-audio corpus build demo-mini [-o DIR] [--jobs 2] [--sample-rate 16000]
lora-audio corpus check DIR
"""

from __future__ import annotations

import argparse
import logging
import os

from preprocessing.corpus import (
    RECIPES,
    CorpusError,
    RenderSettings,
    build_corpus,
    cache_root,
    check_corpus,
)
from preprocessing.soundfonts import RENDERERS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "build", "check"), help="what to do")
    parser.add_argument(
        "target", nargs="?", help="build: recipe name or recipe .json file; check: corpus folder"
    )
    parser.add_argument(
        "-o", "--out", help="corpus folder (default: a folder keyed by the recipe in the cache)"
    )
    parser.add_argument("--sample-rate", type=int, default=44100, help="default 44100")
    parser.add_argument("--format", choices=("flac", "wav"), default="flac")
    parser.add_argument("--renderer", choices=RENDERERS, default="rustysynth")
    parser.add_argument(
        "--soundfont",
        default="timgm6mb",
        help="timgm6mb (pip, default), fluidr3 (apt fluid-soundfont-gm) or an .sf2 path",
    )
    parser.add_argument("--max-pieces", type=int, help="at most this many pieces per selection")
    parser.add_argument("--max-seconds", type=float, help="at most this much audio per selection")
    parser.add_argument(
        "-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes"
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            return _list()
        if not args.target:
            log.error(
                "corpus %s: give a %s",
                args.action,
                "recipe" if args.action == "build" else "folder",
            )
            return 2
        if args.action == "check":
            return _check(args.target)
        return _build(args)
    except CorpusError as e:
        log.error("%s", e)
        return 1


def _list() -> int:
    print(f"recipes (cache: {cache_root() / 'corpora'}):")
    for r in RECIPES.values():
        print(f"  {r.name:10s} {r.description}")
    return 0


def _check(folder: str) -> int:
    problems = check_corpus(folder)
    for p in problems:
        print(p)
    print(f"{folder}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1


def _build(args: argparse.Namespace) -> int:
    settings = RenderSettings(
        sample_rate=args.sample_rate,
        format=args.format,
        renderer=args.renderer,
        soundfont=args.soundfont,
    )
    r = build_corpus(
        args.target,
        args.out,
        settings,
        max_pieces=args.max_pieces,
        max_seconds=args.max_seconds,
        jobs=max(1, args.jobs),
        progress=not args.quiet,
    )
    state = "up to date" if r.up_to_date else f"{r.rendered} rendered, {r.reused} reused"
    print(
        f"{r.dir}: {len(r.pieces)} pieces, {r.seconds / 60:.1f} min ({state}, "
        f"{len(r.skipped)} skipped)"
    )
    return 1 if r.mismatches else 0
