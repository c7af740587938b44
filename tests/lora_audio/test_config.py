"""Typed config: YAML + overrides, unknown keys and bad values rejected with the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_audio.config import ConfigError, RunConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_reference_recipe() -> None:
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (8, 16.0, 0.25)
    assert cfg.lora.targets == ["attention", "time_mlp"]


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  family: stable-audio\n  path: /models/sao\nlora:\n  rank: 4\n")
    cfg = load_config(
        path, ["lora.rank=16", "lora.targets=[attention,output]", "lora.use_dora=true"]
    )
    assert cfg.model.path == "/models/sao"
    assert cfg.lora.rank == 16 and cfg.lora.targets == ["attention", "output"] and cfg.lora.use_dora


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lora.rnak=4"], r"unknown key 'lora.rnak'; allowed keys in lora: rank, alpha"),
        (["lroa.rank=4"], r"unknown key 'lroa'; allowed keys: model, lora"),
        (["lora.rank=four"], r"lora.rank"),
        (["lora.rank=0"], r"lora.rank: must be >= 1"),
        (["lora.dropout=1.5"], r"lora.dropout"),
        (["lora.targets=[attention,mlp]"], r"unknown group\(s\) \['mlp'\]"),
        (["model.family=musicldm"], r"model.family: 'musicldm' is not one of"),
        (["lora.exclude=['(']"], r"bad regex"),
        (["lora.rank"], r"expected key=value"),
    ],
)
def test_bad_overrides_are_rejected(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  famliy: stable-audio\n")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml: unknown key 'model.famliy'; allowed keys in model: family, path, dtype",
    ):
        load_config(path)


def test_tiny_configs_load() -> None:
    configs = sorted((REPO / "configs" / "tiny").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg.model.path == f"tiny:{cfg.model.family}" and path.stem == cfg.model.family
