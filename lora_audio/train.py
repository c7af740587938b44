"""``lora-audio train`` and ``lora-audio sweep``: train LoRA adapters from a config file.

lora-audio train --config configs/stable-audio.yaml data.manifest=segs/manifest.jsonl
lora-audio train --config configs/stable-audio.yaml --resume      # after Ctrl-C
lora-audio sweep --config configs/stable-audio.yaml --ranks 4,8,16,32,64
"""

from __future__ import annotations

import argparse
import logging

from lora_audio.config import ConfigError, load_config

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in train.output_dir"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing run folder and start anew"
    )


def run(args: argparse.Namespace) -> int:
    from lora_audio.recipes.train_lora import TrainingError, run_training

    if args.resume and args.overwrite:
        log.error("--resume and --overwrite exclude each other")
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        result = run_training(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, TrainingError) as exc:
        log.error("%s", exc)
        return 1
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(result.format())
    if result.interrupted:
        return 130
    return 0
