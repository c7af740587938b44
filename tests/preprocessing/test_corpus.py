"""Offline corpora: music21 scores rendered with the pip soundfont, deterministic and checked."""

from __future__ import annotations

import io
import json

import mido
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("music21")
pytest.importorskip("midirenderer")

from music21 import meter, note, stream
from music21 import tempo as m21tempo

from lora_audio.cli import main as cli_main
from preprocessing import corpus as C

SR = 16000
SETTINGS = C.RenderSettings(sample_rate=SR)
#: one chorale on organ and one reel on fiddle (~65 s of audio, ~2 s to build)
TINY = C.Recipe(
    name="tiny",
    description="test",
    selections=(
        C.Selection("bach/bwv101.7.mxl", 19, "bach chorale, {instrument}", tempo=96),
        C.Selection("ryansMammoth/7thRegimentReel.abc", 110, "reel, {instrument}"),
    ),
)


def f0_hz(x: np.ndarray, sr: int, start: float = 0.2, seconds: float = 1.0) -> float:
    """Fundamental of the mono mix of ``x [C, T]``: harmonic product spectrum peak (3 harmonics).

    A plain spectral peak can land on the 2nd harmonic (a low flute note); the product of the
    spectrum with its 2x and 3x decimations peaks at the fundamental.
    """
    seg = x.mean(axis=0)[int(start * sr) : int((start + seconds) * sr)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    n = len(spec) // 3
    hps = spec[:n] * spec[: 2 * n : 2] * spec[: 3 * n : 3]
    lo = int(50 * len(seg) / sr)  # ignore DC and rumble below 50 Hz
    return float((lo + np.argmax(hps[lo:])) * sr / len(seg))


def one_note_score(midi_pitch: int = 69, bars: int = 3, qpm: float = 120) -> stream.Score:
    """A score built by hand: one sustained note, ``bars`` bars of 4/4."""
    part = stream.Part()
    part.append(m21tempo.MetronomeMark(number=qpm))
    part.append(meter.TimeSignature("4/4"))
    for _ in range(bars):
        part.append(note.Note(midi_pitch, quarterLength=4.0))
    return stream.Score([part])


def midi_of(messages: list[mido.Message], tpb: int = 480) -> bytes:
    mf = mido.MidiFile(type=0, ticks_per_beat=tpb)
    mf.tracks.append(mido.MidiTrack(messages))
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> C.BuildResult:
    return C.build_corpus(TINY, tmp_path_factory.mktemp("tiny") / "c", SETTINGS)


# -- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pitch", "hz"), [(69, 440.0), (60, 261.63)])
def test_single_note_score_renders_its_pitch(pitch, hz):
    x = C.render_score(one_note_score(pitch), program=73, settings=SETTINGS)  # flute
    assert x.dtype == np.float32 and x.shape[0] == 2
    # 3 bars at 120 qpm = 6 s, plus the release tail
    assert 6.0 <= x.shape[1] / SR <= 6.0 + C.TAIL_SECONDS + 0.1
    assert C.rms_db(x) > -40
    assert f0_hz(x, SR) == pytest.approx(hz, rel=0.02)


def test_render_is_loudness_normalised_and_deterministic():
    piece = C.prepare_midi(C.score_to_midi(one_note_score()), program=0)
    a, lufs_a = C.render_piece(piece.midi, SETTINGS)
    b, lufs_b = C.render_piece(piece.midi, SETTINGS)
    assert np.array_equal(a, b) and lufs_a == lufs_b
    assert C.loudness_lufs(a, SR) == pytest.approx(lufs_a, abs=0.3)
    assert C.peak_db(a) <= SETTINGS.peak_db + 1e-3


def test_silent_render_is_rejected(monkeypatch):
    monkeypatch.setattr(C, "render_midi", lambda *a, **k: (np.zeros((2, 48000), np.float32), 48000))
    piece = C.prepare_midi(C.score_to_midi(one_note_score()), program=0)
    with pytest.raises(C.CorpusError, match="silent"):
        C.render_piece(piece.midi, SETTINGS)


# -- MIDI filters -------------------------------------------------------------------------------


def test_drum_channel_and_programs_are_forced_off():
    msgs = [
        mido.Message("program_change", channel=9, program=5, time=0),
        mido.Message("note_on", channel=9, note=69, velocity=100, time=0),
        mido.Message("note_off", channel=9, note=69, velocity=0, time=480 * 8),
    ]
    piece = C.prepare_midi(midi_of(msgs), program=73, tempo=120)
    out = mido.MidiFile(file=io.BytesIO(piece.midi))
    chans = {m.channel for m in out.tracks[0] if hasattr(m, "channel")}
    programs = [m.program for m in out.tracks[0] if m.type == "program_change"]
    assert C.DRUM_CHANNEL not in chans and chans
    assert programs == [73] * len(chans)
    assert piece.notes == 1
    assert piece.seconds == pytest.approx(4.0 + C.TAIL_SECONDS, abs=0.01)
    # played as a pitched flute, not as a drum kit
    x, _ = C.render_piece(piece.midi, SETTINGS)
    assert f0_hz(x, SR) == pytest.approx(440.0, rel=0.02)


def test_corrupt_and_empty_midi_are_rejected():
    with pytest.raises(C.CorpusError, match="corrupt MIDI"):
        C.prepare_midi(b"MThd not really a midi file", program=0)
    with pytest.raises(C.CorpusError, match="no notes"):
        C.prepare_midi(midi_of([mido.MetaMessage("marker", text="x", time=0)]), program=0)


def test_midi_is_built_from_notes_when_music21_export_fails(monkeypatch):
    from music21 import midi as m21midi

    def boom(*a, **k):
        raise ValueError("export failed")

    monkeypatch.setattr(m21midi.translate, "streamToMidiFile", boom)
    piece = C.prepare_midi(C.score_to_midi(one_note_score(bars=3, qpm=60)), program=0)
    assert piece.notes == 3
    assert piece.seconds == pytest.approx(12.0 + C.TAIL_SECONDS, abs=0.01)


def test_too_short_and_too_long_pieces_are_skipped():
    reel = C.Selection("ryansMammoth/7thRegimentReel.abc", 110, "reel")  # ~33 s
    short = C.Selection("bach/bwv101.7.mxl", 0, "chorale", tempo=400)  # ~8 s
    recipe = C.Recipe("bounds", "test", (reel, short), min_seconds=10.0, max_seconds=20.0)
    planned, skipped = C.plan_recipe(recipe)
    assert planned == []
    reasons = {s["source"]: s["reason"] for s in skipped}
    assert "outside 10..20 s" in reasons["ryansMammoth/7thRegimentReel.abc"]
    assert "outside 10..20 s" in reasons["bach/bwv101.7.mxl"]
    ok, _ = C.plan_recipe(C.Recipe("ok", "test", (reel, short), min_seconds=5.0))
    assert [p.ref.source for p in ok] == [reel.works, short.works]


def test_selection_caps_and_abc_collections():
    refs = C.list_works("airdsAirs/book1.abc")
    assert len(refs) > 50 and refs[0].number == 1 and refs[0].source == "airdsAirs/book1.abc#1"
    sel = C.Selection("airdsAirs/book1.abc", 73, "air", skip=2)
    planned, _ = C.plan_recipe(C.Recipe("cap", "t", (sel,)), max_pieces=2)
    assert [p.ref.number for p in planned] == [3, 4]
    assert [p.id for p in planned] == ["0000-airdsAirs_book1_0003", "0001-airdsAirs_book1_0004"]


# -- recipes ------------------------------------------------------------------------------------


def test_builtin_recipes_are_valid_and_refuse_restricted_works(tmp_path):
    assert {"base", "fiddle", "koto", "demo-mini"} <= set(C.RECIPES)
    base_programs = {s.program for s in C.RECIPES["base"].selections}
    for target in ("fiddle", "koto"):
        assert not base_programs & {s.program for s in C.RECIPES[target].selections}
    for works in ("palestrina/*.xml", "monteverdi/madrigal.3.1.mxl", "essenFolksong/han1.abc"):
        with pytest.raises(C.CorpusError, match="refused"):
            C.validate_recipe(C.Recipe("x", "x", (C.Selection(works, 0, "x"),)))
    with pytest.raises(C.CorpusError, match="program"):
        C.validate_recipe(C.Recipe("x", "x", (C.Selection("bach/*", 128, "x"),)))
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(C.RECIPES["demo-mini"].to_dict() | {"name": "mine"}))
    assert C.get_recipe(str(f)).selections == C.RECIPES["demo-mini"].selections
    with pytest.raises(C.CorpusError, match="no such recipe"):
        C.get_recipe("nope")


