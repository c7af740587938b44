"""ACE-Step 1.5: ``AceStepPipeline`` (AceStepTransformer1DModel + AutoencoderOobleck + Qwen3 text
encoder + AceStepConditionEncoder with its lyric and timbre encoders).

Objective: rectified flow matching, as sampled by the pipeline's ``FlowMatchEulerDiscreteScheduler``
(``num_train_timesteps=1``, ``shift=1``; the pipeline hands it its own shifted sigmas in [0, 1]).
With ``t`` in [0, 1] (1 = pure noise)::

    x_t = t * noise + (1 - t) * x0          target v = noise - x0

and the DiT receives ``timestep = timestep_r = t`` (the pipeline sets ``r = t``; the mean-flow
path ``time_embed_r`` then always sees ``t - r = 0``). The Euler step ``x + (t_next - t) v`` with
a perfect ``v`` lands on ``x0`` at ``t_next = 0``.

Latents are ``[B, T, C]`` (frames, then 64 channels; 25 frames/s at 48 kHz), the transposed VAE
latents. The DiT also takes ``context_latents [B, T, 2C]``: for text-to-music the condition
encoder's learned ``silence_latent`` followed by an all-ones chunk mask; :meth:`predict` builds it.

Conditioning: the caption goes through the SFT prompt template (instruction, caption, metadata
with the duration in whole seconds) and the Qwen3 text encoder; lyrics (empty = instrumental) go
through its embedding table and the lyric encoder; the timbre encoder gets the silence latent
(no reference audio). The condition encoder packs them into ``encoder_hidden_states``. Each
prompt is encoded alone (exactly what the pipeline does for one prompt) and the batch is padded
with zeros; ``encoder_attention_mask`` marks real tokens and :meth:`predict` masks the padding in
cross-attention, so a padded batch gives every item the prediction it gets alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from diffusers import AceStepPipeline
from diffusers.models.transformers.ace_step_transformer import AceStepAttnProcessor2_0

from lora_audio.models.base import (
    Conditioning,
    ProgressCallback,
    TrainingInputs,
    WaveformVAEModel,
    rand,
    randn,
)

#: the pipeline's default flow-matching shift; training timesteps follow the same warp
SHIFT = 3.0
#: duration written into the prompt metadata when ``seconds`` is not given (pipeline default)
DEFAULT_SECONDS = 60.0


def target_groups_for(num_layers: int) -> dict[str, str]:
    """LoRA target groups of an ACE-Step DiT with ``num_layers`` blocks.

    ``attention``: q/k/v/out of every block's self- and cross-attention (the modules the
    original ACE-Step LoRA trainer adapts). ``time_mlp``: the timestep embedding MLP of ``t``
    (``linear_1``, ``linear_2``) and its AdaLN projection ``time_proj``; ``time_embed_r`` is left
    out since at inference it only ever sees ``t - r = 0``. ``output``: the final projection
    ``proj_out_conv`` is a ConvTranspose1d, which LoRA loaders do not support, so the group is
    the last Linear before it, the last block's feed-forward output ``mlp.down_proj``.
    """
    return {
        "attention": r"layers\.\d+\.(self_attn|cross_attn)\.(to_q|to_k|to_v|to_out\.0)",
        "time_mlp": r"time_embed\.(linear_1|linear_2|time_proj)",
        "output": rf"layers\.{num_layers - 1}\.mlp\.down_proj",
    }


def shift_timesteps(u: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """The pipeline's schedule warp ``shift * u / (1 + (shift - 1) * u)`` (u, t in [0, 1])."""
    return shift * u / (1 + (shift - 1) * u)


