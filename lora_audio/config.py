"""Typed run configuration: dataclass sections, YAML files, ``key=value`` overrides.

The schema is the :class:`RunConfig` dataclass tree, turned into an OmegaConf structured
config. A YAML file and command-line overrides (``lora.rank=16``) are merged onto it in that
order; an unknown or misspelt key, or a value of the wrong type, stops at once with a
:class:`ConfigError` naming the key path and the allowed keys. :func:`load_config` returns
plain dataclass objects, validated.

To add a section (``data``, ``train``): write its dataclass, add a field to :class:`RunConfig`
and, if needed, checks to :func:`validate`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

#: LoRA target groups every family maps to its own module names
TARGET_GROUPS = ("attention", "time_mlp", "output")
LORA_INITS = ("default", "gaussian")
DTYPES = ("float32", "bfloat16", "float16")
SPLITS = ("train", "val", "test")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration problem, one line, naming the key and what is allowed."""


@dataclass
class ModelSection:
    """Which pretrained model to adapt."""

    #: stable-audio | ace-step | stable-audio-3 | audioldm2
    family: str = "stable-audio"
    #: local diffusers pipeline folder, hub id (online), or tiny:<family> (tests, offline demo)
    path: str = "stabilityai/stable-audio-open-1.0"
    #: weights dtype: float32 | bfloat16 | float16
    dtype: str = "float32"


@dataclass
class LoraSection:
    """LoRA shape and where it goes. Defaults: the reference recipe for music generation."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.25
    #: groups among attention | time_mlp | output
    targets: list[str] = field(default_factory=lambda: ["attention", "time_mlp"])
    #: extra regexes (re.fullmatch over the denoiser's module names) to adapt
    include: list[str] = field(default_factory=list)
    #: regexes of module names never to adapt (applied last)
    exclude: list[str] = field(default_factory=list)
    #: default (A Kaiming-uniform, B zero) | gaussian (A normal / rank, B zero)
    init: str = "default"
    #: rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank
    use_rslora: bool = False
    #: weight-decomposed LoRA (DoRA)
    use_dora: bool = False
    #: where dropout acts while training: rank = on the rank-r activation, B(drop(A x)), as cheap
    #: as no dropout | input = PEFT's drop(x) on the full-width input (slow). Files are the same.
    dropout_placement: str = "rank"


@dataclass
class AugmentSection:
    """Extra cached variants of a segment, made before encoding (one variant per value)."""

    #: pitch shifts in semitones, e.g. [-2, -1, 1, 2] (librosa phase-vocoder pitch shift)
    pitch_shifts: list[float] = field(default_factory=list)
    #: gains in dB, e.g. [-6, 3]; a gain is capped so that the peak stays at or below 0 dBFS
    gains_db: list[float] = field(default_factory=list)
    #: splits whose segments get the variants (validation and test stay clean)
    splits: list[str] = field(default_factory=lambda: ["train"])


@dataclass
class DataSection:
    """The latent cache: which segments, how long, how they are encoded."""

    #: cut-music manifest (manifest.jsonl); relative paths are taken from the working folder
    manifest: str = ""
    #: root of the cache folders; "" = <manifest folder>/latents
    cache_dir: str = ""
    #: training length in seconds: shorter segments are padded (and masked), longer ones cut
    seconds: float = 10.0
    #: segments encoded per VAE / text-encoder batch
    encode_batch_size: int = 8
    #: encode with a sample of the VAE posterior instead of its mean (seeded per batch)
    sample_posterior: bool = False
    #: seed of the posterior samples (only used with sample_posterior)
    seed: int = 0
    #: device for encoding: auto (CUDA when present) | cpu | cuda
    device: str = "auto"
    augment: AugmentSection = field(default_factory=AugmentSection)


MIXED_PRECISION = ("no", "bf16", "fp16")
ON_NONFINITE = ("stop", "skip")
DROPOUT_PLACEMENTS = ("rank", "input")


@dataclass
class TrainSection:
    """The training loop (``lora-audio train``). Steps count optimizer updates."""

    #: run folder: config.yaml, checkpoints/, adapter/, tb/, metrics.jsonl, samples/, README.md
    output_dir: str = "runs/lora"
    seed: int = 0
    max_steps: int = 2000
    #: items per process per micro-batch
    batch_size: int = 4
    #: micro-batches per optimizer step
    grad_accum: int = 1
    #: probability that a training item's caption is replaced by the family's unconditional
    #: (no-prompt) conditioning, so the adapter also learns the branch classifier-free
    #: guidance subtracts; 0 = always the caption (then generate with guidance 1)
    caption_dropout: float = 0.0
    #: prior preservation (lora_audio/training/prior.py): prompts in the base model's own
    #: style whose sound the adapter should leave alone; before training the base generates
    #: prior_clips clips of data.seconds for each (with sample_steps and sample_guidance) and
    #: a share prior_share of the training items are drawn from them. [] = off
    prior_prompts: list[str] = field(default_factory=list)
    prior_clips: int = 16
    prior_share: float = 0.2
    #: AdamW
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    #: linear warm-up steps, then cosine annealing from lr down to min_lr at max_steps
    warmup_steps: int = 100
    min_lr: float = 1e-6
    #: clip the global gradient norm to this; 0 = no clipping
    max_grad_norm: float = 1.0
    #: no | bf16 | fp16 (autocast; the LoRA weights stay float32)
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    #: with gradient checkpointing: keep the activations of every N-th block instead of
    #: recomputing them (0 = recompute all; 2 = half: less memory saved, less time added)
    checkpoint_keep_every: int = 0
    #: auto (CUDA when present) | cpu | cuda
    device: str = "auto"
    #: validate every N steps (and once at step 0, the untrained baseline)
    eval_every: int = 100
    #: timesteps per validation item, on the fixed grid (k + 0.5) / N
    val_timesteps: int = 4
    #: seed of the validation noise (fixed: numbers compare across evaluations and runs)
    val_seed: int = 1234
    #: stop after this many evaluations without improvement; 0 = never stop early
    patience: int = 5
    #: an evaluation improves when val loss < best - min_delta
    min_delta: float = 0.0
    #: what a NaN/inf loss does: stop (with a checkpoint) | skip (the batch)
    on_nonfinite: str = "stop"
    #: log the training loss every N steps (progress bar, metrics.jsonl, TensorBoard)
    log_every: int = 10
    tensorboard: bool = True
    progress_bar: bool = True
    #: generate samples every N evaluations; 0 = never
    sample_every: int = 0
    sample_prompts: list[str] = field(default_factory=list)
    sample_seeds: list[int] = field(default_factory=lambda: [0])
    sample_seconds: float = 10.0
    sample_steps: int = 50
    sample_guidance: float = 7.0


@dataclass
class RunConfig:
    """The whole run configuration; later steps add their own sections here."""

    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Defaults <- YAML file at ``path`` <- ``key=value`` overrides; validated."""
    schema = OmegaConf.structured(RunConfig)
    layers = []
    where = "defaults"
    try:
        if path is not None:
            where = str(path)
            if not Path(path).is_file():
                raise ConfigError(f"{path}: config file not found")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, type(schema)) and loaded is not None:
                raise ConfigError(f"{path}: the top level must be a mapping of sections")
            layers.append(loaded or {})
        for item in overrides:
            where = f"override {item!r}"
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value, e.g. lora.rank=16")
            layers.append(OmegaConf.from_dotlist([item]))
        merged = OmegaConf.merge(schema, *layers)
        cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except ConfigKeyError as exc:
        raise ConfigError(f"{where}: {_unknown_key_message(exc)}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {key}: {first}") from None
    validate(cfg)
    return cfg


