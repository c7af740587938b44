"""Generation with the base model and/or LoRA adapters, and writing result sets to a folder.

Used by ``lora-audio infer``, the training sampler and the demo. Three steps, each usable
alone:

1. :func:`make_plan` checks everything that can be checked without the model (prompts,
   scales, adapter files and their sha256/family, settings) and fixes the *systems* to run:
   ``base`` (no adapter) and/or one system applying all given adapters together.
2. :func:`run_plan` takes a loaded :class:`~lora_audio.models.base.AudioModel`, loads the
   adapters (refusing another family or base fingerprint) before generating anything, then
   yields one :class:`Generated` (waveform ``[C, T]`` + sidecar metadata) per
   system x prompt x seed. The caller's model is left as it found it (adapters, strengths,
   ``requires_grad``, train/eval mode), so the training sampler can pass the model it trains.
3. :func:`write_results` writes each result atomically as audio + JSON sidecar and keeps
   ``index.json`` up to date; :func:`check_outputs` refuses to overwrite before anything runs.

:func:`generate` does 1 and 2 in one call and returns a list.

Output layout (other tools rely on it)::

    OUT/index.json                       every file with its system, prompt and seed
    OUT/p{prompt:03d}_s{seed}.wav|.json  without compare: one system, files directly in OUT
    OUT/base/p000_s0.wav + .json         with compare: one folder per system, the same
    OUT/<system>/p000_s0.wav + .json     file names in each for the same prompt and seed

``<system>`` is the adapter folder's name; several adapters applied together are joined
with ``+`` in the order given (``styleA+styleB``).

Seeds: item (prompt, seed) always starts from the noise of ``seed`` alone, whatever the batch
or the system, so the same seed gives the same starting noise for base and adapters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lora_audio import __version__

log = logging.getLogger(__name__)

#: largest |strength| accepted for an adapter; beyond it outputs are garbage
MAX_SCALE = 4.0
#: system name of the model without adapters
BASE_SYSTEM = "base"
#: joins adapter folder names into a system name
SYSTEM_JOIN = "+"
AUDIO_FORMATS = ("wav", "flac")
#: soundfile subtype for written audio (both formats)
AUDIO_SUBTYPE = "PCM_24"
INDEX_NAME = "index.json"
TINY_NOTE = "tiny random model: output is noise, not music"

#: ``on_step(step, total_steps)`` during one pipeline call
StepCallback = Callable[[int, int], None]


class GenerationError(ValueError):
    """Generation cannot run as asked; the message is one line naming the input and the fix."""


# ------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class AdapterRef:
    """An adapter folder checked on disk (sha256 verified) and the strength to apply it at."""

    path: str
    name: str
    scale: float
    sha256: str
    family: str
    base_model: str

    def sidecar(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "scale": self.scale, "sha256": self.sha256}


@dataclass(frozen=True)
class System:
    """What generates: the base model (no adapters) or the base with these adapters applied."""

    name: str
    adapters: tuple[AdapterRef, ...] = ()


@dataclass(frozen=True)
class GenerationSettings:
    """Sampler settings shared by every item of a run."""

    seconds: float = 10.0
    steps: int = 50
    guidance: float = 7.0
    negative_prompt: str | None = None


@dataclass
class GenerationPlan:
    """Everything a run generates: systems x prompts x seeds, with shared settings."""

    prompts: list[str]
    seeds: list[int]
    systems: list[System]
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    #: one subfolder per system (set by ``compare``), else files directly in the output folder
    subfolders: bool = False
    #: merge adapters into the weights while their system runs (no per-step LoRA overhead)
    fuse: bool = False
    #: most items per pipeline call (used when the family takes one seed per item)
    batch_size: int = 1

    @property
    def num_items(self) -> int:
        return len(self.systems) * len(self.prompts) * len(self.seeds)

    def relative_path(self, system: str, prompt_index: int, seed: int, ext: str = "wav") -> Path:
        """Where an item's audio goes inside the output folder (sidecar: same stem, ``.json``)."""
        name = f"p{prompt_index:03d}_s{seed}.{ext}"
        return Path(system, name) if self.subfolders else Path(name)

    def relative_paths(self, ext: str = "wav") -> list[Path]:
        """Every audio file and sidecar the run writes, plus ``index.json``."""
        out = [Path(INDEX_NAME)]
        for system in self.systems:
            for p in range(len(self.prompts)):
                for seed in self.seeds:
                    audio = self.relative_path(system.name, p, seed, ext)
                    out += [audio, audio.with_suffix(".json")]
        return out


