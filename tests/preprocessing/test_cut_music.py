"""cut-music on synthetic audio: exact boundaries, silence, splits, resume, bad input, memory."""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import soxr

from preprocessing import cut_music as cm
from preprocessing.cut_music import (
    CutError,
    CutParams,
    Segmenter,
    assign_splits,
    cut_music,
    parse_duration,
    parse_sample_rate,
    parse_split,
    split_counts,
)
from preprocessing.manifest import read_manifest

QUIET = CutParams(progress=False, split=(1.0, 0.0, 0.0))


def run(inputs, out, **kw):
    return cut_music([str(i) for i in inputs], out, replace(QUIET, **kw))


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- parsing and small functions


@pytest.mark.parametrize(
    "text, seconds",
    [("10s", 10.0), ("10", 10.0), ("500ms", 0.5), ("1.5m", 90.0), ("1m30s", 90.0), (".5s", 0.5)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "10x", "-5s", "10s foo"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_sample_rate_and_split():
    assert parse_sample_rate("44.1k") == 44100
    assert parse_sample_rate("48kHz") == 48000
    assert parse_sample_rate("22050") == 22050
    assert parse_split("0.8,0.1,0.1") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_split("0.9,0.1") == pytest.approx((0.9, 0.1, 0.0))
    for bad in ("0.5,0.2", "a,b", "0.5,0.5,0.5,0.5"):
        with pytest.raises(ValueError):
            parse_split(bad)


@pytest.mark.parametrize(
    "n, fractions, expected",
    [
        (0, (0.8, 0.1, 0.1), (0, 0, 0)),
        (1, (0.8, 0.1, 0.1), (1, 0, 0)),
        (2, (0.8, 0.1, 0.1), (1, 1, 0)),
        (3, (0.8, 0.1, 0.1), (1, 1, 1)),
        (10, (0.8, 0.1, 0.1), (8, 1, 1)),
        (20, (0.7, 0.2, 0.1), (14, 4, 2)),
        (5, (1.0, 0.0, 0.0), (5, 0, 0)),
        (2, (0.5, 0.0, 0.5), (1, 0, 1)),
    ],
)
def test_split_counts(n, fractions, expected):
    assert split_counts(n, fractions) == expected


def test_assign_splits_depends_on_content_and_seed_only():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10)]
    a = assign_splits(shas, (0.8, 0.1, 0.1), seed=42)
    b = assign_splits(list(reversed(shas)), (0.8, 0.1, 0.1), seed=42)
    assert a == b
    assert sorted(a.values()).count("val") == 1 and sorted(a.values()).count("test") == 1
    seeds = {tuple(sorted(assign_splits(shas, (0.8, 0.1, 0.1), seed=s).items())) for s in range(5)}
    assert len(seeds) > 1  # the seed matters


@pytest.mark.parametrize("length, hop, offset, end", [(10, 10, 0, None), (10, 3, 0, None),
                                                      (7, 12, 0, None), (10, 4, 5, 83)])  # fmt: skip
def test_segmenter_equals_slicing(length, hop, offset, end):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 100)).astype(np.float32)
    seg = Segmenter(length, hop, offset, end)
    got = []
    pos = 0
    for size in rng.integers(1, 9, size=100):
        got += list(seg.push(x[:, pos : pos + size]))
        pos += size
    stop = 100 if end is None else end
    starts = list(range(offset, stop - length + 1, hop))
    assert [w.start for w in got] == starts
    assert [w.k for w in got] == list(range(len(starts)))
    for w in got:
        np.testing.assert_array_equal(w.audio, x[:, w.start : w.start + length])
    tail = seg.finish()
    nxt = offset + len(starts) * hop
    if nxt < stop:
        np.testing.assert_array_equal(tail.audio, x[:, nxt:stop])
    else:
        assert tail is None


# ---------------------------------------------------------------- segment counts and boundaries


