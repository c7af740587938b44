"""`lora-audio studio`: serve a local page to generate with the base model and LoRA adapters.

    lora-audio studio --config configs/tiny/demo.yaml --lora runs/style/adapter:0.8 --port 8765

Binds to 127.0.0.1 unless ``--host`` says otherwise. Results go to ``--out`` (one folder per
job, the ``infer --compare`` layout); the page can read nothing outside it.
"""

from __future__ import annotations

import argparse
import logging

from lora_audio import adapters
from lora_audio.config import ConfigError
from lora_audio.generation import (
    MAX_SCALE,
    GenerationError,
    resolve_adapter,
)
from lora_audio.infer import add_model_arguments, load_generation_model, load_run_config
from lora_audio.models.base import ModelLoadError
from lora_audio.studio import StudioError
from lora_audio.studio.jobs import DEFAULT_MAX_QUEUE, DEFAULT_MAX_SECONDS, Studio

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="ADAPTER[:SCALE]",
        help=f"adapter folder offered on the page, with its default strength (1.0; |scale| <= "
        f"{MAX_SCALE:g}); repeat for several",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    parser.add_argument(
        "--out", default="studio-output", help="output folder (default studio-output)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"longest audio a request may ask for (default {DEFAULT_MAX_SECONDS:g}, or the "
        "model's limit)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"most jobs waiting behind the running one (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="offer adapters trained on other base weights (experts)",
    )


def run(args: argparse.Namespace) -> int:
    from lora_audio.studio.app import bind, create_app, is_loopback, make_server

    try:
        cfg = load_run_config(args)
        specs = [adapters.parse_adapter_spec(s) for s in args.lora]
        for path, scale in specs:  # before the model loads
            resolve_adapter(path, scale, cfg.model.family)
        model = load_generation_model(cfg, args.device)
        studio = Studio(
            model,
            specs,
            args.out,
            max_seconds=args.max_seconds,
            max_queue=args.max_queue,
            allow_base_mismatch=args.allow_base_mismatch,
        )
    except (ConfigError, GenerationError, ModelLoadError, StudioError) as exc:
        log.error("%s", exc)
        return 1
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        log.error(
            "cannot listen on %s:%s (%s); choose another --port", args.host, args.port, exc.strerror
        )
        studio.close()
        return 1
    host, port = sock.getsockname()[:2]
    if not is_loopback(args.host):
        log.warning(
            "listening on %s: anyone who can reach this machine can generate and download the "
            "results in %s",
            args.host,
            args.out,
        )
    url_host = f"[{host}]" if ":" in host else host
    print(f"lora-audio studio: http://{url_host}:{port}/  (output: {args.out}; Ctrl-C to stop)")
    if studio.summary.get("note"):
        print(f"NOTE: {studio.summary['note']}")
    server = make_server(create_app(studio), "info" if args.verbose else "warning")
    server.run(sockets=[sock])
    return 0
