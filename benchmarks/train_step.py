"""Cost of a LoRA training step on a ~20 M-parameter Stable Audio DiT, measured side by side.

Modes, interleaved (one step of each per round, order rotated every round; ``timing.py``:
CPU time of the work as the main figure, wall clock beside it, ratios of medians with the
per-round quartiles):

* ``frozen``    forward + activation backward of the frozen base (no weight gradients)
* ``lora-p0``   LoRA r=8 on attention + time MLP, dropout 0, with its AdamW step, built by
  :func:`lora_audio.adapters.add_lora` as training does (update added in one GEMM)
* ``lora-rank`` the same with dropout 0.25 on the rank-r activation, B(drop(A x)) (default)
* ``lora-peft`` plain PEFT for reference: dropout 0.25 on the full-width input, B(A drop(x)),
  and the update scaled and added in separate passes
* ``full``      full fine-tune: every weight's gradient + AdamW step
* ``lora-rank+ckpt`` lora-rank with gradient checkpointing
* ``lora-rank+ckpt2`` the same keeping every 2nd block's activations
  (``train.checkpoint_keep_every=2``)

Memory, from one extra step of each mode: the peak of the bytes the step allocates (tensors
created by its ops, freed ones subtracted, tracked with a ``TorchDispatchMode``; on CUDA the
allocator's peak instead), and the bytes of activations saved for backward at the end of the
forward pass (``torch.autograd.graph.saved_tensors_hooks``, unique storages), which is what
gradient checkpointing trades for recomputation.

    .venv/bin/python benchmarks/train_step.py [--threads 1] [--rounds 15] [--batch 8]
"""

from __future__ import annotations

import argparse
import weakref

import torch
from diffusers import StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from timing import Clock, format_ratio, median, new_times, ratio, rotated
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lora_audio.adapters import add_lora, count_parameters, select_modules
from lora_audio.config import LoraSection
from lora_audio.models.base import with_peft_mixin
from lora_audio.models.stable_audio import StableAudioModel
from lora_audio.training.recompute import RecomputeBlocks

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
MODES = ["frozen", "lora-p0", "lora-rank", "lora-peft", "full", "lora-rank+ckpt", "lora-rank+ckpt2"]


def build(mode: str, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer | None]:
    torch.manual_seed(0)
    dit = with_peft_mixin(StableAudioDiTModel(**DIT)).to(device)
    dit.requires_grad_(mode == "full")
    if mode.startswith("lora"):
        dropout = 0.0 if mode == "lora-p0" else 0.25
        placement = "input" if mode == "lora-peft" else "rank"
        lora = LoraSection(rank=8, alpha=16, dropout=dropout, dropout_placement=placement)
        names = select_modules(dit, StableAudioModel.target_groups, lora)
        add_lora(dit, names, lora)
        if mode == "lora-peft":  # PEFT's own forward: drop the one-GEMM variant
            for m in dit.modules():
                getattr(m, "lora_variant", {}).pop("default", None)
    if "+ckpt" in mode:
        keep_every = 2 if mode.endswith("ckpt2") else 0
        dit.enable_gradient_checkpointing(RecomputeBlocks(keep_every))
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


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the storages that ops allocate while active (freed ones subtracted).

    An op's output that shares storage with one of its inputs (a view, an in-place op) is
    not new memory. Storages are tracked with ``weakref.finalize``: torch keeps one Python
    object per live storage, so the finalizer runs when the memory is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, ptr: int) -> None:
        self.now -= self.live.pop(ptr, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in self.live and ptr not in given:
                self.live[ptr] = storage.nbytes()
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
                weakref.finalize(storage, self._free, ptr)
        return out


def step(dit: torch.nn.Module, opt: torch.optim.Optimizer | None, inputs: dict) -> None:
    """One training step: forward, loss, backward, optimizer step (none for ``frozen``)."""
    x = inputs["hidden_states"]
    if opt is None:  # frozen: gradient w.r.t. the input only
        x = x.detach().requires_grad_(True)
    out = dit(**{**inputs, "hidden_states": x}, return_dict=False)[0]
    loss = out.float().pow(2).mean()
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)


def memory(
    dit: torch.nn.Module, opt: torch.optim.Optimizer | None, inputs: dict
) -> tuple[int, int]:
    """``(peak bytes the step allocates, bytes saved for backward)`` of one step."""
    counter = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        step(dit, opt, inputs)
    if torch.cuda.is_available() and inputs["hidden_states"].is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(dit, opt, inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before, counter.total
    tracker = PeakMemory()
    with tracker:
        step(dit, opt, inputs)
    return tracker.peak, counter.total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = Clock(args.threads)
    models = {m: build(m, device) for m in MODES}
    inputs = make_inputs(args.batch, args.frames, device)
    total = count_parameters(models["full"][0])[1]
    trainable = count_parameters(models["lora-rank"][0])[0]
    print(
        f"DiT {total / 1e6:.1f} M parameters; LoRA r=8 alpha 16 on attention + time MLP: "
        f"{trainable:,} trainable; batch {args.batch} x {args.frames} frames; {device}, "
        f"{torch.get_num_threads()} thread(s); {args.rounds} interleaved rounds"
    )
    mem = {m: memory(*models[m], inputs) for m in MODES}
    times, warm_up = new_times(MODES), new_times(MODES)
    for r in range(args.warmup + args.rounds):
        for m in rotated(MODES, r):
            with clock.measure((times if r >= args.warmup else warm_up)[m]):
                step(*models[m], inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize()
    print(
        f"\n{'mode':<16} {'cpu ms':>8} {'wall ms':>8} {'x frozen':>9} {'x full':>7}"
        f" {'peak MB':>8} {'saved act. MB':>14}"
    )
    for m in MODES:
        cpu, wall = median(times, m), median(times, m, "wall")
        print(
            f"{m:<16} {cpu * 1e3:>8.1f} {wall * 1e3:>8.1f} {ratio(times, m, 'frozen')[0]:>9.3f}"
            f" {ratio(times, m, 'full')[0]:>7.3f} {mem[m][0] / 1e6:>8.1f} {mem[m][1] / 1e6:>14.1f}"
        )
    ck, ck2, nock = "lora-rank+ckpt", "lora-rank+ckpt2", "lora-rank"
    less_peak = 100 * (1 - mem[ck][0] / mem[nock][0])
    less_saved = 100 * (1 - mem[ck][1] / mem[nock][1])
    print(
        "\nLoRA (dropout 0.25 on rank) / frozen fwd+act-bwd: "
        f"{format_ratio(times, nock, 'frozen')}   goal <= 1.15"
        "\nLoRA (dropout 0.25 on rank) / full fine-tune:      "
        f"{format_ratio(times, nock, 'full')}   goal <= 0.75"
        "\nLoRA dropout 0 / frozen:                           "
        f"{format_ratio(times, 'lora-p0', 'frozen')}"
        "\nplain PEFT (input dropout 0.25) / frozen:          "
        f"{format_ratio(times, 'lora-peft', 'frozen')}"
        f"\ngradient checkpointing: peak memory {less_peak:.0f} % less (saved activations "
        f"{less_saved:.0f} % less; goal >= 40 %), time {format_ratio(times, ck, nock)}"
        "   goal <= 1.35"
        f"\n  keeping every 2nd block: peak memory {100 * (1 - mem[ck2][0] / mem[nock][0]):.0f} % "
        f"less (saved activations {100 * (1 - mem[ck2][1] / mem[nock][1]):.0f} % less), time "
        f"{format_ratio(times, ck2, nock)}"
    )


if __name__ == "__main__":
    main()
