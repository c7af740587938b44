"""Every shipped config in configs/ loads, validates, and starts with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_audio.config import load_config
from lora_audio.models import FAMILIES

CONFIGS = Path(__file__).parents[3] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))


def test_there_is_a_config_per_family() -> None:
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert set(FAMILIES) <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_names_its_command(path: Path) -> None:
    cfg = load_config(path)
    rel = path.relative_to(CONFIGS.parent).as_posix()
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# lora-audio train --config {rel}"), first
    assert cfg.model.family == path.stem
    if path.parent == CONFIGS:  # real models: a hub id, and the memory it needs stated
        assert not cfg.model.path.startswith("tiny:")
        assert "GB" in path.read_text(encoding="utf-8").split("model:")[0]
    else:
        assert cfg.model.path == f"tiny:{cfg.model.family}"
        assert cfg.train.sample_every == 0  # no audio samples in tests
