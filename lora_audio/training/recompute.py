"""Gradient checkpointing that recomputes only some of the denoiser's blocks."""

from __future__ import annotations

from typing import Any

from torch.utils.checkpoint import checkpoint


class RecomputeBlocks:
    """A ``gradient_checkpointing_func`` for diffusers models (``enable_gradient_checkpointing``).

    diffusers calls it for each block in forward order while training. Blocks are recomputed in
    the backward pass (their activations not kept) except every ``keep_every``-th call, whose
    activations are kept: ``keep_every=0`` recomputes every block (diffusers' default), ``2``
    half of them, trading part of the memory saving for less recomputation. Calls are counted
    across steps, so with a block count that ``keep_every`` does not divide the kept blocks
    rotate from step to step (the same share on average).
    """

    def __init__(self, keep_every: int = 0) -> None:
        if keep_every < 0 or keep_every == 1:
            raise ValueError(f"keep_every must be 0 or >= 2, got {keep_every}")
        self.keep_every = keep_every
        self.calls = 0

    def __call__(self, block: Any, *args: Any) -> Any:
        self.calls += 1
        if self.keep_every and self.calls % self.keep_every == 0:
            return block(*args)
        return checkpoint(block.__call__, *args, use_reentrant=False)
