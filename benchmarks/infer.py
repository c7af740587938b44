"""Generation time: base vs LoRA fused vs LoRA unfused, measured side by side in one run.

The model is a Stable Audio pipeline whose DiT is a ~21 M-parameter ``StableAudioDiTModel``
(4 layers, width 512) built from config with random weights, around the tiny test VAE and T5
(so the DiT dominates, as in the real model). A rank-16 adapter on attention + time MLP is
saved to a temporary folder and applied through :func:`lora_audio.generate` exactly as
``lora-audio infer`` does.

The conditions run back to back in rounds (``timing.py``: order rotated every round, CPU
time of the work as the main figure, wall clock beside it, ratios of medians with per-round
quartiles). Each time is the pipeline call alone (``model.generate``), so adapter loading and
fusing are not counted; they are printed separately. A second measurement times the denoiser
forward alone (the only thing LoRA changes) over many rounds. Each part has a control that
does the same work as ``base`` (``base again``; ``base copy``, a second identical model):
its ratio to ``base`` shows how small a difference the run can resolve.
Goal: fused within 2 % of base.

    .venv/bin/python benchmarks/infer.py [--threads 1] [--repeats 20] [--steps 4]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from timing import Clock, Times, format_ratio, median, new_times, rotated

from lora_audio import adapters, generate
from lora_audio.config import LoraSection
from lora_audio.models.stable_audio import StableAudioModel
from lora_audio.testing import build_tiny_stable_audio

DIT = {
    "sample_size": 512,
    "in_channels": 4,
    "num_layers": 4,
    "attention_head_dim": 64,
    "num_attention_heads": 8,
    "num_key_value_attention_heads": 4,
    "out_channels": 4,
    "cross_attention_dim": 512,
    "time_proj_dim": 256,
    "global_states_input_dim": 16,
    "cross_attention_input_dim": 8,
}


def build_model() -> StableAudioModel:
    from diffusers import StableAudioDiTModel

    pipe = build_tiny_stable_audio()
    torch.manual_seed(0)
    pipe.register_modules(transformer=StableAudioDiTModel(**DIT))
    model = StableAudioModel(pipe, "bench:stable-audio-dit-21M", None)
    model.denoiser.requires_grad_(False)
    return model


def make_adapter(model: StableAudioModel, folder: Path, rank: int) -> None:
    """A rank-``rank`` adapter with non-zero random B (content does not matter for timing)."""
    lora = LoraSection(rank=rank, alpha=rank, dropout=0.0, targets=["attention", "time_mlp"])
    adapters.inject_lora(model, lora)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.denoiser.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
    adapters.save_adapter(model, folder, lora)
    adapters.unload_adapters(model, ["default"])


def time_denoiser(folder: Path, seconds: float, repeats: int, clock: Clock) -> Times:
    """Denoiser forward only (what LoRA changes), many interleaved rounds.

    ``base`` and ``base copy`` are two identical models without LoRA layers (the control);
    ``unfused``/``fused`` a third with the adapter loaded through :mod:`lora_audio.adapters`,
    fused with :func:`lora_audio.adapters.fused` as generation does. Latents ``[2, C, T]``
    (the CFG batch).
    """
    plain, copy, styled = build_model(), build_model(), build_model()
    name = adapters.load_adapter(styled, folder)
    adapters.set_strengths(styled, {name: 1.0})
    latents = torch.randn((2, *plain.latent_shape(seconds)), generator=torch.Generator())
    with torch.no_grad():
        cond = plain.encode_prompt(["calm piano", "calm piano"], [seconds] * 2)
    t = torch.full((2,), 0.5)
    models = {"base": plain, "base copy": copy, "fused": styled, "unfused": styled}
    times, warm_up = new_times(list(models)), new_times(list(models))
    for r in range(repeats + 1):
        for cond_name in rotated(list(models), r):
            scope = adapters.fused(styled) if cond_name == "fused" else contextlib.nullcontext()
            with scope, torch.no_grad(), clock.measure((times if r else warm_up)[cond_name]):
                models[cond_name].predict(latents, t, cond)
    return times


def time_generation(
    folder: Path, args: argparse.Namespace, clock: Clock
) -> tuple[Times, list[float]]:
    """Whole generations through :func:`lora_audio.generate`; returns times and load overheads.

    Only the pipeline call is timed: ``model.generate`` is wrapped on the instance. ``base
    again`` repeats ``base`` in each round: ``base again / base`` is the run's resolution.
    """
    model = build_model()
    conditions = {
        "base": {"adapters": ()},
        "base again": {"adapters": ()},  # the control: same work as base
        "fused": {"adapters": [(folder, 1.0)], "fuse": True},
        "unfused": {"adapters": [(folder, 1.0)], "fuse": False},
    }
    times = new_times(list(conditions))
    into: dict[str, list[float]] = {"cpu": [], "wall": []}
    pipeline_call = model.generate

    def timed_generate(*a: object, **kw: object) -> torch.Tensor:
        with clock.measure(into):
            return pipeline_call(*a, **kw)

    model.generate = timed_generate
    kw = {"seconds": args.seconds, "steps": args.steps, "guidance": 7.0}
    for name in conditions:  # first-call costs
        generate(model, "warm up", **kw, **conditions[name])
    overhead = []
    for r in range(args.repeats):
        for name in rotated(list(conditions), r):
            into = times[name]
            t0 = time.perf_counter()
            generate(model, "calm piano", seeds=[r], **kw, **conditions[name])
            if conditions[name]["adapters"]:
                overhead.append(time.perf_counter() - t0 - into["wall"][-1])
    return times, overhead


def report(times: Times, unit: float, label: str) -> None:
    for name in times:
        cpu, wall = unit * median(times, name), unit * median(times, name, "wall")
        print(f"  {name:10s}  cpu {cpu:8.1f} {label}   wall {wall:8.1f} {label}")
    for name in times:
        if name != "base":
            goal = "   goal <= 1.02" if name == "fused" else ""
            print(f"  {name + ' / base':17s} {format_ratio(times, name, 'base')}{goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="rounds of whole generations")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--forward-repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    clock = Clock(args.threads)

    model = build_model()
    n_params = sum(p.numel() for p in model.denoiser.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "style"
        make_adapter(model, folder, args.rank)
        gen, overhead = time_generation(folder, args, clock)
        forward = time_denoiser(folder, args.seconds, args.forward_repeats, clock)

    print(
        f"DiT {n_params / 1e6:.1f} M parameters, LoRA rank {args.rank} on attention+time_mlp, "
        f"{args.seconds:g} s audio, {args.steps} steps, CFG, {args.threads} thread(s)"
    )
    print(f"generation (pipeline call), {args.repeats} interleaved rounds, medians:")
    report(gen, 1.0, "s")
    print(
        f"  adapter load+unload (+fuse) per call, outside the pipeline: "
        f"{statistics.median(overhead):.3f} s wall median"
    )
    print(f"denoiser forward only (CFG batch 2), {args.forward_repeats} interleaved rounds:")
    report(forward, 1000.0, "ms")


if __name__ == "__main__":
    main()
