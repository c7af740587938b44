"""cut-music: cut recordings into fixed-length segments and write a JSONL manifest.

    cut-music INPUT... -o OUT_DIR [--length 10s] [--hop 5s] [--sr 44100] [--channels 2] ...

Python API: ``cut_music(inputs, out_dir, CutParams(...)) -> CutSummary``; the manifest is read
back with :func:`preprocessing.manifest.read_manifest`.

How it works, per recording (``--jobs N`` runs N recordings at a time in threads: decoding,
resampling, the loudness pass and encoding run in C or compiled code that releases the GIL, so
threads scale like processes without their start-up, imports and pickling):

1. hash the file (sha256 of its bytes: ids, resume and the split are keyed on it);
2. stream it in blocks (:func:`lora_audio.audio.iter_blocks`), convert channels, resample with
   soxr (HQ, stateful, so block-wise equals whole-file), and cut windows of ``length`` every
   ``hop`` seconds from a small rolling buffer: memory is one segment plus one block, whatever
   the file's length;
3. skip windows whose active (non-silent) share is below ``min_active``; normalise the rest
   *per segment* (``--loudness`` LUFS or ``--peak`` dBFS; per segment keeps it streaming and
   gives every training example the same level) and write each atomically.

Output layout::

    OUT_DIR/cut_params.json                 parameters that shape the audio (compared on re-run)
    OUT_DIR/manifest.jsonl                  one row per segment (rewritten on every run)
    OUT_DIR/cut_summary.json                the run's summary, failures included
    OUT_DIR/audio/<stem>-<sha8>/<stem>-<sha8>-<k>.wav     segments (k = grid index)
    OUT_DIR/audio/<stem>-<sha8>/recording.json           per-recording record for resume

Re-running with the same parameters reuses finished recordings without decoding them and
skips segment files that already exist; a different parameter set is refused (use a new
OUT_DIR or ``--overwrite``). Captions and splits only touch the manifest, so changing them
is cheap and allowed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from lora_audio.audio import (
    AudioError,
    StreamResampler,
    find_audio_files,
    iter_blocks,
    loudness_lufs,
    peak_db,
    probe,
    to_channels,
)
from lora_audio.files import atomic_path, sha256_file, stable_hash, write_json_atomic
from preprocessing.manifest import Segment, write_manifest

log = logging.getLogger(__name__)

HELP = "cut recordings into fixed-length segments and write a manifest"

#: Bump when a change in this module changes the audio written for the same parameters.
CUT_VERSION = 1
#: Frame length (seconds) of the silence detector and of leading/trailing trimming.
ACTIVITY_FRAME_S = 0.05
#: Source frames read per block (about 3 s at 44.1 kHz).
BLOCK_FRAMES = 1 << 17
PARAMS_FILE = "cut_params.json"
MANIFEST_FILE = "manifest.jsonl"
SUMMARY_FILE = "cut_summary.json"
AUDIO_DIR = "audio"
RECORD_FILE = "recording.json"


class CutError(Exception):
    """A problem with the whole run (bad parameters, unsafe OUT_DIR): one line with the fix."""


# --------------------------------------------------------------------------------------------
# Parameters and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutParams:
    """Everything that decides what cut-music writes.

    The fields up to ``measure_lufs`` shape the audio files and are stored in
    ``cut_params.json``; the rest (captions, split, seed, jobs, ...) only affect the manifest
    or how the run goes.
    """

    length: float = 10.0  # segment length, seconds
    hop: float | None = None  # seconds between segment starts; None = length (no overlap)
    tail: str = "drop"  # the last, shorter window: drop | pad (zeros) | keep (shorter file)
    min_tail: float = 1.0  # a tail shorter than this (seconds) is dropped even with pad/keep
    sample_rate: int | None = None  # None keeps each file's rate
    channels: int | None = None  # None keeps each file's channel count
    loudness: float | None = None  # target LUFS per segment
    peak: float | None = None  # target peak dBFS per segment (a ceiling if loudness is set)
    format: str = "wav"  # wav | flac
    subtype: str | None = None  # soundfile subtype (PCM_16, PCM_24, FLOAT); None = PCM_16
    min_active: float = 0.5  # skip segments whose non-silent share is below this
    silence_db: float = -50.0  # a 50 ms frame below this RMS (dBFS) is silent
    trim_silence: bool = False  # trim leading/trailing silence of each recording first
    measure_lufs: bool = True  # LUFS of every segment in the manifest (costs a K-weighting pass)
    # --- manifest-only and run options (not in cut_params.json) ---
    caption: str | None = None  # template, e.g. "{stem}, fiddle"
    captions_csv: str | None = None  # CSV with columns file,caption
    split: tuple[float, float, float] = (0.9, 0.1, 0.0)
    seed: int = 0
    jobs: int = 1
    overwrite: bool = False
    strict: bool = False
    progress: bool = True

    @property
    def hop_s(self) -> float:
        return self.length if self.hop is None else self.hop

    def audio_params(self) -> dict:
        """The parameters that shape the audio files (what ``cut_params.json`` stores)."""
        keep = [f.name for f in fields(self)][: [f.name for f in fields(self)].index("caption")]
        d = {k: getattr(self, k) for k in keep}
        d["hop"] = self.hop_s
        d["subtype"] = self.subtype_resolved
        d["activity_frame_s"] = ACTIVITY_FRAME_S
        d["cut_version"] = CUT_VERSION
        return d

    @property
    def subtype_resolved(self) -> str:
        return (self.subtype or "PCM_16").upper()

    def validate(self) -> None:
        """Raise :class:`CutError` naming the bad option."""
        import soundfile as sf

        if not (self.length > 0 and math.isfinite(self.length)):
            raise CutError(f"--length must be a positive duration, got {self.length}")
        if not self.hop_s > 0:
            raise CutError(f"--hop must be a positive duration, got {self.hop}")
        if self.tail not in ("drop", "pad", "keep"):
            raise CutError(f"--tail must be drop, pad or keep, got {self.tail!r}")
        if self.min_tail < 0:
            raise CutError(f"--min-tail must be >= 0, got {self.min_tail}")
        if self.sample_rate is not None and not 1000 <= self.sample_rate <= 384000:
            raise CutError(f"--sr must be between 1000 and 384000 Hz, got {self.sample_rate}")
        if self.channels is not None and self.channels not in (1, 2):
            raise CutError(f"--channels must be 1 or 2, got {self.channels}")
        if self.format not in ("wav", "flac"):
            raise CutError(f"--format must be wav or flac, got {self.format!r}")
        if not sf.check_format(self.format.upper(), self.subtype_resolved):
            ok = ", ".join(sorted(sf.available_subtypes(self.format.upper())))
            raise CutError(
                f"--subtype {self.subtype_resolved} is not valid for {self.format}; use one of: {ok}"
            )
        if not 0.0 <= self.min_active <= 1.0:
            raise CutError(f"--min-active must be between 0 and 1, got {self.min_active}")
        if self.peak is not None and self.peak > 0:
            raise CutError(f"--peak must be <= 0 dBFS, got {self.peak}")
        if self.loudness is not None and not -70 <= self.loudness <= 0:
            raise CutError(f"--loudness must be between -70 and 0 LUFS, got {self.loudness}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise CutError(f"--split needs 3 fractions >= 0 summing to 1, got {self.split}")
        if self.split[0] <= 0:
            raise CutError("--split: the train fraction must be > 0")
        if self.jobs < 1:
            raise CutError(f"--jobs must be >= 1, got {self.jobs}")
        if self.caption is not None:
            try:
                format_caption(self.caption, Path("x.wav"), 0, 0.0, 1.0)
            except (KeyError, IndexError, ValueError) as e:
                raise CutError(
                    f"--caption {self.caption!r}: unknown field {e}; use {{stem}}, {{name}}, "
                    "{parent}, {index}, {start}, {end}"
                ) from e


@dataclass
class RecordingResult:
    """What one worker reports for one source recording."""

    source: str
    status: str = "ok"  # ok | failed
    reason: str = ""
    sha256: str = ""
    folder: str = ""  # OUT_DIR-relative folder of its segments
    rows: list[dict] = field(default_factory=list)  # manifest rows without caption/split
    seconds_in: float = 0.0  # source seconds decoded (or recorded, when reused)
    written: int = 0
    existing: int = 0  # segment files already there (resume)
    reused: bool = False  # the whole recording came from its record, nothing decoded
    silent: int = 0  # windows skipped as silent


@dataclass
class CutSummary:
    """The outcome of a run; ``ok`` is true when the manifest holds at least one segment."""

    out_dir: str
    manifest: str
    recordings: int = 0
    recordings_ok: int = 0
    segments: int = 0
    written: int = 0
    existing: int = 0
    seconds_in: float = 0.0
    seconds_kept: float = 0.0
    skipped_silent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    splits: dict[str, list[int]] = field(default_factory=dict)  # split -> [recordings, segs]
    aborted: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.segments > 0 and not self.aborted

    def format(self) -> str:
        """Human-readable multi-line summary (what the CLI prints)."""
        lines = [
            f"cut-music: {self.recordings} recordings ({self.recordings_ok} ok, "
            f"{len(self.failed)} skipped) -> {self.segments} segments "
            f"({self.written} written, {self.existing} already there), "
            f"{self.seconds_kept:.1f} s in segments from {self.seconds_in:.1f} s read; "
            f"{self.skipped_silent} silent segments skipped; {self.elapsed_s:.1f} s",
        ]
        if self.splits:
            parts = [f"{k} {v[1]} segments / {v[0]} recordings" for k, v in self.splits.items()]
            lines.append("splits: " + ", ".join(parts))
        if self.failed:
            lines.append(f"skipped recordings ({len(self.failed)}):")
            lines += [f"  {reason}" for _, reason in self.failed]
        if self.aborted:
            lines.append("stopped at the first bad file (--strict); manifest not written")
        else:
            lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Small pure functions
# --------------------------------------------------------------------------------------------

_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"10s"``, ``"10"``, ``"500ms"``, ``"1.5m"``, ``"1m30s"`` -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)", str(text))
    rest = re.sub(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)", "", str(text)).strip()
    if not parts or rest:
        raise ValueError(f"not a duration: {text!r} (examples: 10s, 500ms, 1.5m)")
    total = 0.0
    for number, unit in parts:
        key = unit.lower() or None
        if key not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r} (use ms, s, m or h)")
        total += float(number) * _UNITS[key]
    return total


def parse_sample_rate(text: str) -> int:
    """``"44100"``, ``"44.1k"``, ``"48kHz"`` -> Hz."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(k?)(?:hz)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a sample rate: {text!r} (examples: 44100, 44.1k)")
    value = float(m.group(1)) * (1000 if m.group(2) else 1)
    return round(value)


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (train,val,test; two values mean no test) -> normalised fractions."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError as e:
        raise ValueError(f"--split {text!r}: use fractions like 0.8,0.1,0.1") from e
    if not 1 <= len(values) <= 3 or min(values) < 0 or sum(values) <= 0:
        raise ValueError(f"--split {text!r}: use 1 to 3 fractions >= 0, like 0.8,0.1,0.1")
    values += [0.0] * (3 - len(values))
    total = sum(values)
    if abs(total - 1.0) > 0.01:
        raise ValueError(f"--split {text!r}: fractions must sum to 1 (they sum to {total:g})")
    return (values[0] / total, values[1] / total, values[2] / total)


