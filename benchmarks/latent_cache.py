"""Training steps per second from the latent cache vs encoding audio on the fly; encode speed.

    .venv/bin/python benchmarks/latent_cache.py [--steps 20] [--segments 16] [--batch 4]

For two models, the tiny Stable Audio test model and a ~20 M-parameter Stable Audio pipeline
built from config here (bigger DiT and Oobleck VAE at 16 kHz, random weights), it

1. writes ``--segments`` noise segments and encodes them with :func:`build_cache`
   (encode throughput, x realtime);
2. runs the same LoRA training steps (same batches, same seeds) two ways, side by side:
   ``cached`` reads latents + conditioning from the cache (:mod:`lora_audio.data`);
   ``on the fly`` decodes the segment files, runs the VAE and the text encoder each step;
3. prints steps/s of each and the ratio (goal >= 3x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from lora_audio import adapters
from lora_audio.config import LoraSection, load_config
from lora_audio.data import make_loader
from lora_audio.models import load_model
from lora_audio.testing import t5_tokenizer, tiny_model_dir
from preprocessing.latent_cache import (
    WorkItem,
    build_cache,
    encode_batch,
    plan,
    prepare_audio,
)
from preprocessing.manifest import Segment, read_manifest, write_manifest


def build_medium_stable_audio():
    """A ~20 M-parameter StableAudioPipeline: 8-layer DiT (width 256), Oobleck VAE at 16 kHz
    (hop 256, 62.5 latent frames/s, 32 latent channels), 2-layer T5 (width 128)."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = t5_tokenizer(max_length=32)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=128,
            d_kv=32,
            d_ff=512,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = StableAudioDiTModel(
        sample_size=256,
        in_channels=32,
        num_layers=8,
        attention_head_dim=32,
        num_attention_heads=8,
        num_key_value_attention_heads=2,
        out_channels=32,
        cross_attention_dim=256,
        time_proj_dim=128,
        global_states_input_dim=256,
        cross_attention_input_dim=128,
    )
    vae = AutoencoderOobleck(
        encoder_hidden_size=64,  # mean + scale of 32 latent channels
        downsampling_ratios=[2, 4, 4, 8],
        channel_multiples=[1, 2, 4, 4],
        decoder_channels=64,
        decoder_input_channels=32,
        audio_channels=2,
        sampling_rate=16000,
    )
    projection = StableAudioProjectionModel(
        text_encoder_dim=128, conditioning_dim=128, min_value=0, max_value=64
    )
    scheduler = CosineDPMSolverMultistepScheduler(
        solver_order=2, prediction_type="v_prediction", sigma_data=1.0
    )
    return StableAudioPipeline(
        vae=vae,
        text_encoder=text_encoder,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )


def n_params(model) -> int:
    return sum(
        p.numel()
        for m in model.pipe.components.values()
        if isinstance(m, torch.nn.Module)
        for p in m.parameters()
    )


def write_segments(folder: Path, n: int, seconds: float, sr: int) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = folder / f"seg{i:03d}.wav"
        frames = round(seconds * sr)
        sf.write(path, 0.2 * rng.standard_normal((frames, 2)).astype(np.float32), sr)
        rows.append(
            Segment(
                f"seg{i:03d}",
                path.name,
                "bench",
                "0" * 64,
                0.0,
                seconds,
                sr,
                2,
                frames,
                -20.0,
                -20.0,
                1.0,
                caption="calm piano with soft drums",
            )
        )
    return write_manifest(folder / "manifest.jsonl", rows)


def train_steps(model, batches, steps: int, seed: int) -> float:
    """Run ``steps`` LoRA steps drawing ``(latents, cond, mask)`` from ``batches()``; seconds."""
    params = [p for p in model.denoiser.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(seed)
    model.denoiser.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        latents, cond, mask = batches()
        loss = model.training_loss(latents, cond, mask=mask, generator=g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def bench(name: str, model_dir: Path, seconds: float, args: argparse.Namespace) -> None:
    model = load_model("stable-audio", model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_segments(Path(tmp), args.segments, seconds, model.sample_rate)
        cfg = load_config(
            None,
            [
                f"model.path={model_dir}",
                f"data.manifest={manifest}",
                f"data.seconds={seconds}",
                f"data.encode_batch_size={args.batch}",
            ],
        )
        summary = build_cache(cfg, model, progress=False)
        items: list[WorkItem] = plan(read_manifest(manifest), cfg.data, {})[0]
        adapters.inject_lora(model, LoraSection(rank=8, alpha=16, dropout=0.0))

        loader = make_loader(summary.folder, "train", batch_size=args.batch, seed=0)
        it = iter(loader)

        def cached():
            nonlocal it
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            return b["latents"], b["cond"], b["mask"]

        pos = 0

        def on_the_fly():
            nonlocal pos
            chosen = [items[(pos + i) % len(items)] for i in range(args.batch)]
            pos += args.batch
            audio = [prepare_audio(c, model.sample_rate, 2, seconds)[0] for c in chosen]
            latents, cond = encode_batch(
                model,
                torch.from_numpy(np.stack(audio)),
                [c.segment.caption for c in chosen],
                [c.valid_seconds for c in chosen],
            )
            return latents, cond, None

        train_steps(model, cached, 2, 0)  # warm-up both paths
        train_steps(model, on_the_fly, 2, 0)
        t_fly = t_cached = 0.0
        for r in range(args.rounds):  # interleaved, so both see the same machine load
            t_cached += train_steps(model, cached, args.steps, r)
            t_fly += train_steps(model, on_the_fly, args.steps, r)
        n = args.steps * args.rounds
        print(
            f"{name}: {n_params(model) / 1e6:.1f} M params, {args.segments} x {seconds:g} s, "
            f"batch {args.batch}, {n} steps each"
        )
        print(
            f"  encode: {summary.seconds_new:.0f} s of audio in {summary.encode_s:.2f} s "
            f"= {summary.realtime:.1f}x realtime ({summary.cache_bytes / 1e6:.2f} MB cache)"
        )
        print(
            f"  train steps/s: cached {n / t_cached:.2f}, on the fly {n / t_fly:.2f} "
            f"-> cached is {t_fly / t_cached:.1f}x faster"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        bench("tiny stable-audio", tiny_model_dir("stable-audio", Path(tmp)), 2.0, args)
        folder = Path(tmp) / "medium"
        build_medium_stable_audio().save_pretrained(str(folder))
        bench("~20M stable-audio", folder, 4.0, args)


if __name__ == "__main__":
    main()
