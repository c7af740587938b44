"""The latent cache: encode ``cut-music`` segments once (VAE latents + prompt conditioning).

Training never runs the VAE or the text encoder per step: it reads what this module wrote
(see :mod:`lora_audio.data`), and trusts it.

Layout (``root`` = ``data.cache_dir`` or ``<manifest folder>/latents``)::

    root/<family>-<fingerprint16>-<paramhash>/       one folder per model + parameters
        cache.json                                   params, index of entries, failures, summary
        entries/<k[:2]>/<k>.safetensors              one entry per (segment, variant)

The folder name hashes everything that changes the content of every entry (family, base and
pipeline fingerprints, dtype, sample rate, channels, ``data.seconds``, latent shape, posterior
mean or sample, augmentation and cache versions), so a changed parameter never meets stale
entries. An entry's key ``k`` hashes the segment's audio bytes, its caption, its variant
(``clean``, ``pitch+2``, ``gain-6``; see :mod:`preprocessing.augment`) and its valid length, so
editing a caption or adding a pitch shift encodes only the new entries. An entry holds

    latents           float32 [*latent_shape]   (VAE posterior mean unless sample_posterior)
    mask              float32 [L]               1 on frames of real audio, 0 on padding
    cond.<name>       float32 [...]             each conditioning tensor, batch axis removed

and its metadata (segment id, variant, split, caption, valid seconds). Entries are written
atomically (temporary file + rename), so an interrupted run leaves no half-written entry and
the next run encodes only what is missing. ``cache.json`` is written last; it is what makes
the cache complete and what :func:`ensure_cache` compares to tell whether it is stale.

Audio of each segment: decoded, cut to the manifest's real length (cut-music's zero-padded
tail is not content), cut to the first ``data.seconds`` if longer, augmented at its own
rate, converted to the family's channels and resampled (soxr HQ) to its VAE rate, and
zero-padded to ``data.seconds``. The mask covers ``latent_shape(valid seconds)`` frames; the
duration conditioning is the valid length.

Sharding: work items are sorted by key and cut into batches of ``data.encode_batch_size``;
shard ``i`` of ``n`` encodes batches ``i, i + n, ...``. Batches are the same whatever the
number of shards, so a sharded cache equals a one-process cache bit for bit. Shards write
entries only; a final run without a shard (or the main process under ``accelerate launch``)
encodes anything still missing and writes ``cache.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lora_audio.audio import AudioError, check_finite, load_audio, resample, to_channels
from lora_audio.files import sha256_file, stable_hash, write_json_atomic, write_safetensors
from preprocessing.augment import AUGMENT_VERSION, Variant, apply_variant, variants_for
from preprocessing.manifest import Segment, read_manifest

if TYPE_CHECKING:
    from lora_audio.config import DataSection, RunConfig
    from lora_audio.models.base import AudioModel

log = logging.getLogger(__name__)

#: Bump when a change here changes what an entry holds for the same parameters.
CACHE_VERSION = 1
CACHE_FILE = "cache.json"
ENTRY_DIR = "entries"
COND_PREFIX = "cond."
RESAMPLER = "soxr-HQ"


class CacheError(RuntimeError):
    """A problem with the cache as a whole; one line naming the file and the fix."""


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkItem:
    """One entry to have in the cache: a segment in one variant."""

    key: str
    segment: Segment
    variant: Variant
    #: seconds of real audio in the entry (<= data.seconds); the rest is padding
    valid_seconds: float

    def record(self, frames: int) -> dict[str, Any]:
        """The entry's row in ``cache.json`` (``frames`` = valid latent frames)."""
        return {
            "file": entry_relpath(self.key),
            "segment": self.segment.id,
            "variant": self.variant.name,
            "split": self.segment.split,
            "caption": self.segment.caption,
            "valid_seconds": self.valid_seconds,
            "frames": frames,
        }