def slugify(text: str, max_len: int = 48) -> str:
    """File-name-safe ASCII slug of a stem ("Reel No. 3 (live)" -> "Reel_No._3_live")."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return slug[:max_len].rstrip("._-") or "rec"


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of ``n`` recordings go to (train, val, test).

    Rounded from the fractions, then: val gets at least one recording when its fraction is
    > 0 and n >= 2; test gets at least one when its fraction is > 0 and n >= 3; train always
    keeps at least one (it has priority: with 2 recordings and val > 0, it is 1 + 1 + 0).
    """
    if n <= 0:
        return (0, 0, 0)
    _, f_val, f_test = fractions
    n_val = round(f_val * n)
    n_test = round(f_test * n)
    if f_val > 0 and n >= 2:
        n_val = max(n_val, 1)
    if f_test > 0 and n >= 3:
        n_test = max(n_test, 1)
    while n_val + n_test > n - 1:  # leave train at least one
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return (n - n_val - n_test, n_val, n_test)


def assign_splits(shas: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Assign each recording (by content sha256) to train/val/test, song-level.

    The order is a hash of ``seed`` and the sha256, so the result depends only on the files'
    contents and the seed, not on their paths or the order they were given in.
    """
    unique = sorted(set(shas), key=lambda s: stable_hash([seed, s], length=64))
    n_train, n_val, _ = split_counts(len(unique), fractions)
    out = {}
    for i, sha in enumerate(unique):
        out[sha] = "val" if i < n_val else "test" if i >= n_val + n_train else "train"
    return out


def frame_activity(x: np.ndarray, frame: int, silence_db: float) -> np.ndarray:
    """Per-frame activity of ``[C, T]``: True where the frame's RMS (power averaged over
    channels) is above ``silence_db`` dBFS. Frames are ``frame`` samples; a last partial
    frame counts. Returns ``bool [ceil(T / frame)]``.
    """
    sums = frame_energy(x, frame)
    return sums / _frame_sizes(x.shape[1], frame, x.shape[0]) > 10.0 ** (silence_db / 10.0)


def frame_energy(x: np.ndarray, frame: int) -> np.ndarray:
    """Sum of squares over channels and samples of each ``frame``-sample frame of ``[C, T]``
    (a last partial frame included) -> ``float64 [ceil(T / frame)]``.

    Squares are summed time-major (``[T, C]`` rows, contiguous when ``x`` is a transposed
    view of decoded audio) in float32 pairwise sums: within 1e-6 of a float64 sum.
    """
    c, t = x.shape
    sq = np.square(x.T, order="C")  # [T, C]
    n_full = t // frame
    sums = sq[: n_full * frame].reshape(n_full, frame * c).sum(axis=1).astype(np.float64)
    if t > n_full * frame:
        sums = np.append(sums, np.float64(sq[n_full * frame :].sum()))
    return sums


def _frame_sizes(t: int, frame: int, channels: int) -> np.ndarray:
    """Values per frame (samples x channels) of the frames of :func:`frame_energy`."""
    sizes = np.full(-(-t // frame), frame * channels, dtype=np.float64)
    if t % frame:
        sizes[-1] = (t % frame) * channels
    return sizes


def normalise(x: np.ndarray, sr: int, params: CutParams, lufs: float) -> tuple[np.ndarray, float]:
    """Apply ``--loudness`` / ``--peak`` to one segment ``[C, T]``.

    Returns ``(audio, gain_db)``. Loudness normalisation never pushes the peak over the
    ceiling (``--peak`` if given, else 0 dBFS): the gain is lowered instead, so nothing clips.
    Unmeasurable (silent) segments are left as they are.
    """
    if params.loudness is None and params.peak is None:
        return x, 0.0
    peak = peak_db(x)
    if not math.isfinite(peak):
        return x, 0.0
    gain_db = 0.0
    if params.loudness is not None:
        if not math.isfinite(lufs):
            return x, 0.0
        gain_db = params.loudness - lufs
        ceiling = params.peak if params.peak is not None else 0.0
        gain_db = min(gain_db, ceiling - peak)
    elif params.peak is not None:
        gain_db = params.peak - peak
    if gain_db == 0.0:
        return x, 0.0
    return x * np.float32(10.0 ** (gain_db / 20.0)), gain_db  # float32, same memory layout


def format_caption(template: str, source: Path, index: int, start: float, end: float) -> str:
    """Fill a ``--caption`` template: {stem} {name} {parent} {index} {start} {end}."""
    return template.format(
        stem=source.stem,
        name=source.name,
        parent=source.parent.name,
        index=index,
        start=start,
        end=end,
    )


# --------------------------------------------------------------------------------------------
# Streaming segmentation
# --------------------------------------------------------------------------------------------


@dataclass
class Window:
    """One cut: grid index ``k``, ``start`` sample, ``audio [C, n]`` with ``n <= length``."""

    k: int
    start: int
    audio: np.ndarray


class Segmenter:
    """Cut a stream of ``[C, T]`` blocks into windows of ``length`` samples every ``hop``.

    Windows start at ``offset + k * hop``; samples at or after ``end`` (if given) are ignored.
    Only the blocks still needed are kept, so memory is about one window plus one block. A
    window inside one block is a view of it; one that spans blocks is copied once, into
    time-major memory (a ``[C, n]`` view of a C-contiguous ``[n, C]`` array, the layout
    soundfile reads and writes).
    """

    def __init__(self, length: int, hop: int, offset: int = 0, end: int | None = None) -> None:
        if length < 1 or hop < 1:
            raise ValueError("length and hop must be >= 1 sample")
        self.length, self.hop, self.offset, self.end = length, hop, offset, end
        self.k = 0
        self.blocks: list[np.ndarray] = []  # kept blocks; the first starts at buf_start
        self.buf_start = 0  # absolute index of the first kept sample
        self.buffered = 0  # samples in self.blocks
        self.seen = 0  # samples received so far

    @property
    def next_start(self) -> int:
        return self.offset + self.k * self.hop

    def push(self, block: np.ndarray) -> Iterator[Window]:
        """Add ``block [C, T]``; yield every window that is now complete."""
        if self.end is not None:
            block = block[:, : max(0, self.end - self.seen)]
        self.seen += block.shape[1]
        if block.shape[1]:
            self.blocks.append(block)
            self.buffered += block.shape[1]
        while self.next_start + self.length <= self.buf_start + self.buffered:
            yield Window(self.k, self.next_start, self._take(self.next_start, self.length))
            self.k += 1
        self._drop_before(self.next_start)

    def finish(self) -> Window | None:
        """The partial window left at the end (None if there is none).

        With overlapping hops only the first partial window is returned: it already holds
        all the remaining audio.
        """
        end = self.buf_start + self.buffered
        if not self.buf_start <= self.next_start < end:
            return None
        return Window(self.k, self.next_start, self._take(self.next_start, end - self.next_start))

    def _take(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` (all buffered) as ``[C, n]``."""
        pieces = []
        a = start - self.buf_start
        for b in self.blocks:
            if a < b.shape[1]:
                pieces.append(b[:, a : a + n])
                n -= pieces[-1].shape[1]
                a = 0
                if n == 0:
                    break
            else:
                a -= b.shape[1]
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate([p.T for p in pieces], axis=0).T

    def _drop_before(self, start: int) -> None:
        """Forget the buffered samples before ``start``."""
        n = min(max(start - self.buf_start, 0), self.buffered)
        self.buf_start += n
        self.buffered -= n
        while n:
            first = self.blocks[0]
            if first.shape[1] <= n:
                self.blocks.pop(0)
                n -= first.shape[1]
            else:
                self.blocks[0] = first[:, n:]
                n = 0


