"""`lora_audio.generate`: plans, systems, seeds, adapters, fusing, result files (tiny models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import lora_audio
from lora_audio import adapters
from lora_audio.config import LoraSection
from lora_audio.generation import (
    TINY_NOTE,
    GenerationError,
    check_outputs,
    make_plan,
    run_plan,
    write_results,
)
from lora_audio.models import FAMILIES
from lora_audio.models.stable_audio import StableAudioModel
from lora_audio.testing import TINY_BUILDERS, fresh, tiny_model_dir, train_one_step

TINY_FAMILIES = [f for f in FAMILIES if f in TINY_BUILDERS]
FAST = {"seconds": 0.5, "steps": 4, "guidance": 3.0}


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory):
    """A temporary ``$LORA_AUDIO_CACHE``, so ``tiny:<family>`` models are built there."""
    root = tmp_path_factory.mktemp("gen")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_AUDIO_CACHE", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def trained(tiny_cache: Path):
    """``trained(family)`` -> [styleA, styleB]: two adapters, one optimizer step each (cached)."""
    cache: dict[str, list[Path]] = {}

    def get(family: str) -> list[Path]:
        if family not in cache:
            cache[family] = _train_two(family, tiny_cache / family)
        return cache[family]

    return get


def _train_two(family: str, root: Path) -> list[Path]:
    out = []
    for i, (name, targets) in enumerate(
        (("styleA", ["attention", "time_mlp"]), ("styleB", ["attention", "output"]))
    ):
        model = fresh(family, f"tiny:{family}")
        lora = LoraSection(rank=4, alpha=8, dropout=0.0, targets=targets)
        train_one_step(model, lora, seed=20 + i, lr=0.2)
        adapters.save_adapter(model, root / name, lora)
        out.append(root / name)
    return out


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def setup(family: str, trained) -> list[Path]:
    return trained(family)


@pytest.fixture(scope="module")
def model(family: str, tiny_cache: Path):
    return fresh(family, f"tiny:{family}")


@pytest.fixture(scope="module")
def sa(trained) -> list[Path]:
    """Stable Audio's adapters (the tests not repeated for every family use it)."""
    return trained("stable-audio")


@pytest.fixture(scope="module")
def sa_model(tiny_cache: Path):
    return fresh("stable-audio", "tiny:stable-audio")


def _audio(results, system: str) -> list[np.ndarray]:
    return [r.audio for r in results if r.system == system]


def _close(x: np.ndarray, y: np.ndarray, rel: float) -> None:
    """``|x - y| <= rel * max|y|`` everywhere (tiny models' outputs differ in scale a lot)."""
    scale = float(np.abs(y).max())
    assert scale > 0
    np.testing.assert_allclose(x, y, atol=rel * scale, rtol=0)


def _differs(x: np.ndarray, y: np.ndarray) -> bool:
    return float(np.abs(x - y).max()) > 1e-2 * float(np.abs(y).max())


def test_same_seed_same_audio_different_seeds_differ(model) -> None:
    a = lora_audio.generate(model, "calm piano", seeds=[0, 1], **FAST)
    b = lora_audio.generate(model, ["calm piano"], seeds=[1], **FAST)
    assert [r.seed for r in a] == [0, 1] and a[0].audio.ndim == 2
    assert a[0].audio.shape[0] == model.audio_channels
    np.testing.assert_array_equal(a[1].audio, b[0].audio)
    assert _differs(a[0].audio, a[1].audio)


def test_scale_zero_is_base_and_scale_one_is_not(model, setup) -> None:
    a, _ = setup
    base = lora_audio.generate(model, "calm piano", seeds=[3], **FAST)[0].audio
    zero = lora_audio.generate(model, "calm piano", [(a, 0.0)], seeds=[3], **FAST)[0].audio
    one = lora_audio.generate(model, "calm piano", [(a, 1.0)], seeds=[3], **FAST)[0].audio
    _close(zero, base, 1e-4)
    assert _differs(one, base)


