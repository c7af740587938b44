"""General MIDI soundfonts from packages, and MIDI -> audio renderers.

Two renderers, both deterministic (same MIDI + soundfont -> same samples):

- ``rustysynth`` (default): the ``midirenderer`` wheel from PyPI (Rust, no system library), so
  a plain ``pip install`` on a laptop and CI produce the same audio. It renders at 48 kHz.
- ``fluidsynth``: the FluidSynth command-line program from the Debian package ``fluidsynth``.

Soundfonts are never downloaded: ``timgm6mb`` is the TimGM6mb General MIDI soundfont that the
``pretty_midi`` wheel ships; ``fluidr3`` is FluidR3_GM from the Debian package
``fluid-soundfont-gm``; any other value is a path to an ``.sf2`` file.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from lora_audio.files import sha256_file

RENDERERS = ("rustysynth", "fluidsynth")
#: sample rate the ``rustysynth`` renderer (midirenderer) always produces
RUSTYSYNTH_RATE = 48000
#: Debian paths of the apt soundfonts
APT_SOUNDFONTS = {
    "fluidr3": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
    "timgm6mb-apt": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont"),
}


class RenderError(Exception):
    """A MIDI file could not be rendered; the message says why and what to do."""


@dataclass(frozen=True)
class SoundFont:
    """A soundfont file and where it comes from (for the manifest and the NOTICE)."""

    name: str
    path: Path
    sha256: str
    package: str


def _pip_timgm6mb() -> Path:
    try:
        import pretty_midi
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise RenderError(
            "soundfont 'timgm6mb' comes with the pretty_midi package: pip install pretty_midi"
        ) from e
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise RenderError(
            f"{path}: missing from pretty_midi; reinstall it (pip install pretty_midi)"
        )
    return path


@lru_cache(maxsize=8)
def _soundfont_cached(spec: str) -> SoundFont:
    if spec == "timgm6mb":
        path, package = _pip_timgm6mb(), "pip:pretty_midi"
    elif spec in APT_SOUNDFONTS:
        where, deb = APT_SOUNDFONTS[spec]
        path, package = Path(where), f"deb:{deb}"
        if not path.is_file():
            raise RenderError(f"{path}: soundfont '{spec}' not installed; apt-get install {deb}")
    else:
        path, package = Path(spec).expanduser(), "file"
        if not path.is_file():
            raise RenderError(
                f"{path}: no such soundfont; give an .sf2 path or one of "
                f"timgm6mb, {', '.join(APT_SOUNDFONTS)}"
            )
    return SoundFont(name=spec, path=path.resolve(), sha256=sha256_file(path), package=package)


def resolve_soundfont(spec: str | None = None) -> SoundFont:
    """Find a soundfont: ``None``/``"timgm6mb"`` (pip), ``"fluidr3"`` (apt) or a path."""
    return _soundfont_cached(spec or "timgm6mb")


def renderer_version(renderer: str) -> str:
    """Version string of ``renderer`` (part of a corpus's cache key)."""
    if renderer == "rustysynth":
        try:
            return "midirenderer-" + importlib.metadata.version("midirenderer")
        except importlib.metadata.PackageNotFoundError as e:
            raise RenderError(
                "renderer 'rustysynth' needs the midirenderer package: pip install midirenderer"
            ) from e
    if renderer == "fluidsynth":
        exe = _fluidsynth_exe()
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        first = (out.stdout or "").splitlines()
        return first[0].strip() if first else "fluidsynth"
    raise RenderError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")


def _fluidsynth_exe() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError("renderer 'fluidsynth' needs the program: apt-get install fluidsynth")
    return exe


@lru_cache(maxsize=2)
def _soundfont_bytes(path: Path) -> bytes:
    return path.read_bytes()


def render_midi(
    midi_bytes: bytes, soundfont: SoundFont, renderer: str = "rustysynth"
) -> tuple[np.ndarray, int]:
    """Render a Standard MIDI File to audio: returns ``(x [2, T] float32, sample_rate)``.

    Raises :class:`RenderError` when the renderer rejects the MIDI (a corrupt file).
    """
    if renderer == "rustysynth":
        import midirenderer

        try:
            wav = midirenderer.render_wave_from(_soundfont_bytes(soundfont.path), midi_bytes)
        except BaseException as e:  # the Rust side raises ValueError/RuntimeError or panics
            if isinstance(e, KeyboardInterrupt):
                raise
            raise RenderError(f"renderer rejected the MIDI: {e}") from e
        x, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
        return np.ascontiguousarray(x.T), int(sr)
    if renderer == "fluidsynth":
        return _render_fluidsynth(midi_bytes, soundfont)
    raise RenderError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")


def _render_fluidsynth(midi_bytes: bytes, soundfont: SoundFont) -> tuple[np.ndarray, int]:
    exe = _fluidsynth_exe()
    with tempfile.TemporaryDirectory(prefix="lora-audio-fs-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi_bytes)
        cmd = [exe, "-n", "-i", "-q", "-r", str(RUSTYSYNTH_RATE), "-g", "0.5", "-T", "wav"]
        cmd += ["-O", "float", "-F", str(wav), str(soundfont.path), str(mid)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0 or not wav.is_file():
            msg = (out.stderr or out.stdout).strip().splitlines()
            raise RenderError(f"fluidsynth failed: {msg[-1] if msg else out.returncode}")
        x, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    return np.ascontiguousarray(x.T), int(sr)
