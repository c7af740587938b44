"""`lora-audio` command line: thin subcommands, each parsing its arguments and calling one function.

Each subcommand lives in its own module exposing ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``lora-audio --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import MutableMapping

from lora_audio import __version__
from lora_audio.logs import setup_logging

log = logging.getLogger("lora_audio")

#: name -> (module, one-line help). Add a line here to add a subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("lora_audio.demo", "run the whole path on the built-in default (no downloads)"),
    "merge": ("lora_audio.merge", "merge weighted LoRA adapters into one, or into the base model"),
    "inspect": (
        "lora_audio.inspect_adapter",
        "print an adapter's metadata, sizes and update norms",
    ),
    "eval": ("eval.cli", "score generated audio folders against a reference folder"),
    "corpus": ("preprocessing.corpus_cli", "build an offline demo corpus from music21 scores"),
    "listen": ("lora_audio.listen.cli", "build blind listening tests and score MOS"),
    "studio": ("lora_audio.studio.cli", "serve a local web page to generate and compare adapters"),
    "cut-music": ("preprocessing.cut_music", "cut recordings into segments and write a manifest"),
    "preprocess": ("lora_audio.preprocess", "encode cut-music segments into the latent cache once"),
    "infer": ("lora_audio.infer", "generate audio with the base model and/or LoRA adapters"),
    "train": ("lora_audio.train", "train a LoRA adapter from a config (see configs/)"),
    "pretrain-demo": ("lora_audio.demo_model.pretrain", "pretrain the built-in demo model"),
    "sweep": ("lora_audio.sweep", "train one adapter per LoRA rank and compare them"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-audio",
        description="Teach a pretrained music diffusion model a new style with LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"lora-audio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        add_common_arguments(p)
    return parser


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every command shares: verbosity."""
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


#: GNU OpenMP (torch's CPU thread pools) lets an idle thread spin 300,000 times before it
#: sleeps, so two torch jobs sharing the cores (a training next to an eval or the studio) slow
#: each other down many times over; 10,000 spins cost a job alone nothing measurable
#: (benchmarks/threads.py, figures in the README).
GOMP_SPINCOUNT = "10000"


def omp_defaults(env: MutableMapping[str, str]) -> None:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a spin count or ``OMP_WAIT_POLICY``.

    Only takes effect before torch is first imported (libgomp reads it when it loads).
    """
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    omp_defaults(os.environ)  # before any command module imports torch
    parser = build_parser()
    # Let each command add its own arguments before the final parse.
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        module.add_arguments(sub_action.choices[argv[0]])
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
