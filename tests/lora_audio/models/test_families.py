"""Every family end to end on its tiny model: codecs, objective, LoRA, adapter files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lora_audio import adapters
from lora_audio.config import TARGET_GROUPS, LoraSection
from lora_audio.models import ModelLoadError, load_model
from lora_audio.testing import fake_batch, fresh, train_one_step


def _probe(model, seed: int = 3):
    """A fixed denoiser input: (noisy, timesteps, conditioning)."""
    latents, cond = fake_batch(model, seed=seed)
    inputs = model.sample_training_inputs(latents, torch.Generator().manual_seed(seed))
    return inputs.noisy, inputs.timesteps, cond


def _out(model, probe) -> torch.Tensor:
    with torch.no_grad():
        return model.predict(*probe)


def test_codec_shapes_and_conditioning(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)
    seconds = 0.5
    audio = torch.zeros(2, model.audio_channels, int(seconds * model.sample_rate))
    with torch.no_grad():
        latents = model.encode_audio(audio)
        assert tuple(latents.shape[1:]) == model.latent_shape(seconds)
        decoded = model.decode_latents(latents)
    assert decoded.shape[:2] == (2, model.audio_channels)
    assert decoded.shape[-1] >= audio.shape[-1]
    cond = model.encode_prompt(["calm piano", "loud drums"], [seconds, seconds])
    assert cond and all(t.shape[0] == 2 for t in cond.values())


def test_masked_loss_ignores_padding(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)
    latents, cond = fake_batch(model)
    frames = latents.shape[model.frame_axis]
    mask = torch.ones(latents.shape[0], frames)
    mask[:, frames // 2 :] = 0
    garbage = latents.clone()
    garbage.narrow(model.frame_axis, frames // 2, frames - frames // 2).fill_(100.0)
    t = torch.full((latents.shape[0],), 0.0)  # t = 0: the noisy input is the clean latent
    with torch.no_grad():
        a = model.training_loss(latents, cond, mask, torch.Generator().manual_seed(0), t)
        b = model.training_loss(garbage, cond, mask, torch.Generator().manual_seed(0), t)
        c = model.training_loss(garbage, cond, None, torch.Generator().manual_seed(0), t)
        inputs = model.sample_training_inputs(garbage, torch.Generator().manual_seed(0), t)
        err = (model.predict(inputs.noisy, inputs.timesteps, cond) - inputs.target) ** 2
    assert torch.isfinite(a)
    # the masked loss is exactly the mean error over the valid frames, the unmasked one the
    # mean over all frames, and the padded garbage makes them differ
    torch.testing.assert_close(b, err.narrow(model.frame_axis, 0, frames // 2).mean())
    torch.testing.assert_close(c, err.mean())
    assert not torch.isclose(b, c)


def test_every_group_matches_and_only_lora_trains(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)
    for group in TARGET_GROUPS:
        names = adapters.target_modules(model, LoraSection(targets=[group]))
        assert names, group
    lora = LoraSection(targets=["attention", "time_mlp"], exclude=[r".*\.to_v"])
    before = train_one_step(model, lora, seed=0)
    patterns = [model.target_groups[g] for g in lora.targets]
    after = model.denoiser.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "the optimizer step changed nothing"
    for name, p in model.denoiser.named_parameters():
        if p.requires_grad:
            assert ".lora_" in name
            module = name.split(".lora_")[0]
            assert any(re.fullmatch(pat, module) for pat in patterns), name
            assert not module.endswith(".to_v")
    for key in changed:
        assert ".lora_" in key, f"a base weight changed: {key}"


def test_save_load_roundtrip_strengths_and_fuse(
    family: str, tiny_dir: Path, trained_adapters
) -> None:
    probe = _probe(fresh(family, tiny_dir))
    base = _out(fresh(family, tiny_dir), probe)

    model = fresh(family, tiny_dir)
    name = adapters.load_adapter(model, trained_adapters[0])
    adapters.set_strengths(model, {name: 1.0})
    loaded = _out(model, probe)
    assert (loaded - base).abs().max() > 1e-4, "loading the adapter did not change the output"

    adapters.set_strengths(model, {name: 0.0})
    torch.testing.assert_close(_out(model, probe), base, atol=1e-6, rtol=0)

    adapters.set_strengths(model, {name: 1.0})
    adapters.fuse_adapters(model)
    torch.testing.assert_close(_out(model, probe), loaded, atol=1e-5, rtol=1e-4)
    adapters.unfuse_adapters(model)
    torch.testing.assert_close(_out(model, probe), loaded, atol=1e-5, rtol=1e-4)


def test_saved_adapter_reproduces_trained_model(
    family: str, tiny_dir: Path, tmp_path: Path
) -> None:
    model = fresh(family, tiny_dir)
    lora = LoraSection(rank=4, alpha=16, dropout=0.1)  # scale 4 must be baked into the file
    train_one_step(model, lora, seed=5)
    probe = _probe(model)
    trained = _out(model, probe)
    info = adapters.save_adapter(model, tmp_path / "a", lora, training_config={"lr": 0.05})
    assert info.scale_baked == 4.0 and info.rank == 4 and info.alpha == 16

    again = fresh(family, tiny_dir)
    name = adapters.load_adapter(again, tmp_path / "a")
    adapters.set_strengths(again, {name: 1.0})
    torch.testing.assert_close(_out(again, probe), trained, atol=1e-6, rtol=1e-5)

    saved = json.loads((tmp_path / "a" / "adapter.json").read_text())
    assert saved["family"] == family and saved["training_config"] == {"lr": 0.05}
    with pytest.raises(adapters.AdapterError, match="already"):
        adapters.save_adapter(model, tmp_path / "a", lora)


def test_merge_matches_both_at_half(
    family: str, tiny_dir: Path, trained_adapters, tmp_path: Path
) -> None:
    a, b = trained_adapters
    probe = _probe(fresh(family, tiny_dir))
    both = fresh(family, tiny_dir)
    adapters.load_adapters(both, [(a, 0.5), (b, 0.5)])
    expected = _out(both, probe)

    report = adapters.merge_adapters([(a, 0.5), (b, 0.5)], tmp_path / "exact")
    assert report.relative_error == 0.0
    merged = fresh(family, tiny_dir)
    adapters.load_adapters(merged, [(tmp_path / "exact", 1.0)])
    torch.testing.assert_close(_out(merged, probe), expected, atol=1e-5, rtol=1e-4)

    # SVD to the full rank is lossless; to rank 1 it is not, and says so
    full = adapters.merge_adapters([(a, 0.5), (b, 0.5)], tmp_path / "svd8", rank=8)
    assert full.relative_error < 1e-5
    low = adapters.merge_adapters([(a, 0.5), (b, 0.5)], tmp_path / "svd1", rank=1)
    assert 0.0 < low.relative_error < 1.0
    assert json.loads((tmp_path / "svd1" / "adapter.json").read_text())["rank"] == 1

    adapters.merge_into_base(fresh(family, tiny_dir), [(a, 0.5), (b, 0.5)], tmp_path / "fused")
    fused = load_model(family, tmp_path / "fused")
    torch.testing.assert_close(_out(fused, probe), expected, atol=1e-5, rtol=1e-4)


def test_load_refuses_other_base_or_family(
    family: str, tiny_dir: Path, trained_adapters, tmp_path: Path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_adapters[0], bad)
    info = json.loads((bad / "adapter.json").read_text())
    info["base_fingerprint"] = "0" * 64
    (bad / "adapter.json").write_text(json.dumps(info))
    with pytest.raises(adapters.AdapterError, match="allow-base-mismatch"):
        adapters.load_adapter(fresh(family, tiny_dir), bad)
    adapters.load_adapter(fresh(family, tiny_dir), bad, allow_base_mismatch=True)

    info["family"] = "not-" + family
    (bad / "adapter.json").write_text(json.dumps(info))
    with pytest.raises(adapters.AdapterError, match="adapter is for"):
        adapters.load_adapter(fresh(family, tiny_dir), bad)

    (bad / "pytorch_lora_weights.safetensors").write_bytes(b"corrupt")
    with pytest.raises(adapters.AdapterError, match="sha256"):
        adapters.load_adapter(fresh(family, tiny_dir), bad)


def test_generate_runs_the_pipeline(family: str, tiny_dir: Path, trained_adapters) -> None:
    model = fresh(family, tiny_dir)
    steps_seen = []
    audio = model.generate(
        "calm piano",
        seconds=0.5,
        steps=2,
        guidance=3.0,
        seed=1,
        progress=lambda i, n: steps_seen.append((i, n)),
    )
    assert audio.ndim == 3 and audio.shape[:2] == (1, model.audio_channels)
    assert abs(audio.shape[-1] - 0.5 * model.sample_rate) <= model.sample_rate * 0.05
    assert torch.isfinite(audio).all() and steps_seen
    again = model.generate("calm piano", seconds=0.5, steps=2, guidance=3.0, seed=1)
    torch.testing.assert_close(audio, again)
    adapters.load_adapters(model, [(trained_adapters[0], 1.0)])
    styled = model.generate("calm piano", seconds=0.5, steps=2, guidance=3.0, seed=1)
    assert not torch.allclose(styled, audio)


#: the conditioning entry each family's denoiser receives as ``encoder_hidden_states``
CROSS_ATTENTION_KEY = {"audioldm2": "generated_prompt_embeds"}


def test_unconditional_is_what_guidance_feeds_the_denoiser(family: str, tiny_dir: Path) -> None:
    """``unconditional`` (caption dropout's stand-in) equals the branch the family's own
    pipeline runs for classifier-free guidance; the other branch is ``encode_prompt``."""
    model = fresh(family, tiny_dir)
    seen = []
    hook = model.denoiser.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["encoder_hidden_states"].detach().clone()),
        with_kwargs=True,
    )
    try:
        model.generate("calm piano", seconds=0.5, steps=2, guidance=3.0, seed=1)
    finally:
        hook.remove()
    key = CROSS_ATTENTION_KEY.get(family, "encoder_hidden_states")
    with torch.no_grad():
        cond = model.encode_prompt(["calm piano"], [0.5])
        null = model.unconditional(cond, [0.5])
    assert set(null) == set(cond)
    assert all(null[k].shape == cond[k].shape for k in cond)
    assert not torch.equal(null[key], cond[key])
    halves = seen[0].chunk(2)  # the guided call: unconditional and conditional items
    assert any(torch.allclose(h, null[key].to(h), atol=1e-5) for h in halves)
    assert any(torch.allclose(h, cond[key].to(h), atol=1e-5) for h in halves)
    with torch.no_grad():  # and the denoiser takes it
        noisy, t, _ = _probe(model)
        out = model.predict(noisy[:1], t[:1], null)
    assert out.shape == noisy[:1].shape and torch.isfinite(out).all()


def test_missing_folder_names_the_layout(family: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load_model(family, tmp_path / "empty")


def test_files_load_with_plain_diffusers(family: str, tiny_dir: Path, trained_adapters) -> None:
    """diffusers reads the folder itself (weights file + header metadata) and agrees with us."""
    probe = _probe(fresh(family, tiny_dir))
    ours = fresh(family, tiny_dir)
    adapters.load_adapters(ours, [(trained_adapters[0], 1.0)])

    model = fresh(family, tiny_dir)  # its denoiser carries diffusers' PeftAdapterMixin
    model.denoiser.load_lora_adapter(
        str(trained_adapters[0]),
        weight_name="pytorch_lora_weights.safetensors",
        prefix=model.denoiser_name,
        adapter_name="style",
    )
    model.denoiser.set_adapters(["style"], [1.0])
    torch.testing.assert_close(_out(model, probe), _out(ours, probe), atol=1e-6, rtol=1e-5)