def test_compare_pairs_share_seeds_and_base_matches_plain_base(model, setup) -> None:
    a, _ = setup
    results = lora_audio.generate(
        model, ["calm piano", "fast drums"], [(a, 1.0)], seeds=[5, 6], compare=True, **FAST
    )
    keys = {
        s: [(r.prompt_index, r.seed) for r in results if r.system == s] for s in ("base", "styleA")
    }
    assert keys["base"] == keys["styleA"] == [(0, 5), (0, 6), (1, 5), (1, 6)]
    plain = lora_audio.generate(model, ["calm piano", "fast drums"], seeds=[5, 6], **FAST)
    for x, y in zip(_audio(results, "base"), [r.audio for r in plain], strict=True):
        _close(x, y, 1e-5)
    for x, y in zip(_audio(results, "base"), _audio(results, "styleA"), strict=True):
        assert _differs(x, y)
    meta = next(r.meta for r in results if r.system == "styleA")
    assert meta["adapters"][0]["name"] == "styleA" and meta["adapters"][0]["scale"] == 1.0
    assert meta["adapters"][0]["sha256"] == adapters.read_adapter(a)[0].weights_sha256


def test_fused_equals_unfused(model, setup) -> None:
    a, b = setup
    kw = {"seeds": [2], "compare": True, **FAST}
    unfused = lora_audio.generate(model, "warm bass", [(a, 0.7), (b, -0.5)], **kw)
    fused = lora_audio.generate(model, "warm bass", [(a, 0.7), (b, -0.5)], fuse=True, **kw)
    assert [r.meta["fused"] for r in fused] == [False, True]
    for x, y in zip(unfused, fused, strict=True):
        _close(y.audio, x.audio, 1e-3)


def test_fused_and_base_systems_run_without_lora_layers(sa_model, sa) -> None:
    """Fused adapters and the base system run no PEFT wrapper (cost what the base costs)."""
    from peft.tuners.lora import LoraLayer

    a, _ = sa
    seen: dict[bool, list[int]] = {}
    for fuse in (True, False):
        counts = seen.setdefault(fuse, [])
        lora_audio.generate(
            sa_model,
            "calm piano",
            [(a, 1.0)],
            compare=True,
            fuse=fuse,
            on_step=lambda _step, _total, counts=counts: counts.append(
                sum(isinstance(m, LoraLayer) for m in sa_model.denoiser.modules())
            ),
            **FAST,
        )
    # compare runs base then styleA: FAST["steps"] callbacks each
    steps = FAST["steps"]
    assert seen[True] == [0] * (2 * steps)
    assert seen[False][:steps] == [0] * steps and min(seen[False][steps:]) > 0
    assert not any(isinstance(m, LoraLayer) for m in sa_model.denoiser.modules())


def test_two_adapters_together_match_their_exact_merge(sa_model, sa, tmp_path: Path) -> None:
    model, (a, b) = sa_model, sa
    both = lora_audio.generate(model, "calm piano", [(a, 0.6), (b, 0.4)], seeds=[1], **FAST)[0]
    assert both.system == "styleA+styleB"
    assert [x["name"] for x in both.meta["adapters"]] == ["styleA", "styleB"]
    adapters.merge_adapters([(a, 0.6), (b, 0.4)], tmp_path / "merged")
    merged = lora_audio.generate(
        model, "calm piano", [(tmp_path / "merged", 1.0)], seeds=[1], **FAST
    )
    _close(both.audio, merged[0].audio, 1e-3)
    only_a = lora_audio.generate(model, "calm piano", [(a, 0.6)], seeds=[1], **FAST)[0]
    assert _differs(both.audio, only_a.audio)


