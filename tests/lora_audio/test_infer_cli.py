"""`lora-audio infer` end to end on the tiny Stable Audio model (output is noise, not music)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lora_audio import adapters
from lora_audio.cli import main
from lora_audio.config import LoraSection
from lora_audio.generation import TINY_NOTE
from lora_audio.testing import fresh, train_one_step

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "stable-audio.yaml"
FAST = ["--seconds", "0.5", "--steps", "4", "--guidance", "3"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """``(root, [styleA, styleB])`` with ``tiny:`` models cached under ``root``."""
    root = tmp_path_factory.mktemp("infer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_AUDIO_CACHE", str(root / "cache"))
        folders = []
        for i, name in enumerate(("styleA", "styleB")):
            model = fresh("stable-audio", "tiny:stable-audio")
            lora = LoraSection(rank=4, alpha=8, dropout=0.0)
            train_one_step(model, lora, seed=30 + i, lr=0.2)
            adapters.save_adapter(model, root / name, lora)
            folders.append(root / name)
        yield root, folders


def _infer(*args: str) -> int:
    return main(["infer", "--config", str(CONFIG), *FAST, *args])


def _wav(path: Path) -> np.ndarray:
    data, _ = sf.read(path, always_2d=True, dtype="float32")
    return data


def test_compare_end_to_end(env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, (a, _) = env
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\ncalm piano\n\nfast drums\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = _infer(
        "--lora", f"{a}:0.8", "--prompts", str(prompts), "--seed", "3", "-n", "2",
        "--compare", "-o", str(out),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    expected = sorted(f"p{p:03d}_s{s}.{e}" for p in (0, 1) for s in (3, 4) for e in ("wav", "json"))
    assert sorted(x.name for x in (out / "base").iterdir()) == expected
    assert sorted(x.name for x in (out / "styleA").iterdir()) == expected
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["note"] == TINY_NOTE and len(index["files"]) == 8
    assert {(f["system"], f["prompt"], f["seed"]) for f in index["files"]} == {
        (s, p, seed)
        for s in ("base", "styleA")
        for p in ("calm piano", "fast drums")
        for seed in (3, 4)
    }
    side = json.loads((out / "styleA" / "p001_s4.json").read_text())
    assert side["prompt"] == "fast drums" and side["seed"] == 4 and side["system"] == "styleA"
    assert side["adapters"][0]["scale"] == 0.8 and side["base_model"] == "tiny:stable-audio"
    assert not np.allclose(_wav(out / "base" / "p000_s3.wav"), _wav(out / "styleA" / "p000_s3.wav"))
    assert "noise, not music" in captured.out and "noise, not music" in captured.err
    assert "wrote 8 files" in captured.out


def test_base_only_writes_into_the_folder_and_fuse_matches(env, tmp_path: Path) -> None:
    _, (a, b) = env
    assert _infer("--prompt", "calm piano", "-o", str(tmp_path / "base")) == 0
    assert sorted(x.name for x in (tmp_path / "base").iterdir()) == [
        "index.json",
        "p000_s0.json",
        "p000_s0.wav",
    ]
    assert json.loads((tmp_path / "base" / "p000_s0.json").read_text())["system"] == "base"
    two = ["--lora", f"{a}:0.5", "--lora", f"{b}:0.5", "--prompt", "calm piano"]
    assert _infer(*two, "-o", str(tmp_path / "unfused")) == 0
    assert _infer(*two, "--fuse", "-o", str(tmp_path / "fused")) == 0
    side = json.loads((tmp_path / "fused" / "p000_s0.json").read_text())
    assert side["system"] == "styleA+styleB" and side["fused"] is True
    x, y = _wav(tmp_path / "unfused" / "p000_s0.wav"), _wav(tmp_path / "fused" / "p000_s0.wav")
    np.testing.assert_allclose(y, x, atol=1e-3 * np.abs(x).max() + 1e-6, rtol=0)


def test_bad_input_one_line_and_nothing_written(
    env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a, _) = env
    other = tmp_path / "other"
    shutil.copytree(a, other)
    info = json.loads((other / "adapter.json").read_text())
    info["family"] = "audioldm2"
    (other / "adapter.json").write_text(json.dumps(info))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n", encoding="utf-8")
    cases = [
        (["--lora", str(other), "--prompt", "x"], "adapter is for audioldm2"),
        (["--lora", str(tmp_path / "missing"), "--prompt", "x"], "no such adapter folder"),
        (["--prompts", str(empty)], "no prompts in it"),
        (["--prompts", str(tmp_path / "nofile.txt")], "no such prompts file"),
        (["--lora", f"{a}:7", "--prompt", "x"], "outside"),
        (["--compare", "--prompt", "x"], "--compare needs"),
        (["--prompt", "x", "--seconds", "99"], "longer than this model allows"),
        (["--prompt", "x", "model.rank=3"], "unknown key"),
    ]
    out = tmp_path / "out"
    for args, message in cases:
        capsys.readouterr()
        assert _infer("-q", *args, "-o", str(out)) == 1, args
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and message in err[0], (args, err)
        assert not out.exists(), args


def test_existing_files_need_overwrite(
    env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _infer("--prompt", "calm piano", "-n", "2", "-o", str(out)) == 0
    (out / "p000_s1.wav").write_bytes(b"keep me")
    before = (out / "p000_s0.wav").read_bytes()
    capsys.readouterr()
    assert _infer("--prompt", "calm piano", "--seed", "1", "-o", str(out)) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "p000_s1.wav").read_bytes() == b"keep me"
    assert (out / "p000_s0.wav").read_bytes() == before
    assert _infer("--prompt", "calm piano", "--seed", "1", "-o", str(out), "--overwrite") == 0
    assert sf.info(out / "p000_s1.wav").channels == 2
    assert [f["seed"] for f in json.loads((out / "index.json").read_text())["files"]] == [1]