@dataclass
class Generated:
    """One generated item: waveform ``audio`` ``[C, T]`` float32 at ``meta["sample_rate"]``."""

    audio: np.ndarray
    meta: dict[str, Any]

    @property
    def system(self) -> str:
        return self.meta["system"]

    @property
    def prompt_index(self) -> int:
        return self.meta["prompt_index"]

    @property
    def seed(self) -> int:
        return self.meta["seed"]


def resolve_adapter(path: str | Path, scale: float, family: str | None = None) -> AdapterRef:
    """Check one adapter folder (files, sha256, family, scale) without loading a model."""
    from lora_audio import adapters

    if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
        raise GenerationError(
            f"{path}: strength {scale:g} is outside [-{MAX_SCALE:g}, {MAX_SCALE:g}]; "
            "use e.g. 0.5 or 1.0"
        )
    folder = Path(path)
    if not folder.exists():
        raise GenerationError(f"{path}: no such adapter folder; check the --lora path")
    try:
        info, _, _ = adapters.read_adapter(folder)
    except adapters.AdapterError as exc:
        raise GenerationError(str(exc)) from None
    if family is not None and info.family != family:
        raise GenerationError(
            f"{path}: adapter is for {info.family}, the model is {family}; "
            f"use a {family} adapter or a {info.family} model"
        )
    name = folder.resolve().name
    return AdapterRef(
        str(path), name, float(scale), info.weights_sha256, info.family, info.base_model
    )


def system_name(refs: Sequence[AdapterRef]) -> str:
    """``base`` for no adapters, else the adapter folder names joined with ``+``."""
    return SYSTEM_JOIN.join(r.name for r in refs) if refs else BASE_SYSTEM