def _unknown_key_message(exc: ConfigKeyError) -> str:
    full_key = exc.full_key or str(exc.key)
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node: Any = RunConfig
    for part in parent.split(".") if parent else []:
        node = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
    allowed = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
    scope = f" in {parent}" if parent else ""
    return f"unknown key {full_key!r}; allowed keys{scope}: {', '.join(allowed)}"


def validate(cfg: RunConfig) -> None:
    """Value checks the types alone cannot express."""
    from lora_audio.models import FAMILIES

    if cfg.model.family not in FAMILIES:
        raise ConfigError(f"model.family: {cfg.model.family!r} is not one of {', '.join(FAMILIES)}")
    if not cfg.model.path:
        raise ConfigError("model.path: empty; give a pipeline folder, hub id or tiny:<family>")
    if cfg.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype: {cfg.model.dtype!r} is not one of {', '.join(DTYPES)}")
    lora = cfg.lora
    if lora.rank < 1:
        raise ConfigError(f"lora.rank: must be >= 1, got {lora.rank}")
    if lora.alpha <= 0:
        raise ConfigError(f"lora.alpha: must be > 0, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout: must be in [0, 1), got {lora.dropout}")
    bad = [t for t in lora.targets if t not in TARGET_GROUPS]
    if bad:
        raise ConfigError(
            f"lora.targets: unknown group(s) {bad}; allowed: {', '.join(TARGET_GROUPS)}"
        )
    if not lora.targets and not lora.include:
        raise ConfigError("lora.targets and lora.include are both empty: nothing to adapt")
    if lora.dropout_placement not in DROPOUT_PLACEMENTS:
        raise ConfigError(
            f"lora.dropout_placement: {lora.dropout_placement!r} is not one of "
            f"{', '.join(DROPOUT_PLACEMENTS)}"
        )
    if lora.init not in LORA_INITS:
        raise ConfigError(f"lora.init: {lora.init!r} is not one of {', '.join(LORA_INITS)}")
    for key in ("include", "exclude"):
        for pattern in getattr(lora, key):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"lora.{key}: bad regex {pattern!r} ({exc})") from None
    validate_data(cfg.data)
    validate_train(cfg.train)


