"""Torch features against librosa computed by hand, batching invariance, tempo."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from eval import distances as D
from eval.features import (
    SpectralConfig,
    clip_feature_vectors,
    feature_names,
    frame_features,
    log_mel_batch,
    pad_batch,
    tempo_bpm,
)

SR = 22050


def librosa_logmel(y: np.ndarray) -> np.ndarray:
    return librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128)
    )


def test_log_mel_and_mel_mse_match_librosa(synth):
    a, b = synth("chirp"), synth("noise", seconds=1.5)
    ours = log_mel_batch([a, b])
    for y, m in zip((a, b), ours, strict=True):
        ref = librosa_logmel(y)
        assert m.shape == ref.shape
        np.testing.assert_allclose(m, ref, atol=2e-3)
    n = min(ours[0].shape[1], ours[1].shape[1])
    by_hand = float(np.mean((librosa_logmel(a)[:, :n] - librosa_logmel(b)[:, :n]) ** 2))
    assert D.mel_mse_paired(ours[0], ours[1]) == pytest.approx(by_hand, rel=1e-4)


def _frames(y: np.ndarray):
    x, lengths = pad_batch([y])
    feats, _mask = frame_features(x, lengths, SpectralConfig())
    return {k: v[0].numpy() for k, v in feats.items()}


@pytest.mark.parametrize("kind", ["chirp", "noise"])
def test_frame_features_match_librosa(synth, kind):
    y = synth(kind)
    f = _frames(y)
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    np.testing.assert_allclose(
        f["mfcc"], librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20), atol=2e-2, rtol=1e-3
    )
    np.testing.assert_allclose(
        f["centroid"], librosa.feature.spectral_centroid(S=S, sr=SR), rtol=1e-3, atol=1e-2
    )
    # Bandwidth weighs far-off bins by (f - centroid)^2 (up to 1e8 Hz^2), so the float32 FFT noise
    # floor (~1e-7 relative, different in torch and numpy) moves a 20 Hz bandwidth by ~1 Hz.
    np.testing.assert_allclose(
        f["bandwidth"], librosa.feature.spectral_bandwidth(S=S, sr=SR), rtol=6e-2, atol=1e-2
    )
    np.testing.assert_allclose(
        f["rolloff"], librosa.feature.spectral_rolloff(S=S, sr=SR), rtol=1e-3, atol=11.0
    )
    np.testing.assert_allclose(
        f["flatness"], librosa.feature.spectral_flatness(S=S), rtol=1e-3, atol=1e-6
    )
    np.testing.assert_allclose(
        f["rms"], librosa.feature.rms(y=y, pad_mode="constant"), rtol=1e-4, atol=1e-6
    )
    chroma = librosa.feature.chroma_stft(S=S**2, sr=SR, tuning=0.0)
    np.testing.assert_allclose(f["chroma"], chroma, atol=1e-4)
    if kind == "noise":  # a pure chirp's valleys are the FFT noise floor, which differs per library
        contrast = librosa.feature.spectral_contrast(S=S, sr=SR)
        np.testing.assert_allclose(f["contrast"][:, 2:-2], contrast[:, 2:-2], atol=2e-2)
    # our crossings ignore samples more than 80 dB below the clip's peak (librosa: 1e-10)
    threshold = max(np.abs(y).max() * 1e-4, 1e-10)
    zcr = librosa.feature.zero_crossing_rate(
        y, frame_length=2048, hop_length=512, threshold=threshold
    )
    np.testing.assert_allclose(
        f["zcr"][:, 2:-2], zcr[:, 2:-2], atol=1e-6
    )  # edges: zero vs edge padding


def test_batching_changes_nothing(synth):
    clips = [synth("chirp"), synth("clicks", seconds=1.3), synth("noise", seconds=0.7, seed=3)]
    together = clip_feature_vectors(clips)
    alone = np.concatenate([clip_feature_vectors([c]) for c in clips])
    assert together.shape == (3, len(feature_names()))
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)
    mels = log_mel_batch(clips)
    for c, m in zip(clips, mels, strict=True):
        np.testing.assert_allclose(m, log_mel_batch([c])[0], atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_chunks_and_threads_change_nothing(synth, monkeypatch, threads):
    import eval.features as ef

    clips = [synth("chirp"), synth("clicks", seconds=1.3), synth("noise", seconds=0.7, seed=3)]
    clips += [synth("tone", seconds=0.9), synth("silence", seconds=0.5)]
    whole_vecs, whole_mels = ef.clip_features_and_log_mels(clips)  # one chunk
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        monkeypatch.setattr(ef, "CHUNK_SAMPLES", 30000)  # about one clip per chunk
        vecs, mels = ef.clip_features_and_log_mels(clips)
        assert torch.get_num_threads() == threads  # restored
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(vecs, whole_vecs, rtol=1e-5, atol=1e-5)
    assert [m.shape for m in mels] == [m.shape for m in whole_mels]
    for a, b in zip(mels, whole_mels, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_tempo_of_click_track(synth):
    y = synth("clicks", seconds=8.0)
    x, lengths = pad_batch([y])
    feats, mask = frame_features(x, lengths, SpectralConfig())
    bpm = float(tempo_bpm(feats["onset"][:, 0], mask, SpectralConfig())[0])
    assert bpm == pytest.approx(120.0, rel=0.04)
    silent = torch.zeros(1, 200)
    assert (
        float(tempo_bpm(silent, torch.ones(1, 200, dtype=torch.bool), SpectralConfig())[0]) == 0.0
    )


def test_silent_clip_features_are_finite(synth):
    v = clip_feature_vectors([synth("silence"), synth("tone")])
    assert np.isfinite(v).all()


def test_spectral_shape_numba_matches_torch():
    from eval.features import _contrast_bands, spectral_shape

    rng = np.random.default_rng(0)
    mag = (rng.random((3, 40, 1025)) ** 3).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, mag.shape)
    spec = torch.from_numpy((mag * np.exp(1j * phase)).astype(np.complex64))
    spec[0, :5] = 0.0  # silent frames
    spec[1, :, 600:700] = 0.5  # ties inside a contrast band
    bands = _contrast_bands(SR, 2048, 200.0, 6, 0.02)
    power, fast = spectral_shape(spec, SR, 2048, bands, 0.85)
    ref_power, ref = spectral_shape(spec, SR, 2048, bands, 0.85, use_numba=False)
    np.testing.assert_allclose(power, ref_power, rtol=1e-6, atol=1e-12)
    assert fast.shape == ref.shape == (3, 40, 4 + 2 * len(bands))
    np.testing.assert_allclose(fast[..., 2], ref[..., 2], atol=11.0)  # roll-off: one bin at most
    cols = [0, 1, *range(3, fast.shape[-1])]
    np.testing.assert_allclose(fast[..., cols], ref[..., cols], rtol=1e-5, atol=1e-9)
    assert torch.equal(fast[0, :5, 0], torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("hop", [512, 300])
def test_zcr_rms_match_explicit_frames(synth, hop):
    from eval.features import _zcr_rms

    y = synth("noise", seconds=0.5) + 0.1
    x = torch.from_numpy(y)[None]
    n = 1 + y.size // hop
    zcr, rms = _zcr_rms(x, 2048, hop, n)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, 1024), 2048)[::hop][:n]
    neg = frames < -np.abs(y).max() * 1e-4  # 80 dB below the peak counts as 0
    np.testing.assert_allclose(zcr[0, 0], (neg[:, 1:] != neg[:, :-1]).sum(1) / 2048, atol=1e-7)
    np.testing.assert_allclose(
        rms[0, 0], np.sqrt((frames.astype(np.float64) ** 2).mean(1)), rtol=1e-5
    )


def test_features_ignore_what_lies_80_db_below_the_clip(synth):
    """Dither at -140 dBFS in the silences of a click track changes no feature: it is the
    same kind of difference as FFT round-off between machines."""
    x = synth("clicks", seconds=1.5, seed=2)
    noise = 1e-7 * np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    a, b = clip_feature_vectors([x, x + noise])
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_banded_mel_equals_dense_filterbank():
    from eval.features import mel_filterbank, mel_project

    p = torch.rand(2, 7, 1025)
    np.testing.assert_allclose(
        mel_project(p, SR, 2048, 128), p @ mel_filterbank(SR, 2048, 128).T, rtol=1e-5, atol=1e-7
    )


def test_features_and_log_mels_share_one_stft(synth):
    from eval.features import clip_features_and_log_mels

    clips = [synth("chirp"), synth("clicks", seconds=1.3)]
    vecs, mels = clip_features_and_log_mels(clips)
    np.testing.assert_array_equal(vecs, clip_feature_vectors(clips))
    for a, b in zip(mels, log_mel_batch(clips), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
