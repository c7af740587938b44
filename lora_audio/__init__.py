"""lora-audio: teach a pretrained music diffusion model a new style from a few recordings."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def generate(*args: Any, **kwargs: Any) -> Any:
    """Generate with a model and adapters: see :func:`lora_audio.generation.generate`.

    Imported lazily so that ``import lora_audio`` stays light (no torch).
    """
    from lora_audio.generation import generate as _generate

    return _generate(*args, **kwargs)
