"""Learning-rate schedule: linear warm-up, then cosine annealing down to a floor.

A pure function of the step, so a resumed run needs only the step to be on schedule.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the update that makes step + 1).

    * warm-up, ``step < warmup_steps``: ``lr * (step + 1) / (warmup_steps + 1)``, rising
      linearly and never 0;
    * then cosine from ``lr`` (at ``step == warmup_steps``) to ``min_lr`` (at ``max_steps``);
    * after ``max_steps``: ``min_lr``.
    """
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    span = max(max_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: Optimizer, value: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = value
