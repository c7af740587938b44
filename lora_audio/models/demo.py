"""The built-in demo model: a small mel-spectrogram latent diffusion model trained here.

No real weights can be downloaded offline, so lora-audio ships a small model pretrained by
``lora-audio pretrain-demo`` on the project's own ``base`` corpus (Bach chorales on piano and
organ, folk airs on flute, clarinet and strings). It is a diffusers pipeline folder
(``model_index.json`` + one folder per component, safetensors), loaded like any other:

* audio: mono, 16 kHz. The codec's input is AudioLDM 2's log-mel analysis
  (:func:`~lora_audio.models.audioldm2.log_mel_spectrogram`: ``n_fft`` 1024, hop 256, 64 Slaney
  bands over 0..8 kHz, natural log of the magnitude), normalised by the corpus mean/std stored
  in the pipeline config, laid out ``[B, 1, frames, bands]``;
* ``vae``: :class:`diffusers.AutoencoderKL` over that log-mel image, 4x down in time and bands;
  latents ``[B, C, frames / 4, bands / 4]``, multiplied by the VAE's ``scaling_factor``;
* mel -> audio: Griffin-Lim (:func:`griffin_lim`, fixed iterations, fixed initial phase, so
  decoding is deterministic) from the linear magnitude recovered by non-negative least squares;
* ``text_encoder`` + ``tokenizer``: a tiny frozen random-init ``CLIPTextModel`` and a
  word-level tokenizer over the corpus captions (built in code, no download);
* ``unet``: :class:`diffusers.UNet2DConditionModel` with self- and cross-attention and a
  timestep MLP; ``scheduler``: DPM-Solver++ on a cosine (``squaredcos_cap_v2``) schedule.

Objective: the scheduler's ``prediction_type`` (``v_prediction`` for the shipped model) on its
discrete schedule; timesteps are integers in ``[0, num_train_timesteps)`` fed to the UNet as
they are, ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` with ``a_t = alphas_cumprod[t]``.

Audio lengths are padded to a multiple of :attr:`DemoMusicPipeline.samples_per_block`
(hop x VAE factor x UNet factor = 4096 samples, 0.256 s) so every level of the UNet divides.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput

from lora_audio.models.audioldm2 import MelSettings, log_mel_spectrogram
from lora_audio.models.base import (
    AudioModel,
    Conditioning,
    ModelLoadError,
    ProgressCallback,
    TrainingInputs,
    rand,
    randn,
)

#: NNLS iterations recovering the linear magnitude from the mel magnitude before Griffin-Lim
NNLS_ITERS = 16


def mel_to_linear(mel: torch.Tensor, filterbank: torch.Tensor, iters: int = NNLS_ITERS):
    """Mel magnitude ``[B, n_mels, frames]`` -> linear magnitude ``[B, n_fft // 2 + 1, frames]``.

    Non-negative least squares ``min ||fb @ S - mel||`` by multiplicative updates (Lee & Seung),
    started from the clamped pseudo-inverse. ``filterbank``: ``[n_mels, n_fft // 2 + 1]``.
    """
    fb = filterbank.to(mel)
    s = (torch.linalg.pinv(fb) @ mel).clamp_min(1e-6)
    fbt_mel = fb.T @ mel
    gram = fb.T @ fb
    for _ in range(iters):
        s = s * fbt_mel / (gram @ s).clamp_min(1e-10)
    return s


def griffin_lim(
    magnitude: torch.Tensor, n_fft: int, hop: int, iters: int, momentum: float = 0.99
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude ``[B, n_fft // 2 + 1, N]`` -> ``[B, T]``.

    Frames are centred at ``k * hop`` (``torch.stft(center=True)``), ``T = (N - 1) * hop``.
    The initial phase is uniform noise from a fixed seed, the same for every item, so the result
    is deterministic and does not depend on the batch. (A zero initial phase is less accurate and
    unstable: a 1e-6 change of the magnitude could change the waveform by 10 %.)
    """
    window = torch.hann_window(n_fft, device=magnitude.device, dtype=magnitude.dtype)
    length = (magnitude.shape[-1] - 1) * hop
    phase = torch.rand(magnitude.shape[-2:], generator=torch.Generator().manual_seed(0))
    angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * phase.to(magnitude.device))
    previous = torch.zeros_like(angles)
    audio = torch.zeros(magnitude.shape[0], length, device=magnitude.device)
    for _ in range(iters):
        audio = torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)
        rebuilt = torch.stft(audio, n_fft, hop, window=window, return_complex=True)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / angles.abs().clamp_min(1e-16)
        previous = rebuilt
    return torch.istft(magnitude * angles, n_fft, hop, window=window, length=length)


