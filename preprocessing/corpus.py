"""Offline, deterministic music corpora: music21 scores -> MIDI -> audio with a GM soundfont.

A :class:`Recipe` is data: a name and a list of :class:`Selection` rows, each naming works of
music21's bundled corpus, a General MIDI program, a tempo and a caption. :func:`build_corpus`
renders a recipe into a folder keyed by the recipe and the render settings::

    <cache>/corpora/<name>-<key>/
        corpus.json      # recipe, settings, soundfont, totals, skipped works; "complete": true
        corpus.jsonl     # one row per piece: id, path, midi, source, program, seconds, caption,
                         #   sha256 (file), pcm_sha256 (decoded samples), midi_sha256, lufs
        audio/<id>.flac  # [2, T] 16-bit, loudness-normalised
        midi/<id>.mid    # the exact MIDI that was rendered

Rendering is deterministic (same settings -> same bytes), so the manifest's sha256 doubles as a
regression check: rebuilding a complete corpus only re-hashes its files, re-renders any file
that is missing or changed and reports a render that no longer matches the manifest.

Only public-domain tunes in encodings distributed with music21 are used; Palestrina and
Monteverdi (rights reserved) and the Essen folksongs (non-commercial) are refused.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

from lora_audio.audio import (
    loudness_lufs,
    normalize_peak,
    peak_db,
    resample,
    rms_db,
    write_audio,
)
from lora_audio.files import (
    atomic_path,
    sha256_bytes,
    sha256_file,
    stable_hash,
    write_json_atomic,
    write_text_atomic,
)
from preprocessing.soundfonts import (
    RENDERERS,
    RenderError,
    render_midi,
    renderer_version,
    resolve_soundfont,
)

log = logging.getLogger(__name__)

#: bump when the rendering pipeline changes in a way that changes the audio
PIPELINE_VERSION = 1
#: corpus paths (prefixes) whose rights forbid use here
EXCLUDED_WORKS = ("palestrina", "monteverdi", "essenFolksong")
#: seconds of silence after the last note so that releases and reverb ring out
TAIL_SECONDS = 1.5
#: renders quieter than this (RMS dBFS) are rejected as silent
SILENCE_DB = -60.0
#: the percussion channel of General MIDI (0-based)
DRUM_CHANNEL = 9
MANIFEST = "corpus.jsonl"
INFO = "corpus.json"

T = TypeVar("T")
R = TypeVar("R")


class CorpusError(Exception):
    """A recipe or a corpus folder is unusable; the message names it and the fix."""


# ----------------------------------------------------------------------------------------------
# Recipes (data)


@dataclass(frozen=True)
class Selection:
    """Some works of music21's corpus played on one General MIDI program.

    ``works``: ``"chorales"`` (Bach's chorales, sorted by corpus path) or a path or glob in
    music21's corpus (``"ryansMammoth/*.abc"``, ``"airdsAirs/book1.abc"``); an ABC file that
    holds several tunes yields each tune. ``program``: GM program 0-127 (0-based; 0 = piano).
    ``caption``: text for every piece; ``{title}`` and ``{instrument}`` are filled in.
    ``tempo``: quarter notes per minute, or ``None`` to keep the score's own marking.
    ``pieces``/``seconds``: stop once this many pieces / this much audio is selected.
    ``skip``: leave out the first pieces (to give two selections different works).
    """

    works: str
    program: int
    caption: str
    tempo: float | None = None
    pieces: int | None = None
    seconds: float | None = None
    skip: int = 0


@dataclass(frozen=True)
class Recipe:
    """A named corpus: selections in order; pieces outside ``[min_seconds, max_seconds]`` drop."""

    name: str
    description: str
    selections: tuple[Selection, ...]
    min_seconds: float = 5.0
    max_seconds: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Build and validate a :class:`Recipe` from JSON-like data (e.g. a user's recipe file)."""
    try:
        sels = tuple(Selection(**s) for s in d["selections"])
        recipe = Recipe(
            name=str(d["name"]),
            description=str(d.get("description", "")),
            selections=sels,
            min_seconds=float(d.get("min_seconds", 5.0)),
            max_seconds=float(d.get("max_seconds", 120.0)),
        )
    except (KeyError, TypeError) as e:
        raise CorpusError(f"recipe {d.get('name', '?')!r}: bad field ({e})") from e
    validate_recipe(recipe)
    return recipe


def validate_recipe(recipe: Recipe) -> None:
    """Raise :class:`CorpusError` for an unusable recipe (bad program, refused works, ...)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", recipe.name):
        raise CorpusError(f"recipe name {recipe.name!r}: use letters, digits, '-', '_', '.'")
    if not recipe.selections:
        raise CorpusError(f"recipe {recipe.name!r}: needs at least one selection")
    if not 0 < recipe.min_seconds < recipe.max_seconds:
        raise CorpusError(f"recipe {recipe.name!r}: need 0 < min_seconds < max_seconds")
    for s in recipe.selections:
        if not 0 <= s.program <= 127:
            raise CorpusError(f"recipe {recipe.name!r}: program {s.program} not in 0..127")
        if s.works.split("/")[0].lower() in {w.lower() for w in EXCLUDED_WORKS}:
            raise CorpusError(
                f"recipe {recipe.name!r}: {s.works!r} is refused (rights reserved or "
                f"non-commercial: {', '.join(EXCLUDED_WORKS)}); pick public-domain works"
            )
        if s.tempo is not None and not 10 <= s.tempo <= 400:
            raise CorpusError(f"recipe {recipe.name!r}: tempo {s.tempo} not in 10..400")


def _recipes(*recipes: Recipe) -> dict[str, Recipe]:
    for r in recipes:
        validate_recipe(r)
    return {r.name: r for r in recipes}


#: built-in recipes. GM programs: 0 piano, 19 church organ, 48 strings, 71 clarinet, 73 flute,
#: 107 koto, 110 fiddle. The base never hears a fiddle, a koto, a reel or a hornpipe.
RECIPES: dict[str, Recipe] = _recipes(
    Recipe(
        name="base",
        description="~45 min: Bach chorales on piano and organ, Scottish and Irish airs on "
        "flute, clarinet and strings",
        selections=(
            Selection("chorales", 0, "bach chorale, piano", tempo=84, seconds=600),
            Selection("chorales", 19, "bach chorale, church organ", tempo=72, seconds=600, skip=60),
            Selection("airdsAirs/book1.abc", 73, "scottish air, flute", seconds=480),
            Selection("airdsAirs/book2.abc", 71, "scottish air, clarinet", seconds=480),
            Selection("oneills1850/*.abc", 48, "irish air, string ensemble", seconds=480),
        ),
    ),
    Recipe(
        name="fiddle",
        description="~10 min: reels and hornpipes from Ryan's Mammoth Collection on GM fiddle",
        selections=(Selection("ryansMammoth/*.abc", 110, "fiddle tune, solo fiddle", seconds=600),),
    ),
    Recipe(
        name="koto",
        description="~10 min: airs from Aird's later books (unheard by the base) on koto",
        selections=(Selection("airdsAirs/book5.abc", 107, "folk air, koto", seconds=600),),
    ),
    Recipe(
        name="demo-mini",
        description="~1.5 min for tests and a quick demo: a chorale, an air and a reel",
        selections=(
            Selection("bach/bwv101.7.mxl", 19, "bach chorale, church organ", tempo=96),
            Selection("airdsAirs/book1.abc", 73, "scottish air, flute", pieces=1),
            Selection("ryansMammoth/7thRegimentReel.abc", 110, "fiddle tune, solo fiddle"),
        ),
    ),
)


def get_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a recipe JSON file (see :func:`recipe_from_dict`)."""
    if name_or_path in RECIPES:
        return RECIPES[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        try:
            return recipe_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
    raise CorpusError(
        f"{name_or_path}: no such recipe; choose one of {', '.join(RECIPES)} or give a .json file"
    )


# ----------------------------------------------------------------------------------------------
# Works of music21's corpus


@dataclass(frozen=True)
class WorkRef:
    """One piece in music21's corpus: a corpus path and, for ABC collections, a tune number."""

    path: str
    number: int | None = None

    @property
    def source(self) -> str:
        return self.path if self.number is None else f"{self.path}#{self.number}"

    @property
    def slug(self) -> str:
        stem = re.sub(r"\.(abc|xml|mxl|musicxml|krn|mid)$", "", self.path)
        base = re.sub(r"[^A-Za-z0-9.]+", "_", stem).strip("_")
        return base if self.number is None else f"{base}_{self.number:04d}"


def corpus_root() -> Path:
    """Folder of music21's bundled corpus."""
    from music21 import common

    return Path(common.getCorpusFilePath())


_X_LINE = re.compile(r"^X:\s*(\d+)", re.MULTILINE)


def list_works(works: str) -> list[WorkRef]:
    """Expand a selection's ``works`` into pieces, in a stable order."""
    if works == "chorales":
        from music21 import corpus

        names = corpus.chorales.Iterator(returnType="filename")
        return [WorkRef(str(n)) for n in sorted(set(names))]
    root = corpus_root()
    paths = sorted(root.glob(works)) if any(c in works for c in "*?[") else [root / works]
    refs: list[WorkRef] = []
    for p in paths:
        if not p.is_file():
            raise CorpusError(f"{works}: not found in music21's corpus ({root})")
        rel = p.relative_to(root).as_posix()
        numbers = []
        if p.suffix == ".abc":
            numbers = [
                int(n) for n in _X_LINE.findall(p.read_text(encoding="utf-8", errors="replace"))
            ]
        if len(numbers) > 1:
            refs.extend(WorkRef(rel, n) for n in dict.fromkeys(numbers))
        else:
            refs.append(WorkRef(rel))
    return refs


def parse_work(ref: WorkRef) -> Any:
    """Parse one piece with music21 (which keeps its own parse cache)."""
    from music21 import corpus

    if ref.number is None:
        return corpus.parse(ref.path)
    return corpus.parse(ref.path, number=ref.number)


# ----------------------------------------------------------------------------------------------
# Score -> MIDI


def score_to_midi(score: Any) -> bytes:
    """Standard MIDI File bytes of a music21 score; built from the notes if music21 fails."""
    from music21 import midi as m21midi

    try:
        expanded = score.expandRepeats()
    except Exception as e:
        log.debug("repeats not expanded (%s)", e)
        expanded = score
    try:
        return bytes(m21midi.translate.streamToMidiFile(expanded).writestr())
    except Exception as e:
        log.debug("music21 MIDI export failed (%s); building the MIDI from the notes", e)
        return notes_to_midi(expanded)


def notes_to_midi(score: Any, ticks_per_beat: int = 480) -> bytes:
    """Fallback MIDI: every note and chord of ``score`` on channel 0 at the score's first tempo."""
    import mido

    boundaries = score.metronomeMarkBoundaries()
    qpm = float(boundaries[0][2].getQuarterBPM()) if boundaries else 120.0
    events: list[tuple[int, int, mido.Message]] = []
    for n in score.flatten().notes:
        start = round(float(n.offset) * ticks_per_beat)
        end = max(start + 1, round(float(n.offset + n.quarterLength) * ticks_per_beat))
        velocity = int(n.volume.velocity or 90)
        for p in n.pitches:
            key = int(min(127, max(0, p.midi)))
            events.append((start, 1, mido.Message("note_on", note=key, velocity=velocity)))
            events.append((end, 0, mido.Message("note_off", note=key, velocity=0)))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(qpm), time=0)])
    track.extend(_to_delta(events))
    mf = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    mf.tracks.append(track)
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def _to_delta(events: list[tuple[int, int, Any]]) -> list[Any]:
    """(absolute tick, order, message) -> messages with delta times, stably sorted."""
    out, now = [], 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        out.append(msg.copy(time=tick - now))
        now = tick
    return out