@pytest.mark.parametrize(
    "kw, starts, frames",
    [
        ({}, [0, 10, 20], [10, 10, 10]),
        ({"tail": "pad"}, [0, 10, 20, 30], [10, 10, 10, 10]),
        ({"tail": "keep"}, [0, 10, 20, 30], [10, 10, 10, 5]),
        ({"tail": "keep", "min_tail": 6.0}, [0, 10, 20], [10, 10, 10]),
        ({"hop": 5.0}, [0, 5, 10, 15, 20, 25], [10] * 6),
        ({"hop": 5.0, "tail": "keep"}, [0, 5, 10, 15, 20, 25, 30], [10] * 6 + [5]),
        ({"hop": 15.0}, [0, 15], [10, 10]),
    ],
)
def test_segment_grid_and_tail(tmp_path, tone, write_audio, kw, starts, frames):
    sr = 8000
    x = tone(35.0, sr)
    src = write_audio(tmp_path / "in" / "song.wav", x, sr, subtype="FLOAT")
    out = tmp_path / "out"
    s = run([src], out, length=10.0, subtype="FLOAT", **kw)
    got = rows(out)
    assert [r["start"] for r in got] == starts
    assert [r["frames"] for r in got] == [f * sr for f in frames]
    assert [r["end"] for r in got] == [min(a + 10, 35) for a in starts]
    assert s.segments == len(starts) and s.recordings_ok == 1
    for r in got:  # content is exactly the source slice (FLOAT in and out, no processing)
        y, ysr = sf.read(out / r["path"], dtype="float32", always_2d=True)
        a = int(r["start"] * sr)
        n = int((r["end"] - r["start"]) * sr)
        assert ysr == sr and y.shape == (r["frames"], 1)
        np.testing.assert_array_equal(y[:n, 0], x[0, a : a + n])
        assert not y[n:].any()  # zero padding


@pytest.mark.parametrize("sr_in, sr_out", [(22050, 44100), (44100, 22050), (11025, 16000)])
def test_resampling_streams_like_whole_file(tmp_path, write_audio, sr_in, sr_out):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, int(12.3 * sr_in))) * 0.1).astype(np.float32)
    src = write_audio(tmp_path / "n.wav", x, sr_in, subtype="FLOAT")
    out = tmp_path / "out"
    cm.BLOCK_FRAMES, old = 5000, cm.BLOCK_FRAMES  # many blocks per segment
    try:
        run([src], out, length=3.0, sample_rate=sr_out, subtype="FLOAT", min_active=0.0)
    finally:
        cm.BLOCK_FRAMES = old
    whole = soxr.resample(x.T, sr_in, sr_out, quality="HQ").T
    got = rows(out)
    assert [r["start"] for r in got] == [0.0, 3.0, 6.0, 9.0]
    for r in got:
        y, ysr = sf.read(out / r["path"], dtype="float32", always_2d=True)
        assert ysr == sr_out and y.shape == (3 * sr_out, 2)
        a = round(r["start"] * sr_out)
        np.testing.assert_allclose(y.T, whole[:, a : a + 3 * sr_out], atol=1e-5)


def test_channels(tmp_path, tone, write_audio):
    sr = 8000
    st = tone(4.0, sr, channels=2)
    write_audio(tmp_path / "in" / "st.wav", st, sr, subtype="FLOAT")
    write_audio(tmp_path / "in" / "mono.wav", tone(4.0, sr), sr, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "m", length=2.0, channels=1, subtype="FLOAT")
    run([tmp_path / "in"], tmp_path / "s", length=2.0, channels=2, subtype="FLOAT")
    for r in rows(tmp_path / "m"):
        y, _ = sf.read(tmp_path / "m" / r["path"], always_2d=True)
        assert y.shape[1] == 1 and r["channels"] == 1
        if "st-" in r["id"]:
            np.testing.assert_allclose(y[:, 0], st.mean(axis=0)[: 2 * sr], atol=1e-6)
    for r in rows(tmp_path / "s"):
        y, _ = sf.read(tmp_path / "s" / r["path"], always_2d=True)
        assert y.shape[1] == 2 and r["channels"] == 2