# -- building, manifest, rebuild ----------------------------------------------------------------


def test_build_writes_manifest_of_pitched_pieces(built):
    assert [p["source"] for p in built.pieces] == [s.works for s in TINY.selections]
    assert built.rendered == 2 and not built.skipped and not built.mismatches
    rows = C.read_manifest(built.dir)
    assert rows == built.pieces
    assert rows[0]["caption"] == "bach chorale, church organ"
    assert rows[1]["caption"] == "reel, fiddle"
    for row in rows:
        x, sr = sf.read(built.dir / row["path"], dtype="float32", always_2d=True)
        assert sr == SR and x.shape[1] == 2
        assert row["seconds"] == pytest.approx(x.shape[0] / sr)
        assert 5 <= row["seconds"] <= 120
        assert C.rms_db(x.T) > -40
        assert C.sha256_file(built.dir / row["path"]) == row["sha256"]
    info = json.loads((built.dir / C.INFO).read_text())
    assert info["complete"] and info["pieces"] == 2
    assert C.check_corpus(built.dir) == []


def test_rendering_twice_gives_identical_files(built, tmp_path):
    again = C.build_corpus(TINY, tmp_path / "again", SETTINGS, jobs=2)
    assert [p["sha256"] for p in again.pieces] == [p["sha256"] for p in built.pieces]
    assert [p["pcm_sha256"] for p in again.pieces] == [p["pcm_sha256"] for p in built.pieces]


