"""The built-in demo model: its builder, its pretraining script and its shipped weights.

``lora_audio/demo_model/weights/`` is a diffusers pipeline folder (``DemoMusicPipeline``, see
:mod:`lora_audio.models.demo`) written by ``lora-audio pretrain-demo``; ``model.path: demo:base``
resolves to it.
"""

from __future__ import annotations

from pathlib import Path

#: the shipped pipeline folder
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: ``model.path`` aliases of shipped demo models -> folder
DEMO_MODELS: dict[str, Path] = {"demo:base": WEIGHTS_DIR}