def test_silent_segments_are_skipped_and_counted(tmp_path, tone, write_audio):
    sr = 8000
    x = tone(30.0, sr)
    x[:, 10 * sr : 20 * sr] = 0.0  # a 10 s gap
    x[:, 12 * sr : 12 * sr + 100] = 0.5  # a click: one active 50 ms frame, not enough
    src = write_audio(tmp_path / "gap.wav", x, sr)
    s = run([src], tmp_path / "a", length=5.0)
    assert [r["start"] for r in rows(tmp_path / "a")] == [0, 5, 20, 25]
    assert s.skipped_silent == 2
    # hop 2.5: the window at 7.5 (half tone + the click's frame) is kept with min_active 0.5,
    # dropped with 0.6
    s = run([src], tmp_path / "b", length=5.0, hop=2.5)
    assert [r["start"] for r in rows(tmp_path / "b")] == [0, 2.5, 5, 7.5, 17.5, 20, 22.5, 25]
    assert {r["start"]: r["active"] for r in rows(tmp_path / "b")}[7.5] == pytest.approx(0.51)
    s = run([src], tmp_path / "c", length=5.0, hop=2.5, min_active=0.6)
    assert [r["start"] for r in rows(tmp_path / "c")] == [0, 2.5, 5, 20, 22.5, 25]
    assert s.skipped_silent == 5


def test_trim_silence(tmp_path, tone, write_audio):
    sr = 8000
    x = np.concatenate([np.zeros((1, 3 * sr)), tone(21.0, sr), np.zeros((1, 4 * sr))], axis=1)
    src = write_audio(tmp_path / "t.wav", x.astype(np.float32), sr)
    run([src], tmp_path / "a", length=5.0, trim_silence=True, tail="keep")
    got = rows(tmp_path / "a")
    assert [r["start"] for r in got] == [3, 8, 13, 18, 23]
    assert got[-1]["end"] == pytest.approx(24.0)  # trailing silence trimmed
    # an all-silent file is reported, not cut
    silent = write_audio(tmp_path / "s.wav", np.zeros((1, 10 * sr), np.float32), sr)
    s = run([silent, src], tmp_path / "b", length=5.0, trim_silence=True)
    assert len(s.failed) == 1 and "silent throughout" in s.failed[0][1]


def test_loudness_and_peak_normalisation(tmp_path, write_audio):
    sr = 22050
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 20 * sr)) * 0.05).astype(np.float32)
    x[:, 10 * sr :] *= 0.2  # second half much quieter
    src = write_audio(tmp_path / "n.wav", x, sr, subtype="FLOAT")
    run([src], tmp_path / "l", length=10.0, loudness=-23.0, subtype="FLOAT")
    for r in rows(tmp_path / "l"):
        y, _ = sf.read(tmp_path / "l" / r["path"])
        assert pyloudnorm.Meter(sr).integrated_loudness(y) == pytest.approx(-23.0, abs=0.01)
        assert r["lufs"] == pytest.approx(-23.0, abs=0.01)
    run([src], tmp_path / "p", length=10.0, peak=-1.0, subtype="FLOAT")
    for r in rows(tmp_path / "p"):
        y, _ = sf.read(tmp_path / "p" / r["path"])
        assert 20 * np.log10(np.abs(y).max()) == pytest.approx(-1.0, abs=1e-4)
        assert r["rms_db"] == pytest.approx(10 * np.log10(np.mean(y**2)), abs=1e-3)
    run([src], tmp_path / "n", length=10.0, measure_lufs=False)
    assert [r["lufs"] for r in rows(tmp_path / "n")] == [None, None]
    # loud target + ceiling: the gain stops at the peak ceiling, nothing clips
    run([src], tmp_path / "c", length=10.0, loudness=-5.0, peak=-3.0, subtype="FLOAT")
    for r in rows(tmp_path / "c"):
        y, _ = sf.read(tmp_path / "c" / r["path"])
        assert 20 * np.log10(np.abs(y).max()) <= -3.0 + 1e-4
        assert r["lufs"] < -5.0


# ---------------------------------------------------------------- splits, captions, manifest


def _five_songs(tmp_path, tone, write_audio, folder="in") -> list[Path]:
    return [
        write_audio(
            tmp_path / folder / f"song{i}.wav", tone(6.0 + i, 8000, freq=200 + 50 * i), 8000
        )
        for i in range(5)
    ]


