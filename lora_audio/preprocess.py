"""`lora-audio preprocess`: encode cut-music segments into the latent cache once.

    lora-audio preprocess --config run.yaml [key=value ...] [--shard I/N] [--no-progress]

Reads ``data.manifest``, encodes what is missing from the cache (see
:mod:`preprocessing.latent_cache`) and prints a summary. With ``--shard I/N`` it encodes its
share only and leaves ``cache.json`` to a final run without ``--shard`` (which encodes anything
still missing and merges). Under ``accelerate launch`` the processes share the work and the
main process merges, with no flag.
"""

from __future__ import annotations

import argparse
import logging

import torch

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="run config YAML (model + data sections)")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. data.seconds=5"
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="encode share I of N (0-based) only; then run once without --shard to merge",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lora_audio.config import ConfigError, load_config
    from lora_audio.models import ModelLoadError, load_model
    from preprocessing.latent_cache import (
        CacheError,
        build_cache,
        parse_shard,
        process_share,
        resolve_device,
    )

    try:
        cfg = load_config(args.config, args.overrides)
        shard = parse_shard(args.shard) if args.shard else None
    except (ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    index, count, state = (0, 1, None) if shard else process_share()
    device = state.device if state is not None else resolve_device(cfg.data.device)
    try:
        model = load_model(
            cfg.model.family, cfg.model.path, device=device, dtype=getattr(torch, cfg.model.dtype)
        )
        progress = not args.no_progress
        if shard is not None:
            summary = build_cache(cfg, model, shard, progress=progress)
        elif count > 1:
            summary = build_cache(cfg, model, (index, count), progress=progress, write_index=False)
            state.wait_for_everyone()
            if state.is_main_process:
                summary = build_cache(cfg, model, progress=False)
            state.wait_for_everyone()
            if not state.is_main_process:
                return 0
        else:
            summary = build_cache(cfg, model, progress=progress)
    except (CacheError, ModelLoadError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    print(summary.format())
    return 0 if summary.entries > 0 else 1
