"""The one interface every model family implements.

A family wraps one diffusers pipeline and exposes exactly what the rest of lora-audio needs:

* audio format: :attr:`AudioModel.sample_rate`, :attr:`AudioModel.audio_channels`,
  :meth:`AudioModel.latent_shape` for N seconds;
* codecs: :meth:`AudioModel.encode_audio` (``[B, C, T]`` waveform -> latents) and
  :meth:`AudioModel.decode_latents` (latents -> ``[B, C, T]``);
* conditioning: :meth:`AudioModel.encode_prompt` returns a ``dict[str, Tensor]`` whose tensors
  all have batch as their first axis, so it can be cached with safetensors and sliced/stacked;
* the trainable part: :attr:`AudioModel.denoiser` (a module with diffusers' ``PeftAdapterMixin``)
  and :attr:`AudioModel.target_groups` (LoRA group name -> regex over its module names);
* the training objective matching the pipeline's sampler: :meth:`sample_training_inputs`,
  :meth:`predict` and :meth:`training_loss` (masked MSE over latent frames);
* :meth:`AudioModel.generate`, which runs the diffusers pipeline itself.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Conditioning tensors, batch-first, safetensors-serialisable.
Conditioning = dict[str, torch.Tensor]
#: Progress callback for generation: ``callback(step, total_steps)``.
ProgressCallback = Callable[[int, int], None]


class ModelLoadError(RuntimeError):
    """A model folder or hub id could not be loaded; the message says what to do."""


@dataclass
class TrainingInputs:
    """One noised batch for the training objective.

    ``noisy`` has the latents' shape, ``timesteps`` is ``[B]`` in the unit the denoiser takes,
    ``target`` is what the denoiser must predict (v, velocity or epsilon), latents' shape.
    """

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


def with_peft_mixin(module: nn.Module) -> nn.Module:
    """Give ``module`` diffusers' ``PeftAdapterMixin`` (add/save/load/fuse LoRA) in place.

    ``StableAudioDiTModel`` and AudioLDM2's UNet lack the mixin. We swap the instance's class
    for a subclass that has it and keeps the original class name (so ``save_pretrained``
    writes the same ``_class_name`` and diffusers' per-class look-ups still apply).
    """
    from diffusers.loaders.peft import PeftAdapterMixin

    cls = type(module)
    if not isinstance(module, PeftAdapterMixin):
        peft_cls = _PEFT_CLASSES.get(cls)
        if peft_cls is None:
            peft_cls = type(cls.__name__, (cls, PeftAdapterMixin), {"__module__": cls.__module__})
            _PEFT_CLASSES[cls] = peft_cls
        module.__class__ = peft_cls
    return module


_PEFT_CLASSES: dict[type, type] = {}


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, frame_axis: int
) -> torch.Tensor:
    """Mean squared error over valid latent frames.

    ``pred``/``target``: latents' shape ``[B, ...]``; ``mask``: ``[B, L]`` (1 = real frame,
    0 = padding) where ``L = pred.shape[frame_axis]``; ``None`` means all frames count.
    """
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        return err.mean()
    if mask.shape != (pred.shape[0], pred.shape[frame_axis]):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match batch/frames "
            f"{(pred.shape[0], pred.shape[frame_axis])}"
        )
    shape = [1] * pred.ndim
    shape[0], shape[frame_axis] = mask.shape
    m = mask.to(err.dtype).reshape(shape).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


class AudioModel(ABC):
    """A loaded pipeline of one family. Build it with :meth:`from_pretrained`."""

    #: family name used in configs (``model.family``)
    family: ClassVar[str]
    #: the diffusers pipeline class
    pipeline_class: ClassVar[type]
    #: attribute of the pipeline holding the denoiser, also the key prefix in LoRA files
    denoiser_name: ClassVar[str] = "transformer"
    #: "v_prediction" | "flow_matching" | "epsilon"
    objective: ClassVar[str]
    #: axis of the latent frames (time) in a latent batch
    frame_axis: ClassVar[int]
    #: LoRA target group -> regex (``re.fullmatch``) over the denoiser's module names
    target_groups: ClassVar[dict[str, str]]
    #: folder layout the loader expects, quoted in errors
    expected_layout: ClassVar[str]

    def __init__(self, pipe: Any, source: str, folder: Path | None) -> None:
        self.pipe = pipe
        self.source = source
        self.folder = folder
        with_peft_mixin(self.denoiser)
        pipe.set_progress_bar_config(disable=True)
        self._empty_prompt: dict[Any, Conditioning] = {}  # see unconditional

    # ----------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> AudioModel:
        """Load the pipeline from a local folder, or a hub id when online.

        Raises :class:`ModelLoadError` naming the expected folder layout when it cannot.
        """
        source = str(path)
        local = Path(source).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise ModelLoadError(
                    f"{local}: not a diffusers pipeline folder (no model_index.json). "
                    f"Expected layout for {cls.family}: {cls.expected_layout}"
                )
            try:
                pipe = cls.pipeline_class.from_pretrained(str(local), dtype=dtype)
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(
                    f"{local}: could not load a {cls.pipeline_class.__name__} ({exc}). "
                    f"Expected layout: {cls.expected_layout}"
                ) from exc
            folder: Path | None = local
        else:
            try:
                pipe = cls.pipeline_class.from_pretrained(source, dtype=dtype)
            except Exception as exc:
                raise ModelLoadError(
                    f"{source}: no such folder, and it could not be fetched from the hub ({type(exc).__name__}). "
                    f"Offline, download it first and pass the folder; expected layout for {cls.family}: "
                    f"{cls.expected_layout}"
                ) from exc
            folder = _hub_snapshot_folder(source)
        model = cls(pipe, source, folder)
        model.to(device)
        model.denoiser.requires_grad_(False)
        return model

    def to(self, device: str | torch.device) -> AudioModel:
        """Move the whole pipeline to ``device``."""
        self.pipe.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @property
    def denoiser(self) -> nn.Module:
        """The module LoRA adapts (DiT or UNet); it carries ``PeftAdapterMixin``."""
        return getattr(self.pipe, self.denoiser_name)

    @property
    def denoiser_folder(self) -> Path | None:
        """Folder holding the denoiser's safetensors files (for the base fingerprint)."""
        return None if self.folder is None else self.folder / self.denoiser_name

    # ------------------------------------------------------------------ audio format
    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Waveform sample rate in Hz."""

    @property
    @abstractmethod
    def audio_channels(self) -> int:
        """Waveform channel count the codec takes and returns."""

    @abstractmethod
    def latent_shape(self, seconds: float) -> tuple[int, ...]:
        """Shape of one item's latents for ``seconds`` of audio (no batch axis)."""

    @abstractmethod
    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Waveform ``[B, C, T]`` at :attr:`sample_rate` -> latents ``[B, *latent_shape]``."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, *latent_shape]`` -> waveform ``[B, C, T]``."""

    # ------------------------------------------------------------------ conditioning
    @abstractmethod
    def encode_prompt(self, prompts: list[str], seconds: list[float] | None = None) -> Conditioning:
        """Text (and, where the family uses it, duration) conditioning; batch-first tensors."""

    def unconditional(self, conditioning: Conditioning, seconds: list[float]) -> Conditioning:
        """The unconditional counterpart of ``conditioning`` (batch-first, items of durations
        ``seconds``): what the family's pipeline feeds the unconditional branch of
        classifier-free guidance when no negative prompt is given. Training with
        ``train.caption_dropout`` puts it in place of dropped captions.

        Default: the empty prompt, encoded (as the Stable Audio 3 and demo pipelines do) one
        duration at a time and kept, so every item gets the very same tensors.
        """
        for s in seconds:
            if s not in self._empty_prompt:
                with torch.no_grad():
                    self._empty_prompt[s] = self.encode_prompt([""], [s])
        rows = [self._empty_prompt[s] for s in seconds]
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    # --------------------------------------------------------------------- objective
    @abstractmethod
    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        """Draw noise (and timesteps ``[B]`` if not given) and build the noised input and target."""

    @abstractmethod
    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """Run the denoiser; returns the prediction in the objective's parameterisation."""

    def training_loss(
        self,
        latents: torch.Tensor,
        conditioning: Conditioning,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss for clean ``latents`` under :attr:`objective`, masked over padded frames."""
        inputs = self.sample_training_inputs(latents, generator, timesteps)
        pred = self.predict(inputs.noisy, inputs.timesteps, conditioning)
        return masked_mse(pred, inputs.target, mask, self.frame_axis)

    # -------------------------------------------------------------------- generation
    @abstractmethod
    def generate(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        seconds: float = 10.0,
        steps: int = 100,
        guidance: float = 7.0,
        seed: int = 0,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """Run the diffusers pipeline; returns waveforms ``[B, C, T]`` (float32, CPU)."""


def _hub_snapshot_folder(repo_id: str) -> Path | None:
    """Local cache folder of a hub model that diffusers just loaded (for fingerprints)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # the folder is only needed for fingerprints
        log.debug("no local snapshot for %s", repo_id)
        return None


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device).to(device, dtype)


def rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniform draws in [0, 1) (float32) on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


class WaveformVAEModel(AudioModel):
    """A family whose VAE encodes waveforms directly (Oobleck, SAME): the audio format is the
    VAE config's ``sampling_rate`` and ``audio_channels``."""

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.pipe.vae.config.audio_channels)
