"""Generation time: base vs LoRA fused vs LoRA unfused, measured side by side in one run.

The model is a Stable Audio pipeline whose DiT is a ~21 M-parameter ``StableAudioDiTModel``
(4 layers, width 512) built from config with random weights, around the tiny test VAE and T5
(so the DiT dominates, as in the real model). A rank-16 adapter on attention + time MLP is
saved to a temporary folder and applied through :func:`lora_audio.generate` exactly as
``lora-audio infer`` does. The three conditions are interleaved (order rotated every repeat)
and each time is the pipeline call recorded in the sidecar (``seconds_taken``), so adapter
loading is not counted; it is printed separately. A second, less noisy measurement times the
denoiser forward alone (the only thing LoRA changes) over many interleaved repeats.
Goal: fused within 2 % of base.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/infer.py [--repeats 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

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


def time_denoiser(folder: Path, rank_seconds: float, repeats: int) -> dict[str, list[float]]:
    """Denoiser forward only (what LoRA changes), many interleaved repeats: less noisy.

    ``base`` is a model without LoRA layers; ``unfused``/``fused`` a second, identical model
    with the adapter loaded through :mod:`lora_audio.adapters` (as generation does).
    """
    plain, styled = build_model(), build_model()
    name = adapters.load_adapter(styled, folder)
    adapters.set_strengths(styled, {name: 1.0})
    latents = torch.randn((2, *plain.latent_shape(rank_seconds)), generator=torch.Generator())
    with torch.no_grad():
        cond = plain.encode_prompt(["calm piano", "calm piano"], [rank_seconds] * 2)
    t = torch.full((2,), 0.5)
    times: dict[str, list[float]] = {"base": [], "fused": [], "unfused": []}
    names = list(times)
    fused = False
    for r in range(repeats + 1):
        for cond_name in names[r % 3 :] + names[: r % 3]:
            model = plain if cond_name == "base" else styled
            if cond_name != "base" and fused != (cond_name == "fused"):
                (adapters.fuse_adapters if not fused else adapters.unfuse_adapters)(styled)
                fused = not fused
            t0 = time.perf_counter()
            with torch.no_grad():
                model.predict(latents, t, cond)
            if r:  # round 0 warms up
                times[cond_name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forward-repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    model = build_model()
    n_params = sum(p.numel() for p in model.denoiser.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "style"
        make_adapter(model, folder, args.rank)
        conditions = {
            "base": {"adapters": ()},
            "fused": {"adapters": [(folder, 1.0)], "fuse": True},
            "unfused": {"adapters": [(folder, 1.0)], "fuse": False},
        }
        kw = {"seconds": args.seconds, "steps": args.steps, "guidance": 7.0}
        generate(model, "warm up", **kw, **conditions["unfused"])  # first-call costs
        times: dict[str, list[float]] = {name: [] for name in conditions}
        overhead: list[float] = []
        names = list(conditions)
        for r in range(args.repeats):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                t0 = time.perf_counter()
                (item,) = generate(model, "calm piano", seeds=[r], **kw, **conditions[name])
                wall = time.perf_counter() - t0
                times[name].append(item.meta["seconds_taken"])
                if conditions[name]["adapters"]:
                    overhead.append(wall - item.meta["seconds_taken"])
        forward = time_denoiser(folder, args.seconds, args.forward_repeats)

    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"DiT {n_params / 1e6:.1f} M parameters, LoRA rank {args.rank} on attention+time_mlp, "
        f"{args.seconds:g} s audio, {args.steps} steps, CFG, {args.threads} threads, "
        f"{args.repeats} interleaved repeats (median)"
    )
    for name in names:
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"  {name:8s} {med[name]:.3f} s per item  (range {spread})")
    print(f"  fused   / base = {med['fused'] / med['base']:.3f}   (goal <= 1.02)")
    print(f"  unfused / base = {med['unfused'] / med['base']:.3f}")
    print(
        f"  per-call adapter load+unload (+fuse) outside the pipeline: "
        f"{statistics.median(overhead):.3f} s median"
    )
    fmed = {name: statistics.median(v) for name, v in forward.items()}
    print(f"denoiser forward only (CFG batch 2), {args.forward_repeats} interleaved repeats:")
    for name in names:
        print(f"  {name:8s} {1000 * fmed[name]:.1f} ms")
    print(f"  fused   / base = {fmed['fused'] / fmed['base']:.3f}   (goal <= 1.02)")
    print(f"  unfused / base = {fmed['unfused'] / fmed['base']:.3f}")


if __name__ == "__main__":
    main()
