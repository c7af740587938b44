"""`lora-audio pretrain-demo`: pretrain the built-in demo model on the ``base`` corpus.

    lora-audio pretrain-demo --work-dir /tmp/demo-train --ae-steps 1200 --unet-steps 6000 \
        [--corpus DIR] [--out lora_audio/demo_model/weights] [--stop-after-minutes 40]

Stages, each resumable from its checkpoint in ``--work-dir`` (safetensors + JSON, written
atomically every ``--checkpoint-every`` steps and when stopping):

0. ``init/``: the untrained pipeline (fixed seed) with the corpus' log-mel mean/std; the frozen
   text encoder and the tokenizer come from here.
1. ``ae/``: the ``AutoencoderKL`` over normalised log-mel, L1 + KL (weight ``--kl-weight`` on
   the per-item KL sum), random 64-frame crops. Held-out metric: mel dB MSE (``eval``'s 128-band
   log-mel, dB, top 80 dB) between held-out 5 s clips and their reconstruction through the
   autoencoder and Griffin-Lim.
2. ``latents.safetensors``: every piece encoded once by the final autoencoder; the VAE's
   ``scaling_factor`` is set to 1 / std of the training latents.
3. ``unet/``: the UNet, v-prediction with 10 % caption dropout (for classifier-free guidance),
   random crops of ``--crop-seconds``, an EMA of the weights (what is exported). Held-out
   metric: the diffusion loss at fixed timesteps and noise on held-out crops.
4. the pipeline folder ``--out`` (``save_pretrained``, replaced atomically) plus
   ``training.json`` (settings, steps, metrics), written whenever a run gets past stage 1, so a
   run stopped by ``--stop-after-minutes`` exports what it has; running again resumes.

Held-out pieces: every tenth piece of the corpus manifest (index % 10 == 3). Every random draw
comes from a generator seeded by (seed, stage, step), so a resumed run continues exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lora_audio.files import write_json_atomic

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VAL_EVERY_NTH = 10
VAL_OFFSET = 3


@dataclass
class PretrainSettings:
    """Everything that shapes a pretraining run (recorded in ``training.json``)."""

    size: str = "base"
    seed: int = 0
    ae_steps: int = 1200
    ae_batch: int = 8
    ae_crop_frames: int = 64
    ae_lr: float = 5e-4
    kl_weight: float = 1e-6
    unet_steps: int = 6000
    unet_batch: int = 8
    crop_seconds: float = 2.56
    unet_lr: float = 5e-4
    warmup_steps: int = 100
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    eval_every: int = 200
    checkpoint_every: int = 100
    val_clips: int = 8
    val_seconds: float = 5.0
    #: torch CPU threads; 0 = the idle cores, re-counted at every checkpoint
    threads: int = 0


@dataclass
class Piece:
    """One corpus piece: mono audio ``[T]`` at 16 kHz and its caption."""

    id: str
    caption: str
    audio: np.ndarray
    val: bool


# ---------------------------------------------------------------------------- data
def load_corpus(corpus_dir: str | Path) -> list[Piece]:
    """Pieces of a corpus folder (``corpus.jsonl`` + audio), mono at 16 kHz."""
    from lora_audio.audio import load_audio

    corpus_dir = Path(corpus_dir)
    manifest = corpus_dir / "corpus.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{corpus_dir}: no corpus.jsonl; build it with `lora-audio corpus build base`"
        )
    pieces = []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        audio, _ = load_audio(corpus_dir / row["path"], sample_rate=SAMPLE_RATE, channels=1)
        val = i % VAL_EVERY_NTH == VAL_OFFSET
        pieces.append(Piece(row["id"], row["caption"], audio[0], val))
    return pieces


def default_corpus_dir() -> Path:
    """The ``base`` corpus rendered at 16 kHz (built if missing)."""
    from preprocessing.corpus import RenderSettings, build_corpus

    return Path(build_corpus("base", settings=RenderSettings(sample_rate=SAMPLE_RATE)).dir)


def val_clips(pieces: list[Piece], count: int, seconds: float) -> list[np.ndarray]:
    """``count`` fixed held-out clips of ``seconds``: windows spread over the held-out pieces."""
    n = round(seconds * SAMPLE_RATE)
    clips = []
    val = [p for p in pieces if p.val and len(p.audio) >= n]
    for k in range(count):
        piece = val[k % len(val)]
        starts = max(1, len(piece.audio) - n)
        start = (starts * (k // len(val) + 1)) // (count // len(val) + 2)
        clips.append(piece.audio[start : start + n])
    return clips


def random_crops(
    arrays: list[torch.Tensor], weights: np.ndarray, batch: int, length: int, gen: torch.Generator
) -> tuple[torch.Tensor, list[int]]:
    """``batch`` random crops of ``length`` along the last-but-one axis of ``[.., L, D]`` arrays
    (each long enough), pieces drawn in proportion to ``weights``. Returns crops, piece indices."""
    idx = torch.multinomial(torch.from_numpy(weights).double(), batch, True, generator=gen).tolist()
    out = []
    for i in idx:
        a = arrays[i]
        start = int(torch.randint(0, a.shape[-2] - length + 1, (1,), generator=gen))
        out.append(a[..., start : start + length, :])
    return torch.stack(out), idx


def step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_000_007 + step)


# ------------------------------------------------------------------------ metrics
def mel_db_mse(reference: list[np.ndarray], generated: list[np.ndarray]) -> float:
    """Mean paired log-mel dB MSE (``eval``'s 128-band analysis at 16 kHz)."""
    from eval.distances import mel_mse_paired
    from eval.features import SpectralConfig, log_mel_batch

    cfg = SpectralConfig(sample_rate=SAMPLE_RATE)
    ref = log_mel_batch(reference, cfg)
    gen = log_mel_batch(generated, cfg)
    return float(np.mean([mel_mse_paired(g, r) for g, r in zip(gen, ref, strict=True)]))


@torch.no_grad()
def reconstruct(pipe: Any, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Clips through the autoencoder (posterior mean) and Griffin-Lim, trimmed to length."""
    audio = torch.from_numpy(np.stack(clips))
    mel = pipe.audio_to_mel(audio)
    rec = pipe.vae.decode(pipe.vae.encode(mel).latent_dist.mean).sample
    out = pipe.mel_to_audio(rec)[:, : audio.shape[1]]
    return list(out.numpy())


@torch.no_grad()
def griffin_lim_ceiling(pipe: Any, clips: list[np.ndarray]) -> float:
    """mel dB MSE of Griffin-Lim from the true log-mel: the best the autoencoder can reach."""
    audio = torch.from_numpy(np.stack(clips))
    out = pipe.mel_to_audio(pipe.audio_to_mel(audio))[:, : audio.shape[1]]
    return mel_db_mse(clips, list(out.numpy()))


# -------------------------------------------------------------------- checkpoints
class Trainee(nn.Module):
    """What a stage checkpoints: the trained module and (optionally) its EMA copy.

    The EMA parameters are marked trainable only so that ``save_checkpoint`` stores them; they
    are never given to the optimizer.
    """

    def __init__(self, model: nn.Module, ema: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        if ema is not None:
            self.ema = ema
            ema.requires_grad_(True)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


def _resume(folder: Path, trainee: Trainee, optimizer: torch.optim.Optimizer) -> dict:
    from lora_audio.training.checkpoint import load_checkpoint

    if not (folder / "state.json").is_file():
        return {"step": 0, "history": []}
    ckpt = load_checkpoint(folder, trainee, optimizer, restore_rng=False)
    log.info("%s: resumed at step %d", folder, ckpt.step)
    return ckpt.state


def _save(folder: Path, trainee: Trainee, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from lora_audio.training.checkpoint import save_checkpoint

    extra = {k: v for k, v in state.items() if k not in ("step", "optimizer", "param_names")}
    save_checkpoint(folder, trainee, optimizer, state["step"], extra)


def idle_cores(own_threads: int = 0) -> int:
    """CPU cores not busy with other work: cores minus the 1-minute load average, not counting
    ``own_threads`` of ours (at least 1)."""
    cores = os.cpu_count() or 1
    try:
        busy = max(0, round(os.getloadavg()[0] - own_threads))
    except OSError:  # no load average on this platform
        busy = 0
    return max(1, min(cores, cores - busy))


def _adapt_threads(settings: PretrainSettings) -> None:
    """With ``threads == 0``, follow the idle cores (oversubscribed threads crawl)."""
    if settings.threads > 0:
        return
    own = torch.get_num_threads()
    want = idle_cores(own)
    if want != own:
        log.info("CPU threads %d -> %d (idle cores)", own, want)
        torch.set_num_threads(want)


def _lr(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``base`` at ``total`` steps."""
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
    return base * min(1.0, (step + 1) / max(1, warmup)) * (0.1 + 0.9 * cosine)


# ------------------------------------------------------------------------- stages
def init_pipeline(work: Path, settings: PretrainSettings, pieces: list[Piece]) -> Any:
    """Stage 0: the untrained pipeline with the corpus' log-mel statistics (built once)."""
    from lora_audio.demo_model.build import SIZES, build_pipeline
    from lora_audio.models.demo import DemoMusicPipeline

    folder = work / "init"
    if not (folder / "model_index.json").is_file():
        pipe = build_pipeline(SIZES[settings.size], seed=settings.seed)
        train = [torch.from_numpy(p.audio) for p in pieces if not p.val]
        mels = torch.cat([pipe.audio_to_mel(a[None])[0, 0] for a in train])
        pipe = build_pipeline(
            SIZES[settings.size],
            seed=settings.seed,
            mel_mean=float(mels.mean()),
            mel_std=float(mels.std()),
        )
        _save_pipeline(pipe, folder)
        log.info("init: mel mean %.3f std %.3f", mels.mean(), mels.std())
    return DemoMusicPipeline.from_pretrained(str(folder))


def _save_pipeline(pipe: Any, folder: Path, extra: dict | None = None) -> None:
    """``save_pretrained`` into a temporary folder, then swap it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        pipe.save_pretrained(str(tmp))
        if extra is not None:
            write_json_atomic(tmp / "training.json", extra)
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_autoencoder(
    pipe: Any, work: Path, settings: PretrainSettings, pieces: list[Piece], deadline: float
) -> dict:
    """Stage 1. Trains ``pipe.vae`` in place up to ``settings.ae_steps``; returns its state."""
    vae = pipe.vae
    trainee = Trainee(vae)
    vae.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.ae_lr, weight_decay=0.0)
    folder = work / "ae"
    state = _resume(folder, trainee, optimizer)
    train = [p for p in pieces if not p.val]
    with torch.no_grad():
        mels = [pipe.audio_to_mel(torch.from_numpy(p.audio)[None])[0] for p in train]
    weights = np.array([m.shape[1] for m in mels], dtype=np.float64)
    clips = val_clips(pieces, settings.val_clips, settings.val_seconds)
    if "griffin_lim_ceiling" not in state:
        state["griffin_lim_ceiling"] = griffin_lim_ceiling(pipe, clips)
        log.info("ae: Griffin-Lim ceiling (true mel) mel dB MSE %.2f", state["griffin_lim_ceiling"])
    step = int(state["step"])
    t0, losses = time.time(), []
    while step < settings.ae_steps and time.time() < deadline:
        vae.train()
        gen = step_generator(settings.seed, 1, step)
        x, _ = random_crops(mels, weights, settings.ae_batch, settings.ae_crop_frames, gen)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, settings.ae_lr, settings.warmup_steps, settings.ae_steps)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(
            posterior.mean
        )
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        kl = posterior.kl().mean()
        loss = l1 + settings.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(l1.item())
        if step % settings.eval_every == 0 or step == settings.ae_steps:
            vae.eval()
            mse = mel_db_mse(clips, reconstruct(pipe, clips))
            row = {
                "step": step,
                "l1": float(np.mean(losses)),
                "kl": kl.item(),
                "val_mel_db_mse": mse,
            }
            row["seconds"] = round(time.time() - t0, 1)
            state.setdefault("history", []).append(row)
            log.info("ae %s", json.dumps(row))
            losses = []
        if step % settings.checkpoint_every == 0:
            state["step"] = step
            _save(folder, trainee, optimizer, state)
            _adapt_threads(settings)
    state["step"] = step
    _save(folder, trainee, optimizer, state)
    vae.requires_grad_(False).eval()
    return state


@torch.no_grad()
def encode_corpus(pipe: Any, work: Path, pieces: list[Piece], ae_step: int) -> dict[str, Any]:
    """Stage 2: latents ``[C, L, M]`` of every piece (unscaled posterior means), cached."""
    path = work / "latents.safetensors"
    meta_path = work / "latents.json"
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("ae_step") == ae_step:
            return {"tensors": load_file(str(path)), **meta}
    tensors = {}
    for p in pieces:
        mel = pipe.audio_to_mel(torch.from_numpy(p.audio)[None])
        tensors[p.id] = pipe.vae.encode(mel).latent_dist.mean[0].contiguous()
    train = torch.cat([tensors[p.id].flatten() for p in pieces if not p.val])
    meta = {"ae_step": ae_step, "scaling_factor": float(1.0 / train.std())}
    save_file(tensors, str(path))
    write_json_atomic(meta_path, meta)
    return {"tensors": tensors, **meta}


def train_unet(
    pipe: Any,
    work: Path,
    settings: PretrainSettings,
    pieces: list[Piece],
    latents: dict[str, torch.Tensor],
    deadline: float,
) -> dict:
    """Stage 3. Trains ``pipe.unet`` (and its EMA) up to ``settings.unet_steps``."""
    import copy

    from lora_audio.models.demo import DemoModel

    model = DemoModel(pipe, "demo-pretrain", None)
    unet = pipe.unet
    ema = copy.deepcopy(unet)
    trainee = Trainee(unet, ema)
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.unet_lr, weight_decay=0.01)
    folder = work / "unet"
    state = _resume(folder, trainee, optimizer)

    scale = float(pipe.vae.config.scaling_factor)
    blocks = math.ceil(settings.crop_seconds * SAMPLE_RATE / pipe.samples_per_block)
    frames = pipe.unet_factor * blocks  # latent frames per crop
    train = [p for p in pieces if not p.val and latents[p.id].shape[1] >= frames]
    val = [p for p in pieces if p.val and latents[p.id].shape[1] >= frames]
    arrays = [latents[p.id] * scale for p in train]
    weights = np.array([a.shape[1] for a in arrays], dtype=np.float64)
    captions = [*sorted({p.caption for p in pieces}), ""]
    cond = model.encode_prompt(captions)
    cap_index = {c: i for i, c in enumerate(captions)}

    def batch_of(sources: list[Piece], arrs: list[torch.Tensor], w, n, gen):
        x, idx = random_crops(arrs, w, n, frames, gen)  # [B, C, frames, M]
        rows = [cap_index[sources[i].caption] for i in idx]
        return x, rows

    gen = step_generator(settings.seed, 3, -1)
    val_arrays = [latents[p.id] * scale for p in val]
    val_x, val_rows = batch_of(val, val_arrays, np.ones(len(val)), settings.unet_batch, gen)
    val_t = torch.linspace(50, 950, settings.unet_batch).long()

    def val_loss() -> float:
        ema.eval()
        g = step_generator(settings.seed, 4, 0)
        inputs = model.sample_training_inputs(val_x, g, val_t)
        c = {k: v[val_rows] for k, v in cond.items()}
        with torch.no_grad():
            pred = ema(
                inputs.noisy,
                inputs.timesteps,
                encoder_hidden_states=c["encoder_hidden_states"],
                encoder_attention_mask=c["encoder_attention_mask"],
            ).sample
        return float(((pred - inputs.target) ** 2).mean())

    step = int(state["step"])
    t0, losses = time.time(), []
    while step < settings.unet_steps and time.time() < deadline:
        unet.train()
        gen = step_generator(settings.seed, 3, step)
        x, rows = batch_of(train, arrays, weights, settings.unet_batch, gen)
        drop = torch.rand(len(rows), generator=gen) < settings.caption_dropout
        rows = [cap_index[""] if d else r for r, d in zip(rows, drop.tolist(), strict=True)]
        c = {k: v[rows] for k, v in cond.items()}
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, settings.unet_lr, settings.warmup_steps, settings.unet_steps)
        loss = model.training_loss(x, c, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        step += 1
        trainee.update_ema(min(settings.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item())
        if step % settings.eval_every == 0 or step == settings.unet_steps:
            row = {"step": step, "loss": float(np.mean(losses)), "val_loss_ema": val_loss()}
            row["seconds"] = round(time.time() - t0, 1)
            state.setdefault("history", []).append(row)
            log.info("unet %s", json.dumps(row))
            losses = []
        if step % settings.checkpoint_every == 0:
            state["step"] = step
            _save(folder, trainee, optimizer, state)
            _adapt_threads(settings)
    state["step"] = step
    _save(folder, trainee, optimizer, state)
    unet.load_state_dict(ema.state_dict())
    unet.requires_grad_(False).eval()
    return state


def export_checkpoints(work: str | Path, out: str | Path) -> dict:
    """Write the pipeline that the checkpoints in ``work`` hold (autoencoder, UNet EMA) to
    ``out`` without training; reads ``work`` only. Returns the ``training.json`` written."""
    from lora_audio.models.demo import DemoMusicPipeline
    from lora_audio.training.checkpoint import read_state

    work = Path(work)
    pipe = DemoMusicPipeline.from_pretrained(str(work / "init"))
    ae_state, unet_state = read_state(work / "ae"), read_state(work / "unet")
    meta = json.loads((work / "latents.json").read_text())
    if meta["ae_step"] != ae_state["step"]:
        raise RuntimeError(f"{work}: latents are from autoencoder step {meta['ae_step']}")
    ae = load_file(str(work / "ae" / "trainable.safetensors"))
    pipe.vae.load_state_dict({k.removeprefix("model."): v for k, v in ae.items()})
    unet = load_file(str(work / "unet" / "trainable.safetensors"))
    pipe.unet.load_state_dict({k[4:]: v for k, v in unet.items() if k.startswith("ema.")})
    pipe.vae.register_to_config(scaling_factor=meta["scaling_factor"])
    summary = {
        "autoencoder": ae_state.get("history", []),
        "griffin_lim_ceiling": ae_state.get("griffin_lim_ceiling"),
        "unet": unet_state.get("history", []),
        "steps": {"autoencoder": ae_state["step"], "unet": unet_state["step"]},
    }
    _save_pipeline(pipe, Path(out), summary)
    return summary


def pretrain(
    work: str | Path,
    out: str | Path | None,
    settings: PretrainSettings,
    corpus_dir: str | Path | None = None,
    stop_after_minutes: float | None = None,
) -> dict:
    """Run (or resume) every stage; once the autoencoder stage is complete, export the pipeline
    (with the UNet's EMA weights as far as they got, ``steps`` in ``training.json``) to ``out``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * stop_after_minutes if stop_after_minutes else math.inf
    corpus_dir = Path(corpus_dir) if corpus_dir else default_corpus_dir()
    pieces = load_corpus(corpus_dir)
    log.info(
        "corpus %s: %d pieces (%d held out), %.1f min",
        corpus_dir,
        len(pieces),
        sum(p.val for p in pieces),
        sum(len(p.audio) for p in pieces) / SAMPLE_RATE / 60,
    )
    pipe = init_pipeline(work, settings, pieces)
    ae_state = train_autoencoder(pipe, work, settings, pieces, deadline)
    summary: dict[str, Any] = {"settings": asdict(settings), "corpus": str(corpus_dir)}
    summary["autoencoder"] = ae_state.get("history", [])
    summary["griffin_lim_ceiling"] = ae_state.get("griffin_lim_ceiling")
    if ae_state["step"] < settings.ae_steps:
        log.info("stopped in the autoencoder stage at step %d", ae_state["step"])
        return summary
    enc = encode_corpus(pipe, work, pieces, ae_state["step"])
    pipe.vae.register_to_config(scaling_factor=enc["scaling_factor"])
    unet_state = train_unet(pipe, work, settings, pieces, enc["tensors"], deadline)
    summary["unet"] = unet_state.get("history", [])
    summary["steps"] = {"autoencoder": ae_state["step"], "unet": unet_state["step"]}
    if out is not None:
        _save_pipeline(pipe, Path(out), summary)
        log.info("wrote %s", out)
    return summary


# --------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    d = PretrainSettings()
    p.add_argument("--work-dir", required=True, help="checkpoints and caches (resumable)")
    p.add_argument("--out", help="pipeline folder to write at the end (replaced atomically)")
    p.add_argument("--corpus", help="corpus folder (default: the base corpus at 16 kHz)")
    p.add_argument("--ae-steps", type=int, default=d.ae_steps)
    p.add_argument("--unet-steps", type=int, default=d.unet_steps)
    p.add_argument("--size", choices=["base", "tiny"], default=d.size)
    p.add_argument("--unet-batch", type=int, default=d.unet_batch)
    p.add_argument("--crop-seconds", type=float, default=d.crop_seconds, help="UNet crop length")
    p.add_argument("--unet-lr", type=float, default=d.unet_lr)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument(
        "--export-only",
        action="store_true",
        help="write --out from the checkpoints in --work-dir (no training)",
    )
    p.add_argument("--stop-after-minutes", type=float, help="checkpoint and stop after this long")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the idle cores)")


def run(args: argparse.Namespace) -> int:
    if args.export_only:
        if not args.out:
            print("--export-only needs --out")
            return 2
        summary = export_checkpoints(args.work_dir, args.out)
        print(json.dumps({"out": args.out, "steps": summary["steps"]}, indent=2))
        return 0
    threads = args.threads or idle_cores()
    torch.set_num_threads(threads)
    log.info("using %d CPU threads%s", threads, "" if args.threads else " (idle cores)")
    settings = PretrainSettings(
        size=args.size,
        ae_steps=args.ae_steps,
        unet_steps=args.unet_steps,
        unet_batch=args.unet_batch,
        crop_seconds=args.crop_seconds,
        unet_lr=args.unet_lr,
        threads=args.threads or 0,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
    )
    summary = pretrain(args.work_dir, args.out, settings, args.corpus, args.stop_after_minutes)
    steps = summary.get("steps")
    if steps is None:
        print(f"autoencoder stage not finished; run again to resume ({args.work_dir})")
        return 0
    print(json.dumps({"steps": steps, "unet": summary["unet"][-1:]}, indent=2))
    return 0
