"""`lora-audio studio`: a local web page to generate with the base model and LoRA adapters.

:mod:`lora_audio.studio.jobs` holds the model, the adapters offered, the output folder and a
queue run by one worker thread (one generation at a time), calling the same
:func:`~lora_audio.generation.run_plan` / :func:`~lora_audio.generation.write_results` as
``lora-audio infer``. :mod:`lora_audio.studio.app` puts a FastAPI app in front of it: the
page, a JSON API, Server-Sent Events for live progress and the output files (nothing outside
the output folder). :mod:`lora_audio.studio.cli` is the command.
"""

from __future__ import annotations


class StudioError(ValueError):
    """A request the studio refuses; ``str(err)`` is one line saying what to change."""
