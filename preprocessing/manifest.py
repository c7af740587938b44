"""The segment manifest: one JSON object per line, one line per audio segment.

``cut-music`` writes ``OUT_DIR/manifest.jsonl``; the latent cache, training and the demo read
it with :func:`read_manifest`. A row looks like::

    {"id": "reel-3f2a9c1d-00004", "path": "audio/reel-3f2a9c1d/reel-3f2a9c1d-00004.wav",
     "source": "/data/reel.flac", "source_sha256": "3f2a9c1d...", "start": 40.0, "end": 50.0,
     "sample_rate": 44100, "channels": 2, "frames": 441000, "rms_db": -18.2, "lufs": -23.0,
     "active": 1.0, "caption": "reel, fiddle", "split": "train"}

``path`` is relative to the manifest's folder (so the folder can be moved); ``start``/``end``
are seconds in the source recording (``end - start`` is shorter than ``frames / sample_rate``
for a zero-padded tail); ``rms_db``/``lufs`` describe the written segment and are ``null``
for digital silence or clips too short to measure; ``active`` is the non-silent share.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from lora_audio.files import write_text_atomic

SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest line that cannot be read. ``str(err)`` names the file and line."""


@dataclass(frozen=True)
class Segment:
    """One row of ``manifest.jsonl``: an audio segment cut from a source recording."""

    id: str
    path: str
    source: str
    source_sha256: str
    start: float
    end: float
    sample_rate: int
    channels: int
    frames: int
    rms_db: float | None
    lufs: float | None
    active: float
    caption: str = ""
    split: str = "train"

    @property
    def duration(self) -> float:
        """Seconds of source audio in the segment (without any zero padding)."""
        return self.end - self.start

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (non-finite levels become ``None``)."""
        d = asdict(self)
        for key in ("rms_db", "lufs"):
            if d[key] is not None and not math.isfinite(d[key]):
                d[key] = None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Segment:
        """Build from a dict, checking that required keys are present and typed sensibly.

        Unknown keys are ignored (rows written by a newer version stay readable).
        """
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d and f.name not in _DEFAULTS]
        if missing:
            raise ValueError(f"missing keys {missing}")
        kw = {k: v for k, v in d.items() if k in names}
        for key in ("start", "end", "active"):
            kw[key] = float(kw[key])
        for key in ("sample_rate", "channels", "frames"):
            kw[key] = int(kw[key])
        for key in ("rms_db", "lufs"):
            kw[key] = None if kw.get(key) is None else float(kw[key])
        if kw.get("split", "train") not in SPLITS:
            raise ValueError(f"split {kw['split']!r} is not one of {SPLITS}")
        return cls(**kw)


_DEFAULTS = {"caption", "split"}


def write_manifest(path: str | Path, segments: Iterable[Segment]) -> Path:
    """Write ``segments`` to ``path`` as JSON lines, atomically (all or nothing)."""
    lines = [json.dumps(s.to_dict(), ensure_ascii=False) for s in segments]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return Path(path)


def read_manifest(path: str | Path, resolve_paths: bool = True) -> list[Segment]:
    """Read ``manifest.jsonl``. Relative segment paths are made absolute by default.

    Raises :class:`ManifestError` naming the file and line for a malformed row, and
    ``FileNotFoundError`` if there is no manifest.
    """
    path = Path(path)
    root = path.resolve().parent
    out: list[Segment] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                seg = Segment.from_dict(json.loads(line))
            except (ValueError, TypeError) as e:
                raise ManifestError(
                    f"{path}:{lineno}: not a valid manifest row ({e}); re-run cut-music"
                ) from e
            if resolve_paths and not Path(seg.path).is_absolute():
                seg = replace(seg, path=str(root / seg.path))
            out.append(seg)
    return out
