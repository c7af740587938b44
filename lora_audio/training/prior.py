"""Prior preservation (DreamBooth, Ruiz et al. 2023): clips the base model generates for prompts
of its own style, mixed into LoRA training so that those prompts keep sounding as before.

Without it a LoRA trained on one style moves every prompt towards that style. With it, a share
of the training items (``train.prior_share``) are the base model's own clips for
``train.prior_prompts``, so the adapter is also trained to leave them where they were.

The clips are generated once, before LoRA is injected (``train.sample_steps`` and
``train.sample_guidance``, ``data.seconds`` long, seeds derived from ``train.seed``), encoded to
latents like the cached segments (posterior mean, all frames valid) and kept in
``<run>/prior.safetensors``; their audio goes to ``<run>/prior/`` to listen to.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from lora_audio.data import Item
from lora_audio.models.base import AudioModel

log = logging.getLogger(__name__)

PRIOR_FILE = "prior.safetensors"
PRIOR_AUDIO = "prior"


@dataclass(frozen=True)
class PriorSettings:
    """What the prior clips depend on; a saved set with other settings is generated anew."""

    prompts: list[str]
    clips_per_prompt: int
    seconds: float
    steps: int
    guidance: float
    seeds: list[list[int]]  # [prompt][clip]
    base_fingerprint: str


def generate_prior(
    model: AudioModel, settings: PriorSettings, audio_dir: Path | None
) -> list[Item]:
    """Base-model clips -> training items (the :class:`~lora_audio.data.LatentDataset` layout):
    ``latents [*latent_shape(seconds)]``, ``mask [L]`` (all ones), ``cond`` (unbatched).

    ``model`` must be the base (no LoRA yet). Writes each clip's audio to ``audio_dir``.
    """
    from lora_audio.audio import write_audio
    from preprocessing.latent_cache import frame_mask

    seconds = settings.seconds
    samples = round(seconds * model.sample_rate)
    shape = model.latent_shape(seconds)
    mask = frame_mask(model, seconds, seconds)
    items: list[Item] = []
    for i, prompt in enumerate(settings.prompts):
        with torch.no_grad():
            cond = model.encode_prompt([prompt], [seconds])
        for seed in settings.seeds[i]:
            with torch.no_grad():
                audio = model.generate(
                    prompt, seconds=seconds, steps=settings.steps, guidance=settings.guidance,
                    seed=seed,
                )  # fmt: skip
                audio = F.pad(audio, (0, max(0, samples - audio.shape[-1])))[..., :samples]
                latents = model.encode_audio(audio.to(model.device, model.dtype))
            if tuple(latents.shape[1:]) != tuple(shape):
                raise RuntimeError(
                    f"prior clip latents {tuple(latents.shape[1:])} != cache shape {tuple(shape)}"
                )
            if audio_dir is not None:
                write_audio(
                    audio_dir / f"p{i:03d}_s{seed}.wav", audio[0].float().numpy(), model.sample_rate
                )
            items.append(
                {
                    "latents": latents[0].float().cpu(),
                    "mask": mask.clone(),
                    "cond": {k: v[0].float().cpu().clone() for k, v in cond.items()},
                    "key": f"prior-{i:03d}-{seed}",
                    "segment": f"prior: {prompt} (seed {seed})",
                    "variant": "clean",
                    "valid_seconds": float(seconds),
                }
            )
        log.info("prior: %d clips of %r", len(settings.seeds[i]), prompt)
    return items


def save_prior(path: Path, settings: PriorSettings, items: list[Item]) -> None:
    """Items + settings to one safetensors file (written to a temporary name, then renamed)."""
    tensors: dict[str, torch.Tensor] = {}
    for n, it in enumerate(items):
        tensors[f"{n}.latents"] = it["latents"].contiguous()
        tensors[f"{n}.mask"] = it["mask"].contiguous()
        for name, t in it["cond"].items():
            tensors[f"{n}.cond.{name}"] = t.contiguous()
    meta = {
        "settings": json.dumps(asdict(settings)),
        "items": json.dumps([[it["key"], it["segment"], it["valid_seconds"]] for it in items]),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_prior(path: Path, settings: PriorSettings) -> list[Item] | None:
    """The items saved in ``path``, or None if there is no file or it has other settings."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("settings") != json.dumps(asdict(settings)):
            return None
        rows = json.loads(meta["items"])
        names = list(f.keys())
        items = []
        for n, (key, segment, valid) in enumerate(rows):
            prefix = f"{n}.cond."
            items.append(
                {
                    "latents": f.get_tensor(f"{n}.latents"),
                    "mask": f.get_tensor(f"{n}.mask"),
                    "cond": {
                        k[len(prefix) :]: f.get_tensor(k) for k in names if k.startswith(prefix)
                    },
                    "key": key,
                    "segment": segment,
                    "variant": "clean",
                    "valid_seconds": float(valid),
                }
            )
    return items
