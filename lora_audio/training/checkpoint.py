"""Training checkpoints: safetensors + JSON only (no pickle), written atomically.

A checkpoint is a folder::

    trainable.safetensors   the trainable (LoRA) parameters by name, float32
    optimizer.safetensors   optimizer state tensors, keys "<param index>.<name>" (exp_avg, ...)
    rng.safetensors         torch CPU (and CUDA) generator states
    state.json              step, optimizer structure (param groups, non-tensor state),
                            parameter names, early stopping, scheduler, anything extra

It is written into a temporary folder beside the target and renamed into place; ``state.json``
is written last, so a folder without it is incomplete and :func:`load_checkpoint` refuses it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim import Optimizer

from lora_audio.files import write_json_atomic, write_safetensors

STATE_NAME = "state.json"
TRAINABLE_NAME = "trainable.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
RNG_NAME = "rng.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or does not match the model."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read; tensors are already copied into model/optimizer."""

    step: int
    state: dict[str, Any] = field(default_factory=dict)


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, detached float32 CPU copies."""
    return {
        n: p.detach().float().cpu().clone() for n, p in module.named_parameters() if p.requires_grad
    }


def load_trainable_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into the module's trainable parameters (same names, all of them)."""
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    if set(params) != set(tensors):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise CheckpointError(
            f"trainable parameters differ from the checkpoint (missing {missing[:3]}, "
            f"unexpected {extra[:3]}); was it made with another lora section?"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n].to(p.device, p.dtype))


def optimizer_to_flat(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON structure."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    structure = {"param_groups": groups, "scalars": scalars, "indices": sorted(sd["state"])}
    return tensors, structure


def optimizer_from_flat(
    optimizer: Optimizer, tensors: dict[str, torch.Tensor], structure: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {int(i): {} for i in structure["indices"]}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state[int(idx)][name] = value
    for idx, entry in structure["scalars"].items():
        state[int(idx)].update(entry)
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in g.items()}
        for g in structure["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state() -> dict[str, torch.Tensor]:
    """Global torch generator states (CPU, and each CUDA device when present)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch_cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    folder: str | Path,
    module: nn.Module,
    optimizer: Optimizer | None,
    step: int,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an older one there); returns it.

    ``state`` holds the rest of the training state, JSON-serialisable (early stopping,
    scheduler, metrics); ``optimizer`` may be None for weights-only checkpoints (best).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        params = trainable_state(module)
        write_safetensors(tmp / TRAINABLE_NAME, params)
        meta: dict[str, Any] = {"step": int(step), "param_names": list(params)}
        if optimizer is not None:
            tensors, structure = optimizer_to_flat(optimizer)
            write_safetensors(tmp / OPTIMIZER_NAME, tensors)
            meta["optimizer"] = structure
        write_safetensors(tmp / RNG_NAME, rng_state())
        meta.update(state or {})
        write_json_atomic(tmp / STATE_NAME, meta)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_state(folder: str | Path) -> dict[str, Any]:
    """The ``state.json`` of a complete checkpoint folder."""
    path = Path(folder) / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no complete checkpoint here (no {STATE_NAME})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_checkpoint(
    folder: str | Path,
    module: nn.Module,
    optimizer: Optimizer | None = None,
    restore_rng: bool = True,
) -> Checkpoint:
    """Load a checkpoint folder into ``module`` (and ``optimizer``, and the global RNG)."""
    folder = Path(folder)
    state = read_state(folder)
    load_trainable_state(module, load_file(str(folder / TRAINABLE_NAME)))
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError(f"{folder}: weights-only checkpoint, no optimizer state")
        optimizer_from_flat(optimizer, load_file(str(folder / OPTIMIZER_NAME)), state["optimizer"])
    if restore_rng:
        set_rng_state(load_file(str(folder / RNG_NAME)))
    return Checkpoint(step=int(state["step"]), state=state)
