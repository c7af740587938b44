"""AudioLDM 2: ``AudioLDM2Pipeline`` (UNet + mel-spectrogram VAE + HiFi-GAN vocoder).

Audio is mono at the vocoder's rate (16 kHz for the public checkpoints). The VAE works on
log-mel spectrograms, computed exactly as AudioLDM 2 was trained (``mel_spectrogram_train`` in
haoheliu/AudioLDM-training-finetuning, settings from audioldm2's ``preprocessing`` config):
reflect-pad ``(n_fft - hop) / 2`` samples on both sides, ``torch.stft`` with a periodic Hann
window, ``center=False``, magnitude, librosa's Slaney mel filterbank (0 Hz .. sr/2), then
``log(clamp(mel, 1e-5))``. For the public models: ``n_fft = win = 1024``, ``hop = 160``, 64
bands, 0..8000 Hz; one frame per hop, so ``T / 160`` frames. Hop, band count and rate are read
from the vocoder's config (``prod(upsample_rates)``, ``model_in_dim``, ``sampling_rate``);
``n_fft`` is 6.4 hops as in the original. The VAE takes ``[B, 1, frames, bands]``.

Conditioning (see :meth:`AudioLDM2Model.encode_prompt`): CLAP text embedding + Flan-T5 states,
projected by ``AudioLDM2ProjectionModel`` and continued by GPT-2 for ``max_new_tokens`` steps;
the UNet cross-attends to the GPT-2 states (``encoder_hidden_states``) and to the T5 states
(``encoder_hidden_states_1``, with their mask).

Objective: the scheduler's ``prediction_type`` (``epsilon`` for cvssp/audioldm2*, also
``v_prediction``) on its discrete DDPM schedule; timesteps are integers in
``[0, num_train_timesteps)`` fed to the UNet as they are, exactly as the pipeline feeds
``scheduler.timesteps``. ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` with
``a_t = alphas_cumprod[t]``.

transformers 5: ``GPT2Model`` no longer carries the generation helpers that diffusers'
``generate_language_model`` calls; the pipeline works with ``GPT2LMHeadModel`` (the class its
signature names). A folder saved with ``GPT2Model`` is converted on load (same weights).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AudioLDM2Pipeline

from lora_audio.models.base import (
    AudioModel,
    Conditioning,
    ModelLoadError,
    ProgressCallback,
    TrainingInputs,
    rand,
    randn,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MelSettings:
    """Log-mel analysis of AudioLDM 2's VAE input."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float

    @classmethod
    def from_vocoder(cls, config: Any) -> MelSettings:
        """Settings matching a ``SpeechT5HifiGan`` config (1024/160/64 bands at 16 kHz)."""
        hop = int(np.prod(config.upsample_rates))
        sr = int(config.sampling_rate)
        return cls(
            sample_rate=sr,
            n_fft=hop * 32 // 5,  # 1024 at hop 160, as in AudioLDM 2
            hop_length=hop,
            n_mels=int(config.model_in_dim),
            fmin=0.0,
            fmax=sr / 2,
        )

    def filterbank(self) -> torch.Tensor:
        """Slaney mel filterbank ``[n_mels, n_fft // 2 + 1]`` (librosa defaults, as trained)."""
        import librosa

        fb = librosa.filters.mel(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax,
        )
        return torch.from_numpy(fb).float()


