"""`lora-audio studio`: serve a local page to generate with the base model and LoRA adapters.

    lora-audio studio --config configs/tiny/demo.yaml --lora runs/style/adapter:0.8 --port 8765

Binds to 127.0.0.1 unless ``--host`` says otherwise. Results go to ``--out`` (one folder per
job, the ``infer --compare`` layout); the page can read nothing outside it.
"""

from __future__ import annotations

import argparse
import logging
import time

from lora_audio import adapters
from lora_audio.config import ConfigError, load_config
from lora_audio.generation import (
    MAX_SCALE,
    GenerationError,
    load_model_section,
    resolve_adapter,
)
from lora_audio.infer import _device, _quiet_loading_bars
from lora_audio.models.base import ModelLoadError
from lora_audio.studio import StudioError
from lora_audio.studio.jobs import DEFAULT_MAX_QUEUE, DEFAULT_MAX_SECONDS, Studio

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.dtype=float16",
    )
    parser.add_argument("--config", help="run config YAML (model.family, model.path)")
    parser.add_argument("--family", help="model family (overrides model.family)")
    parser.add_argument("--model", help="pipeline folder, hub id or tiny:<family> (model.path)")
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
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="offer adapters trained on other base weights (experts)",
    )


def run(args: argparse.Namespace) -> int:
    from lora_audio.studio.app import bind, create_app, is_loopback, make_server

    overrides = list(args.overrides)
    if args.family:
        overrides.append(f"model.family={args.family}")
    if args.model:
        overrides.append(f"model.path={args.model}")
    try:
        cfg = load_config(args.config, overrides)
        specs = [adapters.parse_adapter_spec(s) for s in args.lora]
        for path, scale in specs:  # before the model loads
            resolve_adapter(path, scale, cfg.model.family)
        t0 = time.perf_counter()
        _quiet_loading_bars()
        model = load_model_section(cfg.model, device=_device(args.device))
        log.info(
            "loaded %s %s in %.1f s", cfg.model.family, cfg.model.path, time.perf_counter() - t0
        )
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