class DemoMusicPipeline(DiffusionPipeline):
    """Text-to-music: CLIP text -> UNet latent diffusion -> AutoencoderKL log-mel -> Griffin-Lim.

    The mel analysis and normalisation live in the pipeline config (``model_index.json``).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        mel_mean: float = 0.0,
        mel_std: float = 1.0,
        griffin_lim_iters: int = 32,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
        self.register_to_config(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            mel_mean=mel_mean,
            mel_std=mel_std,
            griffin_lim_iters=griffin_lim_iters,
        )

    # ------------------------------------------------------------------ mel analysis
    @property
    def mel(self) -> MelSettings:
        c = self.config
        sr = int(c.sample_rate)
        return MelSettings(sr, int(c.n_fft), int(c.hop_length), int(c.n_mels), 0.0, sr / 2)

    @cached_property
    def filterbank(self) -> torch.Tensor:
        """``[n_mels, n_fft // 2 + 1]`` Slaney mel filterbank."""
        return self.mel.filterbank()

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_factor(self) -> int:
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def samples_per_block(self) -> int:
        """Audio lengths are padded to a multiple of this many samples."""
        return int(self.config.hop_length) * self.vae_factor * self.unet_factor

    def padded_samples(self, samples: int) -> int:
        block = self.samples_per_block
        return max(1, math.ceil(samples / block)) * block

    def audio_to_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Mono ``[B, T]`` -> normalised log-mel ``[B, 1, frames, n_mels]``, T zero-padded to
        :meth:`padded_samples` (``frames = padded T / hop``)."""
        audio = F.pad(audio.float(), (0, self.padded_samples(audio.shape[-1]) - audio.shape[-1]))
        logmel = log_mel_spectrogram(audio, self.mel, self.filterbank)
        return ((logmel - self.config.mel_mean) / self.config.mel_std).unsqueeze(1)

    def mel_to_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``[B, 1, frames, n_mels]`` -> ``[B, frames * hop]`` by Griffin-Lim.

        The analysis frame ``k`` is centred at ``k * hop + hop / 2``, Griffin-Lim's at
        ``k * hop``: the output is shifted by half a hop to line up with the input audio.
        """
        c = self.config
        hop = int(c.hop_length)
        logmel = mel.squeeze(1).float() * c.mel_std + c.mel_mean  # [B, frames, n_mels]
        magnitude = mel_to_linear(logmel.exp().transpose(1, 2), self.filterbank)
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # frames + 1 centres
        audio = griffin_lim(magnitude, int(c.n_fft), hop, int(c.griffin_lim_iters))
        frames = mel.shape[2]
        return F.pad(audio, (hop // 2, 0))[:, : frames * hop]

    # -------------------------------------------------------------------- codec
    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mono ``[B, T]`` -> scaled latents ``[B, C, frames / 4, n_mels / 4]`` (posterior mean
        unless a ``generator`` is given)."""
        mel = self.audio_to_mel(audio.to(self.vae.device)).to(self.vae.dtype)
        dist = self.vae.encode(mel).latent_dist
        latents = dist.sample(generator) if generator is not None else dist.mean
        return latents * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, C, L, M]`` -> audio ``[B, L * 4 * hop]``."""
        vae = self.vae
        mel = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
        return self.mel_to_audio(mel)

    # -------------------------------------------------------------- conditioning
    @torch.no_grad()
    def encode_prompt(
        self, prompts: list[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (``[B, L, D]`` text states, ``[B, L]`` int64 mask), padded to the
        tokenizer's ``model_max_length``. The text encoder is frozen (no gradients)."""
        device = device or self.text_encoder.device
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(device)
        mask = tokens.attention_mask.to(device)
        states = self.text_encoder(ids, attention_mask=mask).last_hidden_state
        return states, mask.long()

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        audio_length_in_s: float = 5.0,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        callback: Any = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> AudioPipelineOutput | tuple:
        """Generate ``[B, T]`` audio (``T = audio_length_in_s * sample_rate``).

        ``callback(step, timestep, latents)`` is called after every step. With
        ``guidance_scale > 1`` classifier-free guidance uses ``negative_prompt`` (default "").
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        device = self._execution_device
        cond, mask = self.encode_prompt(prompts, device)
        guided = guidance_scale > 1.0
        if guided:
            neg = negative_prompt if negative_prompt is not None else ""
            negs = [neg] * batch if isinstance(neg, str) else list(neg)
            if len(negs) != batch:
                raise ValueError(f"{len(negs)} negative prompts for {batch} prompts")
            uncond, umask = self.encode_prompt(negs, device)
            cond, mask = torch.cat([uncond, cond]), torch.cat([umask, mask])

        samples = round(audio_length_in_s * int(self.config.sample_rate))
        frames = self.padded_samples(samples) // int(self.config.hop_length)
        shape = (
            batch,
            int(self.vae.config.latent_channels),
            frames // self.vae_factor,
            int(self.config.n_mels) // self.vae_factor,
        )
        if latents is None:
            gen_device = generator.device if generator is not None else device
            latents = torch.randn(shape, generator=generator, device=gen_device)
        latents = latents.to(device, self.unet.dtype) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for i, t in enumerate(self.scheduler.timesteps):
            model_in = torch.cat([latents] * 2) if guided else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(
                model_in,
                t,
                encoder_hidden_states=cond.to(latents.dtype),
                encoder_attention_mask=mask,
                return_dict=False,
            )[0]
            if guided:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, generator=generator).prev_sample
            if callback is not None:
                callback(i, t, latents)

        audio = self.decode_latents(latents)[:, :samples]
        self.maybe_free_model_hooks()
        if output_type == "np":
            audio = audio.cpu().float().numpy()
        if not return_dict:
            return (audio,)
        return AudioPipelineOutput(audios=audio)


class DemoModel(AudioModel):
    family = "demo"
    pipeline_class = DemoMusicPipeline
    denoiser_name = "unet"
    objective = "v_prediction"  # replaced per model by the scheduler's prediction_type
    frame_axis = 2  # latents [B, C, frames, mel bins]
    #: ``output``: the UNet's final conv_out is a Conv2d (out of reach of Linear-only LoRA); the
    #: group takes the linear output projections of the last attention up block's transformers.
    target_groups: ClassVar[dict[str, str]] = {
        "attention": (
            r"(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.attentions\.\d+"
            r"\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
        ),
        "time_mlp": r"time_embedding\.linear_[12]",
        "output": r"up_blocks\.1\.attentions\.\d+\.proj_out",
    }
    expected_layout = (
        "model_index.json (DemoMusicPipeline with its mel settings), unet/ "
        "(UNet2DConditionModel), vae/ (AutoencoderKL over log-mel), text_encoder/ "
        "(CLIPTextModel), tokenizer/, scheduler/ (as written by `lora-audio pretrain-demo`)"
    )

    def __init__(self, pipe: Any, source: str, folder: Any) -> None:
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

    # ------------------------------------------------------------------ audio format
    @property
    def sample_rate(self) -> int:
        return int(self.pipe.config.sample_rate)

    @property
    def audio_channels(self) -> int:
        return 1

    def latent_shape(self, seconds: float) -> tuple[int, int, int]:
        """``(latent channels, padded frames / 4, n_mels / 4)``; audio is padded to a multiple
        of 4096 samples (0.256 s at 16 kHz)."""
        pipe = self.pipe
        samples = pipe.padded_samples(round(seconds * self.sample_rate))
        frames = samples // int(pipe.config.hop_length) // pipe.vae_factor
        bands = int(pipe.config.n_mels) // pipe.vae_factor
        return (int(pipe.vae.config.latent_channels), frames, bands)

    def encode_audio(
        self, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mono ``[B, 1, T]`` -> latents ``[B, *latent_shape(T / sample_rate)]``."""
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"demo takes mono audio [B, 1, T], got {tuple(audio.shape)}")
        return self.pipe.encode_audio(audio[:, 0].to(self.device), generator)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, L, M]`` -> ``[B, 1, L * 1024]`` (Griffin-Lim from the decoded mel)."""
        return self.pipe.decode_latents(latents).float().unsqueeze(1)

    # ------------------------------------------------------------------ conditioning
    def encode_prompt(self, prompts: list[str], seconds: list[float] | None = None) -> Conditioning:
        """``encoder_hidden_states [B, L, D]`` and ``encoder_attention_mask [B, L]`` (int64),
        L = the tokenizer's max length. ``seconds`` is unused (no duration conditioning)."""
        states, mask = self.pipe.encode_prompt(list(prompts), self.device)
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask}

    # --------------------------------------------------------------------- objective
    @property
    def num_train_timesteps(self) -> int:
        return int(self.pipe.scheduler.config.num_train_timesteps)

    def sample_training_inputs(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> TrainingInputs:
        """``timesteps``: ``[B]`` schedule indices in ``[0, num_train_timesteps)`` if integer,
        fractions of the schedule in ``[0, 1)`` if floating point (as the training recipe's
        validation grid passes them); uniform indices if None."""
        n = self.num_train_timesteps
        if timesteps is None:
            timesteps = (rand(latents.shape[0], generator, latents.device) * n).long()
        elif timesteps.is_floating_point():
            timesteps = (timesteps * n).floor()
        t = timesteps.long().clamp(0, n - 1).to(latents.device)
        noise = randn(latents.shape, generator, latents.device, latents.dtype)
        cumprod = self.pipe.scheduler.alphas_cumprod.to(torch.float64)[t.cpu()].to(latents.device)
        shape = (-1,) + (1,) * (latents.ndim - 1)
        alpha = cumprod.sqrt().to(latents.dtype).view(shape)
        sigma = (1 - cumprod).sqrt().to(latents.dtype).view(shape)
        v_pred = self.objective == "v_prediction"
        target = alpha * noise - sigma * latents if v_pred else noise
        return TrainingInputs(noisy=alpha * latents + sigma * noise, timesteps=t, target=target)

    def predict(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return self.pipe.unet(
            noisy,
            timesteps.to(noisy.device),
            encoder_hidden_states=conditioning["encoder_hidden_states"].to(noisy.dtype),
            encoder_attention_mask=conditioning["encoder_attention_mask"].to(noisy.device),
            return_dict=False,
        )[0]

    # -------------------------------------------------------------------- generation
    def generate(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        seconds: float = 5.0,
        steps: int = 25,
        guidance: float = 3.0,
        seed: int = 0,
        progress: ProgressCallback | None = None,
    ) -> torch.Tensor:
        generator = torch.Generator(self.device).manual_seed(seed)
        callback = None if progress is None else (lambda i, _t, _x: progress(i + 1, steps))
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


def _output_pattern(up_block_types: list[str] | tuple[str, ...]) -> str:
    """Regex of the ``output`` group: linear output projections of the last attention up block."""
    with_attention = [i for i, kind in enumerate(up_block_types) if "CrossAttn" in kind]
    last = with_attention[-1] if with_attention else len(up_block_types) - 1
    return rf"up_blocks\.{last}\.attentions\.\d+\.proj_out"