def test_callers_model_and_its_training_adapter_are_left_as_they_were(sa) -> None:
    """The training sampler passes the model it trains: nothing about it may change."""
    a, _ = sa
    family, folder = "stable-audio", "tiny:stable-audio"
    model = fresh(family, folder)
    train_one_step(model, LoraSection(rank=2, alpha=2, dropout=0.1), seed=4)
    model.denoiser.train()
    state = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    grads = {n: p.requires_grad for n, p in model.denoiser.named_parameters()}
    own = lora_audio.generate(model, "calm piano", seeds=[0], compare=False, **FAST)[0]
    lora_audio.generate(model, "calm piano", [(a, 1.0)], seeds=[0], compare=True, fuse=True, **FAST)
    assert model.denoiser.training
    assert set(model.denoiser.peft_config) == {"default"}
    assert model.denoiser.active_adapters() == ["default"]
    after = model.denoiser.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k
    assert {n: p.requires_grad for n, p in model.denoiser.named_parameters()} == grads
    assert any(grads.values())
    # with no adapters asked for, the "base" system disables the caller's adapter too
    plain = lora_audio.generate(fresh(family, folder), "calm piano", seeds=[0], **FAST)[0]
    _close(own.audio, plain.audio, 1e-5)


def test_plan_refuses_bad_input_with_one_line(sa, tmp_path: Path) -> None:
    family, (a, _) = "stable-audio", sa
    other = tmp_path / "other-family"
    shutil.copytree(a, other)
    info = json.loads((other / "adapter.json").read_text())
    info["family"] = "audioldm2" if family != "audioldm2" else "stable-audio"
    (other / "adapter.json").write_text(json.dumps(info))
    cases = [
        ({"adapters": [(other, 1.0)]}, "adapter is for"),
        ({"adapters": [(tmp_path / "nope", 1.0)]}, "no such adapter folder"),
        ({"adapters": [(tmp_path, 1.0)]}, "not an adapter folder"),
        ({"adapters": [(a, 4.5)]}, "outside"),
        ({"adapters": [(a, float("nan"))]}, "outside"),
        ({"adapters": [(a, 1.0), (a, 0.5)]}, "twice"),
        ({"compare": True}, "--compare needs"),
        ({"prompts": []}, "no prompts"),
        ({"prompts": ["  "]}, "empty"),
        ({"seeds": []}, "no seeds"),
        ({"seconds": 0.0}, "seconds"),
        ({"steps": 0}, "steps"),
    ]
    for kwargs, match in cases:
        kwargs = {"prompts": ["calm piano"], **kwargs}
        with pytest.raises(GenerationError, match=match) as err:
            make_plan(kwargs.pop("prompts"), kwargs.pop("adapters", ()), family=family, **kwargs)
        assert "\n" not in str(err.value)
    make_plan(["x"], [(a, -4.0)], family=family)  # the bound itself is allowed
    named_base = tmp_path / "base"
    shutil.copytree(a, named_base)
    with pytest.raises(GenerationError, match="rename"):
        make_plan(["x"], [(named_base, 1.0)], compare=True)


def test_other_base_weights_fail_before_anything_is_written(sa_model, sa, tmp_path: Path) -> None:
    model, (a, _) = sa_model, sa
    moved = tmp_path / "otherbase"
    shutil.copytree(a, moved)
    info = json.loads((moved / "adapter.json").read_text())
    info["base_fingerprint"] = "0" * 64
    (moved / "adapter.json").write_text(json.dumps(info))
    plan = make_plan(["calm piano"], [(moved, 1.0)], seeds=[0], compare=True, **FAST)
    with pytest.raises(GenerationError, match="allow-base-mismatch"):
        write_results(tmp_path / "out", plan, run_plan(model, plan))
    assert not (tmp_path / "out").exists()
    assert not getattr(model.denoiser, "peft_config", None)  # the half-loaded adapter is gone


