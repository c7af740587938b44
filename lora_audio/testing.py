"""Tiny randomly initialised models for every family: test fixtures and ``configs/tiny``.

``tiny_model_dir(family)`` builds a tiny pipeline from config with a fixed seed (no download:
tokenizers are built from a small in-code vocabulary), saves it with ``save_pretrained`` into
a cache folder once, and returns that folder. Everything then loads it through the real
``from_pretrained`` code. The models are random: they make noise, not music.

Cache root: ``$LORA_AUDIO_CACHE`` or ``~/.cache/lora-audio``; folders are keyed by family,
:data:`TINY_VERSION` and the diffusers version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lora_audio.config import LoraSection
    from lora_audio.models.base import AudioModel

#: bump when a tiny model's construction changes, so cached folders are rebuilt
TINY_VERSION = 1
SEED = 0

#: a small word-piece vocabulary for the tiny tokenizers
WORDS = [
    "a",
    "the",
    "and",
    "of",
    "with",
    "in",
    "piano",
    "drum",
    "drums",
    "guitar",
    "bass",
    "synth",
    "music",
    "song",
    "calm",
    "fast",
    "slow",
    "loud",
    "soft",
    "jazz",
    "rock",
    "pop",
    "ambient",
    "beat",
    "melody",
    "chord",
    "warm",
    "bright",
    "dark",
    "noise",
    "voice",
    "test",
    "prompt",
]


def cache_root() -> Path:
    return Path(os.environ.get("LORA_AUDIO_CACHE", Path.home() / ".cache" / "lora-audio"))


def tiny_model_dir(family: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of the tiny ``family`` pipeline, built and saved on first use (atomically)."""
    import diffusers

    root = Path(root) if root is not None else cache_root()
    target = root / "tiny" / f"{family}-v{TINY_VERSION}-diffusers{diffusers.__version__}"
    if (target / "model_index.json").is_file():
        return target
    if family not in TINY_BUILDERS:
        raise KeyError(f"no tiny model for family {family!r}; have: {', '.join(TINY_BUILDERS)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        TINY_BUILDERS[family]().save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def t5_tokenizer(max_length: int = 16) -> Any:
    """A T5 (SentencePiece-unigram) tokenizer over :data:`WORDS` plus letters."""
    from transformers import T5Tokenizer

    pieces = (
        ["<pad>", "</s>", "<unk>"]
        + [f"\u2581{w}" for w in WORDS]
        + list("abcdefghijklmnopqrstuvwxyz")
    )
    pieces += ["\u2581"]
    vocab = [(p, -float(i)) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def tiny_t5_encoder(vocab_size: int, d_model: int = 16) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def build_tiny_stable_audio() -> Any:
    """StableAudioPipeline: 2-layer DiT (width 16), 2-stage Oobleck VAE at 256 Hz, 1-layer T5.

    The VAE hops 4 samples per latent frame, so 64 latent frames per second; the DiT's
    ``sample_size`` of 128 frames allows 2 s.
    """
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    tokenizer = t5_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = tiny_t5_encoder(len(tokenizer))
    transformer = StableAudioDiTModel(
        sample_size=128,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=16,
        time_proj_dim=8,
        global_states_input_dim=16,
        cross_attention_input_dim=8,
    )
    vae = AutoencoderOobleck(
        encoder_hidden_size=8,  # mean + scale of 4 latent channels
        downsampling_ratios=[2, 2],
        decoder_channels=4,
        decoder_input_channels=4,
        audio_channels=2,
        channel_multiples=[1, 2],
        sampling_rate=256,
    )
    projection = StableAudioProjectionModel(
        text_encoder_dim=16, conditioning_dim=8, min_value=0, max_value=32
    )
    scheduler = CosineDPMSolverMultistepScheduler(
        solver_order=2,
        prediction_type="v_prediction",
        sigma_data=1.0,
        sigma_schedule="exponential",
        sigma_min=0.3,
        sigma_max=500,
    )
    return StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )


def fresh(family: str, folder: str | os.PathLike) -> AudioModel:
    """Load the pipeline in ``folder`` anew (no adapters)."""
    from lora_audio.models import load_model

    return load_model(family, folder)


def fake_batch(
    model: AudioModel, batch: int = 2, seconds: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(latents, conditioning)`` of ``batch`` items: random audio through the VAE, fixed prompts."""
    g = torch.Generator().manual_seed(seed)
    samples = int(seconds * model.sample_rate)
    audio = 0.1 * torch.randn(batch, model.audio_channels, samples, generator=g)
    with torch.no_grad():
        latents = model.encode_audio(audio)
        cond = model.encode_prompt(["calm piano", "fast drums jazz"][:batch], [seconds] * batch)
    return latents, cond


def train_one_step(
    model: AudioModel, lora: LoraSection, seed: int, lr: float = 0.05
) -> dict[str, torch.Tensor]:
    """Inject LoRA, take one AdamW step; returns the state dict before the step."""
    from lora_audio import adapters

    torch.manual_seed(seed)  # LoRA init and dropout draw from the global generator
    adapters.inject_lora(model, lora)
    before = {k: v.detach().clone() for k, v in model.denoiser.state_dict().items()}
    latents, cond = fake_batch(model, seed=seed)
    model.denoiser.train()
    loss = model.training_loss(latents, cond, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    params = [p for p in model.denoiser.parameters() if p.requires_grad]
    torch.optim.AdamW(params, lr=lr).step()
    model.denoiser.eval()
    return before


#: family -> builder of its tiny pipeline (in memory)
TINY_BUILDERS: dict[str, Callable[[], Any]] = {
    "stable-audio": build_tiny_stable_audio,
}
