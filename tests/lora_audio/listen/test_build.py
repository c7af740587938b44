"""Tests for lora_audio.listen.build: discovery, bad input, determinism and blindness."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from lora_audio.listen import KEY_FORMAT, ListenError
from lora_audio.listen.build import (
    ab_system_pairs,
    build_test,
    find_systems,
    match_stimuli,
    plan_test,
)

PAGE_FILES = ("index.html", "listen.js", "listen.css", "trials.js")


def read_trials_js(folder: Path) -> dict:
    text = (folder / "trials.js").read_text()
    m = re.fullmatch(r"window\.LISTEN_TEST = (.*);\n", text, flags=re.S)
    assert m, "trials.js must be a single assignment"
    return json.loads(m.group(1))


def test_compare_layout_gives_one_system_per_subfolder(compare_dir):
    systems = find_systems([str(compare_dir)])
    assert sorted(systems) == ["base", "jazzlora_v2"]
    assert sorted(systems["base"]) == ["p000_s0", "p001_s0", "p002_s0"]


def test_plain_folders_are_named_after_the_folder_or_name_eq_dir(compare_dir):
    systems = find_systems([str(compare_dir / "base"), f"mine={compare_dir / 'jazzlora_v2'}"])
    assert sorted(systems) == ["base", "mine"]
    with pytest.raises(ListenError, match="without NAME="):
        find_systems([f"mine={compare_dir}"])


def test_same_system_twice_is_one_line_error(compare_dir):
    with pytest.raises(ListenError, match="already used") as e:
        find_systems([str(compare_dir), str(compare_dir / "base")])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_bad_run_dirs_are_one_line_errors(tmp_path, kind):
    path = tmp_path / "run"
    if kind == "empty":
        path.mkdir()
        (path / "notes.txt").write_text("no audio here")
    elif kind == "file":
        path.write_text("x")
    with pytest.raises(ListenError) as e:
        find_systems([str(path)])
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg


def test_mismatched_stimuli_are_reported_and_dropped(compare_dir):
    (compare_dir / "base" / "p002_s0.wav").unlink()
    systems = find_systems([str(compare_dir)])
    stimuli, problems = match_stimuli(systems)
    assert [s.name for s in stimuli] == ["p000_s0", "p001_s0"]
    assert len(problems) == 1 and "p002_s0" in problems[0] and "base" in problems[0]
    kept, _ = match_stimuli(systems, keep_partial=True)
    assert [s.name for s in kept] == ["p000_s0", "p001_s0", "p002_s0"]
    assert sorted(kept[2].files) == ["jazzlora_v2"]


def test_unreadable_file_counts_as_missing(compare_dir, tmp_path):
    (compare_dir / "base" / "p001_s0.wav").write_bytes(b"not audio at all")
    result = build_test([str(compare_dir)], tmp_path / "test")
    assert [s.name for s in result.plan.stimuli] == ["p000_s0", "p002_s0"]
    assert any("not readable as audio" in p for p in result.plan.problems)


def test_plan_is_deterministic_for_a_seed_and_differs_across_seeds(compare_dir):
    stimuli, _ = match_stimuli(find_systems([str(compare_dir)]))
    a = plan_test(stimuli, [], seed=7, ab=True)
    b = plan_test(stimuli, [], seed=7, ab=True)
    c = plan_test(stimuli, [], seed=8, ab=True)
    assert a.trials == b.trials and a.clips == b.clips and a.test_id == b.test_id
    assert [t.clips for t in a.trials] != [t.clips for t in c.trials]
    assert a.test_id != c.test_id
    # every clip is rated exactly once; one A/B trial per stimulus (one pair of systems)
    rated = [t.clips[0] for t in a.trials if t.kind == "rate"]
    assert sorted(rated) == sorted(c.id for c in a.clips)
    assert sum(t.kind == "ab" for t in a.trials) == 3


def test_ab_pairs_against_base_or_all_pairs():
    assert ab_system_pairs(["a", "base", "c"], "base") == [("a", "base"), ("c", "base")]
    assert ab_system_pairs(["a", "b", "c"], None) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_build_writes_blind_page_and_separate_key(compare_dir, ref_file, tmp_path):
    out = tmp_path / "test"
    result = build_test([str(compare_dir)], out, ref=ref_file, ab=True, seed=3)
    assert sorted(p.name for p in out.iterdir()) == sorted([*PAGE_FILES, "audio", "key.json"])
    key = json.loads((out / "key.json").read_text())
    assert key["format"] == KEY_FORMAT and key["test_id"] == result.plan.test_id
    assert key["base"] == "base" and key["systems"] == ["base", "jazzlora_v2"]
    assert key["clips"][result.plan.clips[0].id]["meta"]["prompt"].startswith("secret prompt")

    page = read_trials_js(out)
    assert page["test_id"] == key["test_id"]
    assert [q["id"] for q in page["questions"]] == ["musicality", "style"]
    assert set(key["trials"]) == {t["id"] for t in page["trials"]}

    # Blindness: nothing the page loads names a system, a source file, a prompt or the key.
    secrets = ["base", "jazzlora_v2", "p000_s0", "p001_s0", "p002_s0", "refclip", "secret prompt"]
    loaded = [out / f for f in PAGE_FILES] + sorted((out / "audio").iterdir())
    for path in loaded:
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{s!r} leaks into {path.name}"
        assert b"key.json" not in data, f"{path.name} mentions the key"
    for path in (out / "audio").iterdir():
        assert re.fullmatch(r"[0-9a-f]{16}\.wav", path.name)
        assert not any(s in path.name for s in secrets)
    # every clip and reference became one opaque audio file, loudness matched, same rate
    assert len(list((out / "audio").iterdir())) == 2 * 3 + 1
    info = sf.info(str(out / "audio" / f"{result.plan.clips[0].id}.wav"))
    assert info.samplerate == 8000 and info.subtype == "PCM_16"


def test_build_is_reproducible_for_a_seed(compare_dir, tmp_path):
    a = build_test([str(compare_dir)], tmp_path / "a", seed=5, ab=True)
    b = build_test([str(compare_dir)], tmp_path / "b", seed=5, ab=True)
    assert (tmp_path / "a" / "trials.js").read_bytes() == (
        tmp_path / "b" / "trials.js"
    ).read_bytes()
    assert a.plan.test_id == b.plan.test_id


def test_build_refuses_non_empty_output_unless_forced(compare_dir, tmp_path):
    out = tmp_path / "test"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ListenError, match="not empty"):
        build_test([str(compare_dir)], out)
    assert (out / "precious.txt").exists()
    build_test([str(compare_dir)], out, force=True)
    assert (out / "key.json").exists() and not (out / "precious.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".test.")]


def test_no_stimulus_left_is_one_line_error(make_runs, tmp_path):
    make_runs(tmp_path / "runs", systems=("base",), stems=("a0",))
    make_runs(tmp_path / "runs", systems=("other",), stems=("b0",))
    with pytest.raises(ListenError, match="no stimuli left"):
        build_test([str(tmp_path / "runs")], tmp_path / "test")
