"""ACE-Step specifics on the tiny model: sampler parity, padding mask, lyrics, plain diffusers LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AceStepPipeline

from lora_audio import adapters
from lora_audio.config import LoraSection
from lora_audio.models.ace_step import shift_timesteps
from lora_audio.testing import fake_batch, fresh

ACE = pytest.mark.parametrize("family", ["ace-step"], indirect=True)


@ACE
def test_predict_reproduces_the_pipeline_sampler(family: str, tiny_dir: Path) -> None:
    """Two Euler steps of AceStepPipeline (shift 3: t = 1, 0.75) redone with predict()."""
    model = fresh(family, tiny_dir)
    seconds = 0.5
    frames, channels = model.latent_shape(seconds)
    noise = torch.randn(1, frames, channels, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.pipe(
            "calm piano",
            audio_duration=seconds,
            num_inference_steps=2,
            guidance_scale=1.0,
            latents=noise,
            output_type="latent",
        ).audios
        cond = model.encode_prompt(["calm piano"], [seconds])
        x = noise
        for t, t_next in ((1.0, 0.75), (0.75, 0.0)):
            v = model.predict(x, torch.tensor([t]), cond)
            x = x + (t_next - t) * v
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_perfect_velocity_lands_on_clean_latents() -> None:
    from lora_audio.models.ace_step import AceStepModel

    latents = torch.randn(4, 6, 3)
    model = AceStepModel.__new__(AceStepModel)  # the objective needs no weights
    inputs = model.sample_training_inputs(latents, torch.Generator().manual_seed(0))
    t = inputs.timesteps.view(-1, 1, 1)
    assert ((inputs.timesteps >= 0) & (inputs.timesteps <= 1)).all()
    torch.testing.assert_close(inputs.noisy - t * inputs.target, latents)  # Euler to t = 0
    u = torch.linspace(0, 1, 5)
    torch.testing.assert_close(shift_timesteps(u), torch.tensor([0, 0.5, 0.75, 0.9, 1.0]))


@ACE
def test_padded_batch_matches_each_item_alone(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)
    prompts = ["calm piano", "fast loud drums with warm bass and a dark synth melody"]
    latents, _ = fake_batch(model)
    inputs = model.sample_training_inputs(latents, torch.Generator().manual_seed(1))
    with torch.no_grad():
        cond = model.encode_prompt(prompts, [0.5, 0.5])
        mask = cond["encoder_attention_mask"]
        assert mask[0].sum() < mask[1].sum() == mask.shape[1]  # the short prompt is padded
        batched = model.predict(inputs.noisy, inputs.timesteps, cond)
        for i, prompt in enumerate(prompts):
            alone = model.predict(
                inputs.noisy[i : i + 1],
                inputs.timesteps[i : i + 1],
                model.encode_prompt([prompt], [0.5]),
            )
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-5)
        unmasked = {"encoder_hidden_states": cond["encoder_hidden_states"]}
        leaky = model.predict(inputs.noisy, inputs.timesteps, unmasked)
    assert (leaky[0] - batched[0]).abs().max() > 1e-4, "padding should matter without the mask"


@ACE
def test_lyrics_condition_and_default_to_instrumental(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)
    with torch.no_grad():
        default = model.encode_prompt(["calm piano"], [0.5])
        empty = model.encode_prompt(["calm piano"], [0.5], lyrics=[""])
        sung = model.encode_prompt(["calm piano"], [0.5], lyrics=["[verse] a slow song"])
    torch.testing.assert_close(default, empty)
    assert sung["encoder_hidden_states"].shape[1] > default["encoder_hidden_states"].shape[1]
    with pytest.raises(ValueError, match="one of each per item"):
        model.encode_prompt(["calm piano", "jazz"], [0.5, 0.5], lyrics=["la"])
    with pytest.raises(ValueError, match="no negative prompt"):
        model.generate("calm piano", negative_prompt="noise", seconds=0.5, steps=1)


@ACE
def test_target_groups_map_to_ace_step_modules(family: str, tiny_dir: Path) -> None:
    model = fresh(family, tiny_dir)

    def names(group: str) -> list[str]:
        return adapters.target_modules(model, LoraSection(targets=[group]))

    assert len(names("attention")) == 2 * 2 * 4  # 2 blocks x (self, cross) x (q, k, v, out)
    assert names("time_mlp") == [f"time_embed.{n}" for n in ("linear_1", "linear_2", "time_proj")]
    assert names("output") == ["layers.1.mlp.down_proj"]  # the last block's


@ACE
def test_pipeline_load_lora_weights_reads_our_folder(
    family: str, tiny_dir: Path, trained_adapters
) -> None:
    """Plain ``pipe.load_lora_weights(folder)`` gives exactly what our loader gives."""
    kwargs = {"seconds": 0.5, "steps": 2, "guidance": 3.0, "seed": 4}
    base = fresh(family, tiny_dir).generate("calm piano", **kwargs)

    ours = fresh(family, tiny_dir)
    adapters.load_adapters(ours, [(trained_adapters[0], 1.0)])
    styled = ours.generate("calm piano", **kwargs)
    assert (styled - base).abs().max() > 1e-4, "the adapter did not change the output"

    pipe = AceStepPipeline.from_pretrained(str(tiny_dir))  # no lora-audio code from here on
    pipe.load_lora_weights(str(trained_adapters[0]))
    plain = pipe(
        "calm piano",
        audio_duration=0.5,
        num_inference_steps=2,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(4),
    ).audios
    torch.testing.assert_close(plain, styled)
