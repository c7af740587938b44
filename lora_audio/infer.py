"""`lora-audio infer`: generate audio with the base model and/or LoRA adapters.

    lora-audio infer --config configs/tiny/stable-audio.yaml --lora runs/style:0.8 \\
        --prompt "calm piano" --seconds 1 --steps 8 -n 4 --compare -o out/

Everything is checked before the model runs (prompts, adapters, strengths, output files), so a
bad input stops with one line and nothing written. Layout and sidecars: :mod:`lora_audio.generation`.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

from lora_audio import adapters
from lora_audio.config import ConfigError, load_config
from lora_audio.generation import (
    AUDIO_FORMATS,
    MAX_SCALE,
    GenerationError,
    GenerationPlan,
    check_outputs,
    is_tiny,
    load_model_section,
    make_plan,
    run_plan,
    write_results,
)
from lora_audio.models.base import ModelLoadError

log = logging.getLogger(__name__)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The base-model arguments of the commands that generate (infer, studio)."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. model.dtype=float16",
    )
    parser.add_argument("--config", help="run config YAML (model.family, model.path)")
    parser.add_argument("--family", help="model family (overrides model.family)")
    parser.add_argument("--model", help="pipeline folder, hub id or tiny:<family> (model.path)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")


def load_run_config(args: argparse.Namespace):
    """The run config of :func:`add_model_arguments`: ``--config`` + overrides."""
    overrides = list(args.overrides)
    if args.family:
        overrides.append(f"model.family={args.family}")
    if args.model:
        overrides.append(f"model.path={args.model}")
    return load_config(args.config, overrides)


def load_generation_model(cfg, device: str):
    """Load ``cfg.model`` on ``device`` (``auto``: CUDA when present) for generation."""
    t0 = time.perf_counter()
    _quiet_loading_bars()
    model = load_model_section(cfg.model, device=_device(device))
    log.info("loaded %s %s in %.1f s", cfg.model.family, cfg.model.path, time.perf_counter() - t0)
    return model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="ADAPTER[:SCALE]",
        help=f"adapter folder and strength (default 1.0, |scale| <= {MAX_SCALE:g}); repeat to "
        "apply several together",
    )
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeatable")
    parser.add_argument("--prompts", help="text file, one prompt per line (# comments skipped)")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt for every item")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.0, help="CFG scale (default 7)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument(
        "-n", "--num-seeds", type=int, default=1, help="seeds per prompt: seed .. seed+n-1"
    )
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also generate with the base at the same seeds: OUT/base/ and OUT/<adapter>/",
    )
    parser.add_argument(
        "--fuse", action="store_true", help="merge adapters into the weights (no LoRA overhead)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--format", choices=AUDIO_FORMATS, default="wav", help="audio format")
    parser.add_argument(
        "--batch-size", type=int, default=4, help="items per pipeline call where the family allows"
    )
    parser.add_argument(
        "--allow-base-mismatch",
        action="store_true",
        help="use adapters trained on other base weights (experts)",
    )


def read_prompts(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 prompts file; ``#`` lines are comments."""
    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"{path}: no such prompts file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GenerationError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise GenerationError(
            f"{path}: no prompts in it; write one prompt per line (# lines are comments)"
        )
    return prompts


def build_plan(args: argparse.Namespace, family: str) -> GenerationPlan:
    """The validated plan for these arguments (no model needed)."""
    prompts = [p for p in args.prompt]
    if args.prompts:
        prompts += read_prompts(args.prompts)
    if args.num_seeds < 1:
        raise GenerationError(f"-n must be >= 1, got {args.num_seeds}")
    return make_plan(
        prompts,
        [adapters.parse_adapter_spec(s) for s in args.lora],
        seeds=range(args.seed, args.seed + args.num_seeds),
        seconds=args.seconds,
        steps=args.steps,
        guidance=args.guidance,
        negative_prompt=args.negative_prompt,
        compare=args.compare,
        fuse=args.fuse,
        batch_size=args.batch_size,
        family=family,
    )


def _quiet_loading_bars() -> None:
    """diffusers/transformers draw bars while loading a pipeline; ours cover the generation."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # float rounding at the ends of the SDE sampler's Brownian interval; harmless
    warnings.filterwarnings("ignore", message="Should have t[ab]", category=UserWarning)
    # diffusers' Oobleck VAE still uses the old weight_norm API
    warnings.filterwarnings("ignore", message=".*weight_norm", category=FutureWarning)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    try:
        cfg = load_run_config(args)
        plan = build_plan(args, cfg.model.family)
        check_outputs(out, plan, args.format, args.overwrite)
        t0 = time.perf_counter()
        model = load_generation_model(cfg, args.device)
        index = _run_with_progress(model, plan, out, args)
    except (ConfigError, GenerationError, ModelLoadError, adapters.AdapterError) as exc:
        log.error("%s", exc)
        return 1
    _print_summary(plan, out, index, time.perf_counter() - t0, is_tiny(model))
    return 0


def _run_with_progress(model, plan: GenerationPlan, out: Path, args: argparse.Namespace) -> Path:
    from tqdm.auto import tqdm

    quiet = bool(getattr(args, "quiet", False))
    files = tqdm(total=plan.num_items, desc="files", unit="file", disable=quiet or None)
    steps = tqdm(total=plan.settings.steps, desc="steps", leave=False, disable=quiet or None)

    def on_step(i: int, total: int) -> None:
        if i <= 1:
            steps.reset(total)
        steps.update(i - steps.n)

    try:
        results = run_plan(
            model, plan, allow_base_mismatch=args.allow_base_mismatch, on_step=on_step
        )
        return write_results(
            out,
            plan,
            results,
            audio_format=args.format,
            overwrite=args.overwrite,
            on_file=lambda _path, _item: files.update(1),
        )
    finally:
        steps.close()
        files.close()


def _print_summary(
    plan: GenerationPlan, out: Path, index: Path, seconds: float, tiny: bool
) -> None:
    n_p, n_s = len(plan.prompts), len(plan.seeds)
    print(
        f"wrote {plan.num_items} files ({len(plan.systems)} system(s) x {n_p} prompt(s) x "
        f"{n_s} seed(s)) to {out} in {seconds:.1f} s"
    )
    for system in plan.systems:
        where = out / system.name if plan.subfolders else out
        adapters_text = ", ".join(f"{r.name}@{r.scale:g}" for r in system.adapters) or "no adapter"
        print(
            f"  {system.name:<20s} {where}/  ({adapters_text}{', fused' if plan.fuse and system.adapters else ''})"
        )
    print(f"index: {index}")
    if tiny:
        print("NOTE: tiny random model: output is noise, not music")
