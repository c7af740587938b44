"""Dataset over the latent cache: shapes, splits, collate, a masked loss on a batch; data config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lora_audio.config import ConfigError, load_config
from lora_audio.data import LatentDataset, collate, make_loader
from lora_audio.models import load_model
from lora_audio.testing import tiny_model_dir
from preprocessing.latent_cache import ensure_cache
from preprocessing.manifest import Segment, write_manifest

SR = 8000


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """Tiny model + a cache of 3 train segments (one 0.5 s) x 2 variants and 1 val segment."""
    root = tmp_path_factory.mktemp("data")
    model = load_model("stable-audio", tiny_model_dir("stable-audio", root / "tiny"))
    rng = np.random.default_rng(1)
    rows = []
    for i, (seconds, split) in enumerate(
        [(1.0, "train"), (1.0, "train"), (0.5, "train"), (1.0, "val")]
    ):
        path = root / f"seg{i}.wav"
        sf.write(path, 0.2 * rng.standard_normal(round(seconds * SR)), SR)
        frames = round(seconds * SR)
        rows.append(
            Segment(
                f"seg{i}",
                path.name,
                "src.wav",
                "0" * 64,
                0.0,
                seconds,
                SR,
                1,
                frames,
                -20.0,
                -20.0,
                1.0,
                caption=f"calm piano {i}",
                split=split,
            )
        )
    manifest = write_manifest(root / "manifest.jsonl", rows)
    cfg = load_config(
        None,
        [
            f"model.path={tiny_model_dir('stable-audio', root / 'tiny')}",
            f"data.manifest={manifest}",
            "data.seconds=1.0",
            "data.augment.gains_db=[-6]",
        ],
    )
    return model, ensure_cache(cfg, model, progress=False)


def test_items_have_the_cached_shapes(setup) -> None:
    model, info = setup
    ds = LatentDataset(info, "train")
    assert len(ds) == 6  # 3 segments x (clean, gain-6)
    with torch.no_grad():
        cond = model.encode_prompt(["x"], [1.0])
    for item in ds:
        assert item["latents"].shape == model.latent_shape(1.0)
        assert item["mask"].shape == (64,) and item["latents"].dtype == torch.float32
        assert {k: v.shape for k, v in item["cond"].items()} == {
            k: v.shape[1:] for k, v in cond.items()
        }
    short = [it for it in ds if it["segment"] == "seg2"]
    assert [int(it["mask"].sum()) for it in short] == [32, 32]


def test_split_selection(setup) -> None:
    _, info = setup
    assert [it["segment"] for it in LatentDataset(info, "val")] == ["seg3"]
    clean = LatentDataset(info.folder, "train", augmented=False)
    assert len(clean) == 3 and {it["variant"] for it in clean} == {"clean"}
    assert len(LatentDataset(info, None)) == 7


def test_collate_and_masked_loss_on_a_batch(setup) -> None:
    model, info = setup
    loader = make_loader(info, "train", batch_size=6, shuffle=True, seed=3)
    batch = next(iter(loader))
    assert batch["latents"].shape == (6, 4, 64) and batch["mask"].shape == (6, 64)
    assert all(v.shape[0] == 6 for v in batch["cond"].values())
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    masked = model.training_loss(batch["latents"], batch["cond"], mask=batch["mask"], generator=g())
    full = model.training_loss(batch["latents"], batch["cond"], generator=g())
    assert torch.isfinite(masked) and masked.ndim == 0 and masked != full
    again = next(iter(make_loader(info, "train", batch_size=6, shuffle=True, seed=3)))
    assert again["keys"] == batch["keys"]


def test_collate_pads_conditioning_of_different_lengths() -> None:
    items = [
        {
            "latents": torch.zeros(2, 3),
            "mask": torch.ones(3),
            "key": k,
            "segment": k,
            "variant": "clean",
            "valid_seconds": 1.0,
            "cond": {"h": torch.ones(n, 4), "attention_mask": torch.ones(n)},
        }
        for k, n in (("a", 2), ("b", 5))
    ]
    batch = collate(items)
    assert batch["cond"]["h"].shape == (2, 5, 4)
    assert batch["cond"]["attention_mask"].tolist()[0] == [1, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.seconds=0", "data.seconds"),
        ("data.encode_batch_size=0", "data.encode_batch_size"),
        ("data.device=tpu", "data.device"),
        ("data.augment.pitch_shifts=[0]", "data.augment.pitch_shifts"),
        ("data.augment.gains_db=[-6,-6]", "repeats"),
        ("data.augment.splits=[dev]", "data.augment.splits"),
        ("data.agument.gains_db=[1]", "allowed keys in data: manifest, cache_dir"),
    ],
)
def test_data_config_checks(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_tiny_config_has_a_data_section() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/tiny/stable-audio.yaml")
    assert cfg.data.seconds <= 2.0 and cfg.data.encode_batch_size >= 1