# --------------------------------------------------------------------------------------------
# One recording (runs in a worker thread with --jobs > 1)
# --------------------------------------------------------------------------------------------


@dataclass
class RunControl:
    """Shared by the recordings of one run: a progress callback (source seconds done) and a
    stop flag that makes running recordings give up at their next block (Ctrl-C, --strict)."""

    progress: Callable[[float], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def report(self, seconds: float) -> None:
        if self.progress is not None and seconds > 0:
            self.progress(seconds)


def active_span(path: Path, params: CutParams) -> tuple[float, float] | None:
    """Seconds ``(start, end)`` from the first to the end of the last non-silent frame.

    Streams the file once at its own rate; None if it is silent throughout.
    """
    info = probe(path)
    frame = max(1, round(ACTIVITY_FRAME_S * info.sample_rate))
    block = frame * max(1, BLOCK_FRAMES // frame)
    first = last = None
    pos = 0
    for x in iter_blocks(path, block):
        act = np.flatnonzero(frame_activity(x, frame, params.silence_db))
        if act.size:
            if first is None:
                first = pos + int(act[0]) * frame
            last = pos + min(int(act[-1] + 1) * frame, x.shape[1])
        pos += x.shape[1]
    if first is None or last is None:
        return None
    return first / info.sample_rate, last / info.sample_rate


def _recording_folder(source: Path, sha: str) -> str:
    return f"{slugify(source.stem)}-{sha[:8]}"


def _read_record(record: Path, sha: str, params_hash: str, out_dir: Path) -> dict | None:
    """A finished recording's record if it matches and all its files exist, else None."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("source_sha256") != sha or data.get("params_hash") != params_hash:
        return None
    if not all((out_dir / row["path"]).is_file() for row in data.get("rows", [])):
        return None
    return data


def process_recording(
    source: str, out_dir: str, params: CutParams, control: RunControl | None = None
) -> RecordingResult:
    """Cut one recording into ``out_dir``; never raises for a bad file (see ``status``).

    Raises :class:`KeyboardInterrupt` when ``control.stop`` is set while it runs; what it
    wrote so far stays (a later run resumes from it).
    """
    res = RecordingResult(source=source)
    try:
        _cut_one(Path(source), Path(out_dir), params, res, control or RunControl())
    except AudioError as e:
        res.status, res.reason = "failed", str(e)
    except CutError as e:
        res.status, res.reason = "failed", f"{source}: {e}"
    except OSError as e:
        res.status, res.reason = "failed", f"{source}: {e.strerror or e}; check permissions"
    except Exception as e:  # a bug or an unexpected library error: report, keep going
        log.debug("unexpected error on %s", source, exc_info=True)
        res.status, res.reason = "failed", f"{source}: unexpected {type(e).__name__}: {e}"
    if res.status != "ok":
        res.rows = []
    return res


def _cut_one(
    source: Path, out_dir: Path, params: CutParams, res: RecordingResult, control: RunControl
) -> None:
    info = probe(source)  # raises AudioError for non-audio / empty files
    res.sha256 = sha256_file(source)
    folder = _recording_folder(source, res.sha256)
    res.folder = f"{AUDIO_DIR}/{folder}"
    rec_dir = out_dir / AUDIO_DIR / folder
    record_path = rec_dir / RECORD_FILE
    params_hash = stable_hash(params.audio_params())

    record = _read_record(record_path, res.sha256, params_hash, out_dir)
    if record is not None:  # finished on an earlier run: nothing to decode
        res.rows, res.silent = record["rows"], record["silent"]
        res.seconds_in, res.existing, res.reused = record["seconds_in"], len(res.rows), True
        control.report(res.seconds_in)
        return

    sr_in, c_in = info.sample_rate, info.channels
    sr = params.sample_rate or sr_in
    c_out = params.channels or c_in
    length = max(1, round(params.length * sr))
    hop = max(1, round(params.hop_s * sr))
    offset, end = 0, None
    if params.trim_silence:
        span = active_span(source, params)
        if span is None:
            raise CutError(f"silent throughout (below {params.silence_db:g} dBFS); nothing to cut")
        offset, end = round(span[0] * sr), round(span[1] * sr)

    # Downmix before resampling (cheaper); upmix after.
    c_mid = c_out if c_out < c_in else c_in
    resampler = StreamResampler(sr_in, sr, c_mid)
    seg = Segmenter(length, hop, offset, end)
    frame = max(1, round(ACTIVITY_FRAME_S * sr))
    threshold = 10.0 ** (params.silence_db / 10.0)
    ext = params.format
    subtype = params.subtype_resolved
    written: list[Path] = []

    def handle(w: Window, pad_to: int | None = None) -> None:
        audio = w.audio
        n_real = audio.shape[1]
        if pad_to is not None and n_real < pad_to:
            audio = np.pad(audio, ((0, 0), (0, pad_to - n_real)))
        energy = frame_energy(audio, frame)
        power = energy / _frame_sizes(audio.shape[1], frame, audio.shape[0])  # per frame
        active = float(np.mean(power > threshold))
        if active < params.min_active or active == 0.0:
            res.silent += 1
            return
        need_lufs = params.measure_lufs or params.loudness is not None
        lufs = loudness_lufs(audio, sr) if need_lufs else float("nan")
        audio, gain_db = normalise(audio, sr, params, lufs)
        seg_id = f"{folder}-{w.k:05d}"
        rel = f"{AUDIO_DIR}/{folder}/{seg_id}.{ext}"
        path = out_dir / rel
        if path.exists():
            res.existing += 1
        else:
            _write_segment(path, audio, sr, subtype)
            written.append(path)
            res.written += 1
        res.rows.append(
            {
                "id": seg_id,
                "path": rel,
                "start": round(w.start / sr, 6),
                "end": round((w.start + n_real) / sr, 6),
                "sample_rate": sr,
                "channels": c_out,
                "frames": int(audio.shape[1]),
                "rms_db": _finite_or_none(_db(energy.sum() / audio.size) + gain_db),
                "lufs": _finite_or_none(lufs + gain_db),
                "active": round(active, 4),
                "k": w.k,
            }
        )

    decoded = 0
    try:
        for block in iter_blocks(source, BLOCK_FRAMES):
            decoded += block.shape[1]
            y = _convert(block, c_in, c_mid, c_out, resampler, last=False)
            for w in seg.push(y):
                handle(w)
            control.report(block.shape[1] / sr_in)
            if control.stop.is_set():
                raise KeyboardInterrupt  # not an Exception: the segments written so far stay
        y = _convert(np.zeros((c_in, 0), np.float32), c_in, c_mid, c_out, resampler, last=True)
        for w in seg.push(y):
            handle(w)
        if decoded == 0:
            raise AudioError(f"{source}: contains no audio frames; remove it or re-export it")
        tail = seg.finish()
        if (
            tail is not None
            and params.tail != "drop"
            and tail.audio.shape[1] >= max(1, round(params.min_tail * sr))
        ):
            handle(tail, pad_to=length if params.tail == "pad" else None)
        res.seconds_in = decoded / sr_in
        if seg.k == 0 and not res.rows and res.silent == 0:
            have = (seg.seen - offset) / sr
            fix = "use --tail pad or keep to keep it" if params.tail == "drop" else ""
            raise CutError(
                f"shorter than one segment ({have:.2f} s < {params.length:g} s)"
                + (f"; {fix}" if fix else "; lower --min-tail to keep it")
            )
    except Exception:  # a bad file leaves no segments behind (Ctrl-C/kill keep them: resume)
        for p in written:
            p.unlink(missing_ok=True)
        raise

    write_json_atomic(
        record_path,
        {
            "source_sha256": res.sha256,
            "params_hash": params_hash,
            "seconds_in": res.seconds_in,
            "silent": res.silent,
            "rows": res.rows,
        },
        indent=None,
    )


def _convert(
    x: np.ndarray, c_in: int, c_mid: int, c_out: int, rs: StreamResampler, last: bool
) -> np.ndarray:
    """Channels then resampling (or the other way round when upmixing): ``[C_in, T]`` ->
    ``[C_out, T']``."""
    if c_mid != c_in:
        x = to_channels(x, c_mid)
    x = rs.process(x, last=last)
    if c_out != c_mid:
        x = to_channels(x, c_out)
    return x


def _write_segment(path: Path, audio: np.ndarray, sr: int, subtype: str) -> None:
    """Write ``[C, T]`` atomically (temp file + rename); a crash leaves no partial file."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio.T, sr, subtype=subtype, format=path.suffix[1:].upper())


def _db(power: float) -> float:
    """Mean power -> dB (RMS in dBFS); -inf for zero."""
    return 10.0 * math.log10(power) if power > 0 else float("-inf")


def _finite_or_none(v: float) -> float | None:
    return round(float(v), 3) if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def collect_inputs(inputs: Sequence[str | Path], out_dir: Path) -> list[Path]:
    """Expand inputs to audio files; refuse an OUT_DIR that overlaps an input folder."""
    out = out_dir.resolve()
    for item in inputs:
        p = Path(item).resolve()
        if p.is_dir() and (_is_within(out, p) or _is_within(p, out)):
            raise CutError(
                f"OUT_DIR {out_dir} overlaps the input folder {item}; "
                "choose an output folder outside the inputs"
            )
    try:
        files = find_audio_files(inputs)
    except AudioError as e:
        raise CutError(str(e)) from e
    inside = [f for f in files if _is_within(f, out)]
    if inside:
        raise CutError(f"input {inside[0]} is inside OUT_DIR {out_dir}; choose another OUT_DIR")
    return files


def prepare_out_dir(out_dir: Path, params: CutParams) -> None:
    """Create OUT_DIR or check it was cut with the same parameters.

    A different parameter set is refused unless ``params.overwrite``, which first removes
    what an earlier cut-music run wrote there (and nothing else).
    """
    params_path = out_dir / PARAMS_FILE
    wanted = {"tool": "cut-music", "params": params.audio_params()}
    if params_path.exists():
        try:
            old = json.loads(params_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old != json.loads(json.dumps(wanted)):
            if not params.overwrite:
                diff = _describe_diff(old.get("params", {}), wanted["params"])
                raise CutError(
                    f"{out_dir} holds segments cut with other parameters ({diff}); "
                    "use a new OUT_DIR or --overwrite"
                )
            log.info("--overwrite: removing the earlier cut in %s", out_dir)
            shutil.rmtree(out_dir / AUDIO_DIR, ignore_errors=True)
            for name in (MANIFEST_FILE, SUMMARY_FILE, PARAMS_FILE):
                (out_dir / name).unlink(missing_ok=True)
    elif (out_dir / MANIFEST_FILE).exists() or (out_dir / AUDIO_DIR).exists():
        raise CutError(
            f"{out_dir} has a manifest or audio/ folder but no {PARAMS_FILE}: not made by "
            "cut-music (or made by an older version); use a new OUT_DIR"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(params_path, wanted)
    # Temp files left by a killed run (atomic_path names them .<name>.<rand>.tmp.<ext>).
    for tmp in (out_dir / AUDIO_DIR).glob("*/.*.tmp*"):
        tmp.unlink(missing_ok=True)


def _describe_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys) or "unreadable"


def load_captions_csv(path: str | Path) -> dict[str, str]:
    """Read a captions CSV with a header: a ``file`` (or ``path``/``name``/``stem``) column and a
    ``caption`` column. Keys are matched against a source's path, file name or stem.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            key_col = next((cols[c] for c in ("file", "path", "name", "stem") if c in cols), None)
            if key_col is None or "caption" not in cols:
                raise CutError(
                    f"{path}: needs a header with a 'file' and a 'caption' column "
                    f"(found {reader.fieldnames})"
                )
            out = {}
            for row in reader:
                key = (row.get(key_col) or "").strip()
                if key:
                    out[key] = (row.get(cols["caption"]) or "").strip()
            return out
    except OSError as e:
        raise CutError(
            f"{path}: cannot read the captions file ({e.strerror}); check the path"
        ) from e


def caption_for(source: Path, csv_captions: dict[str, str], template: str | None, row: dict) -> str:
    """Caption of one segment: CSV entry > sidecar ``<stem>.txt`` > template > empty."""
    for key in (str(source), source.name, source.stem):
        if key in csv_captions:
            return csv_captions[key]
    for key, value in csv_captions.items():  # relative paths in the CSV
        if not Path(key).is_absolute() and str(source).endswith("/" + key.lstrip("./")):
            return value
    sidecar = source.with_suffix(".txt")
    if sidecar.is_file():
        text = " ".join(sidecar.read_text(encoding="utf-8", errors="replace").split())
        if text:
            return text
    if template:
        return format_caption(template, source, row["k"], row["start"], row["end"])
    return ""


def cut_music(
    inputs: Sequence[str | Path], out_dir: str | Path, params: CutParams | None = None
) -> CutSummary:
    """Cut every recording under ``inputs`` into ``out_dir``; see the module docstring.

    Raises :class:`CutError` for problems with the run as a whole (bad parameters, unsafe or
    mismatching OUT_DIR, missing inputs); bad files are reported in the summary instead.
    """
    params = params or CutParams()
    params.validate()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    files = collect_inputs(inputs, out_dir)
    csv_captions = load_captions_csv(params.captions_csv) if params.captions_csv else {}
    prepare_out_dir(out_dir, params)
    summary = CutSummary(out_dir=str(out_dir), manifest=str(out_dir / MANIFEST_FILE))
    summary.recordings = len(files)
    if not files:
        log.warning("no audio files found in %s", ", ".join(map(str, inputs)))

    results = _run_all(files, out_dir, params, summary)
    if summary.aborted:
        summary.failed = [(r.source, r.reason) for r in results if r.status != "ok"]
        summary.elapsed_s = time.perf_counter() - t0
        return summary

    segments = _build_manifest(results, out_dir, params, csv_captions, summary)
    write_manifest(out_dir / MANIFEST_FILE, segments)
    summary.elapsed_s = time.perf_counter() - t0
    write_json_atomic(out_dir / SUMMARY_FILE, asdict(summary))
    return summary


def _total_seconds(files: Sequence[Path]) -> float:
    total = 0.0
    for f in files:
        with contextlib.suppress(AudioError):
            total += probe(f).seconds
    return total


def _run_all(
    files: Sequence[Path], out_dir: Path, params: CutParams, summary: CutSummary
) -> list[RecordingResult]:
    """Process every file (``params.jobs`` at a time, in threads), with a progress bar."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    results: list[RecordingResult] = []
    bar = tqdm(
        total=round(_total_seconds(files), 1),
        unit="s",
        unit_scale=True,
        desc="cut-music",
        disable=None if params.progress else True,
        dynamic_ncols=True,
    )
    lock = threading.Lock()

    def progress(seconds: float) -> None:
        with lock:
            bar.update(seconds)

    control = RunControl(progress)

    def done(res: RecordingResult) -> bool:
        results.append(res)
        if res.status != "ok":
            log.warning("skipped: %s", res.reason)
            return params.strict
        return False

    with bar, logging_redirect_tqdm():
        if params.jobs == 1 or len(files) <= 1:
            for f in files:
                if done(process_recording(str(f), str(out_dir), params, control)):
                    summary.aborted = True
                    break
            return results
        pool = ThreadPoolExecutor(min(params.jobs, len(files)), thread_name_prefix="cut-music")
        try:
            pending = {
                pool.submit(process_recording, str(f), str(out_dir), params, control) for f in files
            }
            while pending and not summary.aborted:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if done(fut.result()):
                        summary.aborted = True  # --strict: the rest are not needed
        finally:  # after Ctrl-C or --strict, running recordings stop at their next block
            control.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
    return results


def _build_manifest(
    results: list[RecordingResult],
    out_dir: Path,
    params: CutParams,
    csv_captions: dict[str, str],
    summary: CutSummary,
) -> list[Segment]:
    """Drop duplicates, assign splits and captions, and fill in the summary."""
    results = sorted(results, key=lambda r: r.source)
    first_by_sha: dict[str, RecordingResult] = {}
    for r in results:
        if r.status != "ok":
            continue
        if r.sha256 in first_by_sha:
            kept = first_by_sha[r.sha256]
            r.status, r.reason = "failed", f"{r.source}: same content as {kept.source}; skipped"
            if r.folder != kept.folder:  # its segments duplicate the kept one's
                shutil.rmtree(out_dir / r.folder, ignore_errors=True)
            continue
        first_by_sha[r.sha256] = r
    ok = [r for r in results if r.status == "ok" and r.rows]
    splits = assign_splits([r.sha256 for r in ok], params.split, params.seed)

    segments: list[Segment] = []
    for r in results:
        summary.seconds_in += r.seconds_in
        summary.skipped_silent += r.silent
        if r.status != "ok":
            summary.failed.append((r.source, r.reason))
            continue
        summary.recordings_ok += 1
        summary.written += r.written
        summary.existing += r.existing
        if not r.rows:
            continue
        split = splits[r.sha256]
        counts = summary.splits.setdefault(split, [0, 0])
        counts[0] += 1
        source = Path(r.source)
        for row in r.rows:
            counts[1] += 1
            summary.seconds_kept += row["end"] - row["start"]
            segments.append(
                Segment(
                    id=row["id"],
                    path=row["path"],
                    source=r.source,
                    source_sha256=r.sha256,
                    start=row["start"],
                    end=row["end"],
                    sample_rate=row["sample_rate"],
                    channels=row["channels"],
                    frames=row["frames"],
                    rms_db=row["rms_db"],
                    lufs=row["lufs"],
                    active=row["active"],
                    caption=caption_for(source, csv_captions, params.caption, row),
                    split=split,
                )
            )
    summary.segments = len(segments)
    summary.splits = {k: summary.splits[k] for k in ("train", "val", "test") if k in summary.splits}
    return segments


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _arg(parse: Callable[[str], object]) -> Callable[[str], object]:
    def wrapped(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    wrapped.__name__ = parse.__name__
    return wrapped


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The cut-music options (shared by ``cut-music`` and ``lora-audio cut-music``)."""
    d = CutParams()
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (recursive)")
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="output folder")
    g = p.add_argument_group("segments")
    g.add_argument("--length", type=_arg(parse_duration), default=d.length,
                   help="segment length, e.g. 10s, 500ms, 1.5m (default 10s)")  # fmt: skip
    g.add_argument("--hop", type=_arg(parse_duration), default=None,
                   help="time between segment starts (default: --length, no overlap)")  # fmt: skip
    g.add_argument("--tail", choices=("drop", "pad", "keep"), default=d.tail,
                   help="the last, shorter piece: drop it, zero-pad it, or keep it shorter")  # fmt: skip
    g.add_argument("--min-tail", type=_arg(parse_duration), default=d.min_tail,
                   help="with pad/keep, drop tails shorter than this (default 1s)")  # fmt: skip
    g = p.add_argument_group("audio")
    g.add_argument("--sr", type=_arg(parse_sample_rate), default=None,
                   help="resample to this rate, e.g. 44100 or 44.1k (soxr HQ; default: keep)")  # fmt: skip
    g.add_argument("--channels", type=int, choices=(1, 2), default=None,
                   help="1 = mono downmix, 2 = stereo (mono is duplicated); default: keep")  # fmt: skip
    g.add_argument("--loudness", type=float, default=None, metavar="LUFS",
                   help="normalise each segment to this integrated loudness, e.g. -23")  # fmt: skip
    g.add_argument("--peak", type=float, default=None, metavar="DBFS",
                   help="normalise each segment's peak to this, e.g. -1; with --loudness: "
                        "a ceiling the loudness gain never exceeds")  # fmt: skip
    g.add_argument("--format", choices=("wav", "flac"), default=d.format, help="default wav")
    g.add_argument("--subtype", default=None,
                   help="sample format: PCM_16 (default), PCM_24, FLOAT (wav only)")  # fmt: skip
    g = p.add_argument_group("silence")
    g.add_argument("--min-active", type=float, default=d.min_active,
                   help="skip segments with a smaller non-silent share (0-1, default 0.5)")  # fmt: skip
    g.add_argument("--silence-db", type=float, default=d.silence_db,
                   help="50 ms frames below this RMS (dBFS) count as silent (default -50)")  # fmt: skip
    g.add_argument("--no-lufs", action="store_true",
                   help="do not measure each segment's LUFS for the manifest (faster)")  # fmt: skip
    g.add_argument("--trim-silence", action="store_true",
                   help="trim leading and trailing silence of each recording first")  # fmt: skip
    g = p.add_argument_group("manifest")
    g.add_argument("--caption", default=None, metavar="TEMPLATE",
                   help='caption template, e.g. "{stem}, fiddle" ({stem} {name} {parent} '
                        "{index} {start} {end}); a <stem>.txt beside the file wins")  # fmt: skip
    g.add_argument("--captions", default=None, metavar="CSV",
                   help="CSV with columns file,caption (wins over .txt and template)")  # fmt: skip
    g.add_argument("--split", type=_arg(parse_split), default=d.split,
                   help="train,val,test fractions by recording (default 0.9,0.1,0)")  # fmt: skip
    g.add_argument("--seed", type=int, default=d.seed, help="split seed (default 0)")
    g = p.add_argument_group("run")
    g.add_argument("-j", "--jobs", type=int, default=d.jobs, help="worker processes")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier cut in OUT_DIR made with other parameters")  # fmt: skip
    g.add_argument("--strict", action="store_true", help="stop at the first bad file")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def params_from_args(args: argparse.Namespace) -> CutParams:
    return CutParams(
        length=args.length,
        hop=args.hop,
        tail=args.tail,
        min_tail=args.min_tail,
        sample_rate=args.sr,
        channels=args.channels,
        loudness=args.loudness,
        peak=args.peak,
        format=args.format,
        subtype=args.subtype,
        min_active=args.min_active,
        silence_db=args.silence_db,
        trim_silence=args.trim_silence,
        measure_lufs=not args.no_lufs,
        caption=args.caption,
        captions_csv=args.captions,
        split=args.split,
        seed=args.seed,
        jobs=args.jobs,
        overwrite=args.overwrite,
        strict=args.strict,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """Run from parsed arguments; 0 if the manifest has segments, 1 if not, 2 on bad usage."""
    try:
        summary = cut_music(args.inputs, args.out, params_from_args(args))
    except CutError as e:
        log.error("cut-music: %s", e)
        return 2
    print(summary.format())
    return 0 if summary.ok else 1


def main(argv: list[str] | None = None) -> int:
    from lora_audio.logs import setup_logging

    parser = argparse.ArgumentParser(prog="cut-music", description=HELP + ".")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