@dataclass(frozen=True)
class MidiPiece:
    """MIDI ready to render, with its length (seconds, including the tail)."""

    midi: bytes
    seconds: float
    notes: int


def prepare_midi(
    midi_bytes: bytes, program: int, tempo: float | None = None, tail: float = TAIL_SECONDS
) -> MidiPiece:
    """Force one GM ``program`` on every channel, move drums off channel 10, set the tempo.

    Returns a type-0 MIDI whose end lies ``tail`` seconds after the last event. Raises
    :class:`CorpusError` for corrupt MIDI or MIDI without notes.
    """
    import mido

    try:
        mf = mido.MidiFile(file=io.BytesIO(midi_bytes))
        merged = mido.merge_tracks(mf.tracks)
    except Exception as e:
        raise CorpusError(f"corrupt MIDI ({e})") from e
    used = {m.channel for m in merged if not m.is_meta and hasattr(m, "channel")}
    spare = next((c for c in range(16) if c != DRUM_CHANNEL and c not in used), None)
    events: list[tuple[int, int, Any]] = []
    now, notes = 0, 0
    for msg in merged:
        now += msg.time
        if msg.is_meta and msg.type in ("end_of_track",):
            continue
        if msg.is_meta and msg.type == "set_tempo" and tempo is not None:
            continue
        if not msg.is_meta and msg.type == "program_change":
            continue
        if not msg.is_meta and hasattr(msg, "channel") and msg.channel == DRUM_CHANNEL:
            if spare is None:
                continue  # 16 channels in use: drop the drum part rather than play drums
            msg = msg.copy(channel=spare)
        if msg.type == "note_on" and msg.velocity > 0:
            notes += 1
        events.append((now, 2, msg))
    if notes == 0:
        raise CorpusError("MIDI has no notes")
    channels = sorted({m.channel for _, _, m in events if not m.is_meta and hasattr(m, "channel")})
    for ch in channels:
        events.append((0, 1, mido.Message("program_change", channel=ch, program=program)))
    if tempo is not None:
        events.append((0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo))))
    track = mido.MidiTrack(_to_delta(events))
    out = mido.MidiFile(type=0, ticks_per_beat=mf.ticks_per_beat)
    out.tracks.append(track)
    last_tempo = next(
        (m.tempo for m in reversed(track) if m.is_meta and m.type == "set_tempo"), 500000
    )
    tail_ticks = round(tail * 1e6 / last_tempo * mf.ticks_per_beat)
    track.append(mido.MetaMessage("end_of_track", time=tail_ticks))
    buf = io.BytesIO()
    out.save(file=buf)
    return MidiPiece(midi=buf.getvalue(), seconds=float(out.length), notes=notes)


