"""Model families behind one interface (:class:`~lora_audio.models.base.AudioModel`).

``load_model(family, path)`` picks the family by name. ``path`` is a local diffusers pipeline
folder, a hub id (online only), or ``tiny:<family>``: a tiny randomly initialised model built
offline from a fixed seed (see :mod:`lora_audio.testing`), used by tests and ``configs/tiny``.
"""

from __future__ import annotations

import importlib
import os

import torch

from lora_audio.models.base import AudioModel, Conditioning, ModelLoadError, TrainingInputs

#: family name -> "module:Class"; modules are imported only when used.
FAMILIES: dict[str, str] = {
    "stable-audio": "lora_audio.models.stable_audio:StableAudioModel",
}

TINY_PREFIX = "tiny:"

__all__ = [
    "FAMILIES",
    "AudioModel",
    "Conditioning",
    "ModelLoadError",
    "TrainingInputs",
    "family_class",
    "load_model",
    "resolve_model_path",
]


def family_class(family: str) -> type[AudioModel]:
    """The :class:`AudioModel` subclass registered under ``family``."""
    if family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}"
        )
    module_name, cls_name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def resolve_model_path(family: str, path: str | os.PathLike) -> str:
    """Turn ``tiny:<family>`` into its cached folder (building it once); other paths pass through."""
    path = str(path)
    if not path.startswith(TINY_PREFIX):
        return path
    from lora_audio.testing import tiny_model_dir

    tiny_family = path[len(TINY_PREFIX) :] or family
    if tiny_family != family:
        raise ModelLoadError(
            f"model.path {path!r} is a tiny {tiny_family} model but model.family is {family!r}"
        )
    return str(tiny_model_dir(tiny_family))


def load_model(
    family: str,
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioModel:
    """Load ``family``'s pipeline from ``path`` (folder, hub id, or ``tiny:<family>``)."""
    cls = family_class(family)
    model = cls.from_pretrained(resolve_model_path(family, path), device=device, dtype=dtype)
    model.source = str(path)  # what the user named (recorded in adapters), e.g. tiny:stable-audio
    return model
