"""Build a blind, randomised, self-contained listening test from generated audio sets.

Input: one or more RUN_DIRs. A RUN_DIR is either

* an ``infer --compare`` output folder: every sub-folder holding audio is one *system*
  (``OUT/base/``, ``OUT/<adapter>/``), with the same file names across systems; or
* a plain folder of audio files: the folder is one system, named after the folder
  (or ``NAME=DIR`` to choose the name).

Files are grouped across systems by file stem (``p000_s0.wav`` in every system is one
*stimulus*). A stimulus missing from some system is reported with one line and dropped, so
every system is rated on the same stimuli; ``keep_partial=True`` keeps it with the systems
that have it instead.

Output folder::

    test/index.html  listen.js  listen.css   static page (package data, copied verbatim)
    test/trials.js                            window.LISTEN_TEST = {...}: trial list, opaque ids
    test/audio/<opaque>.wav                   every clip, re-encoded (metadata stripped)
    test/key.json                             opaque id -> system, stimulus, source: NOT loaded

The page loads only the first five; ``key.json`` is what ``listen score`` needs. Clip names are
random hex drawn from ``seed`` and the audio contents, so a build is reproducible but the names
cannot be predicted from the seed; the trial order is shuffled with ``seed`` and shuffled again
in the page per rater id.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lora_audio import audio
from lora_audio.files import sha256_file, stable_hash, write_json_atomic, write_text_atomic
from lora_audio.listen import KEY_FORMAT, QUESTIONS, TEST_FORMAT, ListenError

log = logging.getLogger(__name__)

#: Static page files shipped under ``lora_audio/listen/static/``.
STATIC_FILES = ("index.html", "listen.js", "listen.css")


@dataclass(frozen=True)
class Stimulus:
    """One prompt+seed rendered by several systems: ``files[system]`` is its audio file."""

    name: str
    files: dict[str, Path]


@dataclass(frozen=True)
class Clip:
    """One audio file in the test under its opaque id."""

    id: str
    system: str
    stimulus: str
    source: Path


@dataclass(frozen=True)
class Trial:
    """One screen of the test: ``rate`` asks the 1-5 questions about ``clips[0]``;
    ``ab`` asks which of ``clips = (a, b)`` is preferred."""

    id: str
    kind: str
    clips: tuple[str, ...]


@dataclass
class TestPlan:
    """Everything decided before any file is written (pure function of inputs and seed)."""

    test_id: str
    seed: int
    base: str | None
    systems: list[str]
    stimuli: list[Stimulus]
    clips: list[Clip]
    refs: list[tuple[str, Path]]
    trials: list[Trial]
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- discovery


def parse_run_arg(arg: str) -> tuple[str | None, Path]:
    """``NAME=DIR`` -> (NAME, DIR); a plain path -> (None, path)."""
    if "=" in arg and not Path(arg).exists():
        name, _, path = arg.partition("=")
        if name and "/" not in name and os.sep not in name:
            return name, Path(path)
    return None, Path(arg)


def _audio_in(folder: Path) -> list[Path]:
    """Audio files directly inside ``folder`` (not recursive, hidden files skipped), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in audio.AUDIO_EXTENSIONS
    )


def find_systems(run_args: list[str]) -> dict[str, dict[str, Path]]:
    """Map system name -> {file stem -> audio file} over all RUN_DIRs.

    Raises :class:`ListenError` for a missing or empty RUN_DIR, a system name given twice,
    or two files with the same stem in one system.
    """
    systems: dict[str, dict[str, Path]] = {}
    origin: dict[str, Path] = {}
    if not run_args:
        raise ListenError("no RUN_DIRS given; pass the `infer --compare` output folder")
    for arg in run_args:
        name, root = parse_run_arg(arg)
        if not root.exists():
            raise ListenError(f"{root}: no such folder; check the path")
        if not root.is_dir():
            raise ListenError(f"{root}: is a file; give the folder that holds the audio")
        subdirs = sorted(
            d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _audio_in(d)
        )
        loose = _audio_in(root)
        if subdirs and name is None:
            if loose:
                log.warning(
                    "%s: %d audio files beside the system folders are ignored", root, len(loose)
                )
            found = [(d.name, d) for d in subdirs]
        elif loose:
            found = [(name or root.resolve().name, root)]
        elif subdirs:
            raise ListenError(
                f"{root}: holds one folder per system, so {name}= cannot name it; "
                "pass the folder without NAME="
            )
        else:
            exts = ", ".join(audio.AUDIO_EXTENSIONS)
            raise ListenError(
                f"{root}: no audio files ({exts}) in it or its sub-folders; "
                "point at the `infer --compare` output or a folder of audio files"
            )
        for system, folder in found:
            if system in systems:
                raise ListenError(
                    f"{folder}: system name {system!r} already used by {origin[system]}; "
                    f"rename one with NAME=DIR"
                )
            files: dict[str, Path] = {}
            for f in _audio_in(folder):
                if f.stem in files:
                    raise ListenError(
                        f"{f}: same name as {files[f.stem].name} in system {system!r}; "
                        "keep one format per clip"
                    )
                files[f.stem] = f
            systems[system] = files
            origin[system] = folder
    return systems


