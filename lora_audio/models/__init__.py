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
    "ace-step": "lora_audio.models.ace_step:AceStepModel",
    "audioldm2": "lora_audio.models.audioldm2:AudioLDM2Model",
    "demo": "lora_audio.models.demo:DemoModel",
    "stable-audio": "lora_audio.models.stable_audio:StableAudioModel",
    "stable-audio-3": "lora_audio.models.stable_audio_3:StableAudio3Model",
}

TINY_PREFIX = "tiny:"
#: ``demo:<name>``: a demo model shipped with lora-audio (see :mod:`lora_audio.demo_model`)
DEMO_PREFIX = "demo:"

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
    if path.startswith(DEMO_PREFIX):
        return str(_demo_model_dir(path))
    if not path.startswith(TINY_PREFIX):
        return path
    from lora_audio.testing import tiny_model_dir

    tiny_family = path[len(TINY_PREFIX) :] or family
    if tiny_family != family:
        raise ModelLoadError(
            f"model.path {path!r} is a tiny {tiny_family} model but model.family is {family!r}"
        )
    return str(tiny_model_dir(tiny_family))


def _demo_model_dir(path: str):
    """The shipped folder of ``demo:<name>``; a clear error if unknown or not installed."""
    from lora_audio.demo_model import DEMO_MODELS

    folder = DEMO_MODELS.get(path)
    if folder is None:
        raise ModelLoadError(
            f"model.path {path!r}: unknown demo model; have {', '.join(DEMO_MODELS)}"
        )
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"model.path {path!r}: {folder} holds no weights; train them with "
            f"`lora-audio pretrain-demo --work-dir DIR --out {folder}`"
        )
    return folder


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