@dataclass
class CacheSummary:
    """What a run did. ``new`` entries were encoded now, ``reused`` ones were already there."""

    folder: str
    manifest: str
    shard: str = "1/1"
    segments: int = 0
    entries: int = 0
    variants: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    new: int = 0
    reused: int = 0
    encoded: int = 0  # items passed through the VAE (>= new when a partial batch is redone)
    seconds: float = 0.0  # seconds of real audio in the entries handled
    seconds_new: float = 0.0
    encode_s: float = 0.0  # wall seconds spent loading + encoding + writing
    cache_bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, one-line reason)
    complete: bool = False
    elapsed_s: float = 0.0

    @property
    def realtime(self) -> float:
        """Encode throughput: seconds of audio encoded per wall second."""
        return self.seconds_new / self.encode_s if self.encode_s > 0 else 0.0

    def format(self) -> str:
        """Human-readable summary (what the CLI prints)."""
        var = ", ".join(f"{k} {v}" for k, v in sorted(self.variants.items()))
        split = ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items()))
        lines = [
            f"preprocess ({'shard ' + self.shard if self.shard != '1/1' else 'all'}): "
            f"{self.segments} segments -> {self.entries} entries "
            f"({self.new} new, {self.reused} reused, {len(self.failed)} failed); "
            f"{self.seconds:.1f} s of audio; {self.elapsed_s:.1f} s",
            f"variants: {var or '-'}; splits: {split or '-'}",
        ]
        if self.new:
            lines.append(
                f"encoded {self.seconds_new:.1f} s of audio in {self.encode_s:.1f} s "
                f"({self.realtime:.1f}x realtime)"
            )
        lines.append(f"cache: {self.folder} ({self.cache_bytes / 1e6:.1f} MB)")
        if self.failed:
            lines.append(f"skipped ({len(self.failed)}):")
            lines += [f"  {reason}" for _, reason in self.failed]
        if not self.complete:
            lines.append("cache.json not written: run `lora-audio preprocess` without --shard")
        return "\n".join(lines)


@dataclass
class CacheInfo:
    """A complete cache as ``cache.json`` describes it."""

    folder: Path
    params: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    summary: CacheSummary | None = None

    def path(self, key: str) -> Path:
        return self.folder / self.entries[key]["file"]

    def keys(self, split: str | None = None, augmented: bool = True) -> list[str]:
        """Entry keys (sorted) of ``split`` (all splits if None), with or without variants."""
        return sorted(
            k
            for k, e in self.entries.items()
            if (split is None or e["split"] == split) and (augmented or e["variant"] == "clean")
        )


# --------------------------------------------------------------------------------------------
# Parameters, folders, keys
# --------------------------------------------------------------------------------------------


def cache_params(data: DataSection, model: AudioModel) -> dict[str, Any]:
    """Everything that changes the content of every entry (hashed into the folder name)."""
    from lora_audio.adapters import base_fingerprint

    return {
        "cache_version": CACHE_VERSION,
        "family": model.family,
        "base_fingerprint": base_fingerprint(model),
        "pipeline_fingerprint": pipeline_fingerprint(model),
        "dtype": str(model.dtype).removeprefix("torch."),
        "sample_rate": int(model.sample_rate),
        "channels": int(model.audio_channels),
        "seconds": float(data.seconds),
        "latent_shape": list(model.latent_shape(data.seconds)),
        "frame_axis": int(model.frame_axis),
        "posterior": "sample" if data.sample_posterior else "mean",
        "seed": int(data.seed) if data.sample_posterior else None,
        "resampler": RESAMPLER,
        "augment_version": AUGMENT_VERSION,
    }


