"""Latent cache: hit/miss/stale logic, determinism, masks, augmentation, sharding, bad input."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from lora_audio.config import load_config
from lora_audio.files import atomic_path
from lora_audio.models import load_model
from lora_audio.testing import tiny_model_dir
from preprocessing import latent_cache as lc
from preprocessing.cut_music import CutParams, cut_music
from preprocessing.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
SR = 8000  # segment files' rate; the tiny VAE runs at 256 Hz (64 latent frames per second)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir("stable-audio", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    return load_model("stable-audio", tiny_dir)


def make_corpus(folder: Path, recordings: int = 3, seconds: float = 2.5) -> Path:
    """Noise recordings cut by cut-music into 1 s segments (+ a 0.5 s padded tail each)."""
    rng = np.random.default_rng(0)
    (folder / "rec").mkdir(exist_ok=True)
    for i in range(recordings):
        x = 0.2 * rng.standard_normal((1, round(seconds * SR))).astype(np.float32)
        sf.write(folder / "rec" / f"r{i}.wav", x.T, SR)
    params = CutParams(
        length=1.0,
        sample_rate=SR,
        channels=1,
        tail="pad",
        min_tail=0.25,
        min_active=0.0,
        caption="{stem}, calm piano",
        split=(0.67, 0.33, 0.0),
        progress=False,
    )
    summary = cut_music([folder / "rec"], folder / "cut", params)
    assert summary.ok
    return Path(summary.manifest)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def config(tiny_dir: Path, manifest: Path, cache_dir: Path, *overrides: str):
    return load_config(
        None,
        [
            "model.family=stable-audio",
            f"model.path={tiny_dir}",
            f"data.manifest={manifest}",
            f"data.cache_dir={cache_dir}",
            "data.seconds=1.0",
            "data.encode_batch_size=3",
            *overrides,
        ],
    )


class Counter:
    """Counts VAE and text-encoder calls on a model instance."""

    def __init__(self, model, monkeypatch: pytest.MonkeyPatch) -> None:
        self.audio = self.prompt = 0
        enc_audio, enc_prompt = model.encode_audio, model.encode_prompt

        def audio(*a, **k):
            self.audio += 1
            return enc_audio(*a, **k)

        def prompt(*a, **k):
            self.prompt += 1
            return enc_prompt(*a, **k)

        monkeypatch.setattr(model, "encode_audio", audio)
        monkeypatch.setattr(model, "encode_prompt", prompt)


def entry_bytes(folder: Path) -> dict[str, tuple[dict, dict[str, bytes]]]:
    """Entry name -> (metadata, tensor name -> raw bytes): equal means bit-identical."""
    out = {}
    for p in sorted((folder / lc.ENTRY_DIR).rglob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            tensors = {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()}  # noqa: SIM118
            out[p.name] = (f.metadata(), tensors)
    return out


def test_unchanged_rerun_encodes_nothing(model, tiny_dir, manifest, tmp_path, monkeypatch):
    cfg = config(tiny_dir, manifest, tmp_path)
    n = len(read_manifest(manifest))
    first = lc.build_cache(cfg, model, progress=False)
    assert (first.new, first.reused, first.entries, first.failed) == (n, 0, n, [])
    assert first.complete and (Path(first.folder) / lc.CACHE_FILE).is_file()
    assert Path(first.folder).parent == tmp_path
    assert Path(first.folder).name.startswith("stable-audio-")

    calls = Counter(model, monkeypatch)
    second = lc.build_cache(cfg, model, progress=False)
    assert (second.new, second.reused, second.encoded) == (0, n, 0)
    info = lc.ensure_cache(cfg, model)
    assert len(info.entries) == n and info.folder == Path(first.folder)
    assert (calls.audio, calls.prompt) == (0, 0)


def test_changed_seconds_or_posterior_makes_a_new_folder(model, tiny_dir, manifest, tmp_path):
    base = lc.build_cache(config(tiny_dir, manifest, tmp_path), model, progress=False)
    for override in ("data.seconds=0.5", "data.sample_posterior=true"):
        other = lc.build_cache(
            config(tiny_dir, manifest, tmp_path, override), model, progress=False
        )
        assert other.folder != base.folder
        assert other.new == other.entries > 0 and other.reused == 0
    # the seed only matters when sampling the posterior
    same = config(tiny_dir, manifest, tmp_path, "data.seed=7")
    assert lc.cache_folder(same.data, lc.cache_params(same.data, model)) == Path(base.folder)


def test_changed_model_fingerprint_makes_a_new_folder(model, tiny_dir, manifest, tmp_path):
    other_dir = tmp_path / "perturbed"
    other = load_model("stable-audio", tiny_dir)
    with torch.no_grad():
        next(other.denoiser.parameters()).add_(0.01)
    other.pipe.save_pretrained(str(other_dir))
    other = load_model("stable-audio", other_dir)

    a = lc.build_cache(config(tiny_dir, manifest, tmp_path / "c"), model, progress=False)
    b = lc.build_cache(config(other_dir, manifest, tmp_path / "c"), other, progress=False)
    assert a.folder != b.folder and b.reused == 0


def test_changed_augment_or_caption_encodes_only_new_entries(model, tiny_dir, tmp_path):
    manifest = make_corpus(tmp_path, recordings=2)
    segments = read_manifest(manifest)
    n_train = sum(s.split == "train" for s in segments)
    cfg = config(tiny_dir, manifest, tmp_path / "cache")
    first = lc.build_cache(cfg, model, progress=False)
    before = entry_bytes(Path(first.folder))

    aug = lc.build_cache(
        config(tiny_dir, manifest, tmp_path / "cache", "data.augment.gains_db=[-6]"),
        model,
        progress=False,
    )
    assert aug.folder == first.folder
    assert (aug.new, aug.reused) == (n_train, len(segments))
    after = entry_bytes(Path(aug.folder))
    assert all(after[name] == data for name, data in before.items())  # never rewritten

    edited = [
        dataclasses.replace(s, caption="jazz") if i == 0 else s for i, s in enumerate(segments)
    ]
    write_manifest(manifest, edited)
    assert lc.is_fresh(cfg, model) is None
    again = lc.build_cache(cfg, model, progress=False)
    assert (again.new, again.entries) == (1, len(segments))
    assert lc.is_fresh(cfg, model) is not None


def test_same_input_gives_bit_identical_entries(model, tiny_dir, manifest, tmp_path):
    a = lc.build_cache(config(tiny_dir, manifest, tmp_path / "a"), model, progress=False)
    b = lc.build_cache(config(tiny_dir, manifest, tmp_path / "b"), model, progress=False)
    ea, eb = entry_bytes(Path(a.folder)), entry_bytes(Path(b.folder))
    assert ea and ea == eb


def test_short_segment_mask_covers_exactly_its_frames(model, tiny_dir, manifest, tmp_path):
    cfg = config(tiny_dir, manifest, tmp_path)
    summary = lc.build_cache(cfg, model, progress=False)
    info = lc.read_cache(summary.folder)
    by_len = {}
    for key, e in info.entries.items():
        with safe_open(str(info.path(key)), framework="pt") as f:
            by_len[round(e["valid_seconds"], 3)] = (f.get_tensor("mask"), f.get_tensor("latents"))
        assert e["frames"] == model.latent_shape(e["valid_seconds"])[1]
    assert set(by_len) == {0.5, 1.0}  # full segments and the padded 0.5 s tails
    mask, latents = by_len[0.5]
    assert latents.shape == model.latent_shape(1.0) == (4, 64)
    assert mask.shape == (64,) and mask[:32].eq(1).all() and mask[32:].eq(0).all()
    assert by_len[1.0][0].eq(1).all()


def test_longer_segment_is_cut_to_data_seconds(model, tiny_dir, manifest, tmp_path):
    summary = lc.build_cache(
        config(tiny_dir, manifest, tmp_path, "data.seconds=0.25"), model, progress=False
    )
    info = lc.read_cache(summary.folder)
    assert {e["valid_seconds"] for e in info.entries.values()} == {0.25}
    assert {e["frames"] for e in info.entries.values()} == {16}


def test_augmentation_counts(model, tiny_dir, manifest, tmp_path):
    segments = read_manifest(manifest)
    n_train = sum(s.split == "train" for s in segments)
    n_val = len(segments) - n_train
    assert n_train and n_val
    cfg = config(
        tiny_dir,
        manifest,
        tmp_path,
        "data.augment.pitch_shifts=[-1,1]",
        "data.augment.gains_db=[-6]",
    )
    summary = lc.build_cache(cfg, model, progress=False)
    assert summary.entries == 4 * n_train + n_val
    assert summary.variants == {
        "clean": n_train + n_val,
        "pitch-1": n_train,
        "pitch+1": n_train,
        "gain-6": n_train,
    }
    info = lc.read_cache(summary.folder)
    assert {e["variant"] for e in info.entries.values() if e["split"] == "val"} == {"clean"}


def test_bad_segments_are_reported_and_skipped(model, tiny_dir, manifest, tmp_path, caplog):
    segments = read_manifest(manifest)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    nan = tmp_path / "nan.wav"
    x = np.full((SR, 1), 0.1, dtype=np.float32)
    x[100] = np.nan
    sf.write(nan, x, SR, subtype="FLOAT")
    bad = [dataclasses.replace(segments[0], id=p.stem, path=str(p)) for p in (garbage, nan)]
    bad.append(dataclasses.replace(segments[0], id="gone", path=str(tmp_path / "gone.wav")))
    bad_manifest = tmp_path / "manifest.jsonl"
    write_manifest(bad_manifest, [*bad, *segments])

    with caplog.at_level(logging.WARNING, logger="preprocessing.latent_cache"):
        summary = lc.build_cache(config(tiny_dir, bad_manifest, tmp_path), model, progress=False)
    assert summary.entries == len(segments) and summary.new == len(segments)
    assert sorted(Path(f).name for f, _ in summary.failed) == ["garbage.wav", "gone.wav", "nan.wav"]
    for path in (garbage, nan):
        lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0]
    assert "NaN" in next(r for _, r in summary.failed if "nan.wav" in r)
    assert "skipped (3)" in summary.format()


def test_interrupted_run_leaves_no_partial_entry_and_resumes(
    model, tiny_dir, manifest, tmp_path, monkeypatch
):
    cfg = config(tiny_dir, manifest, tmp_path)
    n = len(read_manifest(manifest))
    real_write = lc.write_safetensors
    calls = {"n": 0}

    def crash_on_fourth(path, tensors, metadata=None):
        calls["n"] += 1
        if calls["n"] == 4:
            # Die half-way through writing the fourth entry, the way Ctrl-C would.
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half an entry")
                raise KeyboardInterrupt
        return real_write(path, tensors, metadata)

    monkeypatch.setattr(lc, "write_safetensors", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        lc.build_cache(cfg, model, progress=False)
    monkeypatch.setattr(lc, "write_safetensors", real_write)

    folder = lc.cache_folder(cfg.data, lc.cache_params(cfg.data, model))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 3 and all(p.suffix == ".safetensors" for p in files)
    for p in files:
        with safe_open(str(p), framework="pt") as f:
            assert set(f.keys()) >= {"latents", "mask"}
    assert lc.is_fresh(cfg, model) is None
    resumed = lc.build_cache(cfg, model, progress=False)
    assert (resumed.new, resumed.reused, resumed.entries) == (n - 3, 3, n)


def test_shards_partition_the_batches(model, tiny_dir, manifest, tmp_path):
    cfg = config(tiny_dir, manifest, tmp_path)
    items, _ = lc.plan(read_manifest(manifest), cfg.data, {})
    batches = lc.batches_of(items, 3)
    keys = [[it.key for b in lc.shard_batches(batches, i, 2) for it in b] for i in range(2)]
    assert sorted(keys[0] + keys[1]) == sorted(it.key for it in items)
    assert not set(keys[0]) & set(keys[1])
    part = lc.build_cache(cfg, model, (1, 2), progress=False)
    assert not part.complete and part.new == len(keys[1])
    assert not (Path(part.folder) / lc.CACHE_FILE).exists()
    assert lc.parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "a/b", "1"):
        with pytest.raises(ValueError, match="--shard"):
            lc.parse_shard(bad)


def test_cli_prints_summary(tiny_dir, manifest, tmp_path, capsys):
    from lora_audio.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"model:\n  family: stable-audio\n  path: {tiny_dir}\n"
        f"data:\n  manifest: {manifest}\n  cache_dir: {tmp_path / 'cache'}\n  seconds: 1.0\n"
    )
    assert main(["preprocess", "--config", str(cfg), "--no-progress", "data.seconds=0.5"]) == 0
    out = capsys.readouterr().out
    n = len(read_manifest(manifest))
    assert f"{n} segments -> {n} entries ({n} new, 0 reused, 0 failed)" in out
    assert main(["preprocess", "--config", str(cfg), "--no-progress", "data.sedonds=1"]) == 2


@pytest.mark.integration
def test_two_processes_equal_one_process(model, tiny_dir, manifest, tmp_path):
    """Two CLI processes with --shard 0/2 and 1/2, then a merge run == a one-process run."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"model:\n  family: stable-audio\n  path: {tiny_dir}\n"
        f"data:\n  manifest: {manifest}\n  cache_dir: {tmp_path / 'sharded'}\n  seconds: 1.0\n"
        "  encode_batch_size: 2\n  augment:\n    gains_db: [-6]\n"
    )
    # same thread count as this process: float reductions differ between thread counts
    threads = str(torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "lora_audio.cli", "preprocess", "--config", str(cfg), "-q"]
    procs = [
        subprocess.Popen([*cmd, "--no-progress", "--shard", f"{i}/2"], env=env, cwd=REPO)
        for i in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    # the final merge step: encodes nothing, writes cache.json (same code as the CLI without --shard)
    sharded_cfg = load_config(cfg)
    merge = lc.build_cache(sharded_cfg, model, progress=False)
    assert merge.complete and merge.new == 0 and merge.encoded == 0

    one = config(
        tiny_dir,
        manifest,
        tmp_path / "single",
        "data.encode_batch_size=2",
        "data.augment.gains_db=[-6]",
    )
    single = lc.build_cache(one, model, progress=False)
    sharded = next((tmp_path / "sharded").iterdir())
    assert sharded.name == Path(single.folder).name
    assert entry_bytes(sharded) == entry_bytes(Path(single.folder))
    a = json.loads((sharded / lc.CACHE_FILE).read_text())
    b = json.loads((Path(single.folder) / lc.CACHE_FILE).read_text())
    assert a["entries"] == b["entries"] and a["params"] == b["params"]
