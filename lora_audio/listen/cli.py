"""`lora-audio listen build|score`: blind listening tests and their MOS scores."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lora_audio.files import write_json_atomic, write_text_atomic
from lora_audio.listen import ListenError

log = logging.getLogger("lora_audio.listen")


def _verbosity(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: do not overwrite -v/-q given before the sub-command.
    p.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )
    p.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="listen_command", metavar="{build,score}")
    b = sub.add_parser(
        "build",
        help="turn generated sets into a blind static listening test",
        description="Turn generated sets (e.g. `infer --compare` output) into a blind, "
        "randomised, offline listening test. key.json maps opaque clip ids back to systems; "
        "do not give it to raters.",
    )
    b.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="`infer --compare` output (one sub-folder per system) or a folder of audio files "
        "(one system, named after the folder; NAME=DIR to name it)",
    )
    b.add_argument("-o", "--output", required=True, type=Path, help="folder for the test")
    b.add_argument("--ref", help="reference clip or folder for the style-match question")
    b.add_argument("--ab", action="store_true", help="add A/B preference trials")
    b.add_argument(
        "--base", default="base", help="system the others are compared with (default: base)"
    )
    b.add_argument("--seed", type=int, default=0, help="randomisation seed (default 0)")
    b.add_argument("--title", default="Listening test", help="title shown on the page")
    b.add_argument(
        "--loudness",
        type=float,
        default=-23.0,
        metavar="LUFS",
        help="loudness every clip is matched to (default -23 LUFS)",
    )
    b.add_argument("--no-loudness", action="store_true", help="keep the clips' own loudness")
    b.add_argument(
        "--keep-partial",
        action="store_true",
        help="keep stimuli missing in some systems (default: drop them)",
    )
    b.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    _verbosity(b)

    s = sub.add_parser(
        "score",
        help="MOS per system with 95 %% CIs, A/B preference and rater agreement",
        description="Score ratings saved by the listening page (JSON or CSV) against key.json.",
    )
    s.add_argument(
        "ratings", nargs="+", metavar="RATINGS", help="ratings files, or folders of them"
    )
    s.add_argument("--key", required=True, type=Path, help="key.json written by `listen build`")
    s.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("scores.json"),
        help="scores JSON (default scores.json; a .md table is written beside it)",
    )
    s.add_argument("--base", default=None, help="base system (default: the key's)")
    _verbosity(s)


def run_build(args: argparse.Namespace) -> int:
    from lora_audio.listen.build import build_test

    result = build_test(
        args.run_dirs,
        args.output,
        ref=args.ref,
        seed=args.seed,
        ab=args.ab,
        base=args.base,
        title=args.title,
        loudness_lufs=None if args.no_loudness else args.loudness,
        keep_partial=args.keep_partial,
        force=args.force,
    )
    plan = result.plan
    n_ab = sum(t.kind == "ab" for t in plan.trials)
    print(
        f"built test {plan.test_id}: {len(plan.systems)} systems ({', '.join(plan.systems)}), "
        f"{len(plan.stimuli)} stimuli, {len(plan.trials) - n_ab} rating + {n_ab} A/B trials, "
        f"{len(plan.refs)} reference clip(s)"
    )
    if plan.problems:
        print(f"{len(plan.problems)} problem(s), see above and {result.out / 'key.json'}")
    print(f"open {result.out / 'index.html'} in a browser; keep {result.out / 'key.json'} private")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from lora_audio.listen.score import markdown_table, score_files

    scores = score_files(args.ratings, args.key, base=args.base)
    md = markdown_table(scores)
    write_json_atomic(args.output, scores)
    md_path = args.output.with_suffix(".md")
    write_text_atomic(md_path, md)
    print(md, end="")
    print(f"\nwrote {args.output} and {md_path}")
    return 0


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "listen_command", None)
    try:
        if command == "build":
            return run_build(args)
        if command == "score":
            return run_score(args)
    except ListenError as e:
        log.error("error: %s", e)
        return 1
    log.error("usage: lora-audio listen {build,score} ... (see lora-audio listen build --help)")
    return 2
