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


def build_tiny_stable_audio_3() -> Any:
    """StableAudio3Pipeline: 2-layer DiT (width 16), 1-level SAME VAE at 256 Hz, 1-layer T5Gemma.

    The VAE hops 4 samples per latent frame (patch 2 x stride 2), so 64 latent frames per
    second. The tokenizer is a character-level Gemma BPE (no merges). The scheduler is the
    distilled checkpoint's: flow-match Euler, ``num_train_timesteps=1``, stochastic ping-pong.
    """
    from diffusers import (
        AutoencoderSAME,
        FlowMatchEulerDiscreteScheduler,
        StableAudio3DiTModel,
        StableAudio3Pipeline,
    )
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import (
        StableAudio3DurationEmbedder,
    )
    from transformers import GemmaTokenizer, T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for piece in [*"abcdefghijklmnopqrstuvwxyz", "\u2581"]:
        vocab[piece] = len(vocab)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], model_max_length=16)
    width = 16  # text hidden size = DiT cond/global dims = duration embedding
    torch.manual_seed(SEED)
    module = T5GemmaModuleConfig(
        vocab_size=len(vocab),
        hidden_size=width,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        sliding_window=64,
        layer_types=["full_attention"],
    )
    text_encoder = T5GemmaEncoderModel(
        T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(), is_encoder_decoder=False)
    )
    transformer = StableAudio3DiTModel(
        io_channels=4,
        embed_dim=16,
        depth=2,
        num_heads=2,
        cond_token_dim=width,
        global_cond_dim=width,
        local_add_cond_dim=5,
        timestep_features_dim=8,
        ff_mult=2,
        num_memory_tokens=2,
        use_differential_attention=True,
    )
    vae = AutoencoderSAME(
        audio_channels=2,
        patch_size=2,
        encoder_channels=8,
        encoder_c_mults=(2,),
        encoder_strides=(2,),
        encoder_transformer_depths=(1,),
        latent_dim=4,
        use_differential_attention=False,
        dim_heads=4,
        ff_mult=2,
        sampling_rate=256,
    )
    # SAME zero-initialises its residual branches' output projections, which makes an untrained
    # codec ignore its input (every latent decodes to the same sound); give them random weights
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith(("attn.to_out.weight", "ff.proj_out.weight")):
                param.normal_(std=0.3)
    duration_embedder = StableAudio3DurationEmbedder(output_dim=width, fourier_dim=8, max_val=32)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1, shift=1.0, stochastic_sampling=True
    )
    return StableAudio3Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        duration_embedder=duration_embedder,
        transformer=transformer,
        scheduler=scheduler,
    )


def qwen_word_tokenizer(max_length: int = 512) -> Any:
    """A word-level fast tokenizer over :data:`WORDS`, ACE-Step's prompt template and digits.

    ``<|endoftext|>`` (end of the template, and padding, as in Qwen3) is a special token;
    anything else unknown becomes ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    template = [
        *("Instruction", "Fill", "audio", "semantic", "mask", "based", "on", "given"),
        *("conditions", "Caption", "Metas", "bpm", "N", "A", "timesignature", "keyscale"),
        *("duration", "seconds", "Languages", "en", "Lyric", "verse", "chorus"),
    ]
    symbols = list("#:-/[],.0123456789")
    pieces = ["<|endoftext|>", "<unk>", *dict.fromkeys(WORDS + template + symbols)]
    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=max_length,
    )


def build_tiny_ace_step() -> Any:
    """AceStepPipeline: 2-block DiT (width 16), 2-stage Oobleck VAE at 256 Hz, 1-layer Qwen3.

    The VAE hops 4 samples per latent frame (64 frames per second, 4 latent channels); the
    condition encoder has 1 lyric and 1 timbre layer, and its ``silence_latent`` is the tiny
    VAE's encoding of silence, as the converter stores for the real model.
    """
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = qwen_word_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8}
    transformer = AceStepTransformer1DModel(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        in_channels=12,  # silence latent + chunk mask + noisy latent, 4 channels each
        audio_acoustic_hidden_dim=4,
        patch_size=2,
        rope_theta=10000.0,
        sliding_window=16,
        **heads,
    )
    condition_encoder = AceStepConditionEncoder(
        hidden_size=16,
        intermediate_size=32,
        text_hidden_dim=16,
        timbre_hidden_dim=4,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        rope_theta=10000.0,
        sliding_window=16,
        **heads,
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
    with torch.no_grad():
        frames = condition_encoder.silence_latent.shape[1]
        silence = vae.encode(torch.zeros(1, 2, frames * vae.hop_length)).latent_dist.mean
        condition_encoder.silence_latent.copy_(silence.transpose(1, 2))
    return AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )


def roberta_byte_tokenizer(max_length: int = 32) -> Any:
    """A byte-level BPE (RoBERTa, as CLAP uses) tokenizer: special tokens + the 256 byte symbols."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def build_tiny_audioldm2() -> Any:
    """AudioLDM2Pipeline: 2-level UNet (widths 8/16), 2-level mel VAE, 1-layer CLAP/T5/GPT-2.

    Mono at 800 Hz; the vocoder hops 10 samples per mel frame (8 bands), the VAE halves time
    and bands, so a latent frame is 20 samples (40 per second). GPT-2 (width 16) generates 4
    states; T5 is 8 wide, so the UNet's cross-attention dims are ``[None, 16, 8]``.
    """
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    tokenizer = roberta_byte_tokenizer()
    tokenizer_2 = t5_tokenizer()
    torch.manual_seed(SEED)
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, 16, 8], [None, 16, 8]),
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    text_config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=40,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        projection_dim=16,
    )
    audio_config = ClapAudioConfig(
        spec_size=64,
        window_size=4,
        num_mel_bins=64,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        hidden_size=16,
        intermediate_size=32,
        patch_size=2,
        patch_stride=2,
        patch_embed_input_channels=4,
        projection_dim=16,
    )
    text_encoder = ClapModel(
        ClapConfig(
            text_config=text_config.to_dict(),
            audio_config=audio_config.to_dict(),
            projection_dim=16,
        )
    )
    text_encoder_2 = tiny_t5_encoder(len(tokenizer_2), d_model=8)
    language_model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=8,
            n_embd=16,
            n_head=2,
            n_layer=1,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    language_model.config.max_new_tokens = 4
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=16, text_encoder_1_dim=8, langauge_model_dim=16
    )
    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=800,
            upsample_initial_channel=8,
            upsample_rates=[5, 2],
            upsample_kernel_sizes=[10, 4],
            resblock_kernel_sizes=[3],
            resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    return AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=ClapFeatureExtractor(),
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )


def build_tiny_demo() -> Any:
    """DemoMusicPipeline at 16 kHz: 16-band log-mel, 3-level VAE (width 8), UNet (8/16/16),
    1-layer CLIP text encoder (width 16), 4 Griffin-Lim iterations (see
    :mod:`lora_audio.demo_model.build`, size ``tiny``)."""
    from lora_audio.demo_model.build import SIZES, build_pipeline

    return build_pipeline(SIZES["tiny"], seed=SEED)


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
    "audioldm2": build_tiny_audioldm2,
    "demo": build_tiny_demo,
    "ace-step": build_tiny_ace_step,
    "stable-audio": build_tiny_stable_audio,
    "stable-audio-3": build_tiny_stable_audio_3,
}
