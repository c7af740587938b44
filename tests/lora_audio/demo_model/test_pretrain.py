"""`pretrain-demo` on a tiny model and a synthetic corpus: stages, resume, stop, export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lora_audio.demo_model.pretrain import (
    PretrainSettings,
    export_checkpoints,
    load_corpus,
    pretrain,
)
from lora_audio.models import load_model

SETTINGS = PretrainSettings(
    size="tiny",
    ae_steps=2,
    ae_batch=2,
    ae_crop_frames=16,
    unet_steps=2,
    unet_batch=2,
    crop_seconds=0.25,
    warmup_steps=1,
    eval_every=1,
    checkpoint_every=1,
    val_clips=2,
    val_seconds=1.0,
)


def test_load_corpus_holds_out_every_tenth_piece(corpus: Path) -> None:
    pieces = load_corpus(corpus)
    assert [p.val for p in pieces] == [False, False, False, True]
    assert all(p.audio.ndim == 1 and p.audio.dtype == np.float32 for p in pieces)
    with pytest.raises(FileNotFoundError, match="corpus build base"):
        load_corpus(corpus / "audio")


def test_pretrain_exports_a_loadable_pipeline_with_metrics(corpus: Path, tmp_path: Path) -> None:
    summary = pretrain(tmp_path / "work", tmp_path / "out", SETTINGS, corpus)
    assert summary["steps"] == {"autoencoder": 2, "unet": 2}
    assert [row["step"] for row in summary["autoencoder"]] == [1, 2]
    assert all(np.isfinite(row["val_mel_db_mse"]) for row in summary["autoencoder"])
    assert all(np.isfinite(row["val_loss_ema"]) for row in summary["unet"])
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["steps"] == summary["steps"]
    model = load_model("demo", tmp_path / "out")
    cfg = model.pipe.config
    assert cfg.mel_std > 0 and cfg.mel_mean < 0  # log-mel statistics of the corpus
    latents_meta = json.loads((tmp_path / "work" / "latents.json").read_text())
    assert model.pipe.vae.config.scaling_factor == pytest.approx(latents_meta["scaling_factor"])
    audio = model.generate("bach chorale, piano", seconds=0.5, steps=2, seed=0)
    assert audio.shape == (1, 1, 8000) and torch.isfinite(audio).all()
    # exporting the checkpoints again gives the same pipeline
    export_checkpoints(tmp_path / "work", tmp_path / "again")
    again = load_model("demo", tmp_path / "again")
    for name in ("vae", "unet"):
        a, b = getattr(model.pipe, name).state_dict(), getattr(again.pipe, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.pipe.vae.config.scaling_factor == model.pipe.vae.config.scaling_factor


def test_a_killed_run_resumes_exactly(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right after the UNet's step-2 checkpoint, then run again: the same weights as a
    run that was never interrupted."""
    from lora_audio.demo_model import pretrain as module

    # fixed threads: following the idle cores, a busy machine would change the thread count
    # between the runs, and with it the float rounding of the reductions
    longer = replace(SETTINGS, unet_steps=4, threads=torch.get_num_threads())
    pretrain(tmp_path / "straight", None, longer, corpus)
    save = module._save

    def save_then_die(folder, trainee, optimizer, state):
        save(folder, trainee, optimizer, state)
        if folder.name == "unet" and state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tmp_path / "resumed", None, longer, corpus)
    monkeypatch.setattr(module, "_save", save)
    summary = pretrain(tmp_path / "resumed", None, longer, corpus)
    assert [row["step"] for row in summary["unet"]] == [1, 2, 3, 4]
    a = load_file(str(tmp_path / "straight" / "unet" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "unet" / "trainable.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_a_run_stopped_by_the_clock_checkpoints_and_exports_nothing(
    corpus: Path, tmp_path: Path
) -> None:
    summary = pretrain(tmp_path / "work", tmp_path / "out", SETTINGS, corpus, 1e-9)
    assert "steps" not in summary and not (tmp_path / "out").exists()
    state = json.loads((tmp_path / "work" / "ae" / "state.json").read_text())
    assert state["step"] == 0
    resumed = pretrain(tmp_path / "work", tmp_path / "out", SETTINGS, corpus)
    assert resumed["steps"] == {"autoencoder": 2, "unet": 2}


def test_idle_cores_counts_cores_not_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_audio.demo_model import pretrain as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(module.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert module.idle_cores() == 3
    assert module.idle_cores(own_threads=1) == 4  # our own thread is not "other work"
    monkeypatch.setattr(module.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert module.idle_cores() == 1
