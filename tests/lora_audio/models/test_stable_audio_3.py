"""Stable Audio 3 specifics: the objective matches the pipeline's sampler and its inputs."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableAudio3Pipeline
from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3 import logsnr_sigma_schedule

from lora_audio.models.stable_audio_3 import (
    LOGSNR_MAX,
    LOGSNR_MIN,
    flow_matching_inputs,
    logsnr_uniform_sigmas,
)
from lora_audio.testing import fake_batch, fresh, tiny_model_dir

FAMILY = "stable-audio-3"


@pytest.fixture(scope="module")
def sa3_dir(tiny_root: Path) -> Path:
    return tiny_model_dir(FAMILY, tiny_root)


def test_logsnr_range_is_the_pipelines_default() -> None:
    params = inspect.signature(StableAudio3Pipeline.__call__).parameters
    assert params["logsnr_min"].default == LOGSNR_MIN
    assert params["logsnr_max"].default == LOGSNR_MAX


def test_training_sigmas_follow_the_sampling_schedule() -> None:
    # the pipeline's N-step schedule is this map on a uniform grid (its first value is forced to 1)
    n = 8
    grid = 1.0 - torch.arange(n, dtype=torch.float32) / n  # t = 1, 7/8, ..., 1/8
    ours = logsnr_uniform_sigmas(grid, LOGSNR_MIN, LOGSNR_MAX)
    theirs = torch.tensor(logsnr_sigma_schedule(n, LOGSNR_MIN, LOGSNR_MAX))
    torch.testing.assert_close(ours[1:], theirs[1:])
    lo, hi = 1 / (1 + math.exp(LOGSNR_MAX)), 1 / (1 + math.exp(LOGSNR_MIN))
    sigmas = logsnr_uniform_sigmas(
        torch.rand(1000, generator=torch.Generator().manual_seed(0)), LOGSNR_MIN, LOGSNR_MAX
    )
    assert lo <= sigmas.min() and sigmas.max() <= hi


def test_flow_matching_inputs_endpoints() -> None:
    x0, noise = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    noisy, v = flow_matching_inputs(x0, noise, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(noisy[0], x0[0])
    torch.testing.assert_close(noisy[1], noise[1])
    torch.testing.assert_close(v, noise - x0)


@pytest.mark.parametrize("num_train_timesteps", [1, 1000])
@pytest.mark.parametrize("stochastic", [False, True])
def test_exact_velocity_steps_the_scheduler_onto_the_clean_path(
    sa3_dir: Path, num_train_timesteps: int, stochastic: bool
) -> None:
    """A denoiser that predicts our target exactly makes the pipeline's scheduler land on x0's path.

    This pins both the parameterisation (x_s = (1-s) x0 + s noise, v = noise - x0) and the
    timestep unit: the scheduler's timesteps (what the pipeline feeds the DiT) are ours.
    """
    model = fresh(FAMILY, sa3_dir)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        model.pipe.scheduler.config,
        num_train_timesteps=num_train_timesteps,
        stochastic_sampling=stochastic,
    )
    model.pipe.scheduler = scheduler
    scheduler.set_timesteps(sigmas=logsnr_sigma_schedule(4, LOGSNR_MIN, LOGSNR_MAX))
    x0 = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(scheduler.timesteps):
        inputs = model.sample_training_inputs(
            x0, torch.Generator().manual_seed(i), timesteps=t.expand(2)
        )
        sigma, sigma_next = scheduler.sigmas[i], scheduler.sigmas[i + 1]
        torch.testing.assert_close(inputs.timesteps / num_train_timesteps, sigma.expand(2))
        noise = (inputs.noisy - (1 - sigma) * x0) / sigma
        torch.testing.assert_close(inputs.target, noise - x0, atol=1e-5, rtol=1e-5)
        step = scheduler.step(
            inputs.target, t, inputs.noisy, generator=torch.Generator().manual_seed(9)
        )
        # what remains of x0 in the next sample is exactly (1 - sigma_next) x0
        if stochastic:  # re-noised with fresh noise: x0 recovered, then mixed at sigma_next
            fresh_noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
            expected = (1 - sigma_next) * x0 + sigma_next * fresh_noise
        else:
            expected = (1 - sigma_next) * x0 + sigma_next * noise
        torch.testing.assert_close(step.prev_sample, expected, atol=1e-5, rtol=1e-5)


def test_conditioning_and_prediction_match_the_pipeline(sa3_dir: Path) -> None:
    """Our encode_prompt + predict reproduce the DiT call the pipeline itself makes."""
    model = fresh(FAMILY, sa3_dir)
    calls: list[tuple[tuple, dict, torch.Tensor]] = []

    def hook(_module, args, kwargs, output):
        calls.append((args, kwargs, output[0]))

    handle = model.denoiser.register_forward_hook(hook, with_kwargs=True)
    model.generate("calm piano", seconds=0.5, steps=2, guidance=1.0, seed=4)
    handle.remove()
    assert len(calls) == 2
    (latents, t), kwargs, velocity = calls[0]
    assert t.tolist() == [1.0]  # first step at sigma = 1, in the DiT's unit

    cond = model.encode_prompt(["calm piano"], [0.5])
    torch.testing.assert_close(cond["encoder_hidden_states"], kwargs["encoder_hidden_states"])
    torch.testing.assert_close(cond["global_hidden_states"], kwargs["global_hidden_states"])
    assert torch.equal(cond["encoder_attention_mask"], kwargs["encoder_attention_mask"].long())
    assert tuple(latents.shape[1:]) == model.latent_shape(0.5)
    with torch.no_grad():
        ours = model.predict(latents, t, cond)
    torch.testing.assert_close(ours, velocity)


def test_duration_is_conditioning(sa3_dir: Path) -> None:
    model = fresh(FAMILY, sa3_dir)
    latents, cond = fake_batch(model, batch=1)
    with torch.no_grad():
        other = model.encode_prompt(["calm piano"], [8.0])
        t = torch.tensor([0.5])
        a = model.predict(latents, t, cond)
        b = model.predict(latents, t, other)
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="2 durations"):
        model.encode_prompt(["calm piano"], [1.0, 2.0])