# ----------------------------------------------------------------------------------------------
# MIDI -> audio


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides the recipe that changes the audio (all of it goes into the key)."""

    sample_rate: int = 44100
    format: str = "flac"
    renderer: str = "rustysynth"
    soundfont: str = "timgm6mb"
    target_lufs: float = -20.0
    peak_db: float = -1.0


def render_piece(midi: bytes, settings: RenderSettings) -> tuple[np.ndarray, float]:
    """Render MIDI to ``[2, T]`` float32 at ``settings.sample_rate``, loudness-normalised.

    Returns ``(audio, integrated loudness in LUFS after normalisation)``.

    Raises :class:`CorpusError` for a corrupt MIDI or a silent render.
    """
    font = resolve_soundfont(settings.soundfont)
    try:
        x, sr = render_midi(midi, font, settings.renderer)
    except RenderError as e:
        raise CorpusError(str(e)) from e
    if x.shape[1] == 0 or rms_db(x) < SILENCE_DB:
        raise CorpusError(f"silent render (RMS {rms_db(x):.1f} dBFS)")
    if sr != settings.sample_rate:
        x = resample(x, sr, settings.sample_rate)
    # what lora_audio.audio.normalize_loudness does, keeping the measurement for the manifest
    lufs = loudness_lufs(x, settings.sample_rate)
    if np.isfinite(lufs):
        x = x * np.float32(10.0 ** ((settings.target_lufs - lufs) / 20.0))
        lufs = settings.target_lufs
    if peak_db(x) > settings.peak_db:
        over = peak_db(x) - settings.peak_db
        x = normalize_peak(x, settings.peak_db)
        lufs -= over
    return x.astype(np.float32), float(lufs)


def render_score(
    score: Any, program: int, settings: RenderSettings, tempo: float | None = None
) -> np.ndarray:
    """Render a music21 score (e.g. one built by hand) on ``program``: ``[2, T]`` float32."""
    piece = prepare_midi(score_to_midi(score), program, tempo)
    return render_piece(piece.midi, settings)[0]


def pcm_sha256(path: str | Path) -> str:
    """sha256 of a file's decoded 16-bit samples (independent of the FLAC encoder's version)."""
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return sha256_bytes(np.ascontiguousarray(data).tobytes())


# ----------------------------------------------------------------------------------------------
# Building a corpus


@dataclass(frozen=True)
class Planned:
    """A piece chosen by a recipe, with its MIDI, before rendering."""

    id: str
    ref: WorkRef
    title: str
    selection: Selection
    piece: MidiPiece


@dataclass
class BuildResult:
    """What :func:`build_corpus` did."""

    dir: Path
    pieces: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    rendered: int = 0
    reused: int = 0
    mismatches: list[str] = field(default_factory=list)
    up_to_date: bool = False

    @property
    def seconds(self) -> float:
        return float(sum(p["seconds"] for p in self.pieces))


def cache_root() -> Path:
    """``$LORA_AUDIO_CACHE``, else ``$XDG_CACHE_HOME/lora-audio``, else ``~/.cache/lora-audio``."""
    if os.environ.get("LORA_AUDIO_CACHE"):
        return Path(os.environ["LORA_AUDIO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lora-audio"


def corpus_key(
    recipe: Recipe,
    settings: RenderSettings,
    max_pieces: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Everything that determines a corpus's files; its hash names the cache folder."""
    import importlib.metadata

    font = resolve_soundfont(settings.soundfont)
    return {
        "pipeline": PIPELINE_VERSION,
        "recipe": recipe.to_dict(),
        "settings": asdict(settings),
        "max_pieces": max_pieces,
        "max_seconds": max_seconds,
        "renderer": renderer_version(settings.renderer),
        "soundfont_sha256": font.sha256,
        "music21": importlib.metadata.version("music21"),
    }