def test_split_by_recording_deterministic(tmp_path, tone, write_audio):
    files = _five_songs(tmp_path, tone, write_audio)
    kw = dict(length=2.0, split=(0.6, 0.2, 0.2), seed=7)
    run(files, tmp_path / "a", **kw)
    run(list(reversed(files)), tmp_path / "b", **kw)
    shutil.copytree(tmp_path / "in", tmp_path / "elsewhere" / "moved")
    run([tmp_path / "elsewhere"], tmp_path / "c", **kw)
    by_source = {}
    for r in rows(tmp_path / "a"):
        by_source.setdefault(r["source_sha256"], set()).add(r["split"])
    assert all(len(v) == 1 for v in by_source.values())  # never straddles
    splits = sorted(next(iter(v)) for v in by_source.values())
    assert splits == ["test", "train", "train", "train", "val"]
    a, b, c = (rows(tmp_path / d) for d in "abc")
    assert a == b
    assert [(r["id"], r["split"]) for r in a] == [(r["id"], r["split"]) for r in c]


def test_captions_priority(tmp_path, tone, write_audio):
    files = _five_songs(tmp_path, tone, write_audio)
    (tmp_path / "in" / "song1.txt").write_text("  sidecar\ncaption \n")
    (tmp_path / "in" / "song2.txt").write_text("sidecar loses to csv")
    csv_path = tmp_path / "caps.csv"
    csv_path.write_text('file,caption\nsong2.wav,"from csv, quoted"\nin/song3.wav,by path\n')
    run(files, tmp_path / "o", length=2.0, caption="{stem}, fiddle", captions_csv=str(csv_path))
    caps = {Path(r["source"]).stem: r["caption"] for r in rows(tmp_path / "o")}
    assert caps == {
        "song0": "song0, fiddle",
        "song1": "sidecar caption",
        "song2": "from csv, quoted",
        "song3": "by path",
        "song4": "song4, fiddle",
    }
    with pytest.raises(CutError, match="caption"):
        run(files, tmp_path / "x", caption="{nope}")


def test_manifest_reads_back(tmp_path, tone, write_audio):
    src = write_audio(tmp_path / "in" / "a.wav", tone(5.0, 8000), 8000)
    run([src], tmp_path / "o", length=2.0, caption="c")
    segs = read_manifest(tmp_path / "o" / "manifest.jsonl")
    assert [s.start for s in segs] == [0.0, 2.0]
    assert all(Path(s.path).is_file() and s.caption == "c" and s.duration == 2.0 for s in segs)
    assert segs[0].source_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


# ---------------------------------------------------------------- idempotence, resume, atomicity


def test_rerun_is_idempotent_and_params_are_guarded(tmp_path, tone, write_audio):
    files = _five_songs(tmp_path, tone, write_audio)
    out = tmp_path / "o"
    first = run(files, out, length=2.0)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    manifest = (out / "manifest.jsonl").read_text()
    again = run(files, out, length=2.0)
    assert again.written == 0 and again.existing == first.written == first.segments
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    assert (out / "manifest.jsonl").read_text() == manifest
    # manifest-only options may change; audio options may not, unless --overwrite
    run(files, out, length=2.0, caption="new")
    assert {r["caption"] for r in rows(out)} == {"new"}
    with pytest.raises(CutError, match=r"length: 2\.0 -> 3\.0"):
        run(files, out, length=3.0)
    assert (out / "manifest.jsonl").exists() and len(list(out.rglob("*.wav"))) == len(before)
    s = run(files, out, length=3.0, overwrite=True)
    assert s.written == s.segments and len(list(out.rglob("*.wav"))) == s.segments
    assert {r["frames"] for r in rows(out)} == {3 * 8000}


