"""Cost of a LoRA training step on a ~20 M-parameter Stable Audio DiT, measured side by side.

Modes, interleaved (one step of each per round, medians over rounds):

* ``frozen``    forward + activation backward of the frozen base (no weight gradients)
* ``lora-p0``   LoRA r=8 on attention + time MLP, dropout 0, with its AdamW step
* ``lora-rank`` the same with dropout 0.25 on the rank-r activation, B(drop(A x)) (default)
* ``lora-input``the same with PEFT's dropout 0.25 on the full-width input, B(A drop(x))
* ``full``      full fine-tune: every weight's gradient + AdamW step
* ``lora-rank+ckpt`` lora-rank with gradient checkpointing

Memory: bytes of activations saved for backward at the end of the forward pass (counted
with ``torch.autograd.graph.saved_tensors_hooks``, unique storages), which is what gradient
checkpointing trades for recomputation; on CUDA also the allocator's peak.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_step.py [--rounds 15] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from lora_audio.adapters import add_lora, count_parameters, select_modules
from lora_audio.config import LoraSection
from lora_audio.models.base import with_peft_mixin
from lora_audio.models.stable_audio import StableAudioModel

#: ~21 M parameters: 4 blocks of width 512 (8 heads of 64), Stable Audio Open's layout
DIT = {
    "sample_size": 256,
    "in_channels": 64,
    "num_layers": 4,
    "attention_head_dim": 64,
    "num_attention_heads": 8,
    "num_key_value_attention_heads": 4,
    "out_channels": 64,
    "cross_attention_dim": 512,
    "time_proj_dim": 256,
    "global_states_input_dim": 512,
    "cross_attention_input_dim": 256,
}
MODES = ["frozen", "lora-p0", "lora-rank", "lora-input", "full", "lora-rank+ckpt"]


def build(mode: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer | None]:
    torch.manual_seed(0)
    dit = with_peft_mixin(StableAudioDiTModel(**DIT)).to(device)
    dit.requires_grad_(mode == "full")
    if mode.startswith("lora"):
        dropout = 0.0 if mode == "lora-p0" else 0.25
        placement = "input" if mode == "lora-input" else "rank"
        lora = LoraSection(rank=8, alpha=8, dropout=dropout, dropout_placement=placement)
        names = select_modules(dit, StableAudioModel.target_groups, lora)
        add_lora(dit, names, lora)
    if mode.endswith("+ckpt"):
        dit.enable_gradient_checkpointing()
    dit.train()
    params = [p for p in dit.parameters() if p.requires_grad]
    return dit, (torch.optim.AdamW(params, lr=1e-4) if params else None)


def make_inputs(batch: int, frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    glob = torch.randn(batch, 1, DIT["global_states_input_dim"], generator=g)
    rotary = get_1d_rotary_pos_embed(
        DIT["attention_head_dim"] // 2, frames + 1, use_real=True, repeat_interleave_real=False
    )
    return {
        "hidden_states": torch.randn(batch, DIT["in_channels"], frames, generator=g).to(device),
        "timestep": torch.rand(batch, generator=g).to(device),
        "encoder_hidden_states": torch.randn(
            batch, 16, DIT["cross_attention_input_dim"], generator=g
        ).to(device),
        "global_hidden_states": glob.to(device),
        "rotary_embedding": tuple(r.to(device) for r in rotary),
    }


class SavedBytes:
    """Sum of unique storages saved for backward while active."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        self.seen[s.data_ptr()] = s.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def step(
    dit: torch.nn.Module, opt: torch.optim.Optimizer | None, inputs: dict, measure: bool = False
) -> int:
    x = inputs["hidden_states"]
    if opt is None:  # frozen: gradient w.r.t. the input only
        x = x.detach().requires_grad_(True)
    counter = SavedBytes()
    ctx = (
        torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t)
        if measure
        else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    )
    with ctx:
        out = dit(**{**inputs, "hidden_states": x}, return_dict=False)[0]
        loss = out.float().pow(2).mean()
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return counter.total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    models = {m: build(m, device) for m in MODES}
    inputs = make_inputs(args.batch, args.frames, device)
    total = count_parameters(models["full"][0])[1]
    trainable = count_parameters(models["lora-rank"][0])[0]
    print(
        f"DiT {total / 1e6:.1f} M parameters; LoRA r=8 on attention + time MLP: "
        f"{trainable:,} trainable; batch {args.batch} x {args.frames} frames; {device}, "
        f"{torch.get_num_threads()} threads"
    )
    saved = {m: step(*models[m], inputs, measure=True) for m in MODES}
    peak: dict[str, int] = {}
    for _ in range(args.warmup):
        for m in MODES:
            step(*models[m], inputs)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]  # interleave, alternate the order
        for m in order:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            step(*models[m], inputs)
            if device.type == "cuda":
                torch.cuda.synchronize()
                peak[m] = max(peak.get(m, 0), torch.cuda.max_memory_allocated())
            times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    base = med["frozen"]
    print(f"\n{'mode':<16} {'median ms':>10} {'x frozen':>9} {'x full':>7} {'saved act. MB':>14}")
    for m in MODES:
        line = f"{m:<16} {med[m] * 1e3:>10.1f} {med[m] / base:>9.2f} {med[m] / med['full']:>7.2f}"
        line += f" {saved[m] / 1e6:>14.1f}"
        if m in peak:
            line += f"  peak {peak[m] / 1e6:.0f} MB"
        print(line)
    ck, nock = "lora-rank+ckpt", "lora-rank"
    print(
        f"\nLoRA (dropout 0.25 on rank) / frozen fwd+act-bwd: {med[nock] / base:.2f}x (goal <= 1.15)"
        f"\nLoRA (dropout 0.25 on rank) / full fine-tune:      {med[nock] / med['full']:.2f}x (goal <= 0.75)"
        f"\nPEFT input dropout 0.25 / frozen:                  {med['lora-input'] / base:.2f}x"
        f"\ngradient checkpointing: saved activations {100 * (1 - saved[ck] / saved[nock]):.0f} % less"
        f" (goal >= 40 %), time {100 * (med[ck] / med[nock] - 1):+.0f} % (goal <= +35 %)"
    )


if __name__ == "__main__":
    main()