def default_corpus_dir(recipe: Recipe, key: dict[str, Any]) -> Path:
    return cache_root() / "corpora" / f"{recipe.name}-{stable_hash(key, 12)}"


def _plan_one(args: tuple[WorkRef, Selection]) -> tuple[WorkRef, MidiPiece | str, str]:
    """Worker: parse a work and make its MIDI. Returns (ref, piece or skip reason, title)."""
    ref, sel = args
    try:
        score = parse_work(ref)
        title = str(getattr(score.metadata, "bestTitle", None) or ref.source)
        return ref, prepare_midi(score_to_midi(score), sel.program, sel.tempo), title
    except Exception as e:  # one bad work never stops the batch
        return ref, f"{type(e).__name__}: {e}".splitlines()[0][:200], ref.source


def _parallel(
    fn: Callable[[T], R], items: Sequence[T], pool: concurrent.futures.Executor | None
) -> Iterator[R]:
    """``map`` in order, in ``pool`` when given."""
    if pool is None:
        yield from map(fn, items)
    else:
        yield from pool.map(fn, items)


def plan_recipe(
    recipe: Recipe,
    max_pieces: int | None = None,
    max_seconds: float | None = None,
    pool: concurrent.futures.Executor | None = None,
    chunk: int = 8,
) -> tuple[list[Planned], list[dict[str, str]]]:
    """Choose the pieces of ``recipe`` and make their MIDI (no audio yet).

    ``max_pieces``/``max_seconds`` further cap every selection (to shrink any recipe).
    Returns ``(planned pieces, skipped [{source, reason}])``.
    """
    planned: list[Planned] = []
    skipped: list[dict[str, str]] = []
    for sel in recipe.selections:
        caps = [c for c in (sel.pieces, max_pieces) if c is not None]
        limit_n = min(caps) if caps else None
        secs = [c for c in (sel.seconds, max_seconds) if c is not None]
        limit_s = min(secs) if secs else None
        refs = list_works(sel.works)[sel.skip :]
        n, total = 0, 0.0

        start = 0
        while start < len(refs) and not _full(n, total, limit_n, limit_s):
            size = chunk if limit_n is None else max(1, min(chunk, limit_n - n))
            batch = [(r, sel) for r in refs[start : start + size]]
            start += size
            for ref, got, title in _parallel(_plan_one, batch, pool):
                if _full(n, total, limit_n, limit_s):
                    break
                if isinstance(got, str):
                    skipped.append({"source": ref.source, "reason": got})
                    continue
                if not recipe.min_seconds <= got.seconds <= recipe.max_seconds:
                    reason = f"{got.seconds:.1f} s outside {recipe.min_seconds:g}..{recipe.max_seconds:g} s"
                    skipped.append({"source": ref.source, "reason": reason})
                    continue
                pid = f"{len(planned):04d}-{ref.slug}"
                planned.append(Planned(pid, ref, title, sel, got))
                n, total = n + 1, total + got.seconds
        if n == 0:
            log.warning("recipe %s: selection %r gave no piece", recipe.name, sel.works)
    return planned, skipped