def cache_root(data: DataSection) -> Path:
    """``data.cache_dir``, or ``latents/`` beside the manifest."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(data.manifest).resolve().parent / "latents"


def cache_folder(data: DataSection, params: dict[str, Any]) -> Path:
    """``<root>/<family>-<fingerprint16>-<paramhash>``."""
    fp = str(params["base_fingerprint"]).removeprefix("mem:")[:16]
    return cache_root(data) / f"{params['family']}-{fp}-{stable_hash(params, 12)}"


def entry_relpath(key: str) -> str:
    return f"{ENTRY_DIR}/{key[:2]}/{key}.safetensors"


def entry_key(audio_sha256: str, caption: str, variant: Variant, valid_seconds: float) -> str:
    """Content key of an entry: audio bytes, caption, variant, valid length (32 hex)."""
    return stable_hash(
        {
            "audio": audio_sha256,
            "caption": caption,
            "variant": variant.name,
            "seconds": round(valid_seconds, 6),
        },
        32,
    )


def pipeline_fingerprint(model: AudioModel, sample_bytes: int = 64) -> str:
    """Cheap fingerprint of the pipeline's other components (VAE, text encoder, tokenizer).

    From the pipeline folder: every small file's bytes (configs, tokenizers) and, for each
    ``*.safetensors``, its header and the first/last ``sample_bytes`` of every tensor (as
    :func:`lora_audio.adapters.base_fingerprint` does for the denoiser). Without a folder:
    names, shapes and first values of the in-memory parameters (``mem:`` prefix).
    """
    h = hashlib.sha256()
    folder = model.folder
    if folder is not None and folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if rel.split("/")[0] == model.denoiser_name or rel.startswith("."):
                continue
            h.update(rel.encode())
            if path.suffix == ".safetensors":
                _hash_safetensors(path, h, sample_bytes)
            elif path.stat().st_size <= 8 << 20:
                h.update(path.read_bytes())
            else:
                h.update(str(path.stat().st_size).encode())
        return h.hexdigest()
    for name, module in sorted(model.pipe.components.items()):
        if name == model.denoiser_name or not isinstance(module, torch.nn.Module):
            continue
        for pname, p in sorted(module.state_dict().items()):
            h.update(f"{name}.{pname}{tuple(p.shape)}".encode())
            h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return "mem:" + h.hexdigest()


def _hash_safetensors(path: Path, h: Any, sample_bytes: int) -> None:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header_bytes = f.read(n)
        h.update(header_bytes)
        header = json.loads(header_bytes)
        for name in sorted(k for k in header if k != "__metadata__"):
            start, end = header[name]["data_offsets"]
            for pos in sorted({start, max(start, end - sample_bytes)}):
                f.seek(8 + n + pos)
                h.update(f.read(min(sample_bytes, end - pos)))


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def valid_seconds(segment: Segment, seconds: float) -> float:
    """Seconds of real audio the entry gets: the manifest's length, at most ``seconds``."""
    in_file = segment.frames / segment.sample_rate if segment.sample_rate else 0.0
    return max(0.0, min(segment.duration, in_file, seconds))


def audio_hash(path: str, known: dict[str, list]) -> str:
    """sha256 of a segment file, reusing ``known[path] = [size, mtime_ns, sha]`` if unchanged."""
    st = os.stat(path)
    old = known.get(path)
    if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
        return old[2]
    sha = sha256_file(path)
    known[path] = [st.st_size, st.st_mtime_ns, sha]
    return sha


def plan(
    segments: Sequence[Segment], data: DataSection, known_hashes: dict[str, list]
) -> tuple[list[WorkItem], list[tuple[str, str]]]:
    """The entries the cache must hold, sorted by key, and the segments that cannot be read.

    ``known_hashes`` (path -> [size, mtime_ns, sha256]) is used and updated.
    """
    items: dict[str, WorkItem] = {}
    failed: list[tuple[str, str]] = []
    aug = data.augment
    for seg in segments:
        try:
            sha = audio_hash(seg.path, known_hashes)
        except OSError as exc:
            failed.append((seg.path, f"{seg.path}: cannot read ({exc.strerror}); re-run cut-music"))
            continue
        valid = valid_seconds(seg, data.seconds)
        if valid <= 0:
            failed.append((seg.path, f"{seg.path}: no audio (zero length); re-run cut-music"))
            continue
        for variant in variants_for(seg.split, aug.pitch_shifts, aug.gains_db, aug.splits):
            key = entry_key(sha, seg.caption, variant, valid)
            items.setdefault(key, WorkItem(key, seg, variant, valid))
    return [items[k] for k in sorted(items)], failed


