"""`lora-audio merge` and `lora-audio inspect` on the tiny Stable Audio model's adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lora_audio import adapters
from lora_audio.cli import main
from lora_audio.config import LoraSection
from lora_audio.models import load_model
from lora_audio.testing import tiny_model_dir


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("cli")
    base = tiny_model_dir("stable-audio", root / "cache")
    folders = []
    for i in range(2):
        model = load_model("stable-audio", base)
        adapters.inject_lora(model, LoraSection(rank=2, alpha=4, dropout=0.0))
        with torch.no_grad():
            g = torch.Generator().manual_seed(i)
            for name, p in model.denoiser.named_parameters():
                if ".lora_B." in name:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
        folders.append(root / f"a{i}")
        adapters.save_adapter(model, folders[-1], LoraSection(rank=2, alpha=4))
    return base, folders


def test_parse_adapter_spec() -> None:
    assert adapters.parse_adapter_spec("runs/a.lora:0.7") == ("runs/a.lora", 0.7)
    assert adapters.parse_adapter_spec("runs/a.lora") == ("runs/a.lora", 1.0)
    assert adapters.parse_adapter_spec("C:/x/a") == ("C:/x/a", 1.0)


def test_merge_and_inspect_cli(
    two_adapters, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a, b) = two_adapters
    assert main(["merge", f"{a}:0.7", f"{b}:0.3", "-o", str(tmp_path / "c"), "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "relative Frobenius error" in out and "rank 2" in out
    assert json.loads((tmp_path / "c" / "adapter.json").read_text())["rank"] == 2

    assert main(["inspect", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "stable-audio" in out and "transformer_blocks.0.attn1.to_q" in out
    # the exact merge's update norm equals ||0.7 dA + 0.3 dB|| for every module
    assert main(["merge", f"{a}:0.7", f"{b}:0.3", "-o", str(tmp_path / "exact")]) == 0
    norms = adapters.describe_adapter(tmp_path / "exact")["update_norms"]
    da = adapters.module_deltas(adapters.read_adapter(a)[1])
    db = adapters.module_deltas(adapters.read_adapter(b)[1])
    for module, norm in norms.items():
        expected = (
            0.7 * da[module][0] @ da[module][1] + 0.3 * db[module][0] @ db[module][1]
        ).norm()
        assert abs(norm - float(expected)) < 1e-5 * max(1.0, float(expected))


def test_merge_into_base_cli(two_adapters, tmp_path: Path) -> None:
    base, (a, _) = two_adapters
    out = tmp_path / "fused"
    assert main(["merge", f"{a}:1.0", "-o", str(out), "--into-base", "--model", str(base)]) == 0
    assert (out / "model_index.json").is_file()
    assert main(["merge", f"{a}:1.0", "-o", str(out), "--into-base", "--model", str(base)]) == 1


def test_inspect_refuses_non_adapter(tmp_path: Path) -> None:
    assert main(["inspect", str(tmp_path)]) == 1