def _full(n: int, total: float, limit_n: int | None, limit_s: float | None) -> bool:
    """Whether a selection has its pieces (``limit_n``) or its seconds (``limit_s``)."""
    return (limit_n is not None and n >= limit_n) or (limit_s is not None and total >= limit_s)


def _render_one(
    args: tuple[Planned, RenderSettings, Path],
) -> tuple[str, dict[str, Any] | str]:
    """Worker: render one planned piece into ``out_dir``; returns (id, manifest row or reason)."""
    p, settings, out_dir = args
    try:
        x, lufs = render_piece(p.piece.midi, settings)
    except Exception as e:
        return p.id, f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return p.id, _write_piece(p, x, lufs, settings, out_dir)


def _write_piece(
    p: Planned, x: np.ndarray, lufs: float, settings: RenderSettings, out_dir: Path
) -> dict[str, Any]:
    import pretty_midi

    audio = out_dir / "audio" / f"{p.id}.{settings.format}"
    midi = out_dir / "midi" / f"{p.id}.mid"
    write_audio(audio, x, settings.sample_rate, subtype="PCM_16")
    with atomic_path(midi) as tmp:
        tmp.write_bytes(p.piece.midi)
    instrument = pretty_midi.program_to_instrument_name(p.selection.program)
    return {
        "id": p.id,
        "path": audio.relative_to(out_dir).as_posix(),
        "midi": midi.relative_to(out_dir).as_posix(),
        "source": p.ref.source,
        "title": p.title,
        "program": p.selection.program,
        "instrument": instrument,
        "tempo": p.selection.tempo,
        "seconds": round(x.shape[1] / settings.sample_rate, 6),
        "sample_rate": settings.sample_rate,
        "channels": int(x.shape[0]),
        "caption": p.selection.caption.format(title=p.title, instrument=instrument.lower()),
        "lufs": round(lufs, 2) if np.isfinite(lufs) else None,
        "sha256": sha256_file(audio),
        "pcm_sha256": pcm_sha256(audio),
        "midi_sha256": sha256_bytes(p.piece.midi),
    }