def batches_of(items: Sequence[WorkItem], size: int) -> list[list[WorkItem]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def shard_batches(batches: list[list[WorkItem]], index: int, count: int) -> list[list[WorkItem]]:
    """Shard ``index`` of ``count`` takes batches ``index, index + count, ...``."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return batches[index::count]


def parse_shard(text: str) -> tuple[int, int]:
    """``"0/2"`` -> ``(0, 2)``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need COUNT >= 1 and 0 <= INDEX < COUNT")
    return i, n


# --------------------------------------------------------------------------------------------
# Audio and encoding
# --------------------------------------------------------------------------------------------


def prepare_audio(
    item: WorkItem, sample_rate: int, channels: int, seconds: float
) -> tuple[np.ndarray, int]:
    """Audio of ``item`` ready for the VAE: ``float32 [channels, round(seconds * sample_rate)]``.

    Returns ``(audio, valid_samples)``. Raises :class:`AudioError` (one line naming the file)
    for a file that cannot be decoded or that holds NaN/inf, before or after augmentation.
    """
    x, sr = load_audio(item.segment.path)
    x = x[:, : max(1, round(item.valid_seconds * sr))]
    x = apply_variant(x, sr, item.variant)
    check_finite(x, item.segment.path)
    x = resample(to_channels(x, channels), sr, sample_rate)
    total = round(seconds * sample_rate)
    valid = min(x.shape[1], total)
    out = np.zeros((channels, total), dtype=np.float32)
    out[:, :valid] = x[:, :valid]
    return out, valid


def frame_mask(model: AudioModel, seconds: float, valid: float) -> torch.Tensor:
    """``float32 [L]``: 1 on the latent frames of the first ``valid`` seconds, 0 after."""
    shape = model.latent_shape(seconds)
    length = shape[model.frame_axis - 1]
    n = min(length, model.latent_shape(valid)[model.frame_axis - 1])
    mask = torch.zeros(length, dtype=torch.float32)
    mask[:n] = 1.0
    return mask


def set_eval(model: AudioModel) -> None:
    """Every module of the pipeline in eval mode (no dropout while encoding)."""
    for module in model.pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()


@torch.no_grad()
def encode_batch(
    model: AudioModel,
    audio: torch.Tensor,
    captions: list[str],
    seconds: list[float],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Waveforms ``[B, C, T]`` + captions -> latents ``[B, *latent_shape]`` and conditioning
    (batch-first), both float32 on the CPU."""
    latents = model.encode_audio(audio.to(model.device, model.dtype), generator=generator)
    cond = model.encode_prompt(list(captions), list(seconds))
    return latents.float().cpu(), {k: v.float().cpu() for k, v in cond.items()}


def write_entry(folder: Path, item: WorkItem, tensors: dict[str, torch.Tensor]) -> int:
    """Write one entry atomically; returns its size in bytes."""
    path = folder / entry_relpath(item.key)
    meta = {
        "key": item.key,
        "segment": item.segment.id,
        "variant": item.variant.name,
        "split": item.segment.split,
        "caption": item.segment.caption,
        "valid_seconds": repr(item.valid_seconds),
        "cache_version": str(CACHE_VERSION),
    }
    write_safetensors(path, tensors, meta)
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def read_cache(folder: str | Path) -> CacheInfo:
    """Read ``folder/cache.json``. Raises :class:`CacheError` if it is missing or unreadable."""
    folder = Path(folder)
    path = folder / CACHE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(
            f"{path}: no cache.json (cache incomplete); run `lora-audio preprocess`"
        ) from None
    except (OSError, ValueError) as exc:
        raise CacheError(
            f"{path}: unreadable ({exc}); delete the folder and run `lora-audio preprocess`"
        ) from None
    summary = None
    if isinstance(doc.get("summary"), dict):
        s = dict(doc["summary"])
        s["failed"] = [tuple(f) for f in s.get("failed", [])]
        summary = CacheSummary(**s)
    return CacheInfo(folder, doc["params"], doc["entries"], summary)


def _previous(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def build_cache(
    cfg: RunConfig,
    model: AudioModel,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    write_index: bool | None = None,
) -> CacheSummary:
    """Encode the missing entries of shard ``shard`` (index, count) of the cache.

    ``write_index`` (default: when ``count == 1``) writes ``cache.json`` afterwards; it lists
    every planned entry present on disk, so run it once after all shards. Bad segments are
    reported in the summary (and logged, one line each) and skipped.
    """
    t0 = time.perf_counter()
    data = cfg.data
    if not data.manifest:
        raise CacheError("data.manifest: empty; set it to cut-music's manifest.jsonl")
    manifest = Path(data.manifest)
    if not manifest.is_file():
        raise CacheError(
            f"{manifest}: manifest not found; run cut-music first or fix data.manifest"
        )
    max_seconds = getattr(model, "max_seconds", None)
    if max_seconds is not None and data.seconds > max_seconds + 1e-6:
        raise CacheError(
            f"data.seconds={data.seconds} is longer than this {model.family} model takes "
            f"({max_seconds:.2f} s); lower data.seconds"
        )
    write_index = shard[1] == 1 if write_index is None else write_index
    segments = read_manifest(manifest)
    params = cache_params(data, model)
    folder = cache_folder(data, params)
    previous = _previous(folder)
    hashes: dict[str, list] = dict(previous.get("audio_hashes", {}))
    items, failed = plan(segments, data, hashes)
    for _, reason in failed:
        log.warning("skipped: %s", reason)

    summary = CacheSummary(
        folder=str(folder), manifest=str(manifest), shard=f"{shard[0] + 1}/{shard[1]}"
    )
    summary.segments = len(segments)
    summary.failed = list(failed)
    mine = [
        it for b in shard_batches(batches_of(items, data.encode_batch_size), *shard) for it in b
    ]
    frames: dict[str, int] = {}
    _encode_missing(model, data, folder, mine, summary, frames, progress)
    summary.failed.sort()

    done = {it.key: it for it in (items if write_index else mine) if _exists(folder, it.key)}
    for it in done.values():
        summary.variants[it.variant.name] = summary.variants.get(it.variant.name, 0) + 1
        summary.splits[it.segment.split] = summary.splits.get(it.segment.split, 0) + 1
        summary.seconds += it.valid_seconds
    summary.entries = len(done)
    summary.cache_bytes = _folder_bytes(folder)
    summary.elapsed_s = time.perf_counter() - t0
    if write_index:
        summary.complete = True
        entries = {
            k: it.record(frames.get(k) or _valid_frames(model, data, it)) for k, it in done.items()
        }
        write_json_atomic(
            folder / CACHE_FILE,
            {
                "format": "lora-audio latent cache",
                "params": params,
                "manifest": str(manifest.resolve()),
                "augment": asdict(data.augment),
                "entries": entries,
                "audio_hashes": hashes,
                "summary": asdict(summary),
            },
        )
        summary.cache_bytes = _folder_bytes(folder)
    return summary


def _exists(folder: Path, key: str) -> bool:
    return (folder / entry_relpath(key)).is_file()


def _valid_frames(model: AudioModel, data: DataSection, item: WorkItem) -> int:
    return int(frame_mask(model, data.seconds, item.valid_seconds).sum().item())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _encode_missing(
    model: AudioModel,
    data: DataSection,
    folder: Path,
    items: list[WorkItem],
    summary: CacheSummary,
    frames: dict[str, int],
    progress: bool,
) -> None:
    """Encode the batches of ``items`` that miss an entry; updates ``summary`` and ``frames``."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    set_eval(model)
    bar = tqdm(
        total=len(items),
        unit="entry",
        desc="preprocess",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    with bar, logging_redirect_tqdm():
        for batch in batches_of(items, data.encode_batch_size):
            missing = [it for it in batch if not _exists(folder, it.key)]
            summary.reused += len(batch) - len(missing)
            if missing:
                t = time.perf_counter()
                _encode_and_write(model, data, folder, batch, missing, summary, frames)
                summary.encode_s += time.perf_counter() - t
            bar.update(len(batch))


def _encode_and_write(
    model: AudioModel,
    data: DataSection,
    folder: Path,
    batch: list[WorkItem],
    missing: list[WorkItem],
    summary: CacheSummary,
    frames: dict[str, int],
) -> None:
    """Encode the whole ``batch`` (so its composition never depends on what was there before)
    and write the entries in ``missing``."""
    todo = {it.key for it in missing}
    loaded: list[tuple[WorkItem, np.ndarray]] = []
    for it in batch:
        try:
            audio, _ = prepare_audio(it, model.sample_rate, model.audio_channels, data.seconds)
        except AudioError as exc:
            if it.key in todo:
                _fail(summary, it, str(exc))
            continue
        loaded.append((it, audio))
    if not loaded:
        return
    generator = None
    if data.sample_posterior:
        seed = int(stable_hash([data.seed, loaded[0][0].key], 15), 16)
        generator = torch.Generator(model.device).manual_seed(seed)
    audio = torch.from_numpy(np.stack([a for _, a in loaded]))
    latents, cond = encode_batch(
        model,
        audio,
        [it.segment.caption for it, _ in loaded],
        [it.valid_seconds for it, _ in loaded],
        generator,
    )
    summary.encoded += len(loaded)
    for i, (it, _) in enumerate(loaded):
        if it.key not in todo:
            continue
        tensors = {"latents": latents[i], "mask": frame_mask(model, data.seconds, it.valid_seconds)}
        tensors.update({COND_PREFIX + k: v[i] for k, v in cond.items()})
        bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
        if bad:
            _fail(summary, it, f"{it.segment.path}: encoded to NaN/inf ({', '.join(bad)}); skipped")
            continue
        write_entry(folder, it, tensors)
        frames[it.key] = int(tensors["mask"].sum().item())
        summary.new += 1
        summary.seconds_new += it.valid_seconds


def _fail(summary: CacheSummary, item: WorkItem, reason: str) -> None:
    if any(reason == r for _, r in summary.failed):
        return
    log.warning("skipped: %s", reason)
    summary.failed.append((item.segment.path, reason))


# --------------------------------------------------------------------------------------------
# Entry point for training
# --------------------------------------------------------------------------------------------


def is_fresh(cfg: RunConfig, model: AudioModel) -> CacheInfo | None:
    """The cache as ``cache.json`` describes it if it is complete for ``cfg`` and ``model``.

    Fresh means: ``cache.json`` exists in the folder of the current parameters, records the
    same parameters, and lists exactly the entries the manifest and augmentation call for,
    each present on disk. Otherwise ``None`` (stale or missing).
    """
    data = cfg.data
    params = cache_params(data, model)
    folder = cache_folder(data, params)
    previous = _previous(folder)
    if previous.get("params") != params:
        return None
    hashes = dict(previous.get("audio_hashes", {}))
    items, failed = plan(read_manifest(data.manifest), data, hashes)
    entries = previous.get("entries", {})
    if failed or set(entries) != {it.key for it in items}:
        return None
    if not all(_exists(folder, k) for k in entries):
        return None
    return read_cache(folder)


def process_share() -> tuple[int, int, Any]:
    """``(index, count, state)`` of this process: accelerate's PartialState when launched by
    ``accelerate launch`` (``WORLD_SIZE`` > 1), else ``(0, 1, None)``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState()
        return state.process_index, state.num_processes, state
    return 0, 1, None


def ensure_cache(
    cfg: RunConfig, model: AudioModel, progress: bool = True, on_summary: Callable | None = None
) -> CacheInfo:
    """The cache for ``cfg``/``model``, built or completed first if missing or stale.

    Under ``accelerate launch`` every process encodes its share, then the main process
    merges (writes ``cache.json``) and all return the same :class:`CacheInfo`.
    ``on_summary(summary)`` is called with the summary of the run that wrote ``cache.json``.
    Raises :class:`CacheError` if no entry could be made.
    """
    info = is_fresh(cfg, model)
    if info is not None:
        log.info("latent cache up to date: %s (%d entries)", info.folder, len(info.entries))
        return info
    index, count, state = process_share()
    summary = None
    if count > 1:
        build_cache(cfg, model, (index, count), progress=progress, write_index=False)
        state.wait_for_everyone()
        if state.is_main_process:
            summary = build_cache(cfg, model, progress=False)
        state.wait_for_everyone()
    else:
        summary = build_cache(cfg, model, progress=progress)
    if summary is not None:
        log.info("%s", summary.format())
        if on_summary is not None:
            on_summary(summary)
    folder = cache_folder(cfg.data, cache_params(cfg.data, model))
    info = read_cache(folder)
    if not info.entries:
        raise CacheError(f"{folder}: no segment could be encoded; see the messages above")
    return info


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when present, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