class _MaskedCrossAttnProcessor(AceStepAttnProcessor2_0):
    """ACE-Step's attention processor, plus a key-padding mask for cross-attention.

    The DiT passes no mask to cross-attention (the pipeline never pads a single prompt). While
    :attr:`key_mask` (``[B, S]`` bool) is set, padded condition tokens are ignored; otherwise
    this is exactly the stock processor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.key_mask: torch.Tensor | None = None

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if (
            attention_mask is None
            and encoder_hidden_states is not None
            and self.key_mask is not None
        ):
            attention_mask = self.key_mask[:, None, None, :]
        return super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
        )


class AceStepModel(WaveformVAEModel):
    family = "ace-step"
    pipeline_class = AceStepPipeline
    denoiser_name = "transformer"
    objective = "flow_matching"
    frame_axis = 1  # latents [B, T, C]
    #: for the 24-block ACE-Step 1.5 DiT; instances use their own block count
    target_groups: ClassVar[dict[str, str]] = target_groups_for(24)
    expected_layout = (
        "model_index.json, transformer/ (AceStepTransformer1DModel), vae/ (AutoencoderOobleck), "
        "text_encoder/ + tokenizer/ (Qwen3), condition_encoder/ (AceStepConditionEncoder), "
        "scheduler/ (FlowMatchEulerDiscreteScheduler) (as in ACE-Step/acestep-v15-xl-turbo-diffusers)"
    )

    def __init__(self, pipe: Any, source: str, folder: Any) -> None:
        super().__init__(pipe, source, folder)
        self.target_groups = target_groups_for(len(pipe.transformer.layers))
        self._cross_processor = _MaskedCrossAttnProcessor()
        for block in pipe.transformer.layers:
            block.cross_attn.set_processor(self._cross_processor)

    # ------------------------------------------------------------------ audio format
    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return int(self.pipe.vae.hop_length)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.audio_acoustic_hidden_dim)

    def latent_shape(self, seconds: float) -> tuple[int, int]:
        frames = math.ceil(seconds * self.sample_rate / self.hop_length)
        return (frames, self.latent_channels)

    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, ceil(T / hop), 64]``; T is zero-padded to a hop multiple.

        With a ``generator`` the VAE posterior is sampled, otherwise its mean is used.
        """
        vae = self.pipe.vae
        pad = (-audio.shape[-1]) % self.hop_length
        audio = torch.nn.functional.pad(audio, (0, pad)).to(self.device, vae.dtype)
        dist = vae.encode(audio).latent_dist
        latents = dist.sample(generator) if generator is not None else dist.mean
        return latents.transpose(1, 2)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, T, 64]`` -> ``[B, C, T * hop]`` (no loudness normalisation, unlike ``generate``)."""
        vae = self.pipe.vae
        return vae.decode(latents.transpose(1, 2).to(self.device, vae.dtype)).sample

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(
        self,
        prompts: list[str],
        seconds: list[float] | None = None,
        lyrics: list[str] | None = None,
    ) -> Conditioning:
        """Caption + lyrics + (silent) timbre through the condition encoder.

        ``seconds`` is each item's duration, written into the prompt metadata as the pipeline
        does (default 60 s). ``lyrics`` is one string per prompt; ``None`` or ``""`` means
        instrumental. Returns ``encoder_hidden_states [B, S, D]`` (zero-padded to the longest
        item) and ``encoder_attention_mask [B, S]`` (float, 1 = real token).
        """
        prompts = list(prompts)
        seconds = list(seconds) if seconds is not None else [DEFAULT_SECONDS] * len(prompts)
        lyrics = list(lyrics) if lyrics is not None else [""] * len(prompts)
        if not len(prompts) == len(seconds) == len(lyrics):
            raise ValueError(
                f"encode_prompt: {len(prompts)} prompts, {len(seconds)} durations and "
                f"{len(lyrics)} lyrics; give one of each per item"
            )
        items = [
            self._encode_one(p, s, ly) for p, s, ly in zip(prompts, seconds, lyrics, strict=True)
        ]
        length = max(h.shape[0] for h in items)
        hidden = items[0].new_zeros(len(items), length, items[0].shape[1])
        mask = torch.zeros(len(items), length, device=hidden.device)
        for i, h in enumerate(items):
            hidden[i, : h.shape[0]] = h
            mask[i, : h.shape[0]] = 1.0
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}

    def _encode_one(self, prompt: str, seconds: float, lyrics: str) -> torch.Tensor:
        """One item's packed condition sequence ``[S, D]``, as ``AceStepPipeline.__call__`` builds it."""
        pipe = self.pipe
        device, dtype = self.device, self.dtype
        text, text_mask, lyric, lyric_mask = pipe.encode_prompt(
            prompt=[prompt], lyrics=[lyrics], device=device, audio_duration=seconds
        )
        timbre_frames = math.ceil(30 * pipe.latents_per_second)
        silence = pipe.condition_encoder.silence_latent[:, :timbre_frames, :].to(device, dtype)
        hidden, mask = pipe.condition_encoder(
            text_hidden_states=text,
            text_attention_mask=text_mask,
            lyric_hidden_states=lyric,
            lyric_attention_mask=lyric_mask,
            refer_audio_acoustic_hidden_states_packed=silence,
            refer_audio_order_mask=torch.zeros(1, device=device, dtype=torch.long),
        )
        return hidden[0, : int(mask[0].sum())]

    def unconditional(self, conditioning: Conditioning, seconds: list[float]) -> Conditioning:
        """As ``AceStepPipeline`` does for guidance: the condition encoder's learned
        ``null_condition_emb`` in every position of the conditional sequence (same mask)."""
        null = getattr(self.pipe.condition_encoder, "null_condition_emb", None)
        if null is None:
            raise ValueError(
                "this ace-step condition encoder has no null_condition_emb (a turbo/distilled "
                "checkpoint?); train it with train.caption_dropout=0"
            )
        hidden = conditioning["encoder_hidden_states"]
        return {
            "encoder_hidden_states": null.to(hidden.device, hidden.dtype).expand_as(hidden),
            "encoder_attention_mask": conditioning["encoder_attention_mask"],
        }

    # --------------------------------------------------------------------- objective
    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        """``t = shift(u)``, ``u ~ U(0, 1)``: the continuous version of the sampler's schedule."""
        if timesteps is None:
            timesteps = shift_timesteps(rand(latents.shape[0], generator, latents.device))
        noise = randn(latents.shape, generator, latents.device, latents.dtype)
        t = timesteps.to(latents.dtype).view(-1, 1, 1)
        return TrainingInputs(
            noisy=t * noise + (1 - t) * latents, timesteps=timesteps, target=noise - latents
        )

    def context_latents(self, batch: int, frames: int) -> torch.Tensor:
        """``[B, T, 2C]``: silence latent + all-ones chunk mask (text-to-music, as the pipeline)."""
        src, _ = self.pipe.prepare_src_latents(
            device=self.device, dtype=self.dtype, batch_size=batch, latent_length=frames
        )
        return torch.cat([src, torch.ones_like(src)], dim=-1)

    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """Velocity ``[B, T, C]`` for ``noisy [B, T, C]`` at ``timesteps [B]`` in [0, 1]."""
        t = timesteps.to(noisy.device, noisy.dtype)
        hidden = conditioning["encoder_hidden_states"].to(noisy.device, noisy.dtype)
        mask = conditioning.get("encoder_attention_mask")
        with self._masked_cross_attention(None if mask is None else mask.to(noisy.device) > 0.5):
            return self.pipe.transformer(
                hidden_states=noisy,
                timestep=t,
                timestep_r=t,
                encoder_hidden_states=hidden,
                context_latents=self.context_latents(noisy.shape[0], noisy.shape[1]).to(
                    noisy.dtype
                ),
                return_dict=False,
            )[0]

    @contextmanager
    def _masked_cross_attention(self, key_mask: torch.Tensor | None) -> Iterator[None]:
        """Mask padded condition tokens (``key_mask [B, S]``, True = real) inside the block."""
        if key_mask is not None and bool(key_mask.all()):
            key_mask = None  # nothing padded: the stock path
        self._cross_processor.key_mask = key_mask
        try:
            yield
        finally:
            self._cross_processor.key_mask = None

    # -------------------------------------------------------------------- generation
    def generate(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        seconds: float = 10.0,
        steps: int = 100,
        guidance: float = 7.0,
        seed: int = 0,
        progress: ProgressCallback | None = None,
        lyrics: str | list[str] = "",
    ) -> torch.Tensor:
        """Run ``AceStepPipeline`` (text-to-music); ``lyrics`` ``""`` means instrumental.

        ACE-Step has no negative prompt (guidance uses its learned null condition), so giving
        one is an error. Turbo checkpoints ignore ``guidance`` (the pipeline warns).
        """
        if negative_prompt:
            raise ValueError(
                "ace-step has no negative prompt (guidance uses its learned null condition); "
                "leave negative_prompt empty"
            )
        generator = torch.Generator(self.device).manual_seed(seed)
        callback = None if progress is None else (lambda i, _t, _x: progress(i + 1, steps))
        out = self.pipe(
            prompt,
            lyrics=lyrics,
            audio_duration=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            shift=SHIFT,
            generator=generator,
            callback=callback,
            output_type="pt",
        )
        return out.audios.float().cpu()
