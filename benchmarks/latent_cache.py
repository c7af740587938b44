"""Training steps per second from the latent cache vs encoding audio on the fly; encode speed.

    .venv/bin/python benchmarks/latent_cache.py [--steps 6] [--rounds 3] [--batch 4]

Three Stable Audio pipelines built from config with random weights:

* ``tiny``: the tiny test model's widths (2-layer DiT of width 16, 1-layer T5) with Stable
  Audio Open's audio format: 44.1 kHz stereo, Oobleck VAE with its strides (hop 2048, 21.5
  latent frames/s) at 1/16 of its widths, 10 s segments;
* ``~20 M``: 8-layer DiT of width 256, Oobleck VAE at 16 kHz (hop 256, 32 latent channels),
  2-layer T5, 4 s segments (the DiT's longest);
* ``test model``: ``tiny:stable-audio`` as the tests use it (256 Hz, 2 s segments: 512
  samples, so the VAE has next to nothing to encode). It shows how the speed-up depends on
  what encoding costs next to a training step.

For each it

1. writes ``--segments`` noise segments and encodes them with :func:`build_cache`
   (encode throughput, x realtime);
2. runs LoRA training steps two ways, interleaved (``timing.py``: rounds, order rotated, CPU
   time as the main figure, wall beside it): ``cached`` reads latents + conditioning from the
   cache (:func:`lora_audio.data.make_loader`); ``on the fly`` decodes the segment files,
   resamples, runs the VAE and the text encoder each step;
3. prints the median time per step of each, split into getting the batch and the step
   itself, and the speed-up (goal >= 3x).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from timing import Clock, format_ratio, median, new_times, rotated

from lora_audio import adapters
from lora_audio.config import LoraSection, load_config
from lora_audio.data import make_loader
from lora_audio.models import load_model
from lora_audio.testing import build_tiny_stable_audio, t5_tokenizer, tiny_model_dir
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


def build_tiny_stable_audio_44k():
    """The tiny test model's DiT and T5 with Stable Audio Open's audio format: 44.1 kHz stereo,
    Oobleck strides 2, 4, 4, 8, 8 (hop 2048) at 1/16 of its widths (8 ... 128), 4 latent channels.
    """
    from diffusers import AutoencoderOobleck, StableAudioDiTModel

    pipe = build_tiny_stable_audio()
    torch.manual_seed(0)
    transformer = StableAudioDiTModel(**{**pipe.transformer.config, "sample_size": 256})
    vae = AutoencoderOobleck(
        encoder_hidden_size=8,  # mean + scale of 4 latent channels; real: 128 (64 channels)
        downsampling_ratios=[2, 4, 4, 8, 8],
        channel_multiples=[1, 2, 4, 8, 16],
        decoder_channels=8,
        decoder_input_channels=4,
        audio_channels=2,
        sampling_rate=44100,
    )
    pipe.register_modules(transformer=transformer, vae=vae)
    return pipe


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


Batch = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]


def bench(
    name: str, model_dir: Path, seconds: float, args: argparse.Namespace, clock: Clock
) -> None:
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
        opt = torch.optim.AdamW([p for p in model.denoiser.parameters() if p.requires_grad])
        noise = torch.Generator().manual_seed(0)

        loader = make_loader(summary.folder, "train", batch_size=args.batch, seed=0)
        it = iter(loader)

        def cached() -> Batch:
            nonlocal it
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            return b["latents"], b["cond"], b["mask"]

        pos = 0

        def on_the_fly() -> Batch:
            nonlocal pos
            chosen = [items[(pos + i) % len(items)] for i in range(args.batch)]
            pos += args.batch
            channels = model.audio_channels
            audio = [prepare_audio(c, model.sample_rate, channels, seconds)[0] for c in chosen]
            latents, cond = encode_batch(
                model,
                torch.from_numpy(np.stack(audio)),
                [c.segment.caption for c in chosen],
                [c.valid_seconds for c in chosen],
            )
            return latents, cond, None

        sources = {"cached": cached, "on the fly": on_the_fly}
        total, data = new_times(list(sources)), new_times(list(sources))
        warm_total, warm_data = new_times(list(sources)), new_times(list(sources))
        model.denoiser.train()
        for r in range(args.rounds + 1):  # round 0 warms up
            for source in rotated(list(sources), r):
                for _ in range(args.steps):
                    with clock.measure((total if r else warm_total)[source]):
                        with clock.measure((data if r else warm_data)[source]):
                            latents, cond, mask = sources[source]()
                        loss = model.training_loss(latents, cond, mask=mask, generator=noise)
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

        n = args.steps * args.rounds
        print(
            f"{name}: {n_params(model) / 1e6:.2f} M params, {model.sample_rate} Hz "
            f"x {model.audio_channels} ch, {args.segments} x {seconds:g} s segments, "
            f"batch {args.batch}, {n} steps each, {args.threads} thread(s)"
        )
        print(
            f"  encode: {summary.seconds_new:.0f} s of audio in {summary.encode_s:.2f} s "
            f"= {summary.realtime:.1f}x realtime ({summary.cache_bytes / 1e6:.2f} MB cache)"
        )
        for source in sources:
            step_ms = 1e3 * median(total, source)
            batch_ms = 1e3 * median(data, source)
            print(
                f"  {source:10s} {step_ms:8.1f} ms/step cpu ({batch_ms:7.1f} getting the batch)"
                f" = {1e3 / step_ms:6.2f} steps/s;  wall {1e3 * median(total, source, 'wall'):8.1f} ms"
            )
        print(f"  cached speed-up: {format_ratio(total, 'on the fly', 'cached')}   goal >= 3")


MODELS = {
    "tiny": ("tiny stable-audio at 44.1 kHz stereo", build_tiny_stable_audio_44k, 10.0),
    "medium": ("~20 M stable-audio", build_medium_stable_audio, 4.0),
    "test": ("tiny:stable-audio test model", None, 2.0),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="steps of each source per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="tiny,medium,test", help=f"of {', '.join(MODELS)}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    clock = Clock(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            title, builder, seconds = MODELS[key]
            if builder is None:
                folder = tiny_model_dir("stable-audio", Path(tmp))
            else:
                folder = Path(tmp) / key
                builder().save_pretrained(str(folder))
            bench(title, folder, seconds, args, clock)


if __name__ == "__main__":
    main()