def test_rebuild_is_a_noop_and_repairs_changed_files(built, caplog):
    same = C.build_corpus(TINY, built.dir, SETTINGS)
    assert same.up_to_date and same.rendered == 0
    victim = built.dir / built.pieces[1]["path"]
    victim.write_bytes(victim.read_bytes()[:-100] + b"\0" * 100)
    problems = C.check_corpus(built.dir)
    assert len(problems) == 1 and "sha256 differs" in problems[0]
    assert cli_main(["corpus", "check", str(built.dir)]) == 1
    repaired = C.build_corpus(TINY, built.dir, SETTINGS)
    assert repaired.rendered == 1 and repaired.reused == 1 and not repaired.mismatches
    assert C.check_corpus(built.dir) == []
    assert cli_main(["corpus", "check", str(built.dir)]) == 0


def test_rebuild_reports_a_render_that_differs_from_the_manifest(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built.dir, copy)
    rows = C.read_manifest(copy)
    (copy / rows[0]["path"]).unlink()
    rows[0]["sha256"] = "0" * 64  # as if an earlier render had produced other bytes
    (copy / C.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = C.build_corpus(TINY, copy, SETTINGS)
    assert len(result.mismatches) == 1 and "differs from the manifest" in result.mismatches[0]


def test_other_settings_never_overwrite_a_corpus(built, tmp_path):
    with pytest.raises(C.CorpusError, match="another recipe or other settings"):
        C.build_corpus(TINY, built.dir, C.RenderSettings(sample_rate=22050))
    (tmp_path / "user.txt").write_text("mine")
    with pytest.raises(C.CorpusError, match="not empty"):
        C.build_corpus(TINY, tmp_path, SETTINGS)
    assert (tmp_path / "user.txt").read_text() == "mine"


def test_default_folder_is_keyed_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_AUDIO_CACHE", str(tmp_path))
    key = C.corpus_key(TINY, SETTINGS)
    d = C.default_corpus_dir(TINY, key)
    assert d.parent == tmp_path / "corpora" and d.name.startswith("tiny-")
    other = C.default_corpus_dir(TINY, C.corpus_key(TINY, SETTINGS, max_pieces=1))
    assert other != d


def test_cli_list_and_build(tmp_path, capsys):
    assert cli_main(["corpus", "list"]) == 0
    assert "demo-mini" in capsys.readouterr().out
    out = tmp_path / "c"
    args = ["corpus", "build", "demo-mini", "-o", str(out), "--sample-rate", "16000", "-j", "1"]
    assert cli_main([*args, "--max-seconds", "1", "-q"]) == 0
    assert "3 pieces" in capsys.readouterr().out
    assert cli_main(["corpus", "build", "nope"]) == 1


@pytest.mark.slow
def test_demo_mini_full_rate_is_deterministic(tmp_path):
    a = C.build_corpus("demo-mini", tmp_path / "a", jobs=2)
    b = C.build_corpus("demo-mini", tmp_path / "b", jobs=1)
    assert [p["sha256"] for p in a.pieces] == [p["sha256"] for p in b.pieces]
    assert 60 <= a.seconds <= 150
