"""Stable Audio 3: ``StableAudio3Pipeline`` (StableAudio3DiTModel + AutoencoderSAME + T5Gemma).

Objective: rectified flow (flow matching), velocity prediction. The pipeline samples with
``FlowMatchEulerDiscreteScheduler`` (``num_train_timesteps=1``, ``shift=1``; deterministic
Euler for the base checkpoint, ``stochastic_sampling=True`` "ping-pong" for the distilled
one). With the noise level ``sigma`` in [0, 1]::

    x_sigma = (1 - sigma) * x0 + sigma * noise        target v = noise - x0

and the DiT receives ``timestep = sigma * num_train_timesteps`` (= ``sigma`` for SA3: the
scheduler's timesteps are its sigmas). The sampler's step is ``x0 = x - sigma * v``; the
``shift`` only warps which sigmas the sampler visits, never this parameterisation.

Training draws ``sigma = sigmoid(-logsnr)`` with ``logsnr ~ U[logsnr_min, logsnr_max]``, the
pipeline's defaults (-6.2, 2.0): the range and spacing the pipeline's sampling schedule
(:func:`~diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3.logsnr_sigma_schedule`)
walks, i.e. ``sigma`` in about [0.12, 1.0) (stable-audio-tools' ``log_snr_uniform`` sampler).

Conditioning: T5Gemma text tokens plus one duration token (``seconds_total``) for
cross-attention, and the same duration embedding as the global (AdaLN) input.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch
from diffusers import StableAudio3Pipeline

from lora_audio.models.base import (
    Conditioning,
    ProgressCallback,
    TrainingInputs,
    WaveformVAEModel,
    rand,
    randn,
)

log = logging.getLogger(__name__)

#: log-SNR range of the pipeline's sampling schedule (``StableAudio3Pipeline.__call__`` defaults)
LOGSNR_MIN = -6.2
LOGSNR_MAX = 2.0
#: duration used when ``encode_prompt`` gets no ``seconds`` (the pipeline's default ``duration``)
DEFAULT_SECONDS = 10.0


def logsnr_uniform_sigmas(u: torch.Tensor, logsnr_min: float, logsnr_max: float) -> torch.Tensor:
    """Map uniform draws ``u`` ``[B]`` in [0, 1) to flow-matching sigmas ``[B]``.

    ``logsnr = logsnr_max - u (logsnr_max - logsnr_min)``, ``sigma = sigmoid(-logsnr)``: the
    same map the pipeline's schedule applies to its linear grid, so training covers exactly
    the noise levels sampling uses, with the same density.
    """
    return torch.sigmoid(-(logsnr_max - u * (logsnr_max - logsnr_min)))


def flow_matching_inputs(
    latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified-flow noising: ``(x_sigma, v)`` with ``x_sigma = (1 - s) x0 + s noise``, ``v = noise - x0``.

    ``latents``/``noise``: ``[B, ...]``; ``sigma``: ``[B]`` in [0, 1].
    """
    s = sigma.to(latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
    return (1 - s) * latents + s * noise, noise - latents


class StableAudio3Model(WaveformVAEModel):
    family = "stable-audio-3"
    pipeline_class = StableAudio3Pipeline
    denoiser_name = "transformer"
    objective = "flow_matching"
    frame_axis = 2  # latents [B, C, L]
    target_groups: ClassVar[dict[str, str]] = {
        # self-attention fuses q1|q2|k1|k2|v into to_qkv; cross-attention has to_q and to_kv
        "attention": (
            r"transformer_blocks\.\d+\."
            r"(self_attn\.(to_qkv|to_out)|cross_attn\.(to_q|to_kv|to_out))"
        ),
        "time_mlp": r"to_timestep_embed\.[02]",
        "output": r"proj_out",
    }
    expected_layout = (
        "model_index.json, transformer/ (StableAudio3DiTModel), vae/ (AutoencoderSAME), "
        "text_encoder/ (T5GemmaEncoderModel) + tokenizer/ (Gemma), duration_embedder/, "
        "scheduler/ (FlowMatchEulerDiscreteScheduler) (as in stabilityai/stable-audio-3-medium)"
    )

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame (the SAME codec's downsampling ratio)."""
        return int(self.pipe.vae.downsampling_ratio)

    @property
    def max_seconds(self) -> float:
        """Longest duration the duration conditioning distinguishes (``max_val``, clamped above)."""
        return float(self.pipe.duration_embedder.config.max_val)

    def latent_shape(self, seconds: float) -> tuple[int, int]:
        frames = math.ceil(seconds * self.sample_rate / self.hop_length)
        return (int(self.pipe.vae.config.latent_dim), frames)

    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, latent_dim, ceil(T / hop)]``; T is zero-padded to a hop multiple.

        The SAME codec is deterministic (no posterior to sample), so ``generator`` is unused.
        """
        vae = self.pipe.vae
        pad = (-audio.shape[-1]) % self.hop_length
        audio = torch.nn.functional.pad(audio, (0, pad)).to(self.device, vae.dtype)
        return vae.encode(audio).latents

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode(latents.to(self.device, vae.dtype)).sample

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], seconds: list[float] | None = None) -> Conditioning:
        """T5Gemma text tokens plus the duration token, exactly as the pipeline builds them.

        Returns ``encoder_hidden_states [B, S + 1, D]`` (text tokens, then the duration
        embedding), ``encoder_attention_mask [B, S + 1]`` (int64, 1 = real token; padded text
        positions get the DiT's learned padding embedding) and ``global_hidden_states [B, D]``
        (the duration embedding, AdaLN input). ``seconds`` is each item's duration (default
        :data:`DEFAULT_SECONDS`, the pipeline's default).
        """
        pipe = self.pipe
        prompts = list(prompts)
        seconds = list(seconds) if seconds is not None else [DEFAULT_SECONDS] * len(prompts)
        if len(seconds) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(seconds)} durations")
        text, mask = pipe.encode_prompt(prompts, self.device, num_waveforms_per_prompt=1)
        durations = torch.tensor(seconds, dtype=torch.float32, device=self.device)
        glob = pipe.duration_embedder(durations)
        context, context_mask = pipe.prepare_cross_attention(text, mask, glob)
        return {
            "encoder_hidden_states": context,
            "encoder_attention_mask": context_mask.long(),
            "global_hidden_states": glob,
        }

    @property
    def num_train_timesteps(self) -> float:
        """Denoiser timestep per unit sigma (1 for the SA3 scheduler)."""
        return float(self.pipe.scheduler.config.num_train_timesteps)

    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        """Noise to ``sigma`` (log-SNR-uniform, see the module doc) unless ``timesteps`` given.

        ``timesteps`` ``[B]`` are in the denoiser's unit: ``sigma * num_train_timesteps``.
        """
        if timesteps is None:
            u = rand(latents.shape[0], generator, latents.device)
            sigma = logsnr_uniform_sigmas(u, LOGSNR_MIN, LOGSNR_MAX)
            timesteps = sigma * self.num_train_timesteps
        else:
            timesteps = timesteps.to(latents.device, torch.float32)
            sigma = timesteps / self.num_train_timesteps
        noise = randn(latents.shape, generator, latents.device, latents.dtype)
        noisy, target = flow_matching_inputs(latents, noise, sigma)
        return TrainingInputs(noisy=noisy, timesteps=timesteps, target=target)

    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """Velocity ``[B, C, L]`` for ``noisy`` ``[B, C, L]`` at ``timesteps`` ``[B]``."""
        return self.pipe.transformer(
            noisy,
            timesteps.to(noisy.device, torch.float32),
            encoder_hidden_states=conditioning["encoder_hidden_states"].to(noisy.dtype),
            global_hidden_states=conditioning["global_hidden_states"].to(noisy.dtype),
            encoder_attention_mask=conditioning["encoder_attention_mask"],
            return_dict=False,
        )[0]

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
        """Run the pipeline. The distilled checkpoint (ping-pong scheduler) wants
        ``steps=8, guidance=1`` (its CFG is baked in); the base checkpoint ~100 steps with CFG.
        """
        if guidance > 1.0 and self.pipe.scheduler.config.stochastic_sampling:
            log.warning(
                "guidance %.3g > 1 on a distilled (ping-pong) Stable Audio 3 checkpoint, whose "
                "guidance is baked in; guidance 1 is the intended setting",
                guidance,
            )
        generator = torch.Generator(self.device).manual_seed(seed)

        def on_step(_pipe, i: int, _t, kwargs: dict) -> dict:
            if progress is not None:
                progress(i + 1, steps)
            return kwargs

        out = self.pipe(
            prompt,
            duration=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            negative_prompt=negative_prompt,
            generator=generator,
            callback_on_step_end=on_step,
            output_type="pt",
        )
        return out.audios.float().cpu()
