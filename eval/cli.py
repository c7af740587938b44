"""``lora-audio eval``: score generated audio folders against a reference folder.

lora-audio eval GEN_DIR --ref REF_DIR -o report/
lora-audio eval --runs base=DIR1 adapterA=DIR2 --ref REF_DIR -o report/ [--train-run RUN]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from eval.pipeline import METRICS, EvalConfig, evaluate
from eval.report import ReportExistsError, baseline_name, write_report

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lora-audio" / "eval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gen", nargs="?", help="folder of generated audio (named after the folder)")
    p.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="several systems to compare, each NAME=DIR",
    )
    p.add_argument("--ref", required=True, help="folder of reference audio")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="report folder (metrics.json, per_file.csv, report.md, report.html)",
    )
    p.add_argument(
        "--pairs",
        choices=("auto", "none"),
        default="auto",
        help="auto: pair files with the same relative name/stem in both folders; none: set metrics only",
    )
    p.add_argument(
        "--embedding",
        default="logmel",
        help="logmel (default, offline) | encodec:LOCAL_DIR | clap:LOCAL_DIR",
    )
    p.add_argument(
        "--device", default="cpu", help="torch device for features and embeddings (cpu, cuda)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for confidence intervals"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--silent",
        choices=("keep", "exclude"),
        default="keep",
        help="generated silent files: keep them in the metrics (default) or exclude them",
    )
    p.add_argument(
        "--baseline",
        help="run that relative changes are measured against (default: the run named 'base')",
    )
    p.add_argument(
        "--train-run", help="training run folder: plot metrics.jsonl / TensorBoard loss curves"
    )
    p.add_argument(
        "--listening",
        metavar="SCORES_JSON",
        help="scores.json of `lora-audio listen score`: MOS per system next to the metrics",
    )
    p.add_argument(
        "--cache", default=None, help=f"embedding cache folder (default {default_cache_dir()})"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not read or write the embedding cache"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an existing report"
    )


def parse_runs(gen: str | None, runs: list[str]) -> dict[str, str]:
    """``GEN_DIR`` and ``NAME=DIR`` items -> ordered ``{name: dir}``; raises ValueError on a bad item."""
    out: dict[str, str] = {}
    if gen:
        out[Path(gen).resolve().name or "gen"] = gen
    for item in runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--runs item {item!r}: write NAME=DIR")
        if name in out:
            raise ValueError(f"--runs: the name {name!r} is used twice")
        out[name] = folder
    if not out:
        raise ValueError("give a GEN_DIR or --runs NAME=DIR ...")
    for name, folder in out.items():
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: run {name!r} is not a folder; check the path")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        runs = parse_runs(args.gen, args.runs)
        if not Path(args.ref).is_dir():
            raise ValueError(f"{args.ref}: --ref is not a folder; check the path")
        if args.train_run and not Path(args.train_run).is_dir():
            raise ValueError(f"{args.train_run}: --train-run is not a folder; check the path")
        listening = None
        if args.listening:
            from lora_audio.listen.score import ListenError, load_scores, report_summary

            try:
                listening = report_summary(load_scores(args.listening))
            except ListenError as e:
                raise ValueError(str(e)) from None
    except ValueError as e:
        log.error("%s", e)
        return 2
    out = Path(args.out)
    if not args.overwrite and any(
        (out / f).exists() for f in ("metrics.json", "per_file.csv", "report.md", "report.html")
    ):
        log.error("%s: already holds a report; choose another -o folder or pass --overwrite", out)
        return 1
    cfg = EvalConfig(
        runs=runs,
        ref=args.ref,
        pairs=args.pairs,
        embedding=args.embedding,
        device=args.device,
        batch_size=args.batch_size,
        n_boot=args.bootstrap,
        seed=args.seed,
        silent=args.silent,
    )
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    progress = sys.stderr.isatty() and not getattr(args, "quiet", False)
    try:
        result = evaluate(cfg, cache_dir=cache, progress=progress)
        if args.baseline:
            baseline_name(result, args.baseline)
        paths = write_report(
            result,
            out,
            overwrite=args.overwrite,
            baseline=args.baseline,
            train_run=args.train_run,
            listening=listening,
        )
    except (ValueError, FileNotFoundError, ReportExistsError) as e:
        log.error("%s", e)
        return 1
    for s in result.systems:
        vals = ", ".join(
            f"{METRICS[k][0]} {v['value']:.4g}"
            for k, v in s.metrics.items()
            if k in ("afd_paired", "afd_set", "fad", "kad")
        )
        print(
            f"{s.name}: {s.counts['used']}/{s.counts['files']} clips, {s.counts['frames']} frames ({s.pairing}); {vals}"
        )
    print(f"report: {paths['report.html']}")
    return 0
