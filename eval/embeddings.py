"""Embedding models behind one small interface, and a content-keyed embedding cache.

An :class:`Embedding` has a ``name``, a ``sample_rate``, a ``dim``, an ``id`` string that
changes whenever its output could change (parameters, weights' sha256) and
``embed(audio [C, T] or [B, C, T]) -> [frames, D]`` (or a list for a batch).

- ``logmel`` (default, offline, no weights): frame-level log-mel dB vectors computed in torch.
- ``encodec:DIR`` / ``clap:DIR``: transformers ``EncodecModel`` / ``ClapModel`` loaded from a
  local folder the user gives (``local_files_only=True``: nothing is ever downloaded),
  identified by the sha256 of their weight files.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from eval.features import SpectralConfig, frame_counts, log_mel_db, pad_batch
from lora_audio.audio import resample, to_channels
from lora_audio.files import atomic_path, sha256_bytes, sha256_file, stable_hash

log = logging.getLogger(__name__)


class Embedding(ABC):
    """One embedding model. Subclasses set ``name``, ``sample_rate``, ``dim``, ``channels``."""

    name: str
    sample_rate: int
    dim: int
    channels: int = 1

    @property
    @abstractmethod
    def id(self) -> str:
        """A string naming the model, its parameters and its weights (used in cache keys)."""

    @abstractmethod
    def embed_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips ``[C, T_i]`` already at :attr:`sample_rate` -> list of ``float32 [frames_i, D]``."""

    def embed(self, audio: np.ndarray | torch.Tensor) -> np.ndarray | list[np.ndarray]:
        """``[C, T]`` -> ``[frames, D]``; ``[B, C, T]`` -> list of ``[frames, D]``."""
        a = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if a.ndim == 3:
            return self.embed_batch(list(a))
        if a.ndim == 1:
            a = a[None]
        return self.embed_batch([a])[0]

    def prepare(self, x: np.ndarray, sample_rate: int) -> np.ndarray:
        """Bring ``[C, T]`` at ``sample_rate`` to this model's rate and channel count."""
        return to_channels(resample(x, sample_rate, self.sample_rate), self.channels)

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "sample_rate": self.sample_rate, "dim": self.dim}


