"""The demo family: mel front end, Griffin-Lim, tokenizer, pipeline config and demo: paths."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_audio.demo_model.build import CAPTION_WORDS, SIZES, word_tokenizer
from lora_audio.models import ModelLoadError, load_model, resolve_model_path
from lora_audio.models.audioldm2 import MelSettings, log_mel_spectrogram
from lora_audio.models.demo import griffin_lim, mel_to_linear
from lora_audio.testing import tiny_model_dir

SR = 16000


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir("demo", tmp_path_factory.mktemp("demo"))


def _sine(freq: float, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return (0.3 * torch.sin(2 * math.pi * freq * t))[None]


def _peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def test_griffin_lim_from_mel_keeps_the_pitch_and_is_deterministic() -> None:
    mel = MelSettings(SR, 1024, 256, 128, 0.0, SR / 2)
    fb = mel.filterbank()
    for freq in (220.0, 523.25, 1318.5):
        audio = _sine(freq)
        logmel = log_mel_spectrogram(audio, mel, fb)  # [1, frames, 128]
        magnitude = mel_to_linear(logmel.exp().transpose(1, 2), fb)
        assert (magnitude >= 0).all()
        a = griffin_lim(magnitude, 1024, 256, iters=8)[0].numpy()
        b = griffin_lim(magnitude, 1024, 256, iters=8)[0].numpy()
        np.testing.assert_array_equal(a, b)
        # within half a semitone
        assert abs(12 * math.log2(_peak_hz(a) / freq)) < 0.5, (freq, _peak_hz(a))


def test_nnls_fits_the_mel_better_than_the_clamped_pseudo_inverse() -> None:
    mel = MelSettings(SR, 1024, 256, 64, 0.0, SR / 2)
    fb = mel.filterbank()
    g = torch.Generator().manual_seed(0)
    target = fb @ torch.rand(1, fb.shape[1], 8, generator=g)
    clamped = (torch.linalg.pinv(fb) @ target).clamp_min(0)
    fitted = mel_to_linear(target, fb, iters=32)
    assert (fb @ fitted - target).norm() < (fb @ clamped - target).norm()


def test_word_tokenizer_knows_every_corpus_caption() -> None:
    from preprocessing.corpus import RECIPES

    tok = word_tokenizer(CAPTION_WORDS, 16)
    for recipe in RECIPES.values():
        for sel in recipe.selections:
            ids = tok(sel.caption).input_ids
            assert tok.unk_token_id not in ids, sel.caption
    empty = tok("").input_ids
    assert empty == [tok.bos_token_id, tok.eos_token_id]
    assert tok("Bach CHORALE").input_ids == tok("bach chorale").input_ids
    assert tok.unk_token_id in tok("didgeridoo").input_ids


def test_audio_lengths_pad_to_whole_blocks(demo_dir: Path) -> None:
    model = load_model("demo", demo_dir)
    pipe = model.pipe
    assert pipe.samples_per_block == 256 * 4 * 4
    audio = 0.1 * torch.randn(2, 1, 5000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = model.encode_audio(audio)
        out = model.decode_latents(latents)
    assert tuple(latents.shape) == (2, *model.latent_shape(5000 / SR))
    assert model.latent_shape(5000 / SR) == (4, 8, SIZES["tiny"].n_mels // 4)
    assert out.shape == (2, 1, 8192)
    with pytest.raises(ValueError, match="mono"):
        model.encode_audio(torch.zeros(1, 2, 4096))


def test_mel_settings_survive_save_and_load(demo_dir: Path, tmp_path: Path) -> None:
    model = load_model("demo", demo_dir)
    model.pipe.register_to_config(mel_mean=-5.5, mel_std=2.25)
    model.pipe.save_pretrained(str(tmp_path / "p"))
    again = load_model("demo", tmp_path / "p")
    assert again.pipe.config.mel_mean == -5.5 and again.pipe.config.mel_std == 2.25
    assert again.pipe.mel == model.pipe.mel
    audio = _sine(440.0)[None]
    with torch.no_grad():
        torch.testing.assert_close(again.encode_audio(audio), model.encode_audio(audio))


def test_generate_is_seeded_and_has_the_requested_length(demo_dir: Path) -> None:
    model = load_model("demo", demo_dir)
    steps = []
    a = model.generate(
        "bach chorale, church organ",
        seconds=0.5,
        steps=3,
        seed=1,
        progress=lambda i, n: steps.append((i, n)),
    )
    b = model.generate("bach chorale, church organ", seconds=0.5, steps=3, seed=1)
    c = model.generate("bach chorale, church organ", seconds=0.5, steps=3, seed=2)
    assert a.shape == (1, 1, 8000)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_demo_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_audio import demo_model

    with pytest.raises(ModelLoadError, match="unknown demo model"):
        resolve_model_path("demo", "demo:nope")
    monkeypatch.setitem(demo_model.DEMO_MODELS, "demo:base", tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="pretrain-demo"):
        resolve_model_path("demo", "demo:base")
    assert resolve_model_path("demo", str(tmp_path)) == str(tmp_path)


def test_shipped_weights_load_when_present() -> None:
    from lora_audio.demo_model import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "model_index.json").is_file():
        pytest.skip("no shipped demo weights in this checkout")
    model = load_model("demo", "demo:base")
    assert model.sample_rate == SR and model.source == "demo:base"
    size = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert size <= 40 * 2**20


def test_float_timesteps_are_fractions_of_the_schedule(demo_dir: Path) -> None:
    model = load_model("demo", demo_dir)
    latents = torch.randn(3, *model.latent_shape(0.5), generator=torch.Generator().manual_seed(0))
    fractions = model.sample_training_inputs(
        latents, torch.Generator().manual_seed(1), torch.tensor([0.0, 0.5, 0.9995])
    )
    indices = model.sample_training_inputs(
        latents, torch.Generator().manual_seed(1), torch.tensor([0, 500, 999])
    )
    assert fractions.timesteps.tolist() == [0, 500, 999]
    torch.testing.assert_close(fractions.noisy, indices.noisy)
    torch.testing.assert_close(fractions.target, indices.target)