def make_plan(
    prompts: Sequence[str],
    adapters: Sequence[tuple[str | Path, float]] = (),
    *,
    seeds: Sequence[int] = (0,),
    seconds: float = 10.0,
    steps: int = 50,
    guidance: float = 7.0,
    negative_prompt: str | None = None,
    compare: bool = False,
    fuse: bool = False,
    batch_size: int = 1,
    family: str | None = None,
) -> GenerationPlan:
    """Validate a run and fix its systems; raises :class:`GenerationError` (one line).

    ``adapters`` are ``(folder, strength)`` pairs applied together. Without adapters the run
    uses the base model; with ``compare`` it runs the base and the adapters at the same seeds.
    ``family`` (when known before loading the model) lets adapter families be checked early.
    """
    prompts = list(prompts)
    if not prompts:
        raise GenerationError("no prompts given; pass --prompt TEXT or --prompts FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise GenerationError(f"prompt {i} is empty; give some text")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise GenerationError("no seeds; use -n 1 or more")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise GenerationError(f"seeds must be distinct and >= 0, got {seeds}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise GenerationError(f"--seconds must be > 0, got {seconds:g}")
    if steps < 1:
        raise GenerationError(f"--steps must be >= 1, got {steps}")
    if not math.isfinite(guidance) or guidance < 0:
        raise GenerationError(f"--guidance must be >= 0, got {guidance:g}")
    if batch_size < 1:
        raise GenerationError(f"--batch-size must be >= 1, got {batch_size}")
    refs = tuple(resolve_adapter(path, scale, family) for path, scale in adapters)
    paths = [Path(r.path).resolve() for r in refs]
    if len(set(paths)) != len(paths):
        raise GenerationError("the same adapter is given twice; give each --lora once")
    if len({r.family for r in refs}) > 1:
        raise GenerationError(
            "the adapters are for different families: "
            + ", ".join(f"{r.path} ({r.family})" for r in refs)
        )
    if compare and not refs:
        raise GenerationError("--compare needs at least one --lora adapter to compare with")
    systems = [System(system_name(refs), refs)]
    if compare:
        if systems[0].name == BASE_SYSTEM:
            raise GenerationError(
                f"{refs[0].path}: an adapter folder named {BASE_SYSTEM!r} would share the base "
                "system's folder; rename the adapter folder"
            )
        systems.insert(0, System(BASE_SYSTEM))
    settings = GenerationSettings(float(seconds), int(steps), float(guidance), negative_prompt)
    return GenerationPlan(prompts, seeds, systems, settings, compare, fuse, int(batch_size))


# ----------------------------------------------------------------------- running it
def is_tiny(model: Any) -> bool:
    """True for the tiny random test models (``tiny:<family>``): their output is noise."""
    from lora_audio.models import TINY_PREFIX

    return str(getattr(model, "source", "")).startswith(TINY_PREFIX)


def model_summary(model: Any) -> dict[str, Any]:
    """Family, base model, fingerprint and audio format of ``model`` (no adapters applied)."""
    from lora_audio.adapters import base_fingerprint

    out = {
        "family": model.family,
        "base_model": str(model.source),
        "base_fingerprint": base_fingerprint(model),
        "sample_rate": int(model.sample_rate),
        "channels": int(model.audio_channels),
    }
    if is_tiny(model):
        out["note"] = TINY_NOTE
    return out


def run_plan(
    model: Any,
    plan: GenerationPlan,
    *,
    allow_base_mismatch: bool = False,
    on_step: StepCallback | None = None,
) -> Iterator[Generated]:
    """Generate every item of ``plan`` with ``model`` (an ``AudioModel``), system by system.

    All adapters are loaded (family and base fingerprint checked) before the first item, so a
    bad adapter fails before anything is produced. Items of one system are batched up to
    ``plan.batch_size`` per pipeline call when the family takes one seed per batch item
    (``seed_lists = True`` on the model class); otherwise one item per call. ``on_step`` is
    called as ``(step, total_steps)`` within each call. The model's adapter state is restored
    when the iterator finishes or is closed.
    """
    from lora_audio import adapters as lora

    max_seconds = getattr(model, "max_seconds", None)
    if max_seconds is not None and plan.settings.seconds > max_seconds + 1e-6:
        raise GenerationError(
            f"--seconds {plan.settings.seconds:g} is longer than this model allows "
            f"({max_seconds:g} s); ask for less"
        )
    summary = model_summary(model)
    if "note" in summary:
        log.warning("%s (%s)", TINY_NOTE, model.source)
    batch = plan.batch_size if getattr(model, "seed_lists", False) else 1
    with _scoped_adapter_state(model):
        names: dict[str, str] = {}  # adapter path -> name loaded under
        for system in plan.systems:
            for ref in system.adapters:
                if ref.path not in names:
                    try:
                        names[ref.path] = lora.load_adapter(
                            model, ref.path, allow_base_mismatch=allow_base_mismatch
                        )
                    except lora.AdapterError as exc:
                        raise GenerationError(str(exc)) from None
        for system in plan.systems:
            with _activated(model, system, names, plan.fuse):
                jobs = [(p, s) for p in range(len(plan.prompts)) for s in plan.seeds]
                for start in range(0, len(jobs), batch):
                    yield from _generate_batch(
                        model, plan, system, jobs[start : start + batch], summary, on_step
                    )


def generate(
    model: Any,
    prompts: str | Sequence[str],
    adapters: Sequence[tuple[str | Path, float]] = (),
    *,
    seeds: Sequence[int] = (0,),
    seconds: float = 10.0,
    steps: int = 50,
    guidance: float = 7.0,
    negative_prompt: str | None = None,
    compare: bool = False,
    fuse: bool = False,
    batch_size: int = 1,
    allow_base_mismatch: bool = False,
    on_step: StepCallback | None = None,
) -> list[Generated]:
    """Generate audio for ``prompts`` x ``seeds`` with the base and/or ``(folder, strength)`` adapters.

    ``model`` is a loaded ``AudioModel`` (kept as it was afterwards) or a
    :class:`~lora_audio.config.ModelSection` to load. Returns one :class:`Generated` per
    system x prompt x seed, in that order; write them with :func:`write_results`.
    """
    from lora_audio.config import ModelSection

    if isinstance(model, ModelSection):
        model = load_model_section(model)
    plan = make_plan(
        [prompts] if isinstance(prompts, str) else prompts,
        adapters,
        seeds=seeds,
        seconds=seconds,
        steps=steps,
        guidance=guidance,
        negative_prompt=negative_prompt,
        compare=compare,
        fuse=fuse,
        batch_size=batch_size,
        family=model.family,
    )
    return list(run_plan(model, plan, allow_base_mismatch=allow_base_mismatch, on_step=on_step))


def load_model_section(section: Any, device: str = "cpu") -> Any:
    """Load the model a config's ``model`` section names."""
    import torch

    from lora_audio.models import load_model

    return load_model(
        section.family, section.path, device=device, dtype=getattr(torch, section.dtype)
    )


@contextlib.contextmanager
def _activated(model: Any, system: System, names: dict[str, str], fuse: bool) -> Iterator[None]:
    """Run with exactly ``system``'s adapters active at their strengths (none: the base model).

    The base system and fused adapters run without PEFT's LoRA layers in the forward path
    (:func:`~lora_audio.adapters.bypass_lora_layers`), so they cost what the base model costs;
    everything is put back on exit.
    """
    from lora_audio import adapters as lora

    denoiser = model.denoiser
    if not getattr(denoiser, "peft_config", None):
        yield
        return
    if not system.adapters:
        denoiser.disable_adapters()
        with lora.bypass_lora_layers(model):
            yield
        return
    denoiser.enable_adapters()
    lora.set_strengths(model, {names[r.path]: r.scale for r in system.adapters})
    if not fuse:
        yield
        return
    with lora.fused(model):
        yield


def _generate_batch(
    model: Any,
    plan: GenerationPlan,
    system: System,
    jobs: list[tuple[int, int]],
    summary: dict[str, Any],
    on_step: StepCallback | None,
) -> Iterator[Generated]:
    """One pipeline call for ``jobs`` (``(prompt_index, seed)`` pairs); yields one item each."""
    s = plan.settings
    prompts = [plan.prompts[p] for p, _ in jobs]
    seeds = [seed for _, seed in jobs]
    t0 = time.perf_counter()
    audio = model.generate(
        prompts if len(jobs) > 1 else prompts[0],
        negative_prompt=s.negative_prompt,
        seconds=s.seconds,
        steps=s.steps,
        guidance=s.guidance,
        seed=seeds if len(jobs) > 1 else seeds[0],
        progress=on_step,
    )
    taken = (time.perf_counter() - t0) / len(jobs)
    if audio.shape[0] != len(jobs):
        raise RuntimeError(
            f"{model.family}.generate returned {audio.shape[0]} items for {len(jobs)}"
        )
    for (p, seed), wave in zip(jobs, audio, strict=True):
        meta = {
            "prompt": plan.prompts[p],
            "prompt_index": p,
            "negative_prompt": s.negative_prompt,
            "seed": seed,
            "steps": s.steps,
            "guidance": s.guidance,
            "seconds": s.seconds,
            "system": system.name,
            "adapters": [r.sidecar() for r in system.adapters],
            "fused": bool(plan.fuse and system.adapters),
            **{k: v for k, v in summary.items() if k != "note"},
            "seconds_taken": round(taken, 4),
            "batch_size": len(jobs),
            "lora_audio_version": __version__,
        }
        if "note" in summary:
            meta["note"] = summary["note"]
        yield Generated(wave.float().cpu().numpy(), meta)


@contextlib.contextmanager
def _scoped_adapter_state(model: Any) -> Iterator[None]:
    """Put the denoiser in eval mode and restore its adapters exactly afterwards.

    Restored: which adapters exist (ours are unloaded), which are active, their strengths
    (PEFT per-layer ``scaling``), enabled/disabled, every ``requires_grad`` and train mode.
    """
    from peft.tuners.lora import LoraLayer

    from lora_audio import adapters as lora

    denoiser = model.denoiser
    before = set(getattr(denoiser, "peft_config", None) or {})
    active = list(denoiser.active_adapters()) if before else []
    layers = [m for m in denoiser.modules() if isinstance(m, LoraLayer)]
    scaling = [dict(m.scaling) for m in layers]
    disabled = [m.disable_adapters for m in layers]
    grads = {n: p.requires_grad for n, p in denoiser.named_parameters()}
    training = denoiser.training
    denoiser.eval()
    try:
        yield
    finally:
        ours = [n for n in getattr(denoiser, "peft_config", None) or {} if n not in before]
        lora.unload_adapters(model, ours)
        if before:
            denoiser.set_adapters(active)
            for m, sc, off in zip(layers, scaling, disabled, strict=True):
                m.scaling.update(sc)
                m.enable_adapters(not off)
        for n, p in denoiser.named_parameters():
            p.requires_grad_(grads.get(n, False))
        denoiser.train(training)


# ------------------------------------------------------------------------- writing
def check_outputs(
    out: str | Path, plan: GenerationPlan, audio_format: str = "wav", overwrite: bool = False
) -> None:
    """Refuse (one line) if the run would overwrite a file and ``overwrite`` is off."""
    out = Path(out)
    if audio_format not in AUDIO_FORMATS:
        raise GenerationError(
            f"--format {audio_format!r}: choose one of {', '.join(AUDIO_FORMATS)}"
        )
    if out.exists() and not out.is_dir():
        raise GenerationError(f"{out}: exists and is not a folder; choose an output folder")
    if overwrite:
        return
    existing = [p for p in plan.relative_paths(audio_format) if (out / p).exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise GenerationError(
            f"{out / existing[0]} already exists{more}; choose another -o folder or pass --overwrite"
        )


def write_results(
    out: str | Path,
    plan: GenerationPlan,
    results: Iterable[Generated],
    *,
    audio_format: str = "wav",
    overwrite: bool = False,
    on_file: Callable[[Path, Generated], None] | None = None,
) -> Path:
    """Write each result as audio + JSON sidecar under ``out`` and keep ``index.json`` current.

    Checks :func:`check_outputs` first. Every file is written atomically; ``index.json`` is
    rewritten after each item with ``"complete": false`` until the last one. Audio is clipped
    to [-1, 1] and written as 24-bit WAV or FLAC at the model's rate and channel count.
    Returns the index path.
    """
    from lora_audio.audio import write_audio
    from lora_audio.files import write_json_atomic

    out = Path(out)
    check_outputs(out, plan, audio_format, overwrite)
    index: dict[str, Any] = {}
    for item in results:
        rel = plan.relative_path(item.system, item.prompt_index, item.seed, audio_format)
        if not index:
            index = _index_header(plan, item.meta)
        meta = {**item.meta, "file": rel.name}
        write_audio(out / rel, np.clip(item.audio, -1.0, 1.0), meta["sample_rate"], AUDIO_SUBTYPE)
        write_json_atomic(out / rel.with_suffix(".json"), meta)
        index["files"].append(
            {
                "path": rel.as_posix(),
                "sidecar": rel.with_suffix(".json").as_posix(),
                "system": item.system,
                "prompt_index": item.prompt_index,
                "prompt": item.meta["prompt"],
                "seed": item.seed,
            }
        )
        index["complete"] = len(index["files"]) == plan.num_items
        write_json_atomic(out / INDEX_NAME, index)
        if on_file is not None:
            on_file(out / rel, item)
    return out / INDEX_NAME


def _index_header(plan: GenerationPlan, first: dict[str, Any]) -> dict[str, Any]:
    """The run's index before any file is listed; model fields come from the first item."""
    shared = ("family", "base_model", "base_fingerprint", "sample_rate", "channels")
    return {
        "lora_audio_version": __version__,
        **({"note": first["note"]} if "note" in first else {}),
        "complete": False,
        **{k: first[k] for k in shared},
        "settings": asdict(plan.settings),
        "fuse": plan.fuse,
        "layout": "one folder per system" if plan.subfolders else "files in this folder",
        "systems": [
            {
                "name": s.name,
                "folder": s.name if plan.subfolders else ".",
                "adapters": [r.sidecar() for r in s.adapters],
            }
            for s in plan.systems
        ],
        "prompts": plan.prompts,
        "seeds": plan.seeds,
        "files": [],
    }