def log_mel_spectrogram(
    audio: torch.Tensor, mel: MelSettings, filterbank: torch.Tensor
) -> torch.Tensor:
    """Waveform ``[B, T]`` -> log-mel ``[B, T // hop, n_mels]`` (AudioLDM 2's training features).

    ``filterbank``: ``[n_mels, n_fft // 2 + 1]`` from :meth:`MelSettings.filterbank`.
    """
    pad = (mel.n_fft - mel.hop_length) // 2
    x = F.pad(audio.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(mel.n_fft, device=x.device)
    spec = torch.stft(
        x,
        mel.n_fft,
        hop_length=mel.hop_length,
        win_length=mel.n_fft,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    ).abs()
    mels = filterbank.to(x.device) @ spec  # [B, n_mels, frames]
    return torch.log(mels.clamp_min(1e-5)).transpose(1, 2)


class AudioLDM2Model(AudioModel):
    family = "audioldm2"
    pipeline_class = AudioLDM2Pipeline
    denoiser_name = "unet"
    objective = "epsilon"  # replaced per model by the scheduler's prediction_type
    frame_axis = 2  # latents [B, C, frames, mel bins]
    #: ``output``: the UNet's real final projection (conv_out) is a 3x3 Conv2d, out of reach of
    #: Linear-only LoRA; the group takes the feed-forward output projections of the last
    #: attention up block instead (its index is set per model from the UNet config).
    target_groups: ClassVar[dict[str, str]] = {
        "attention": (
            r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+"
            r"\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
        ),
        "time_mlp": r"time_embedding\.linear_[12]",
        "output": r"up_blocks\.2\.attentions\.\d+\.transformer_blocks\.\d+\.ff\.net\.2",
    }
    expected_layout = (
        "model_index.json, unet/ (AudioLDM2UNet2DConditionModel), vae/ (AutoencoderKL), "
        "vocoder/ (SpeechT5HifiGan), text_encoder/ + tokenizer/ (CLAP), text_encoder_2/ + "
        "tokenizer_2/ (Flan-T5), projection_model/, language_model/ (GPT-2), "
        "feature_extractor/, scheduler/ (as in cvssp/audioldm2)"
    )

    def __init__(self, pipe: Any, source: str, folder: Any) -> None:
        _ensure_generation_language_model(pipe)
        super().__init__(pipe, source, folder)
        prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise ModelLoadError(
                f"{source}: scheduler prediction_type {prediction!r} is not supported "
                "(epsilon or v_prediction)"
            )
        self.objective = prediction
        self.target_groups = dict(self.target_groups)
        self.target_groups["output"] = _output_pattern(pipe.unet.config.up_block_types)
        self.mel = MelSettings.from_vocoder(pipe.vocoder.config)

    # ------------------------------------------------------------------ audio format
    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def audio_channels(self) -> int:
        return 1

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return self.mel.hop_length * self.vae_scale_factor

    @cached_property
    def _filterbank(self) -> torch.Tensor:
        return self.mel.filterbank()

    def latent_shape(self, seconds: float) -> tuple[int, int, int]:
        """``(latent channels, ceil(samples / hop), mel bands / vae scale)``."""
        frames = math.ceil(round(seconds * self.sample_rate) / self.hop_length)
        channels = int(self.pipe.vae.config.latent_channels)
        return (channels, frames, self.mel.n_mels // self.vae_scale_factor)

    def mel_spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Mono ``[B, 1, T]`` -> log-mel ``[B, 1, frames, n_mels]``; T is zero-padded to a
        multiple of :attr:`hop_length` (so frames is a multiple of the VAE's scale)."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"audioldm2 takes mono audio [B, 1, T], got {tuple(audio.shape)}")
        pad = (-audio.shape[-1]) % self.hop_length
        audio = F.pad(audio[:, 0], (0, pad))
        return log_mel_spectrogram(audio, self.mel, self._filterbank).unsqueeze(1)

    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[B, 1, T]`` -> latents ``[B, C, ceil(T / hop), n_mels / scale]`` (scaled by the
        VAE's ``scaling_factor``, as the pipeline expects). With a ``generator`` the posterior
        is sampled, otherwise its mean is used."""
        vae = self.pipe.vae
        mel = self.mel_spectrogram(audio.to(self.device)).to(vae.dtype)
        dist = vae.encode(mel).latent_dist
        latents = dist.sample(generator) if generator is not None else dist.mean
        return latents * vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> log-mel (VAE) -> waveform (vocoder) ``[B, 1, frames * mel hop]``."""
        vae = self.pipe.vae
        mel = vae.decode(latents.to(self.device, vae.dtype) / vae.config.scaling_factor).sample
        vocoder = self.pipe.vocoder
        return vocoder(mel.squeeze(1).to(vocoder.dtype)).float().unsqueeze(1)

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompts: list[str], seconds: list[float] | None = None) -> Conditioning:
        """The pipeline's own prompt encoding, one prompt at a time (as at generation).

        Returns ``generated_prompt_embeds [B, N, D_gpt]`` (GPT-2's ``max_new_tokens`` states),
        ``prompt_embeds [B, L, D_t5]`` and ``attention_mask [B, L]`` (int64), T5 states
        zero-padded (mask 0) to the longest prompt ``L``; padding more (as ``data.collate``
        does across cached items) changes nothing. Each prompt is encoded alone because GPT-2's
        output depends on the T5 length it continues from, so batching (which pads T5 to the
        longest prompt) would change it. ``seconds`` is unused: AudioLDM 2 has no duration
        conditioning.
        """
        encoded = [self.pipe.encode_prompt([p], self.device, 1, False) for p in prompts]
        length = max(embeds.shape[1] for embeds, _, _ in encoded)
        rows = [
            {"generated_prompt_embeds": g, "prompt_embeds": e, "attention_mask": m.long()}
            for e, m, g in encoded
        ]
        return _stack_t5(rows, length)

    def unconditional(self, conditioning: Conditioning, seconds: list[float]) -> Conditioning:
        """As the pipeline's guidance without a negative prompt: the empty prompt, its T5
        tokens padded to each prompt's own T5 length (which GPT-2 continues from), zero-padded
        to the conditioning's length like :meth:`encode_prompt`. Kept per T5 length."""
        mask = conditioning["attention_mask"]
        length = conditioning["prompt_embeds"].shape[1]
        rows = []
        for i in range(mask.shape[0]):
            n = max(1, int(mask[i].sum()))
            if n not in self._empty_prompt:
                with torch.no_grad():
                    embeds, null_mask, generated = self.pipe.encode_prompt(
                        None,
                        self.device,
                        1,
                        True,  # guidance: returns [unconditional, conditional]
                        prompt_embeds=conditioning["prompt_embeds"][i : i + 1, :n].to(self.device),
                        attention_mask=mask[i : i + 1, :n].to(self.device),
                        generated_prompt_embeds=conditioning["generated_prompt_embeds"][
                            i : i + 1
                        ].to(self.device),
                    )
                self._empty_prompt[n] = {
                    "generated_prompt_embeds": generated[:1],
                    "prompt_embeds": embeds[:1],
                    "attention_mask": null_mask[:1].long(),
                }
            rows.append(self._empty_prompt[n])
        return _stack_t5(rows, length)

    # --------------------------------------------------------------------- objective
    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipe.scheduler.config.num_train_timesteps)

    def _alpha_sigma(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``sqrt(a_t)``, ``sqrt(1 - a_t)`` shaped ``[B, 1, 1, 1]`` for integer ``timesteps``."""
        cumprod = self.pipe.scheduler.alphas_cumprod.to(torch.float64)
        a = cumprod[timesteps.cpu()].to(like.device)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return a.sqrt().to(like.dtype).view(shape), (1 - a).sqrt().to(like.dtype).view(shape)

    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        """``timesteps``: ``[B]`` integers in ``[0, num_train_timesteps)`` (uniform if None)."""
        n = self.num_train_timesteps
        if timesteps is None:
            u = rand(latents.shape[0], generator, latents.device)
            timesteps = (u * n).long()
        t = timesteps.round().long().clamp(0, n - 1).to(latents.device)
        noise = randn(latents.shape, generator, latents.device, latents.dtype)
        alpha, sigma = self._alpha_sigma(t, latents)
        v_pred = self.objective == "v_prediction"
        target = alpha * noise - sigma * latents if v_pred else noise
        return TrainingInputs(noisy=alpha * latents + sigma * noise, timesteps=t, target=target)

    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return self.pipe.unet(
            noisy,
            timesteps.to(noisy.device),
            encoder_hidden_states=conditioning["generated_prompt_embeds"].to(noisy.dtype),
            encoder_hidden_states_1=conditioning["prompt_embeds"].to(noisy.dtype),
            encoder_attention_mask_1=conditioning["attention_mask"].to(noisy.device),
            return_dict=False,
        )[0]

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
    ) -> torch.Tensor:
        generator = torch.Generator(self.device).manual_seed(seed)
        callback = None if progress is None else (lambda i, _t, _x: progress(i + 1, steps))
        if isinstance(prompt, list) and isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompt)
        out = self.pipe(
            prompt,
            negative_prompt=negative_prompt,
            audio_length_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            callback=callback,
            output_type="pt",
        )
        return out.audios.float().cpu().unsqueeze(1)


def _output_pattern(up_block_types: list[str]) -> str:
    """Regex of the ``output`` group: feed-forward outputs of the last attention up block."""
    with_attention = [i for i, kind in enumerate(up_block_types) if "CrossAttn" in kind]
    last = with_attention[-1] if with_attention else len(up_block_types) - 1
    return rf"up_blocks\.{last}\.attentions\.\d+\.transformer_blocks\.\d+\.ff\.net\.2"


def _ensure_generation_language_model(pipe: Any) -> None:
    """Swap a bare ``GPT2Model`` for ``GPT2LMHeadModel`` with the same weights.

    diffusers' ``generate_language_model`` calls ``_update_model_kwargs_for_generation``,
    which transformers 5 only gives models with ``GenerationMixin``. The LM head is never used:
    the pipeline reads the last hidden states, which are the same in both classes.
    """
    lm = pipe.language_model
    if hasattr(lm, "_update_model_kwargs_for_generation"):
        return
    from transformers import GPT2LMHeadModel, GPT2Model

    if not isinstance(lm, GPT2Model):
        raise ModelLoadError(
            f"language_model is a {type(lm).__name__} without generation support; "
            "AudioLDM 2 needs GPT2LMHeadModel (or GPT2Model)"
        )
    log.info("language_model: converting GPT2Model to GPT2LMHeadModel for transformers 5")
    head = GPT2LMHeadModel(lm.config)
    head.transformer.load_state_dict(lm.state_dict())
    head.to(device=lm.device, dtype=lm.dtype).eval()
    pipe.language_model = head


def _stack_t5(rows: list[Conditioning], length: int) -> Conditioning:
    """Concatenate one-prompt conditionings, T5 states and mask zero-padded to ``length``."""
    return {
        "generated_prompt_embeds": torch.cat([r["generated_prompt_embeds"] for r in rows]),
        "prompt_embeds": torch.cat(
            [
                F.pad(r["prompt_embeds"], (0, 0, 0, length - r["prompt_embeds"].shape[1]))
                for r in rows
            ]
        ),
        "attention_mask": torch.cat(
            [F.pad(r["attention_mask"], (0, length - r["attention_mask"].shape[1])) for r in rows]
        ),
    }
