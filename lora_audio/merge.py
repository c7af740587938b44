"""`lora-audio merge`: weighted LoRA->LoRA merge, or fuse adapters into a base model folder."""

from __future__ import annotations

import argparse
import logging

from lora_audio import adapters
from lora_audio.models.base import ModelLoadError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "adapters",
        nargs="+",
        metavar="ADAPTER[:WEIGHT]",
        help="adapter folders, weight defaults to 1.0",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="new adapter folder (or model folder with --into-base)",
    )
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help="compress the merged adapter to this rank by SVD (default: exact, ranks concatenated)",
    )
    parser.add_argument(
        "--into-base",
        action="store_true",
        help="write a fused base model folder instead of an adapter",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="base model folder/hub id for --into-base (default: the adapter's base_model)",
    )
    parser.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="fuse even if the base fingerprint differs (experts)",
    )


def run(args: argparse.Namespace) -> int:
    specs = [adapters.parse_adapter_spec(s) for s in args.adapters]
    try:
        if args.into_base:
            from lora_audio.models import load_model

            info, _, _ = adapters.read_adapter(specs[0][0])
            model = load_model(info.family, args.model or info.base_model)
            adapters.merge_into_base(model, specs, args.output, args.allow_base_mismatch)
            print(f"fused {len(specs)} adapter(s) into {info.base_model} -> {args.output}")
            return 0
        report = adapters.merge_adapters(specs, args.output, rank=args.rank)
    except (adapters.AdapterError, ModelLoadError) as exc:
        log.error("%s", exc)
        return 1
    weights = " + ".join(f"{w:g}*{p}" for p, w in specs)
    line = f"merged {weights} -> {args.output} (rank {report.rank}"
    if args.rank is not None:
        line += f", relative Frobenius error {report.relative_error:.3e}, worst {report.worst_module} {report.worst_module_error:.3e}"
    print(line + ")")
    return 0
