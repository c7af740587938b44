"""``lora-audio sweep``: one adapter per LoRA rank, a table, and the best rank by val loss.

    lora-audio sweep --config configs/stable-audio.yaml --ranks 4,8,16,32,64 data.manifest=...

Each rank trains into ``<train.output_dir>/rank-<r>/`` with the same settings otherwise
(``lora.alpha`` as configured). The table (``sweep.md``, ``sweep.json``) lists validation
loss, trainable parameters, adapter size and time.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from lora_audio.config import ConfigError, load_config
from lora_audio.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (see configs/)")
    parser.add_argument("--ranks", required=True, help="comma-separated ranks, e.g. 4,8,16,32,64")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing rank runs")


def parse_ranks(text: str) -> list[int]:
    try:
        ranks = [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(
            f"--ranks {text!r}: expected comma-separated integers, e.g. 4,8,16"
        ) from None
    if not ranks or any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
        raise ConfigError(f"--ranks {text!r}: give distinct ranks >= 1")
    return ranks


def sweep(
    config: str, ranks: list[int], overrides: list[str], overwrite: bool = False
) -> list[dict[str, Any]]:
    """Train one adapter per rank; write ``sweep.md``/``sweep.json``; returns the rows."""
    from lora_audio.recipes.train_lora import run_training

    base = load_config(config, overrides)
    root = Path(base.train.output_dir)
    cfgs = [
        load_config(
            config,
            [*overrides, f"lora.rank={r}", f"train.output_dir={root / f'rank-{r}'}"],
        )
        for r in ranks
    ]  # all configs checked before the first run starts
    rows = []
    for rank, cfg in zip(ranks, cfgs, strict=True):
        log.info("sweep: rank %d -> %s", rank, cfg.train.output_dir)
        result = run_training(cfg, overwrite=overwrite)
        rows.append(
            {
                "rank": rank,
                "val_loss": result.best_val_loss,
                "best_step": result.best_step,
                "baseline_val_loss": result.baseline_val_loss,
                "trainable_params": result.trainable_params,
                "trainable_percent": result.trainable_percent,
                "adapter_mb": result.adapter_bytes / 1e6,
                "time_s": result.elapsed_s,
                "untrained": result.untrained,
                "adapter": result.adapter_dir,
            }
        )
    valid = [r for r in rows if math.isfinite(r["val_loss"]) and not r["untrained"]]
    best = min(valid, key=lambda r: r["val_loss"]) if valid else None
    write_json_atomic(root / "sweep.json", {"rows": rows, "best_rank": best and best["rank"]})
    write_text_atomic(root / "sweep.md", format_table(rows, best))
    return rows


def format_table(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    lines = [
        "| rank | val loss | best step | trainable params | adapter MB | time s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = " **best**" if best is r else (" (untrained)" if r["untrained"] else "")
        lines.append(
            f"| {r['rank']} | {r['val_loss']:.6f}{mark} | {r['best_step']} | "
            f"{r['trainable_params']:,} ({r['trainable_percent']:.2f} %) | "
            f"{r['adapter_mb']:.3f} | {r['time_s']:.1f} |"
        )
    if best is not None:
        lines.append(f"\nbest: rank {best['rank']} ({best['adapter']})")
    else:
        lines.append("\nno rank beat its untrained baseline")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from lora_audio.recipes.train_lora import TrainingError

    try:
        rows = sweep(args.config, parse_ranks(args.ranks), args.overrides, args.overwrite)
    except (ConfigError, TrainingError) as exc:
        log.error("%s", exc)
        return 1
    valid = [r for r in rows if math.isfinite(r["val_loss"]) and not r["untrained"]]
    best = min(valid, key=lambda r: r["val_loss"]) if valid else None
    print(format_table(rows, best), end="")
    return 0
