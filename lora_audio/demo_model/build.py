"""Build an untrained :class:`~lora_audio.models.demo.DemoMusicPipeline` from a size preset.

Everything is built offline: the tokenizer is word-level over the corpus captions (plus a few
general words), the text encoder a random-init ``CLIPTextModel`` that stays frozen (a fixed
random projection of the words; the UNet learns to read it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

#: words of every built-in corpus caption and a few general music words (lower case)
CAPTION_WORDS = [
    "bach",
    "chorale",
    "piano",
    "church",
    "organ",
    "scottish",
    "irish",
    "air",
    "airs",
    "flute",
    "clarinet",
    "string",
    "strings",
    "ensemble",
    "fiddle",
    "tune",
    "solo",
    "folk",
    "koto",
    "reel",
    "hornpipe",
    "jig",
    "march",
    "waltz",
    "music",
    "song",
    "melody",
    "calm",
    "slow",
    "fast",
    "soft",
    "loud",
    "bright",
    "dark",
    "warm",
    "sad",
    "happy",
    "dance",
    "a",
    "an",
    "the",
    "and",
    "of",
    "with",
    "on",
    "in",
]
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


@dataclass(frozen=True)
class DemoSize:
    """Widths and depths of one demo pipeline (``tiny`` for tests, ``base`` for the shipped one)."""

    n_mels: int = 128
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    norm_groups: int = 32
    vae_norm_groups: int = 8
    griffin_lim_iters: int = 32


SIZES: dict[str, DemoSize] = {
    "base": DemoSize(),
    "tiny": DemoSize(
        n_mels=16,
        vae_channels=(8, 8, 8),
        latent_channels=4,
        unet_channels=(8, 16, 16),
        unet_heads=2,
        text_width=16,
        text_layers=1,
        text_heads=2,
        max_tokens=8,
        norm_groups=4,
        vae_norm_groups=4,
        griffin_lim_iters=4,
    ),
}


def word_tokenizer(words: list[str] | tuple[str, ...], max_length: int) -> Any:
    """A word-level fast tokenizer: lower-cased, split on whitespace and punctuation,
    ``<s> ... </s>`` around every prompt (so the empty prompt has tokens), ``<unk>`` otherwise."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [*SPECIALS, *dict.fromkeys([*words, ",", ".", "-"])]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=max_length,
    )


def build_pipeline(size: DemoSize, seed: int = 0, mel_mean: float = 0.0, mel_std: float = 1.0):
    """An untrained :class:`DemoMusicPipeline` of ``size`` (weights drawn from ``seed``)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lora_audio.models.demo import DemoMusicPipeline

    tokenizer = word_tokenizer(CAPTION_WORDS, size.max_tokens)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=size.text_width,
            intermediate_size=2 * size.text_width,
            num_hidden_layers=size.text_layers,
            num_attention_heads=size.text_heads,
            max_position_embeddings=size.max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    text_encoder.requires_grad_(False)
    levels = len(size.vae_channels)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=size.latent_channels,
        norm_num_groups=size.vae_norm_groups,
        mid_block_add_attention=False,
    )
    n = len(size.unet_channels)
    unet = UNet2DConditionModel(
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        block_out_channels=size.unet_channels,
        layers_per_block=1,
        attention_head_dim=size.unet_heads,
        cross_attention_dim=size.text_width,
        norm_num_groups=size.norm_groups,
        use_linear_projection=True,
    )
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
    )
    return DemoMusicPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        sample_rate=16000,
        n_fft=1024,
        hop_length=256,
        n_mels=size.n_mels,
        mel_mean=mel_mean,
        mel_std=mel_std,
        griffin_lim_iters=size.griffin_lim_iters,
    )
