"""Training end to end on the tiny model: loss goes down, early stopping, the untrained-adapter
warning, resume after SIGTERM equals an uninterrupted run, non-finite losses, sweep."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from lora_audio import adapters
from lora_audio.recipes.train_lora import (
    LoRATrainingRecipe,
    NonFiniteLoss,
    TrainingError,
    run_training,
)
from lora_audio.sweep import sweep


def _same_weights(a: Path, b: Path) -> bool:
    """Adapter tensors bit-identical (file bytes may differ: safetensors writes its metadata
    map in no fixed order)."""
    ta, tb = adapters.read_adapter(a)[1], adapters.read_adapter(b)[1]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_goes_down_and_run_folder_is_complete(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg()
    result = run_training(cfg)
    run = Path(cfg.train.output_dir)
    assert result.best_val_loss < 0.9 * result.baseline_val_loss
    assert not result.untrained and result.best_step > 0
    rows = _rows(run)
    train_losses = [r["loss"] for r in rows if "loss" in r]
    assert train_losses[-1] < train_losses[0]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 10, 20, 30, 40]
    assert {"lr", "grad_norm", "samples_per_s"} <= set(rows[1])
    info, _, _ = adapters.read_adapter(run / "adapter")  # checks the sha256
    assert info.weights_sha256 == result.adapter_sha256
    assert info.training_config["train"]["max_steps"] == 40
    assert (run / "config.yaml").is_file() and "WARNING" not in (run / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_step"] == result.best_step and summary["untrained"] is False
    with pytest.raises(TrainingError, match=r"--resume.*--overwrite"):
        run_training(cfg)  # never overwrite a run folder silently
    first = tmp_path / "first"
    (run / "adapter").rename(first)
    again = run_training(cfg, overwrite=True)  # deterministic on CPU
    assert again.best_val_loss == result.best_val_loss
    assert _same_weights(run / "adapter", first)


def test_plateau_triggers_early_stopping_and_untrained_warning(make_cfg, caplog) -> None:
    # min_delta larger than any possible gain: a synthetic plateau from the first evaluation
    cfg = make_cfg("train.min_delta=10", "train.patience=2", "train.max_steps=200")
    result = run_training(cfg)
    assert result.steps == 20  # evaluations at 10 and 20 did not improve: patience 2
    assert "early stopping at step 20" in result.stop_reason
    assert result.untrained and result.best_step == 0
    assert "NO EVALUATION BEAT THE UNTRAINED BASELINE" in caplog.text
    run = Path(cfg.train.output_dir)
    assert "WARNING: untrained adapter" in (run / "README.md").read_text()
    assert json.loads((run / "summary.json").read_text())["untrained"] is True
    _, tensors, _ = adapters.read_adapter(run / "adapter")
    assert all(not t.any() for k, t in tensors.items() if ".lora_B." in k)  # the init: B = 0


def test_resume_after_sigterm_reaches_the_same_adapter(make_cfg, tmp_path: Path) -> None:
    overrides = (
        "train.max_steps=24",
        "train.eval_every=8",
        "train.grad_accum=2",
        "train.caption_dropout=0.3",
        *PRIOR,
    )
    full = run_training(make_cfg(*overrides, f"train.output_dir={tmp_path / 'full'}"))

    cfg = make_cfg(*overrides, f"train.output_dir={tmp_path / 'cut'}")
    recipe = LoRATrainingRecipe(cfg)
    recipe.setup()
    step_fn = recipe._train_step

    def step_and_signal(step: int):
        out = step_fn(step)
        if step == 12:  # between evaluations
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    recipe._train_step = step_and_signal
    try:
        cut = recipe.train()
    finally:
        recipe.cleanup()
    assert cut.interrupted and cut.steps == 13 and "SIGTERM" in cut.stop_reason
    last = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "state.json").read_text())
    assert last["step"] == 13

    resumed = run_training(cfg, resume=True)
    assert resumed.steps == 24
    assert _same_weights(tmp_path / "cut" / "adapter", tmp_path / "full" / "adapter")
    assert resumed.best_val_loss == full.best_val_loss
    rows = _rows(tmp_path / "cut")
    assert [r["step"] for r in rows] == [r["step"] for r in _rows(tmp_path / "full")]


def test_caption_dropout_swaps_in_the_unconditional_conditioning(make_cfg) -> None:
    recipe = LoRATrainingRecipe(make_cfg("train.caption_dropout=0.5", "train.batch_size=4"))
    recipe.setup()
    try:
        model = recipe.model
        dropped = kept = 0
        for micro in range(8):
            batch = recipe._micro_batch(micro)
            again = recipe._micro_batch(micro)  # the same draw every time (resume, processes)
            assert all(torch.equal(batch["cond"][k], again["cond"][k]) for k in batch["cond"])
            clean = recipe.collate([recipe.train_set[i] for i in batch_indices(recipe, micro)])
            for i, seconds in enumerate(batch["valid_seconds"]):
                item = {k: v[i : i + 1] for k, v in batch["cond"].items()}
                cached = {k: v[i : i + 1] for k, v in clean["cond"].items()}
                if all(torch.equal(item[k], cached[k]) for k in item):
                    kept += 1
                    continue
                with torch.no_grad():
                    null = model.unconditional(cached, [seconds])
                assert all(torch.equal(item[k], null[k].float()) for k in item)
                dropped += 1
        assert dropped + kept == 32 and 6 <= dropped <= 26  # p = 0.5 of 32 items
    finally:
        recipe.cleanup()
    none = LoRATrainingRecipe(make_cfg("train.batch_size=4"), overwrite=True)
    none.setup()
    try:
        clean = none.collate([none.train_set[i] for i in batch_indices(none, 0)])
        batch = none._micro_batch(0)
        assert all(torch.equal(batch["cond"][k], clean["cond"][k]) for k in clean["cond"])
    finally:
        none.cleanup()


PRIOR = ("train.prior_prompts=[loud drums]", "train.prior_clips=2", "train.sample_steps=2")


def test_prior_preservation_mixes_in_the_base_models_own_clips(
    make_cfg, tiny_dir, monkeypatch
) -> None:
    from lora_audio.models import load_model
    from lora_audio.training import prior as prior_module

    cfg = make_cfg(*PRIOR, "train.prior_share=0.5", "train.sample_guidance=1")
    recipe = LoRATrainingRecipe(cfg)
    recipe.setup()
    try:
        run = Path(cfg.train.output_dir)
        assert (run / "prior.safetensors").is_file()
        assert len(list((run / "prior").glob("*.wav"))) == 2
        assert len(recipe.prior) == 2
        # each item is the base model's clip for its seed, encoded like a cached segment
        base = load_model("stable-audio", str(tiny_dir))
        seed = int(recipe.prior[0]["key"].rsplit("-", 1)[1])
        with torch.no_grad():
            audio = base.generate("loud drums", seconds=1.0, steps=2, guidance=1.0, seed=seed)
            audio = torch.nn.functional.pad(audio, (0, max(0, base.sample_rate - audio.shape[-1])))
            latents = base.encode_audio(audio[..., : base.sample_rate])[0]
            cond = base.encode_prompt(["loud drums"], [1.0])
        torch.testing.assert_close(recipe.prior[0]["latents"], latents)
        torch.testing.assert_close(recipe.prior[0]["cond"], {k: v[0] for k, v in cond.items()})
        assert recipe.prior[0]["latents"].shape == recipe.train_set[0]["latents"].shape
        # about half of the items of a micro-batch come from the prior, the same every time
        keys = [k for m in range(8) for k in recipe._micro_batch(m)["keys"]]
        assert keys == [k for m in range(8) for k in recipe._micro_batch(m)["keys"]]
        n_prior = sum(k.startswith("prior-") for k in keys)
        assert 6 <= n_prior <= 26  # p = 0.5 of 32 items
        assert recipe.prior[0]["key"] in keys and recipe.prior[1]["key"] in keys
    finally:
        recipe.cleanup()

    # resume reads the saved clips back instead of generating them again ...
    def refuse(*_a, **_k):
        raise AssertionError("generated again")

    monkeypatch.setattr(prior_module, "generate_prior", refuse)
    again = LoRATrainingRecipe(cfg, overwrite=True)
    with pytest.raises(AssertionError, match="generated again"):  # --overwrite starts afresh
        again.setup()
    monkeypatch.undo()
    run_training(cfg, overwrite=True)
    monkeypatch.setattr(prior_module, "generate_prior", refuse)
    resumed = LoRATrainingRecipe(cfg, resume=True)
    resumed.setup()
    resumed.cleanup()
    assert [it["key"] for it in resumed.prior] == [it["key"] for it in recipe.prior]
    # ... and other settings make new clips
    with pytest.raises(AssertionError, match="generated again"):
        changed = make_cfg(
            *PRIOR, "train.prior_share=0.5", "train.sample_guidance=1", "train.prior_clips=3"
        )
        LoRATrainingRecipe(changed, resume=True).setup()


def batch_indices(recipe: LoRATrainingRecipe, micro: int) -> list[int]:
    b = recipe.tc.batch_size
    return [recipe._item_index(micro * b + i) for i in range(b)]


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss(make_cfg, mode: str, monkeypatch) -> None:
    cfg = make_cfg(f"train.on_nonfinite={mode}", "train.max_steps=12")
    recipe = LoRATrainingRecipe(cfg)
    recipe.setup()
    loss_fn = recipe.model.training_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss = loss_fn(*args, **kwargs)
        calls["n"] += 1
        return loss * math.nan if recipe.model.denoiser.training and calls["n"] == 8 else loss

    monkeypatch.setattr(recipe.model, "training_loss", sometimes_nan)
    try:
        if mode == "stop":
            with pytest.raises(NonFiniteLoss, match="non-finite loss at step 6"):
                recipe.train()
            state = json.loads(
                (Path(cfg.train.output_dir) / "checkpoints/last/state.json").read_text()
            )
            assert state["step"] == 5
        else:
            result = recipe.save(recipe.train())
            assert result.skipped_steps == [6] and result.steps == 12
            assert math.isfinite(result.best_val_loss)
    finally:
        recipe.cleanup()


def test_sweep_writes_a_table_and_picks_the_best(tiny_dir, manifest, tmp_path: Path) -> None:
    config = Path(__file__).parents[3] / "configs" / "tiny" / "stable-audio.yaml"
    overrides = [
        f"model.path={tiny_dir}",
        f"data.manifest={manifest}",
        f"train.output_dir={tmp_path / 'sweep'}",
        "train.max_steps=10",
        "train.eval_every=5",
    ]
    rows = sweep(str(config), [2, 8], overrides)
    assert [r["rank"] for r in rows] == [2, 8]
    assert rows[0]["trainable_params"] < rows[1]["trainable_params"]
    assert all(r["val_loss"] < r["baseline_val_loss"] for r in rows)
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    best = min(rows, key=lambda r: r["val_loss"])
    assert f"best: rank {best['rank']}" in table
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["best_rank"] == best["rank"]
    assert (tmp_path / "sweep" / "rank-8" / "adapter" / "adapter.json").is_file()