def validate_data(data: DataSection) -> None:
    """Value checks of the ``data`` section."""
    if not (data.seconds > 0 and math.isfinite(data.seconds)):
        raise ConfigError(f"data.seconds: must be a positive number of seconds, got {data.seconds}")
    if data.encode_batch_size < 1:
        raise ConfigError(f"data.encode_batch_size: must be >= 1, got {data.encode_batch_size}")
    if data.device not in DEVICES:
        raise ConfigError(f"data.device: {data.device!r} is not one of {', '.join(DEVICES)}")
    aug = data.augment
    for value in aug.pitch_shifts:
        if value == 0 or not -12 <= value <= 12:
            raise ConfigError(
                f"data.augment.pitch_shifts: {value} must be non-zero and within +-12 semitones"
            )
    for value in aug.gains_db:
        if value == 0 or not -40 <= value <= 20:
            raise ConfigError(f"data.augment.gains_db: {value} must be non-zero, within -40..20 dB")
    for key in ("pitch_shifts", "gains_db"):
        values = getattr(aug, key)
        if len(set(values)) != len(values):
            raise ConfigError(f"data.augment.{key}: {values} repeats a value")
    bad = [s for s in aug.splits if s not in SPLITS]
    if bad:
        raise ConfigError(
            f"data.augment.splits: unknown split(s) {bad}; allowed: {', '.join(SPLITS)}"
        )


def validate_train(train: TrainSection) -> None:
    """Value checks of the ``train`` section."""
    positive_ints = (
        "max_steps",
        "batch_size",
        "grad_accum",
        "eval_every",
        "val_timesteps",
        "log_every",
    )
    for key in positive_ints:
        if getattr(train, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {getattr(train, key)}")
    for key in ("warmup_steps", "patience", "sample_every"):
        if getattr(train, key) < 0:
            raise ConfigError(f"train.{key}: must be >= 0, got {getattr(train, key)}")
    if not (train.lr > 0 and math.isfinite(train.lr)):
        raise ConfigError(f"train.lr: must be a positive number, got {train.lr}")
    if not 0 <= train.min_lr <= train.lr:
        raise ConfigError(f"train.min_lr: must be in [0, train.lr={train.lr}], got {train.min_lr}")
    if train.warmup_steps >= train.max_steps:
        raise ConfigError(
            f"train.warmup_steps: {train.warmup_steps} must be < train.max_steps ({train.max_steps})"
        )
    if train.weight_decay < 0:
        raise ConfigError(f"train.weight_decay: must be >= 0, got {train.weight_decay}")
    if len(train.betas) != 2 or not all(0 <= b < 1 for b in train.betas):
        raise ConfigError(f"train.betas: must be two numbers in [0, 1), got {train.betas}")
    if train.eps <= 0:
        raise ConfigError(f"train.eps: must be > 0, got {train.eps}")
    if train.prior_prompts and train.prior_clips < 1:
        raise ConfigError(f"train.prior_clips: must be >= 1, got {train.prior_clips}")
    if train.prior_prompts and not 0 < train.prior_share < 1:
        raise ConfigError(
            f"train.prior_share: must be in (0, 1) with train.prior_prompts (e.g. 0.2), "
            f"got {train.prior_share}"
        )
    if not 0 <= train.caption_dropout < 1:
        raise ConfigError(
            f"train.caption_dropout: must be in [0, 1) (e.g. 0.1), got {train.caption_dropout}"
        )
    if train.checkpoint_keep_every < 0 or train.checkpoint_keep_every == 1:
        raise ConfigError(
            f"train.checkpoint_keep_every: must be 0 (recompute every block) or >= 2, "
            f"got {train.checkpoint_keep_every}"
        )
    if train.max_grad_norm < 0:
        raise ConfigError(f"train.max_grad_norm: must be >= 0 (0 = off), got {train.max_grad_norm}")
    if train.min_delta < 0:
        raise ConfigError(f"train.min_delta: must be >= 0, got {train.min_delta}")
    choices = {
        "mixed_precision": MIXED_PRECISION,
        "on_nonfinite": ON_NONFINITE,
        "device": DEVICES,
    }
    for key, allowed in choices.items():
        if getattr(train, key) not in allowed:
            raise ConfigError(
                f"train.{key}: {getattr(train, key)!r} is not one of {', '.join(allowed)}"
            )
    if not train.output_dir:
        raise ConfigError("train.output_dir: empty; give the run folder, e.g. runs/my-style")
    if train.sample_every and not train.sample_prompts:
        raise ConfigError("train.sample_prompts: empty but train.sample_every > 0; add prompts")
    if train.sample_every and not train.sample_seeds:
        raise ConfigError("train.sample_seeds: empty but train.sample_every > 0; add seeds")
    if train.sample_seconds <= 0 or train.sample_steps < 1:
        raise ConfigError("train.sample_seconds must be > 0 and train.sample_steps >= 1")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain JSON-serialisable dict of a config (for adapter.json, logs)."""
    return dataclasses.asdict(cfg)
