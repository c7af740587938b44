"""Stable Audio Open: ``StableAudioPipeline`` (StableAudioDiTModel + AutoencoderOobleck + T5).

Objective: v-prediction on the cosine schedule, as sampled by diffusers'
``CosineDPMSolverMultistepScheduler`` with ``sigma_data = 1``. With ``t ~ U(0, 1)``,
``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``::

    x_t = alpha * x0 + sigma * noise        target v = alpha * noise - sigma * x0

and the DiT receives ``t`` itself. This is exactly the scheduler's preconditioning:
``c_in = 1/sqrt(1 + s^2)``, ``t = atan(s) * 2 / pi``, ``x0 = c_skip x + c_out v`` with
``c_skip = 1/(1+s^2)``, ``c_out = -s/sqrt(1+s^2)`` (s = the EDM sigma = tan(pi t / 2)).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from diffusers import StableAudioPipeline
from diffusers.models.embeddings import get_1d_rotary_pos_embed

from lora_audio.models.base import (
    Conditioning,
    ProgressCallback,
    TrainingInputs,
    WaveformVAEModel,
    rand,
    randn,
)


class StableAudioModel(WaveformVAEModel):
    family = "stable-audio"
    pipeline_class = StableAudioPipeline
    denoiser_name = "transformer"
    objective = "v_prediction"
    frame_axis = 2  # latents [B, C, L]
    target_groups: ClassVar[dict[str, str]] = {
        "attention": r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)",
        "time_mlp": r"timestep_proj\.[02]",
        "output": r"proj_out",
    }
    expected_layout = (
        "model_index.json, transformer/ (StableAudioDiTModel), vae/ (AutoencoderOobleck), "
        "text_encoder/ + tokenizer/ (T5), projection_model/, scheduler/ "
        "(as in stabilityai/stable-audio-open-1.0)"
    )

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return int(self.pipe.vae.hop_length)

    @property
    def max_seconds(self) -> float:
        """Longest audio the DiT was configured for (``sample_size`` latent frames)."""
        return self.pipe.transformer.config.sample_size * self.hop_length / self.sample_rate

    def latent_shape(self, seconds: float) -> tuple[int, int]:
        frames = math.ceil(seconds * self.sample_rate / self.hop_length)
        return (int(self.pipe.vae.config.decoder_input_channels), frames)

    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, 64, ceil(T / hop)]``; T is zero-padded to a hop multiple.

        With a ``generator`` the VAE posterior is sampled, otherwise its mean is used.
        """
        vae = self.pipe.vae
        pad = (-audio.shape[-1]) % self.hop_length
        audio = torch.nn.functional.pad(audio, (0, pad)).to(self.device, vae.dtype)
        dist = vae.encode(audio).latent_dist
        return dist.sample(generator) if generator is not None else dist.mean

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        return vae.decode(latents.to(self.device, vae.dtype)).sample

    def encode_prompt(self, prompts: list[str], seconds: list[float] | None = None) -> Conditioning:
        """T5 + projection, plus the start/total-seconds conditioning.

        Returns ``encoder_hidden_states [B, S + 2, D]`` (text tokens, start, end) and
        ``global_hidden_states [B, 1, 2 D]``, exactly as the pipeline builds them.
        ``seconds`` is each item's duration (default: the model's maximum length).
        """
        pipe = self.pipe
        seconds = seconds if seconds is not None else [self.max_seconds] * len(prompts)
        text = pipe.encode_prompt(list(prompts), self.device, do_classifier_free_guidance=False)
        start, end = pipe.encode_duration(
            [0.0] * len(prompts), list(seconds), self.device, False, len(prompts)
        )
        return {
            "encoder_hidden_states": torch.cat([text, start, end], dim=1),
            "global_hidden_states": torch.cat([start, end], dim=2),
        }

    def unconditional(self, conditioning: Conditioning, seconds: list[float]) -> Conditioning:
        """As ``StableAudioPipeline`` without a negative prompt: the text and duration tokens
        (``encoder_hidden_states``) all zero; the global duration conditioning is kept."""
        return {
            "encoder_hidden_states": torch.zeros_like(conditioning["encoder_hidden_states"]),
            "global_hidden_states": conditioning["global_hidden_states"],
        }

    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        t = rand(latents.shape[0], generator, latents.device) if timesteps is None else timesteps
        noise = randn(latents.shape, generator, latents.device, latents.dtype)
        angle = (t * math.pi / 2).to(latents.dtype).view(-1, 1, 1)
        alpha, sigma = angle.cos(), angle.sin()
        return TrainingInputs(
            noisy=alpha * latents + sigma * noise,
            timesteps=t,
            target=alpha * noise - sigma * latents,
        )

    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        dit = self.pipe.transformer
        glob = conditioning["global_hidden_states"].to(noisy.dtype)
        rotary = get_1d_rotary_pos_embed(
            self.pipe.rotary_embed_dim,
            noisy.shape[2] + glob.shape[1],
            use_real=True,
            repeat_interleave_real=False,
        )
        rotary = tuple(r.to(noisy.device) for r in rotary)
        return dit(
            noisy,
            timesteps.to(noisy.dtype),
            encoder_hidden_states=conditioning["encoder_hidden_states"].to(noisy.dtype),
            global_hidden_states=glob,
            rotary_embedding=rotary,
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
        generator = torch.Generator(self.device).manual_seed(seed)
        callback = None if progress is None else (lambda i, _t, _x: progress(i + 1, steps))
        out = self.pipe(
            prompt,
            negative_prompt=negative_prompt,
            audio_end_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            callback=callback,
            output_type="pt",
        )
        return out.audios.float().cpu()
