"""Early stopping on validation loss, with patience counted in evaluations."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class EarlyStopping:
    """Track the best validation loss; say when to stop.

    An evaluation *improves* when ``loss < best - min_delta``. After ``patience`` evaluations
    in a row without improvement, :meth:`update` sets :attr:`stop` and :attr:`reason`.
    ``patience = 0`` never stops. The first evaluation (the untrained baseline at step 0)
    always sets the first best.
    """

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stop: bool = False
    reason: str = ""
    history: list[tuple[int, float]] = field(default_factory=list)

    def update(self, step: int, loss: float) -> bool:
        """Record ``loss`` at ``step``; returns True when this evaluation is the new best."""
        self.history.append((step, float(loss)))
        if math.isfinite(loss) and loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad_evals = float(loss), step, 0
            return True
        self.bad_evals += 1
        if self.patience and self.bad_evals >= self.patience:
            self.stop = True
            self.reason = (
                f"early stopping at step {step}: validation loss did not improve on "
                f"{self.best:.6g} (step {self.best_step}) by more than {self.min_delta:g} "
                f"for {self.bad_evals} evaluations (patience {self.patience})"
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (``inf`` is written as None)."""
        state = asdict(self)
        state["best"] = None if math.isinf(self.best) else self.best
        state["history"] = [list(h) for h in self.history]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self.best = math.inf if state.get("best") is None else float(state["best"])
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
