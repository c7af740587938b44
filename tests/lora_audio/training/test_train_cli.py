"""The real ``lora-audio train`` command: Ctrl-C writes a checkpoint, --resume finishes the run,
and a 2-process CPU data-parallel run ends with the same adapter on both ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[3]
CONFIG = REPO / "configs" / "tiny" / "stable-audio.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}

pytestmark = pytest.mark.integration


def _args(tiny_dir: Path, manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(CONFIG),
        f"model.path={tiny_dir}",
        f"data.manifest={manifest}",
        f"train.output_dir={out}",
        *extra,
    ]


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes(tiny_dir, manifest, tmp_path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lora_audio.cli", *_args(tiny_dir, manifest, out)]
    proc = subprocess.Popen(
        [*cmd, "train.max_steps=100000", "train.eval_every=5"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and any('"loss"' in line for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGINT received" in err and "continue with --resume" in err
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] >= 5 and not (out / "adapter").exists()

    done = subprocess.run(
        [
            *cmd,
            "train.max_steps=100000",
            "train.eval_every=5",
            "train.patience=1",
            "train.min_delta=10",
            "--resume",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip  (patience 1, min_delta 10: it ends at the next evaluation)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed" in done.stderr and "adapter:" in done.stdout
    assert (out / "adapter" / "adapter.json").is_file()


def test_two_processes_end_with_the_same_adapter(tiny_dir, manifest, tmp_path) -> None:
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate), "launch", "--num_processes", "2", "--multi_gpu", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lora_audio.cli",
        *_args(tiny_dir, manifest, out, "train.max_steps=10", "train.eval_every=5", "train.batch_size=2"),
    ]  # fmt: skip
    # `--cpu` would make accelerate start ONE process; `--multi_gpu` starts two with torchrun,
    # and train.device=cpu (tiny config) makes them a gloo process group on the CPU.
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rank_hashes"]) == 2
    assert summary["rank_hashes"][0] == summary["rank_hashes"][1]
    assert summary["best_val_loss"] < summary["baseline_val_loss"]
