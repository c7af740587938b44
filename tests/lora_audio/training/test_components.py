"""Schedule, early stopping, checkpoint round trip, rank dropout, train config checks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lora_audio import adapters
from lora_audio.config import ConfigError, LoraSection, load_config
from lora_audio.models import load_model
from lora_audio.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_state,
    save_checkpoint,
)
from lora_audio.training.early_stopping import EarlyStopping
from lora_audio.training.schedule import lr_at


def test_schedule_values_at_known_steps() -> None:
    kw = {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 4, "max_steps": 14}
    assert [lr_at(s, **kw) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_at(4, **kw) == pytest.approx(1.0)  # peak right after warm-up
    assert lr_at(9, **kw) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_at(14, **kw) == pytest.approx(0.1)  # the floor
    assert lr_at(100, **kw) == pytest.approx(0.1)
    values = [lr_at(s, **kw) for s in range(4, 15)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_early_stopping_counts_evaluations_without_improvement() -> None:
    es = EarlyStopping(patience=2, min_delta=0.01)
    assert es.update(0, 1.0)  # baseline is the first best
    assert es.update(10, 0.9)
    assert not es.update(20, 0.895)  # better, but not by min_delta
    assert not es.stop
    assert not es.update(30, 0.95)
    assert es.stop and "step 30" in es.reason and "patience 2" in es.reason
    assert (es.best, es.best_step) == (0.9, 10)
    again = EarlyStopping(patience=2)
    again.load_state_dict(es.state_dict())
    assert again == es


def test_early_stopping_patience_zero_never_stops_and_nan_never_improves() -> None:
    es = EarlyStopping(patience=0)
    es.update(0, 1.0)
    for s in range(1, 20):
        assert not es.update(s, math.nan)
    assert not es.stop and es.best == 1.0


def _toy(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    net[0].requires_grad_(False)  # a frozen part, as in LoRA training
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1)
    return net, opt


def _steps(net: nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    for _ in range(n):
        x = torch.randn(3, 4)
        loss = net(x).pow(2).mean() + 0.01 * torch.randn(()) * 0
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_checkpoint_round_trip_continues_bit_identically(tmp_path: Path) -> None:
    net, opt = _toy(0)
    _steps(net, opt, 3)
    save_checkpoint(tmp_path / "ck", net, opt, 3, {"early_stopping": {"best": 1.0}})
    _steps(net, opt, 4)  # RNG state continues from the checkpoint's
    expected = {k: v.clone() for k, v in net.state_dict().items()}

    other, other_opt = _toy(1)  # different trainable init; same frozen part needed:
    other[0].load_state_dict(net[0].state_dict())
    ck = load_checkpoint(tmp_path / "ck", other, other_opt)
    assert ck.step == 3 and ck.state["early_stopping"] == {"best": 1.0}
    assert other_opt.state_dict()["state"][0]["step"] == 3
    _steps(other, other_opt, 4)
    for k, v in other.state_dict().items():
        assert torch.equal(v, expected[k]), k
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == [
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
        "trainable.safetensors",
    ]


def test_checkpoint_replaces_atomically_and_refuses_incomplete(tmp_path: Path) -> None:
    net, opt = _toy(0)
    save_checkpoint(tmp_path / "ck", net, opt, 1)
    save_checkpoint(tmp_path / "ck", net, opt, 2)
    assert read_state(tmp_path / "ck")["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary left
    (tmp_path / "broken").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "broken", net)
    wider = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    with pytest.raises(CheckpointError, match="trainable parameters differ"):
        load_checkpoint(tmp_path / "ck", wider)


def test_rank_dropout_is_training_only_and_leaves_files_standard(tiny_dir: Path) -> None:
    """B(drop(A x)): no dropout on the full-width input; eval output equals input placement's."""
    from peft.tuners.lora import LoraLayer

    outs, keys = {}, {}
    for placement in ("rank", "input"):
        model = load_model("stable-audio", tiny_dir)
        torch.manual_seed(0)
        lora = LoraSection(rank=4, dropout=0.5, dropout_placement=placement)
        adapters.inject_lora(model, lora)
        layers = [m for m in model.denoiser.modules() if isinstance(m, LoraLayer)]
        kinds = {type(m.lora_dropout["default"]).__name__ for m in layers}
        assert kinds == ({"Identity"} if placement == "rank" else {"Dropout"})
        with torch.no_grad():
            for m in layers:  # make the adapters do something
                m.lora_B["default"].weight.normal_()
        layer = layers[0]
        x = torch.randn(2, layer.in_features)
        layer.eval()
        outs[placement] = layer(x)
        layer.train()
        torch.manual_seed(1)
        a, b = layer(x), layer(x)
        assert not torch.equal(a, b)  # dropout acts while training
        keys[placement] = sorted(adapters.lora_state_dict(model))
    assert torch.allclose(outs["rank"], outs["input"])
    assert keys["rank"] == keys["input"]


