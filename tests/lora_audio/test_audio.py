"""Tests for lora_audio.audio and lora_audio.files on synthetic audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lora_audio import audio
from lora_audio.files import atomic_path, sha256_file, stable_hash


def sine(freq: float, seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[None], channels, axis=0)


def test_write_then_load_roundtrip(tmp_path):
    x = sine(440, 0.5, 16000, channels=2)
    path = audio.write_audio(tmp_path / "a.flac", x, 16000, subtype="PCM_24")
    y, sr = audio.load_audio(path)
    assert sr == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_load_resamples_and_downmixes(tmp_path):
    x = sine(440, 1.0, 44100, channels=2)
    audio.write_audio(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    y, sr = audio.load_audio(tmp_path / "a.wav", sample_rate=16000, channels=1)
    assert sr == 16000 and y.shape == (1, 16000)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) * sr / y.shape[1] - 440) <= 1


def test_stream_resampler_matches_whole_signal():
    x = np.random.default_rng(0).standard_normal((2, 48000)).astype(np.float32) * 0.1
    whole = audio.resample(x, 48000, 16000)
    rs = audio.StreamResampler(48000, 16000, channels=2)
    blocks = [
        rs.process(x[:, i : i + 7000], last=i + 7000 >= x.shape[1]) for i in range(0, 48000, 7000)
    ]
    streamed = np.concatenate(blocks, axis=1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_iter_blocks_covers_file(tmp_path):
    x = sine(220, 1.0, 8000)
    audio.write_audio(tmp_path / "a.wav", x, 8000, subtype="FLOAT")
    blocks = list(audio.iter_blocks(tmp_path / "a.wav", 3000))
    assert [b.shape[1] for b in blocks] == [3000, 3000, 2000]
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), x)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "not readable as audio"), (b"this is not audio at all" * 10, "not readable as audio")],
)
def test_bad_files_give_one_line_errors(tmp_path, content, expected):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(audio.AudioError) as err:
        audio.load_audio(bad)
    message = str(err.value)
    assert expected in message and str(bad) in message and "\n" not in message


def test_nan_samples_are_rejected(tmp_path):
    x = sine(440, 0.1, 8000)
    x[0, 10] = np.nan
    sf.write(tmp_path / "nan.wav", x.T, 8000, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.load_audio(tmp_path / "nan.wav")


def test_to_channels():
    stereo = np.stack([np.ones(4), -np.ones(4)]).astype(np.float32)
    assert audio.to_channels(stereo, 1).tolist() == [[0, 0, 0, 0]]
    mono = np.ones((1, 4), np.float32)
    assert audio.to_channels(mono, 2).shape == (2, 4)


def test_loudness_and_peak_normalisation():
    x = sine(1000, 2.0, 48000)
    y = audio.normalize_loudness(x, 48000, -23.0)
    assert abs(audio.loudness_lufs(y, 48000) + 23.0) < 0.05
    z = audio.normalize_peak(x, -1.0)
    assert abs(audio.peak_db(z) + 1.0) < 1e-3
    silent = np.zeros((1, 48000), np.float32)
    assert audio.loudness_lufs(silent, 48000) == float("-inf")
    assert audio.rms_db(silent) == float("-inf")


@pytest.mark.parametrize("sr", [11025, 22050, 44100, 48000])
def test_loudness_matches_pyloudnorm(sr):
    import pyloudnorm

    rng = np.random.default_rng(sr)
    for channels in (1, 2, 5):
        for seconds in (0.41, 3.3, 10.0):
            x = (rng.standard_normal((channels, int(seconds * sr))) * 0.1).astype(np.float32)
            x[:, : x.shape[1] // 3] *= 1e-3  # quiet start exercises the gates
            x[-1] *= 0.5  # channels of different levels exercise the channel weights
            ref = pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64))
            assert audio.loudness_lufs(x, sr) == pytest.approx(ref, abs=1e-3)
            # a transposed view (how blocks are decoded) and float64 give the same value
            view = np.ascontiguousarray(x.T).T
            assert audio.loudness_lufs(view.astype(np.float64), sr) == pytest.approx(ref, abs=1e-3)
    assert audio.loudness_lufs(np.zeros((1, sr), np.float32), sr) == float("-inf")
    assert audio.loudness_lufs(np.ones((1, 100), np.float32), sr) == float("-inf")


def test_loudness_refuses_more_than_five_channels():
    with pytest.raises(ValueError, match="at most 5"):
        audio.loudness_lufs(np.zeros((6, 48000), np.float32), 48000)


def test_find_audio_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.wav", "sub/a.flac", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    found = audio.find_audio_files([tmp_path])
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in found] == ["b.wav", "sub/a.flac"]
    with pytest.raises(audio.AudioError, match="no such file"):
        audio.find_audio_files([tmp_path / "missing"])


def test_atomic_path_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "original"
    assert list(tmp_path.iterdir()) == [target]


def test_hashes(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_safetensors_bytes_are_reproducible(tmp_path):
    import torch
    from safetensors.torch import load_file

    from lora_audio.files import safetensors_bytes, write_safetensors

    tensors = {f"t{i}": torch.arange(i + 3, dtype=torch.float32) for i in range(5)}
    meta = {f"k{i}": str(i) for i in range(12)}
    first = safetensors_bytes(tensors, meta)
    assert all(safetensors_bytes(tensors, meta) == first for _ in range(5))
    write_safetensors(tmp_path / "a.safetensors", tensors, meta)
    loaded = load_file(tmp_path / "a.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