def match_stimuli(
    systems: dict[str, dict[str, Path]], keep_partial: bool = False
) -> tuple[list[Stimulus], list[str]]:
    """Group files by stem across systems. Returns ``(stimuli, problems)``.

    A stem missing from some systems gives one problem line; the stimulus is dropped unless
    ``keep_partial`` (then it is kept with the systems that have it, if at least one).
    """
    names = sorted({stem for files in systems.values() for stem in files})
    stimuli: list[Stimulus] = []
    problems: list[str] = []
    for stem in names:
        have = {s: files[stem] for s, files in sorted(systems.items()) if stem in files}
        missing = sorted(set(systems) - set(have))
        if missing:
            action = "kept for the others" if keep_partial else "dropped"
            example = next(iter(have.values()))
            problems.append(
                f"{example}: missing in system(s) {', '.join(missing)}; stimulus {action}"
            )
            if not keep_partial:
                continue
        stimuli.append(Stimulus(stem, have))
    return stimuli, problems


def drop_unreadable(systems: dict[str, dict[str, Path]]) -> list[str]:
    """Remove files whose header cannot be read from ``systems`` (in place); one line each.

    The stimulus then counts as missing in that system (see :func:`match_stimuli`).
    """
    problems: list[str] = []
    for files in systems.values():
        for stem, path in list(files.items()):
            try:
                audio.probe(path)
            except audio.AudioError as e:
                problems.append(str(e))
                del files[stem]
    return problems


def find_references(ref: str | Path | None) -> list[Path]:
    """Reference clip(s) for the style question: a file, a folder of audio files, or none."""
    if ref is None:
        return []
    path = Path(ref)
    if not path.exists():
        raise ListenError(f"{path}: reference not found; give an audio file or a folder")
    files = audio.find_audio_files([path])
    if not files:
        raise ListenError(f"{path}: no audio files in the reference folder")
    return files


def read_sidecar(audio_file: Path) -> dict[str, Any]:
    """The JSON sidecar next to an audio file (``p000_s0.json``), or ``{}`` if absent/bad."""
    side = audio_file.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable sidecar (%s); ignored", side, e)
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- planning


