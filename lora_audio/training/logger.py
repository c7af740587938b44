"""Metric logging: ``metrics.jsonl`` rows (read by the evaluation report) and TensorBoard."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricLogger:
    """Append ``{"step": ..., <name>: value}`` rows to ``metrics.jsonl``; mirror to TensorBoard.

    Each row is flushed at once, so the file is readable while training runs. On resume, rows
    past the resumed step are dropped first (:meth:`truncate_after`), so the file has no
    duplicates. TensorBoard is used when ``tb_dir`` is given and the package is installed.
    """

    def __init__(self, path: str | Path, tb_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._tb = None
        if tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(tb_dir))
            except ImportError:
                log.warning("tensorboard is not installed: logging to metrics.jsonl only")

    @staticmethod
    def truncate_after(path: str | Path, step: int) -> None:
        """Keep only the rows of ``path`` with ``row["step"] <= step``."""
        path = Path(path)
        if not path.is_file():
            return
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", 0) <= step]
        path.write_text("".join(r + "\n" for r in kept), encoding="utf-8")

    def log(self, step: int, **values: Any) -> None:
        row = {"step": int(step)}
        for key, value in values.items():
            row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