def test_write_results_layout_sidecars_and_index(sa_model, sa, tmp_path: Path) -> None:
    model, (a, b) = sa_model, sa
    plan = make_plan(
        ["calm piano", "fast drums"], [(a, 0.8), (b, 0.3)], seeds=[7, 8], compare=True, **FAST
    )
    out = tmp_path / "run"
    index_path = write_results(out, plan, run_plan(model, plan), audio_format="flac")
    names = {s: sorted(p.name for p in (out / s).iterdir()) for s in ("base", "styleA+styleB")}
    expected = sorted(
        f"p{p:03d}_s{s}.{e}" for p in (0, 1) for s in (7, 8) for e in ("flac", "json")
    )
    assert names["base"] == names["styleA+styleB"] == expected
    index = json.loads(index_path.read_text())
    assert index["complete"] is True and index["note"] == TINY_NOTE
    assert len(index["files"]) == 8 and index["family"] == model.family
    assert [s["name"] for s in index["systems"]] == ["base", "styleA+styleB"]
    for entry in index["files"]:
        side = json.loads((out / entry["sidecar"]).read_text())
        for key in (
            "prompt", "negative_prompt", "seed", "steps", "guidance", "seconds", "system",
            "adapters", "family", "base_model", "base_fingerprint", "sample_rate", "channels",
            "seconds_taken", "lora_audio_version",
        ):  # fmt: skip
            assert key in side, key
        assert (side["system"], side["seed"], side["prompt"]) == (
            entry["system"],
            entry["seed"],
            entry["prompt"],
        )
        assert side["note"] == TINY_NOTE and side["seconds_taken"] > 0
        data, sr = sf.read(out / entry["path"], always_2d=True)
        assert sr == model.sample_rate == side["sample_rate"]
        assert data.shape[1] == model.audio_channels == side["channels"]
        if entry["system"] != "base":
            assert [x["scale"] for x in side["adapters"]] == [0.8, 0.3]
            assert all(len(x["sha256"]) == 64 for x in side["adapters"])


def test_never_overwrites_unless_asked(sa_model, tmp_path: Path) -> None:
    model = sa_model
    plan = make_plan(["calm piano"], seeds=[0], **FAST)
    out = tmp_path / "run"
    write_results(out, plan, run_plan(model, plan))
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "p000_s0.json", "p000_s0.wav"]
    (out / "p000_s0.wav").write_bytes(b"mine")
    with pytest.raises(GenerationError, match=r"already exists.*--overwrite"):
        check_outputs(out, plan)
    with pytest.raises(GenerationError, match="already exists"):
        write_results(out, plan, run_plan(model, plan))
    assert (out / "p000_s0.wav").read_bytes() == b"mine"
    write_results(out, plan, run_plan(model, plan), overwrite=True)
    assert sf.info(out / "p000_s0.wav").samplerate == model.sample_rate


class _SeedListStableAudio(StableAudioModel):
    """Stable Audio taking one seed per batch item (the capability ``run_plan`` batches with)."""

    seed_lists = True

    def generate(self, prompt, negative_prompt=None, seconds=10.0, steps=100, guidance=7.0, seed=0, progress=None):  # fmt: skip
        seeds = seed if isinstance(seed, list) else [seed]
        gens = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        out = self.pipe(
            prompt,
            negative_prompt=negative_prompt,
            audio_end_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="pt",
        )
        return out.audios.float().cpu()


def test_batched_seeds_equal_one_at_a_time(tiny_cache: Path) -> None:
    folder = tiny_model_dir("stable-audio")
    model = _SeedListStableAudio.from_pretrained(folder)
    kw = {"seeds": [0, 1, 2], **FAST}
    single = lora_audio.generate(model, ["calm piano", "loud drums"], batch_size=1, **kw)
    batched = lora_audio.generate(model, ["calm piano", "loud drums"], batch_size=4, **kw)
    assert [r.meta["batch_size"] for r in batched] == [4, 4, 4, 4, 2, 2]
    assert [(r.prompt_index, r.seed) for r in batched] == [(r.prompt_index, r.seed) for r in single]
    for x, y in zip(single, batched, strict=True):
        _close(y.audio, x.audio, 1e-3)