def _opaque_ids(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct 16-hex-digit ids drawn from ``rng``."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        token = f"{rng.getrandbits(64):016x}"
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


def ab_system_pairs(systems: list[str], base: str | None) -> list[tuple[str, str]]:
    """System pairs compared A/B: every other system against ``base`` if it is one of
    ``systems``, otherwise every unordered pair (sorted)."""
    if base in systems:
        return [(s, base) for s in systems if s != base]
    return [(x, y) for i, x in enumerate(systems) for y in systems[i + 1 :]]


def plan_test(
    stimuli: list[Stimulus],
    refs: list[Path],
    seed: int = 0,
    ab: bool = False,
    base: str | None = "base",
    salt: str = "",
) -> TestPlan:
    """Assign opaque ids and a shuffled trial order; deterministic for ``seed``.

    Rating trials come first (one per clip, shuffled), then A/B trials if ``ab`` (one per
    stimulus and system pair from :func:`ab_system_pairs`, shuffled, sides drawn at random).
    ``salt`` (a hash of the audio contents) keys the opaque ids and the test id.
    """
    if not stimuli:
        raise ListenError("no stimuli left to test; see the lines above for what was dropped")
    systems = sorted({s for st in stimuli for s in st.files})
    rng = random.Random(seed)
    pairs = [(st, s) for st in stimuli for s in sorted(st.files)]
    # Ids come from their own generator keyed by seed AND salt (the audio contents), so
    # knowing the seed alone does not reveal which id is which clip.
    ids = _opaque_ids(random.Random(stable_hash([seed, salt])), len(pairs) + len(refs))
    clips = [
        Clip(i, s, st.name, st.files[s])
        for i, (st, s) in zip(ids[: len(pairs)], pairs, strict=True)
    ]
    ref_ids = list(zip(ids[len(pairs) :], refs, strict=True))
    by_key = {(c.stimulus, c.system): c.id for c in clips}

    rate_order = list(clips)
    rng.shuffle(rate_order)
    trials = [Trial(f"r{n + 1:03d}", "rate", (c.id,)) for n, c in enumerate(rate_order)]
    if ab:
        duels: list[tuple[str, str]] = []
        for st in stimuli:
            for x, y in ab_system_pairs(sorted(st.files), base):
                a, b = by_key[(st.name, x)], by_key[(st.name, y)]
                duels.append((a, b) if rng.random() < 0.5 else (b, a))
        rng.shuffle(duels)
        trials += [Trial(f"ab{n + 1:03d}", "ab", d) for n, d in enumerate(duels)]
    test_id = stable_hash(
        {"seed": seed, "clips": [(c.id, c.system, c.stimulus) for c in clips], "salt": salt}
    )
    return TestPlan(
        test_id=test_id,
        seed=seed,
        base=base if base in systems else None,
        systems=systems,
        stimuli=stimuli,
        clips=clips,
        refs=ref_ids,
        trials=trials,
    )


def page_data(plan: TestPlan, title: str) -> dict[str, Any]:
    """What the page sees (``window.LISTEN_TEST``): opaque ids and audio paths only."""
    questions = ["musicality", "style"] if plan.refs else ["musicality"]
    trials: list[dict[str, Any]] = []
    for t in plan.trials:
        if t.kind == "rate":
            trials.append({"id": t.id, "kind": "rate", "clip": t.clips[0]})
        else:
            trials.append({"id": t.id, "kind": "ab", "a": t.clips[0], "b": t.clips[1]})
    return {
        "format": TEST_FORMAT,
        "version": 1,
        "test_id": plan.test_id,
        "title": title,
        "questions": [
            {"id": q, "text": QUESTIONS[q][0], "labels": list(QUESTIONS[q][1])} for q in questions
        ],
        "ab_question": (
            "Which clip matches the style of the reference better?"
            if plan.refs
            else "Which clip do you prefer?"
        ),
        "references": [f"audio/{i}.wav" for i, _ in plan.refs],
        "trials": trials,
    }


def key_data(plan: TestPlan, created: str) -> dict[str, Any]:
    """The key file: opaque id -> system, stimulus, source file (and its sidecar)."""
    return {
        "format": KEY_FORMAT,
        "version": 1,
        "test_id": plan.test_id,
        "created": created,
        "seed": plan.seed,
        "base": plan.base,
        "systems": plan.systems,
        "stimuli": {st.name: sorted(st.files) for st in plan.stimuli},
        "clips": {
            c.id: {
                "system": c.system,
                "stimulus": c.stimulus,
                "source": str(c.source),
                "meta": read_sidecar(c.source),
            }
            for c in plan.clips
        },
        "references": {i: str(p) for i, p in plan.refs},
        "trials": {t.id: {"kind": t.kind, "clips": list(t.clips)} for t in plan.trials},
        "problems": plan.problems,
    }


# --------------------------------------------------------------------------- writing


def convert_clip(src: Path, dst: Path, loudness_lufs: float | None) -> None:
    """Re-encode ``src`` as 16-bit WAV at ``dst`` (drops all metadata), optionally loudness
    matched to ``loudness_lufs`` (peak kept below -1 dBFS)."""
    x, sr = audio.load_audio(src)
    if loudness_lufs is not None:
        x = audio.normalize_loudness(x, sr, loudness_lufs)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 10 ** (-1 / 20):
        x = audio.normalize_peak(x, -1.0)
    audio.write_audio(dst, x, sr, subtype="PCM_16")


def static_dir() -> Path:
    """Folder of the shipped page files."""
    return Path(str(resources.files("lora_audio.listen") / "static"))


def write_page(folder: Path, plan: TestPlan, title: str, loudness_lufs: float | None) -> None:
    """Write the page, the audio and the key into ``folder`` (which must exist)."""
    (folder / "audio").mkdir(exist_ok=True)
    for name in STATIC_FILES:
        shutil.copyfile(static_dir() / name, folder / name)
    jobs = [(c.source, c.id) for c in plan.clips] + [(p, i) for i, p in plan.refs]
    for src, opaque in jobs:
        try:
            convert_clip(src, folder / "audio" / f"{opaque}.wav", loudness_lufs)
        except audio.AudioError as e:
            raise ListenError(str(e)) from e
    data = json.dumps(page_data(plan, title), indent=1)
    write_text_atomic(folder / "trials.js", f"window.LISTEN_TEST = {data};\n")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(folder / "key.json", key_data(plan, created))


@dataclass
class BuildResult:
    out: Path
    plan: TestPlan


def build_test(
    run_dirs: list[str],
    out: str | Path,
    ref: str | Path | None = None,
    seed: int = 0,
    ab: bool = False,
    base: str | None = "base",
    title: str = "Listening test",
    loudness_lufs: float | None = -23.0,
    keep_partial: bool = False,
    force: bool = False,
) -> BuildResult:
    """Discover, plan and write a listening test into ``out``; see the module docstring.

    ``out`` must not exist or be empty unless ``force``; the new test is written beside it
    and swapped in only when complete, so a failed build never loses an existing test.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ListenError(f"{out}: exists and is not empty; choose a new folder or pass --force")
    systems = find_systems(run_dirs)
    unreadable = drop_unreadable(systems)
    stimuli, problems = match_stimuli(systems, keep_partial)
    problems = unreadable + problems
    for line in problems:
        log.warning("%s", line)
    refs = find_references(ref)
    salt = stable_hash(
        [sha256_file(f) for st in stimuli for f in st.files.values()] + [str(p) for p in refs]
    )
    plan = plan_test(stimuli, refs, seed=seed, ab=ab, base=base, salt=salt)
    plan.problems = problems
    if len(plan.systems) < 2:
        log.warning("only one system (%s): MOS only, nothing to compare", plan.systems[0])
    if ab and not any(t.kind == "ab" for t in plan.trials):
        log.warning("--ab: no stimulus is shared by two systems; no A/B trials")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_page(tmp, plan, title, loudness_lufs)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, plan)