def test_crash_mid_write_leaves_no_partial_file_and_resumes(
    tmp_path, tone, write_audio, monkeypatch
):
    src = write_audio(tmp_path / "in" / "a.wav", tone(10.0, 8000), 8000)
    clean = tmp_path / "clean"
    run([src], clean, length=1.0)
    out = tmp_path / "o"
    real_write = sf.write
    calls = {"n": 0}

    def crashing_write(file, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th segment dies half-way through its write
            real_write(file, data[: len(data) // 2], *args, **kwargs)
            raise KeyboardInterrupt
        return real_write(file, data, *args, **kwargs)

    monkeypatch.setattr(sf, "write", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        run([src], out, length=1.0)
    monkeypatch.setattr(sf, "write", real_write)
    files = sorted(p.name for p in (out / "audio").rglob("*") if p.is_file())
    assert files == [f"a-{_sha8(src)}-{k:05d}.wav" for k in range(3)]  # no partial, no temp
    for p in (out / "audio").rglob("*.wav"):
        assert sf.info(p).frames == 8000
    s = run([src], out, length=1.0)
    assert (s.existing, s.written) == (3, 7)
    assert rows(out) == rows(clean)


def test_stale_temp_files_are_cleaned(tmp_path, tone, write_audio):
    src = write_audio(tmp_path / "a.wav", tone(4.0, 8000), 8000)
    out = tmp_path / "o"
    run([src], out, length=1.0)
    folder = next((out / "audio").iterdir())
    stale = folder / ".x.wav.abc123.tmp.wav"
    stale.write_bytes(b"partial")
    run([src], out, length=1.0)
    assert not stale.exists()


def _sha8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


# ---------------------------------------------------------------- bad input


def _bad_inputs(folder: Path, tone, write_audio) -> dict[str, str]:
    """Bad files -> a piece of the reason expected for each."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 50)
    (folder / "empty.flac").write_bytes(b"")
    write_audio(folder / "zero.wav", np.zeros((1, 0), np.float32), 8000)
    nan = tone(5.0, 8000)
    nan[0, 3 * 8000] = np.nan
    write_audio(folder / "nan.wav", nan, 8000, subtype="FLOAT")
    write_audio(folder / "short.ogg", tone(0.5, 8000), 8000)
    (folder / "notes.txt").write_text("not audio")
    return {
        "corrupt.wav": "not readable as audio",
        "empty.flac": "not readable as audio",
        "zero.wav": "no audio frames",
        "nan.wav": "NaN",
        "short.ogg": "shorter than one segment",
        "notes.txt": "not readable as audio",
    }


def test_bad_inputs_are_reported_and_the_batch_goes_on(tmp_path, tone, write_audio):
    expected = _bad_inputs(tmp_path / "in", tone, write_audio)
    good = write_audio(tmp_path / "in" / "good.wav", tone(4.0, 8000), 8000)
    inputs = [*sorted((tmp_path / "in").iterdir())]
    before = {p: p.read_bytes() for p in inputs}
    s = run(inputs, tmp_path / "o", length=1.0)
    assert s.ok and s.segments == 4 and s.recordings == 7 and s.recordings_ok == 1
    reasons = {Path(src).name: reason for src, reason in s.failed}
    assert set(reasons) == set(expected)
    for name, piece in expected.items():
        assert piece in reasons[name] and name in reasons[name] and "\n" not in reasons[name]
    assert {r["source"] for r in rows(tmp_path / "o")} == {str(good)}
    assert not list((tmp_path / "o" / "audio").glob("nan-*/*.wav"))  # no half-cut leftovers
    assert {p: p.read_bytes() for p in inputs} == before  # inputs untouched
    assert sorted((tmp_path / "in").iterdir()) == inputs


def test_nothing_usable_and_strict(tmp_path, tone, write_audio):
    _bad_inputs(tmp_path / "in", tone, write_audio)
    s = run([tmp_path / "in"], tmp_path / "o", length=1.0)
    assert not s.ok and s.segments == 0 and len(s.failed) == 5  # notes.txt is not picked up
    write_audio(tmp_path / "in" / "zz_good.wav", tone(4.0, 8000), 8000)
    s = run([tmp_path / "in"], tmp_path / "s", length=1.0, strict=True)
    assert s.aborted and not s.ok and len(s.failed) == 1
    assert not (tmp_path / "s" / "manifest.jsonl").exists()


def test_tail_rescues_short_files(tmp_path, tone, write_audio):
    src = write_audio(tmp_path / "short.wav", tone(3.0, 8000), 8000)
    s = run([src], tmp_path / "o", length=10.0, tail="pad", min_active=0.2)
    assert s.segments == 1 and rows(tmp_path / "o")[0]["frames"] == 80000


def test_duplicate_content_is_used_once(tmp_path, tone, write_audio):
    a = write_audio(tmp_path / "in" / "a.wav", tone(3.0, 8000), 8000)
    shutil.copy(a, tmp_path / "in" / "copy_of_a.wav")
    s = run([tmp_path / "in"], tmp_path / "o", length=1.0)
    assert s.segments == 3 and len(s.failed) == 1 and "same content" in s.failed[0][1]
    assert len(list((tmp_path / "o" / "audio").iterdir())) == 1


def test_out_dir_must_not_overlap_inputs(tmp_path, tone, write_audio):
    write_audio(tmp_path / "in" / "a.wav", tone(3.0, 8000), 8000)
    for out in (tmp_path / "in", tmp_path / "in" / "segments"):
        with pytest.raises(CutError, match="overlaps"):
            run([tmp_path / "in"], out, length=1.0)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.wav"]
    with pytest.raises(CutError, match="no such file"):
        run([tmp_path / "missing"], tmp_path / "o")


def test_bad_params_are_refused():
    for kw in ({"length": 0.0}, {"tail": "cut"}, {"channels": 3}, {"format": "mp3"},
               {"format": "flac", "subtype": "FLOAT"}, {"min_active": 2.0}, {"peak": 1.0}):  # fmt: skip
        with pytest.raises(CutError):
            replace(QUIET, **kw).validate()


# ---------------------------------------------------------------- parallel and streaming


def test_jobs_2_gives_the_same_result(tmp_path, tone, write_audio):
    files = _five_songs(tmp_path, tone, write_audio)
    (tmp_path / "in" / "bad.wav").write_bytes(b"nope")
    a = run([tmp_path / "in"], tmp_path / "a", length=2.0, jobs=1)
    b = run([tmp_path / "in"], tmp_path / "b", length=2.0, jobs=2)
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert a.failed == b.failed and len(files) == a.recordings_ok == b.recordings_ok


def test_jobs_2_strict_stops_and_writes_no_manifest(tmp_path, tone, write_audio):
    _five_songs(tmp_path, tone, write_audio)
    (tmp_path / "in" / "aaa_bad.wav").write_bytes(b"nope")  # first in the queue
    s = run([tmp_path / "in"], tmp_path / "o", length=2.0, jobs=2, strict=True)
    assert s.aborted and not s.ok and "aaa_bad.wav" in s.failed[0][0]
    assert not (tmp_path / "o" / "manifest.jsonl").exists()


def test_stop_flag_interrupts_a_recording_and_keeps_its_segments(tmp_path, tone, write_audio):
    src = write_audio(tmp_path / "a.wav", tone(40.0, 8000), 8000)
    out = tmp_path / "o"
    cm.prepare_out_dir(out, replace(QUIET, length=1.0))
    control = cm.RunControl()
    control.progress = lambda seconds: control.stop.set()  # stop after the first block
    old, cm.BLOCK_FRAMES = cm.BLOCK_FRAMES, 4 * 8000
    try:
        with pytest.raises(KeyboardInterrupt):
            cm.process_recording(str(src), str(out), replace(QUIET, length=1.0), control)
    finally:
        cm.BLOCK_FRAMES = old
    kept = list(out.rglob("*.wav"))
    assert len(kept) == 4  # the first block's segments stay for a resume; nothing after
    s = run([src], out, length=1.0)
    assert (s.existing, s.written) == (4, 36)


def test_memory_does_not_grow_with_file_length(tmp_path, write_audio):
    """Peak Python/numpy memory while cutting a 10-minute file stays near one segment + block."""
    sr = 16000
    rng = np.random.default_rng(4)

    def peak_bytes(seconds: float, name: str) -> int:
        x = (rng.standard_normal((1, int(seconds * sr))) * 0.1).astype(np.float32)
        src = write_audio(tmp_path / f"{name}.wav", x, sr)
        del x
        tracemalloc.start()
        run([src], tmp_path / name, length=10.0, loudness=-20.0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short = peak_bytes(30.0, "short")
    long = peak_bytes(600.0, "long")  # 38 MB as float32
    assert long < 1.5 * short + 2_000_000
    assert long < 600 * sr * 4 / 3