def test_train_section_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"train\.min_lr"):
        load_config(None, ["train.lr=1e-4", "train.min_lr=1e-3"])
    with pytest.raises(
        ConfigError, match=r"train\.on_nonfinite: 'ignore' is not one of stop, skip"
    ):
        load_config(None, ["train.on_nonfinite=ignore"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.learning_rate'.*lr"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"train\.warmup_steps"):
        load_config(None, ["train.max_steps=10", "train.warmup_steps=10"])
    with pytest.raises(ConfigError, match=r"lora\.dropout_placement"):
        load_config(None, ["lora.dropout_placement=output"])
    with pytest.raises(ConfigError, match=r"train\.sample_prompts"):
        load_config(None, ["train.sample_every=2"])


def test_recompute_blocks_keeps_every_nth_block_and_changes_no_gradient():
    from lora_audio.training.recompute import RecomputeBlocks

    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh()) for _ in range(4)]
    x = torch.randn(8, 16)

    def run(fn):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            h = x
            for b in blocks:
                h = fn(b, h) if fn else b(h)
        grads = torch.autograd.grad(h.square().sum(), [p for b in blocks for p in b.parameters()])
        return len(saved), grads

    n_plain, g_plain = run(None)
    n_all, g_all = run(RecomputeBlocks(0))
    n_half, g_half = run(RecomputeBlocks(2))
    assert n_all < n_half < n_plain
    for a, b, c in zip(g_plain, g_all, g_half, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="0 or >= 2"):
        RecomputeBlocks(1)


def test_checkpoint_keep_every_one_is_refused():
    config = Path(__file__).resolve().parents[3] / "configs" / "tiny" / "demo.yaml"
    assert load_config(config, ["train.checkpoint_keep_every=2"]).train.checkpoint_keep_every == 2
    with pytest.raises(ConfigError, match="checkpoint_keep_every"):
        load_config(config, ["train.checkpoint_keep_every=1"])


@pytest.mark.parametrize("value", ["-0.1", "1.0", "nan"])
def test_caption_dropout_outside_zero_one_is_refused(value: str) -> None:
    config = Path(__file__).parents[3] / "configs" / "tiny" / "stable-audio.yaml"
    assert load_config(config, ["train.caption_dropout=0.1"]).train.caption_dropout == 0.1
    with pytest.raises(ConfigError, match=r"train\.caption_dropout"):
        load_config(config, [f"train.caption_dropout={value}"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["train.prior_clips=0"], "prior_clips"),
        (["train.prior_share=0"], "prior_share"),
        (["train.prior_share=1.0"], "prior_share"),
    ],
)
def test_prior_preservation_settings_are_checked(overrides: list[str], key: str) -> None:
    config = Path(__file__).parents[3] / "configs" / "tiny" / "stable-audio.yaml"
    prompts = "train.prior_prompts=[calm piano]"
    assert load_config(config, [prompts]).train.prior_share == 0.2
    assert load_config(config, overrides).train.prior_prompts == []  # off: not checked
    with pytest.raises(ConfigError, match=rf"train\.{key}"):
        load_config(config, [prompts, *overrides])
