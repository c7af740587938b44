"""Session-scoped tiny models and adapters for every registered family."""

from __future__ import annotations

from pathlib import Path

import pytest

from lora_audio import adapters
from lora_audio.config import LoraSection
from lora_audio.models import FAMILIES
from lora_audio.testing import TINY_BUILDERS, fresh, tiny_model_dir, train_one_step

TINY_FAMILIES = [f for f in FAMILIES if f in TINY_BUILDERS]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session", params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_dir(family: str, tiny_root: Path) -> Path:
    return tiny_model_dir(family, tiny_root)


@pytest.fixture(scope="session")
def trained_adapters(
    family: str, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Two different adapters (one optimizer step each, different seeds and groups)."""
    out = []
    for i, targets in enumerate((["attention", "time_mlp"], ["attention", "output"])):
        model = fresh(family, tiny_dir)
        lora = LoraSection(rank=4, alpha=8, dropout=0.0, targets=targets)
        train_one_step(model, lora, seed=10 + i)
        folder = tmp_path_factory.mktemp(f"{family}-adapter{i}")
        adapters.save_adapter(model, folder, lora, overwrite=True)
        out.append(folder)
    return out
