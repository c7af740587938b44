"""AudioLDM 2 specifics: mel features, objective vs. the scheduler, conditioning vs. the pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_audio.models import load_model
from lora_audio.models.audioldm2 import AudioLDM2Model, MelSettings, log_mel_spectrogram
from lora_audio.testing import build_tiny_audioldm2, fake_batch, tiny_model_dir

FAMILY = "audioldm2"
#: AudioLDM 2's training features: 16 kHz, n_fft = win = 1024, hop 160, 64 bands, 0..8000 Hz
REAL_MEL = MelSettings(
    sample_rate=16000, n_fft=1024, hop_length=160, n_mels=64, fmin=0.0, fmax=8000.0
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(FAMILY, tmp_path_factory.mktemp("tiny-audioldm2"))


@pytest.fixture
def model(tiny_dir: Path) -> AudioLDM2Model:
    return load_model(FAMILY, tiny_dir)


def test_mel_settings_from_the_public_vocoder_config() -> None:
    from transformers import SpeechT5HifiGanConfig

    # the fields of cvssp/audioldm2's vocoder/config.json that the mel settings use
    config = SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_rates=[5, 4, 2, 2, 2]
    )
    assert MelSettings.from_vocoder(config) == REAL_MEL


def test_log_mel_matches_a_librosa_reference() -> None:
    import librosa

    t = np.arange(8000) / 16000
    audio = (0.4 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    ours = log_mel_spectrogram(torch.from_numpy(audio)[None], REAL_MEL, REAL_MEL.filterbank())[0]

    pad = (1024 - 160) // 2
    padded = np.pad(audio, pad, mode="reflect")
    mag = np.abs(librosa.stft(padded, n_fft=1024, hop_length=160, window="hann", center=False))
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmin=0, fmax=8000)
    reference = np.log(np.clip(basis @ mag, 1e-5, None)).T

    assert ours.shape == (8000 // 160, 64)
    np.testing.assert_allclose(ours.numpy(), reference, atol=2e-3)
    mel_of_1k = np.argmin(np.abs(librosa.mel_frequencies(66, fmax=8000)[1:-1] - 1000))
    assert abs(int(ours.mean(0).argmax()) - int(mel_of_1k)) <= 1


def test_encode_audio_pads_to_whole_latent_frames_and_wants_mono(model: AudioLDM2Model) -> None:
    samples = 3 * model.hop_length + 7
    with torch.no_grad():
        latents = model.encode_audio(torch.zeros(1, 1, samples))
    assert latents.shape[model.frame_axis] == 4
    assert tuple(latents.shape[1:]) == model.latent_shape(samples / model.sample_rate)
    # latents live in the pipeline's scaled space (it decodes latents / scaling_factor)
    audio = 0.1 * torch.randn(1, 1, samples, generator=torch.Generator().manual_seed(0))
    vae = model.pipe.vae
    with torch.no_grad():
        mean = vae.encode(model.mel_spectrogram(audio)).latent_dist.mean
        torch.testing.assert_close(model.encode_audio(audio), mean * vae.config.scaling_factor)
    with pytest.raises(ValueError, match="mono"):
        model.encode_audio(torch.zeros(1, 2, samples))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_objective_follows_the_scheduler(tiny_dir: Path, prediction_type: str) -> None:
    pipe = load_model(FAMILY, tiny_dir).pipe
    pipe.scheduler = type(pipe.scheduler).from_config(
        pipe.scheduler.config, prediction_type=prediction_type
    )
    model = AudioLDM2Model(pipe, str(tiny_dir), tiny_dir)
    assert model.objective == prediction_type
    latents = torch.randn(3, *model.latent_shape(0.5), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 500, 999])
    inputs = model.sample_training_inputs(latents, torch.Generator().manual_seed(1), t)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(inputs.noisy, pipe.scheduler.add_noise(latents, noise, t))
    expected = (
        noise if prediction_type == "epsilon" else pipe.scheduler.get_velocity(latents, noise, t)
    )
    torch.testing.assert_close(inputs.target, expected)
    assert torch.equal(inputs.timesteps, t)

    drawn = model.sample_training_inputs(latents, torch.Generator().manual_seed(2)).timesteps
    assert drawn.dtype == torch.long and drawn.min() >= 0 and drawn.max() < 1000


def test_masked_loss_counts_only_valid_frames(model: AudioLDM2Model) -> None:
    """Objective-agnostic version of the shared masking test (epsilon targets are pure noise,
    so padding cannot be seen through the target; check the masked mean itself)."""
    latents, cond = fake_batch(model)
    frames = latents.shape[model.frame_axis]
    mask = torch.ones(latents.shape[0], frames)
    mask[:, frames // 2 :] = 0
    garbage = latents.clone()
    garbage.narrow(model.frame_axis, frames // 2, frames - frames // 2).fill_(100.0)
    t = torch.zeros(latents.shape[0])
    with torch.no_grad():
        masked = model.training_loss(garbage, cond, mask, torch.Generator().manual_seed(0), t)
        full = model.training_loss(garbage, cond, None, torch.Generator().manual_seed(0), t)
        inputs = model.sample_training_inputs(garbage, torch.Generator().manual_seed(0), t)
        err = (model.predict(inputs.noisy, inputs.timesteps, cond) - inputs.target) ** 2
    valid = err.narrow(model.frame_axis, 0, frames // 2).mean()
    torch.testing.assert_close(masked, valid)
    torch.testing.assert_close(full, err.mean())
    assert not torch.isclose(masked, full)


def test_conditioning_is_the_pipelines_own(model: AudioLDM2Model) -> None:
    pipe = model.pipe
    prompts = ["calm piano", "fast loud drums with jazz guitar"]
    with torch.no_grad():
        cond = model.encode_prompt(prompts)
    length = max(pipe.tokenizer_2(p, return_tensors="pt").input_ids.shape[1] for p in prompts)
    assert cond["prompt_embeds"].shape[:2] == (2, length)
    assert cond["attention_mask"].shape == (2, length)
    assert cond["attention_mask"].dtype == torch.long
    assert cond["generated_prompt_embeds"].shape == (2, 4, 16)

    latents = torch.randn(1, *model.latent_shape(0.5), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([700])
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            embeds, mask, generated = pipe.encode_prompt([prompt], "cpu", 1, False)
            n = embeds.shape[1]
            torch.testing.assert_close(cond["generated_prompt_embeds"][i : i + 1], generated)
            torch.testing.assert_close(cond["prompt_embeds"][i : i + 1, :n], embeds)
            assert int(cond["attention_mask"][i].sum()) == int(mask.sum())
            # padding the T5 states with masked tokens changes nothing for the UNet
            ours = model.predict(latents, t, {k: v[i : i + 1] for k, v in cond.items()})
            theirs = pipe.unet(
                latents,
                t,
                encoder_hidden_states=generated,
                encoder_hidden_states_1=embeds,
                encoder_attention_mask_1=mask,
                return_dict=False,
            )[0]
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_generate_equals_our_objective_sampled_by_hand(model: AudioLDM2Model) -> None:
    """Without guidance, the pipeline's sampler over our predict/conditioning/decoder reproduces
    generate(): same timestep units, latent shape, conditioning and codec as diffusers'."""
    seconds, steps, seed = 0.5, 3, 4
    audio = model.generate("calm piano", seconds=seconds, steps=steps, guidance=1.0, seed=seed)

    scheduler = model.pipe.scheduler
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, *model.latent_shape(seconds), generator=generator)
    x = x * scheduler.init_noise_sigma
    with torch.no_grad():
        cond = model.encode_prompt(["calm piano"])
        for t in scheduler.timesteps:
            eps = model.predict(x, t.reshape(1), cond)
            x = scheduler.step(eps, t, x, eta=0.0, generator=generator).prev_sample
        manual = model.decode_latents(x)[..., : round(seconds * model.sample_rate)]
    assert audio.shape == manual.shape == (1, 1, 400)
    torch.testing.assert_close(audio, manual, atol=1e-5, rtol=1e-4)


def test_gpt2model_folder_is_converted_for_transformers_5(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel, GPT2Model

    pipe = build_tiny_audioldm2()
    reference = pipe.language_model
    bare = GPT2Model(reference.config)
    bare.load_state_dict(reference.transformer.state_dict())
    pipe.language_model = bare
    pipe.save_pretrained(str(tmp_path / "old"))
    pipe.language_model = reference
    pipe.save_pretrained(str(tmp_path / "new"))

    old = load_model(FAMILY, tmp_path / "old")
    assert isinstance(old.pipe.language_model, GPT2LMHeadModel)
    with torch.no_grad():
        got = old.encode_prompt(["warm bass"])
        want = load_model(FAMILY, tmp_path / "new").encode_prompt(["warm bass"])
    for key, value in want.items():
        torch.testing.assert_close(got[key], value)


def test_latent_shape_counts_latent_frames(model: AudioLDM2Model) -> None:
    # 800 Hz, 10 samples per mel frame, VAE halves time: 20 samples per latent frame
    assert model.hop_length == 20
    assert model.latent_shape(0.5) == (4, 20, 4)
    assert model.latent_shape(0.51) == (4, math.ceil(408 / 20), 4)