def read_manifest(corpus_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``corpus.jsonl`` (raises :class:`CorpusError` naming the file when unreadable)."""
    path = Path(corpus_dir) / MANIFEST
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise CorpusError(f"{path}: unreadable corpus manifest ({e}); rebuild the corpus") from e


def check_corpus(corpus_dir: str | Path) -> list[str]:
    """Check every file of a corpus against its manifest: a list of problems (empty = fine)."""
    corpus_dir = Path(corpus_dir)
    problems = []
    for row in read_manifest(corpus_dir):
        for key, sha_key in (("path", "sha256"), ("midi", "midi_sha256")):
            f = corpus_dir / row[key]
            if not f.is_file():
                problems.append(f"{f}: missing")
            elif sha256_file(f) != row[sha_key]:
                problems.append(f"{f}: sha256 differs from the manifest")
    return problems


def _read_info(corpus_dir: Path) -> dict[str, Any] | None:
    path = corpus_dir / INFO
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path}: unreadable ({e.msg}); delete the folder to rebuild") from e


def build_corpus(
    recipe: Recipe | str,
    out_dir: str | Path | None = None,
    settings: RenderSettings | None = None,
    *,
    max_pieces: int | None = None,
    max_seconds: float | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> BuildResult:
    """Render ``recipe`` into ``out_dir`` (default: the cache folder keyed by recipe + settings).

    A complete corpus whose files match its manifest is left alone (no-op). Missing or changed
    files are re-rendered, and a re-render whose sha256 differs from the manifest is reported
    in ``BuildResult.mismatches`` (rendering must be deterministic). A folder holding a corpus
    built with another recipe or other settings raises :class:`CorpusError` (never overwritten).
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    validate_recipe(recipe)
    settings = settings or RenderSettings()
    if settings.renderer not in RENDERERS:
        raise CorpusError(f"renderer {settings.renderer!r}: choose one of {', '.join(RENDERERS)}")
    if settings.format not in ("flac", "wav"):
        raise CorpusError(f"format {settings.format!r}: choose flac or wav")
    try:
        key = corpus_key(recipe, settings, max_pieces, max_seconds)
    except RenderError as e:
        raise CorpusError(str(e)) from e
    out = Path(out_dir) if out_dir is not None else default_corpus_dir(recipe, key)

    info = _read_info(out)
    old_rows: dict[str, dict[str, Any]] = {}
    if info is not None:
        if info.get("key_hash") != stable_hash(key):
            raise CorpusError(
                f"{out}: holds a corpus built from another recipe or other settings; "
                "choose another folder or delete this one"
            )
        if info.get("complete") and (out / MANIFEST).is_file():
            old_rows = {r["id"]: r for r in read_manifest(out)}
            problems = check_corpus(out)
            if not problems:
                log.info("corpus %s is up to date: %s", recipe.name, out)
                return BuildResult(out, list(old_rows.values()), info.get("skipped", []),
                                   reused=len(old_rows), up_to_date=True)  # fmt: skip
            for p in problems:
                log.warning("%s; re-rendering", p)
    elif out.exists() and any(out.iterdir()):
        raise CorpusError(f"{out}: folder is not empty and holds no corpus; choose another")

    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / INFO, {"key_hash": stable_hash(key), "key": key, "complete": False})
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        planned, skipped = plan_recipe(recipe, max_pieces, max_seconds, pool)
        result = _render_all(planned, settings, out, old_rows, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result.skipped = skipped + result.skipped
    for s in result.skipped:
        log.info("skipped %s: %s", s["source"], s["reason"])
    for m in result.mismatches:
        log.error("%s", m)
    write_text_atomic(out / MANIFEST, "".join(json.dumps(r) + "\n" for r in result.pieces))
    write_json_atomic(
        out / INFO,
        {
            "key_hash": stable_hash(key),
            "key": key,
            "name": recipe.name,
            "description": recipe.description,
            "pieces": len(result.pieces),
            "seconds": round(result.seconds, 3),
            "soundfont": asdict(resolve_soundfont(settings.soundfont)) | {"path": None},
            "skipped": result.skipped,
            "complete": True,
        },
    )
    return result


def _render_all(
    planned: list[Planned],
    settings: RenderSettings,
    out: Path,
    old_rows: dict[str, dict[str, Any]],
    pool: concurrent.futures.Executor | None,
    progress: bool,
) -> BuildResult:
    from tqdm import tqdm

    rows: dict[str, dict[str, Any]] = {}
    todo: list[Planned] = []
    for p in planned:
        old = old_rows.get(p.id)
        if (
            old is not None
            and _row_intact(out, old)
            and old["midi_sha256"] == sha256_bytes(p.piece.midi)
        ):
            rows[p.id] = old
        else:
            todo.append(p)
    result = BuildResult(out, [], reused=len(rows))
    bar = tqdm(total=len(todo), desc=f"render {out.name}", unit="piece", disable=not progress)
    by_id = {p.id: p for p in todo}
    for pid, got in _parallel(_render_one, [(p, settings, out) for p in todo], pool):
        bar.update(1)
        if isinstance(got, str):
            result.skipped.append({"source": by_id[pid].ref.source, "reason": got})
            continue
        result.rendered += 1
        old = old_rows.get(pid)
        if old is not None and old["sha256"] != got["sha256"]:
            result.mismatches.append(
                f"{out / got['path']}: re-render differs from the manifest "
                "(rendering is not deterministic here, or the renderer changed)"
            )
        rows[pid] = got
    bar.close()
    result.pieces = [rows[p.id] for p in planned if p.id in rows]
    return result


def _row_intact(out: Path, row: dict[str, Any]) -> bool:
    f, m = out / row["path"], out / row["midi"]
    return (
        f.is_file()
        and m.is_file()
        and sha256_file(f) == row["sha256"]
        and sha256_file(m) == row["midi_sha256"]
    )
