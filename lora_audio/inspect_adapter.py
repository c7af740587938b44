"""`lora-audio inspect ADAPTER`: metadata, sizes and the norm of each target's update."""

from __future__ import annotations

import argparse
import json
import logging

from lora_audio import adapters

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="adapter folder")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        desc = adapters.describe_adapter(args.adapter)
    except adapters.AdapterError as exc:
        log.error("%s", exc)
        return 1
    if args.json:
        print(json.dumps(desc, indent=2))
        return 0
    info = desc["info"]
    print(f"adapter        {args.adapter}")
    print(f"family         {info['family']}")
    print(f"base model     {info['base_model']}  (fingerprint {info['base_fingerprint'][:16]})")
    print(
        f"rank / alpha   {info['rank']} / {info['alpha']:g}  (scale {info['scale_baked']:g} baked in)"
        + ("  rsLoRA" if info["use_rslora"] else "")
        + ("  DoRA" if info["use_dora"] else "")
    )
    print(f"groups         {', '.join(info['target_groups']) or '-'}")
    print(f"parameters     {info['num_parameters']:,}  ({desc['weights_bytes']:,} bytes on disk)")
    print(f"sha256         {info['weights_sha256']}")
    if info["training_config"]:
        print(f"training       {json.dumps(info['training_config'], sort_keys=True)[:300]}")
    print(f"update norms ||B A||_F of {len(desc['update_norms'])} modules:")
    for module, norm in desc["update_norms"].items():
        print(f"  {norm:10.4g}  {module}")
    return 0
