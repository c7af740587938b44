"""manifest.jsonl rows: round trip, relative paths, clear errors."""

from __future__ import annotations

import json

import pytest

from preprocessing.manifest import ManifestError, Segment, read_manifest, write_manifest


def _segment(**kw) -> Segment:
    base = dict(id="a-1-00000", path="audio/a/a-00000.wav", source="/x/a.wav",
                source_sha256="ab" * 32, start=0.0, end=10.0, sample_rate=44100, channels=2,
                frames=441000, rms_db=-20.0, lufs=float("-inf"), active=1.0, caption="c")  # fmt: skip
    base.update(kw)
    return Segment(**base)


def test_round_trip_and_relative_paths(tmp_path):
    segs = [_segment(), _segment(id="a-1-00001", start=10.0, end=15.0, split="val")]
    write_manifest(tmp_path / "m.jsonl", segs)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["lufs"] is None  # -inf is not valid JSON
    back = read_manifest(tmp_path / "m.jsonl")
    assert back[0].path == str(tmp_path / "audio/a/a-00000.wav")
    assert back[1].duration == 5.0 and back[1].split == "val"
    raw = read_manifest(tmp_path / "m.jsonl", resolve_paths=False)
    assert raw[0] == _segment(lufs=None) and raw[1].path == "audio/a/a-00000.wav"


def test_unknown_keys_are_ignored_and_bad_rows_named(tmp_path):
    row = _segment().to_dict() | {"future": 1}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n\n")
    assert len(read_manifest(tmp_path / "m.jsonl")) == 1
    del row["sample_rate"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(_segment().to_dict()) + "\n" + json.dumps(row))
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2: .*sample_rate"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "split.jsonl").write_text(json.dumps(_segment(split="dev").to_dict()))
    with pytest.raises(ManifestError, match="split"):
        read_manifest(tmp_path / "split.jsonl")