class LogMelEmbedding(Embedding):
    """Frame-level log-mel dB vectors (mono; Hann STFT, Slaney mel, floor −100 dB, no top_db).

    Defaults: 16 kHz, ``n_fft=1024``, ``hop=320`` (50 frames/s), 64 mel bands -> D = 64.
    """

    name = "logmel"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop: int = 320,
        n_mels: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.sample_rate, self.dim, self.device = sample_rate, n_mels, device
        self.cfg = SpectralConfig(sample_rate=sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels)

    @property
    def id(self) -> str:
        c = self.cfg
        return f"logmel-v1-sr{c.sample_rate}-nfft{c.n_fft}-hop{c.hop}-mels{c.n_mels}"

    def embed_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        mono = [
            np.asarray(c, np.float32).mean(0) if np.ndim(c) == 2 else np.asarray(c, np.float32)
            for c in clips
        ]
        x, lengths = pad_batch(mono, self.device)
        with torch.no_grad():
            db, _ = log_mel_db(x, lengths, self.cfg, top_db=None)
        counts = frame_counts(lengths, self.cfg.hop).tolist()
        return [db[i, :, : counts[i]].T.contiguous().cpu().numpy() for i in range(len(clips))]


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 over the weight files of a model folder (``*.safetensors``, ``*.bin``, sorted by name)."""
    model_dir = Path(model_dir)
    files = sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")])
    if not files:
        raise FileNotFoundError(
            f"{model_dir}: no *.safetensors or *.bin weights; give a saved model folder"
        )
    return sha256_bytes("".join(f"{f.name}:{sha256_file(f)}\n" for f in files).encode())


def _check_dir(model_dir: str | Path, kind: str) -> Path:
    p = Path(model_dir)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{p}: not a saved {kind} model folder (no config.json); pass a folder written by "
            "save_pretrained (weights are never downloaded)"
        )
    return p


class EncodecEmbedding(Embedding):
    """Frame-level EnCodec encoder outputs (transformers ``EncodecModel`` from a local folder).

    ``[C, T]`` -> encoder output ``[frames, hidden_size]`` (before quantisation); frames =
    ceil(T / prod(upsampling_ratios)). Clips are batched together only when of equal length.
    """

    name = "encodec"

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import EncodecModel

        self.model_dir = _check_dir(model_dir, "EnCodec")
        self.model = (
            EncodecModel.from_pretrained(str(self.model_dir), local_files_only=True)
            .to(device)
            .eval()
        )
        self.device = device
        cfg = self.model.config
        self.sample_rate, self.channels, self.dim = (
            int(cfg.sampling_rate),
            int(cfg.audio_channels),
            int(cfg.hidden_size),
        )
        self.weights_sha256 = weights_sha256(self.model_dir)

    @property
    def id(self) -> str:
        return f"encodec-{self.weights_sha256[:16]}"

    def embed_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(clips)
        by_len: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            by_len.setdefault(int(c.shape[-1]), []).append(i)
        with torch.no_grad():
            for idx in by_len.values():
                x = torch.stack(
                    [torch.as_tensor(np.asarray(clips[i], np.float32)) for i in idx]
                ).to(self.device)
                z = self.model.encoder(x)  # [B, D, frames]
                for j, i in enumerate(idx):
                    out[i] = z[j].T.float().cpu().numpy()
        return out  # type: ignore[return-value]

    def describe(self) -> dict:
        return {
            **super().describe(),
            "weights_dir": str(self.model_dir),
            "weights_sha256": self.weights_sha256,
        }


class ClapEmbedding(Embedding):
    """CLAP audio embeddings (transformers ``ClapModel`` + ``ClapFeatureExtractor`` from a local folder).

    Mono audio is cut into non-overlapping windows of the feature extractor's ``max_length_s``
    (10 s for LAION CLAP); each window gives one frame ``[projection_dim]`` (L2-normalised by
    the model). A trailing window shorter than 1 s is dropped unless it is the only one.
    """

    name = "clap"

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu") -> None:
        from transformers import ClapFeatureExtractor, ClapModel

        self.model_dir = _check_dir(model_dir, "CLAP")
        self.model = (
            ClapModel.from_pretrained(str(self.model_dir), local_files_only=True).to(device).eval()
        )
        self.extractor = ClapFeatureExtractor.from_pretrained(
            str(self.model_dir), local_files_only=True
        )
        self.device = device
        self.sample_rate = int(self.extractor.sampling_rate)
        self.window = int(self.extractor.nb_max_samples)
        self.dim = int(self.model.config.projection_dim)
        self.truncation = "fusion" if self.model.config.audio_config.enable_fusion else "rand_trunc"
        self.weights_sha256 = weights_sha256(self.model_dir)

    @property
    def id(self) -> str:
        return f"clap-{self.weights_sha256[:16]}-win{self.window}"

    def _windows(self, x: np.ndarray) -> list[np.ndarray]:
        mono = np.asarray(x, np.float32).reshape(-1, x.shape[-1]).mean(0)
        wins = [mono[s : s + self.window] for s in range(0, mono.size, self.window)]
        keep = [w for w in wins if w.size >= self.sample_rate]
        return keep or wins[:1]

    def embed_batch(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        with torch.no_grad():
            for c in clips:
                wins = self._windows(c)
                # Windows never exceed max length, so "rand_trunc" never crops (deterministic).
                inputs = self.extractor(
                    wins,
                    sampling_rate=self.sample_rate,
                    return_tensors="pt",
                    truncation=self.truncation,
                )
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                feats = self.model.get_audio_features(**inputs)
                feats = getattr(feats, "pooler_output", feats)
                out.append(feats.float().cpu().numpy())
        return out

    def describe(self) -> dict:
        return {
            **super().describe(),
            "weights_dir": str(self.model_dir),
            "weights_sha256": self.weights_sha256,
        }


def load_embedding(spec: str, device: str | torch.device = "cpu") -> Embedding:
    """``"logmel"``, ``"encodec:DIR"`` or ``"clap:DIR"`` -> an :class:`Embedding` (never downloads)."""
    kind, _, arg = spec.partition(":")
    if kind == "logmel" and not arg:
        return LogMelEmbedding(device=device)
    if kind in ("encodec", "clap") and arg:
        return (EncodecEmbedding if kind == "encodec" else ClapEmbedding)(arg, device=device)
    raise ValueError(f"unknown embedding {spec!r}; use logmel, encodec:LOCAL_DIR or clap:LOCAL_DIR")


class EmbeddingCache:
    """Arrays on disk keyed by content: ``key = stable_hash(file sha256, embedding id, params)``.

    Stored as ``<dir>/<key[:2]>/<key>.npy`` (``allow_pickle=False``), written atomically.
    ``None`` as the folder disables the cache.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(file_sha256: str, embedding_id: str, params: dict | None = None) -> str:
        return stable_hash(
            {"file": file_sha256, "embedding": embedding_id, "params": params or {}}, length=32
        )

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        p = self._path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable cache entry (%s); recomputing", p, e)
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        if self.root is None:
            return
        with atomic_path(self._path(key)) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
