"""Embedding interface, the content cache, and optional models loaded from a local folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.embeddings import (
    ClapEmbedding,
    EmbeddingCache,
    EncodecEmbedding,
    LogMelEmbedding,
    load_embedding,
)


def test_logmel_embedding_shapes_and_batching(synth):
    emb = load_embedding("logmel")
    assert isinstance(emb, LogMelEmbedding) and emb.dim == 64 and emb.sample_rate == 16000
    a, b = synth("chirp", sr=16000, seconds=1.0), synth("noise", sr=16000, seconds=0.5)
    one = emb.embed(a[None])
    assert one.shape == (1 + 16000 // 320, 64) and one.dtype == np.float32
    both = emb.embed_batch([a[None], b[None]])
    np.testing.assert_allclose(both[0], one, atol=1e-3)
    assert both[1].shape[0] == 1 + 8000 // 320
    stacked = emb.embed(torch.from_numpy(np.stack([a[None], a[None]])))
    assert isinstance(stacked, list) and len(stacked) == 2
    assert "logmel" in emb.id and "hop320" in emb.id


def test_unknown_embedding_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown embedding"):
        load_embedding("vggish")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_embedding(f"clap:{tmp_path}")


def test_cache_round_trip(tmp_path):
    cache = EmbeddingCache(tmp_path)
    k1 = EmbeddingCache.key("ab" * 32, "logmel-v1", {"hop": 320})
    assert k1 != EmbeddingCache.key("ab" * 32, "logmel-v1", {"hop": 160})
    assert k1 != EmbeddingCache.key("cd" * 32, "logmel-v1", {"hop": 320})
    assert cache.get(k1) is None
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put(k1, arr)
    np.testing.assert_array_equal(cache.get(k1), arr)
    assert (cache.hits, cache.misses) == (1, 1)
    assert list(tmp_path.rglob("*.npy"))  # numpy format, loaded with allow_pickle=False
    off = EmbeddingCache(None)
    off.put(k1, arr)
    assert off.get(k1) is None


def test_encodec_from_local_folder(tmp_path, synth):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    cfg = EncodecConfig(hidden_size=16, num_filters=4, upsampling_ratios=[4, 2], codebook_size=8,
                        codebook_dim=16, num_lstm_layers=1, sampling_rate=8000, audio_channels=1,
                        target_bandwidths=[1.5], num_residual_layers=1)  # fmt: skip
    EncodecModel(cfg).save_pretrained(tmp_path)
    emb = load_embedding(f"encodec:{tmp_path}")
    assert isinstance(emb, EncodecEmbedding) and emb.dim == 16 and emb.sample_rate == 8000
    assert len(emb.weights_sha256) == 64 and emb.weights_sha256[:16] in emb.id
    x = synth("chirp", sr=8000, seconds=0.5)[None]
    out = emb.embed_batch([x, x[:, :2000], x])
    assert out[0].shape == (4000 // 8, 16)
    assert out[1].shape == (2000 // 8, 16)
    np.testing.assert_allclose(out[0], out[2], atol=1e-5)
    # prepare() resamples and fixes channels
    assert emb.prepare(np.zeros((2, 16000), np.float32), 16000).shape == (1, 8000)


def test_clap_from_local_folder(tmp_path, synth):
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
    )

    torch.manual_seed(0)
    audio = ClapAudioConfig(hidden_size=16, depths=[1, 1], num_attention_heads=[1, 1], patch_embeds_hidden_size=8,
                            projection_hidden_size=16, num_mel_bins=64, spec_size=256, window_size=4,
                            patch_size=16, patch_stride=16)  # fmt: skip
    text = ClapTextConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16,
                          vocab_size=100, projection_hidden_size=16)  # fmt: skip
    cfg = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=12)
    ClapModel(cfg).save_pretrained(tmp_path)
    ClapFeatureExtractor(max_length_s=1).save_pretrained(tmp_path)
    emb = load_embedding(f"clap:{tmp_path}")
    assert isinstance(emb, ClapEmbedding) and emb.dim == 12 and emb.sample_rate == 48000
    x = synth("chirp", sr=48000, seconds=2.5)[None]
    (frames,) = emb.embed_batch([x])
    assert frames.shape == (2, 12)  # two 1 s windows; the 0.5 s tail is dropped
    np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
