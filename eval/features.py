"""Batched spectral front end and hand-crafted clip features, in torch (CPU or GPU).

Spectrograms use :func:`torch.stft` (Hann window, ``center=True`` with zero padding, as
librosa >= 0.10 does) and librosa's Slaney mel filterbank (``librosa.filters.mel``), so a
log-mel here equals ``librosa.power_to_db(librosa.feature.melspectrogram(...))``.

Clips of different lengths are batched by zero-padding to the longest one and masking: with
centred zero-padded frames, frame ``i < 1 + T // hop`` of the padded clip is exactly frame ``i``
of the clip alone, so batching changes no value.

The AFD feature vector (:func:`clip_feature_vectors`) follows the reference recipe: per clip,
the mean and standard deviation over frames of MFCCs, spectral centroid, bandwidth, roll-off,
flatness, contrast, zero-crossing rate, RMS, chroma and onset strength, plus a global tempo.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch

AMIN = 1e-10  # power floor before dB, as librosa.power_to_db
TOP_DB = 80.0  # dynamic range kept below each clip's maximum, as librosa.power_to_db


@dataclass(frozen=True)
class SpectralConfig:
    """Analysis parameters shared by the AFD features and the spectral (log-mel) distance.

    Defaults are librosa's: ``sr=22050``, ``n_fft=2048``, ``hop=512``, ``n_mels=128``,
    ``n_mfcc=20``; audio is downmixed to mono first.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    rolloff: float = 0.85
    contrast_fmin: float = 200.0
    contrast_bands: int = 6
    contrast_quantile: float = 0.02
    tempo_min_bpm: float = 30.0
    tempo_max_bpm: float = 300.0

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=16)
def _mel_basis_np(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _chroma_basis_np(sr: int, n_fft: int) -> np.ndarray:
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0).astype(np.float32)


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """librosa's Slaney-normalised mel filterbank ``[n_mels, n_fft // 2 + 1]`` as a tensor."""
    return torch.from_numpy(_mel_basis_np(sr, n_fft, n_mels)).to(device)


def pad_batch(clips: Sequence[np.ndarray | torch.Tensor], device: torch.device | str = "cpu"):
    """Stack mono clips ``[T_i]`` into a zero-padded ``[B, T_max]`` float32 tensor.

    Returns ``(batch, lengths)`` with ``lengths`` a ``[B]`` int64 tensor of the ``T_i``.
    """
    lengths = torch.tensor([int(c.shape[-1]) for c in clips], dtype=torch.long)
    out = torch.zeros(len(clips), int(lengths.max()), dtype=torch.float32)
    for i, c in enumerate(clips):
        out[i, : c.shape[-1]] = torch.as_tensor(np.asarray(c, dtype=np.float32)).reshape(-1)
    return out.to(device), lengths.to(device)


def frame_counts(lengths: torch.Tensor, hop: int) -> torch.Tensor:
    """Number of centred frames of each clip, ``1 + T // hop`` (``[B]``)."""
    return 1 + torch.div(lengths, hop, rounding_mode="floor")


def frame_mask(lengths: torch.Tensor, hop: int, n_frames: int) -> torch.Tensor:
    """Boolean ``[B, n_frames]``: True on frames that belong to each (unpadded) clip."""
    counts = frame_counts(lengths, hop)
    return torch.arange(n_frames, device=lengths.device)[None, :] < counts[:, None]


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Magnitude STFT of ``[B, T]`` -> ``[B, n_fft // 2 + 1, frames]`` (Hann, centred, zero pad)."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.abs()


def power_to_db(
    power: torch.Tensor, top_db: float | None = TOP_DB, mask: torch.Tensor | None = None
):
    """``10 log10(max(AMIN, P))`` of ``[B, F, frames]``, floored ``top_db`` below each clip's max.

    As ``librosa.power_to_db(P, ref=1.0, amin=1e-10, top_db=80)``, one clip at a time; ``mask``
    (``[B, frames]``) keeps padded frames out of the maximum.
    """
    db = 10.0 * torch.log10(power.clamp_min(AMIN))
    if top_db is None:
        return db
    valid = db if mask is None else db.masked_fill(~mask[:, None, :], -math.inf)
    peak = valid.amax(dim=(1, 2), keepdim=True)
    return torch.maximum(db, peak - top_db)


def log_mel_db(
    x: torch.Tensor, lengths: torch.Tensor, cfg: SpectralConfig, top_db: float | None = TOP_DB
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel power spectrogram in dB of ``[B, T]`` -> (``[B, n_mels, frames]``, mask ``[B, frames]``)."""
    mag = stft_magnitude(x, cfg.n_fft, cfg.hop)
    mel = torch.einsum(
        "mf,bft->bmt", mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, x.device), mag**2
    )
    mask = frame_mask(lengths, cfg.hop, mel.shape[-1])
    return power_to_db(mel, top_db, mask), mask


def _zcr_rms(x: torch.Tensor, frame: int, hop: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-crossing rate and RMS of centred zero-padded time frames of ``[B, T]`` -> 2 x ``[B, 1, n]``.

    Computed with running sums (float64) instead of materialising the frames: frame ``i``
    covers padded samples ``[i hop, i hop + frame)``; a crossing is a sign change between two
    consecutive samples of the frame (|x| <= 1e-10 counts as 0, 0 as positive, as librosa).
    """
    xp = torch.nn.functional.pad(x, (frame // 2, frame // 2)).double()
    neg = xp < -1e-10
    cross = torch.nn.functional.pad((neg[:, 1:] != neg[:, :-1]).double(), (1, 0))
    cz = torch.nn.functional.pad(cross.cumsum(-1), (1, 0))
    q = torch.nn.functional.pad((xp * xp).cumsum(-1), (1, 0))
    start = torch.arange(n, device=x.device) * hop
    zcr = (cz[:, start + frame] - cz[:, start + 1]) / frame
    rms = ((q[:, start + frame] - q[:, start]) / frame).clamp_min(0.0).sqrt()
    return zcr.float()[:, None, :], rms.float()[:, None, :]


def _dct_ortho(n_in: int, n_out: int, device) -> torch.Tensor:
    """DCT-II matrix ``[n_out, n_in]`` with orthonormal scaling (scipy ``norm='ortho'``)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    m = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[0] /= math.sqrt(2.0)
    return m.to(torch.float32).to(device)


@functools.lru_cache(maxsize=16)
def _contrast_bands(sr: int, n_fft: int, fmin: float, n_bands: int, quantile: float):
    """Row indices of each contrast band and how many bins each side averages (librosa's rule)."""
    freq = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    bands = []
    for k, (f_low, f_high) in enumerate(itertools.pairwise(octa)):
        current = np.logical_and(freq >= f_low, freq <= f_high)
        idx = np.flatnonzero(current)
        if k > 0:
            current[idx[0] - 1] = True
        if k == n_bands:
            current[idx[-1] + 1 :] = True
        rows = np.flatnonzero(current)
        alpha = int(max(np.rint(quantile * current.sum()), 1))
        if k < n_bands:
            rows = rows[:-1]
        bands.append((rows, alpha))
    return tuple(bands)


def masked_mean_std(v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) std over the last axis of ``[B, K, frames]`` where ``mask`` ``[B, frames]``."""
    m = mask[:, None, :].to(v.dtype)
    n = m.sum(-1).clamp_min(1.0)
    mean = (v * m).sum(-1) / n
    var = (((v - mean[..., None]) ** 2) * m).sum(-1) / n
    return mean, var.sqrt()


def frame_features(
    x: torch.Tensor, lengths: torch.Tensor, cfg: SpectralConfig
) -> tuple[dict, torch.Tensor]:
    """Frame-level hand-crafted features of a padded mono batch ``[B, T]``.

    Returns ``({name: [B, K, frames]}, mask [B, frames])``. Formulas (S = |STFT|, f = bin
    frequency, P = S², per frame):

    - ``mfcc``: DCT-II (ortho) of the log-mel dB, first ``n_mfcc`` coefficients.
    - ``centroid`` = Σ f S / Σ S; ``bandwidth`` = sqrt(Σ (f − centroid)² S / Σ S).
    - ``rolloff``: lowest f where the cumulative Σ S reaches ``rolloff`` of the total.
    - ``flatness`` = exp(mean log P) / mean P (P floored at 1e-10).
    - ``contrast``: per octave band, dB(mean top-q bins of S) − dB(mean bottom-q bins).
    - ``zcr``: sign changes per sample in ``n_fft`` time frames; ``rms`` = sqrt(mean x²).
    - ``chroma``: librosa chroma filterbank (tuning 0) on P, divided by each frame's max.
    - ``onset``: mean over mel bands of max(0, Δ log-mel dB) (librosa's onset strength, lag 1).
    """
    mag = stft_magnitude(x, cfg.n_fft, cfg.hop)  # [B, F, N]
    n = mag.shape[-1]
    mask = frame_mask(lengths, cfg.hop, n)
    power = mag**2
    dev = x.device
    melb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, dev)
    logmel = power_to_db(torch.einsum("mf,bft->bmt", melb, power), TOP_DB, mask)
    mfcc = torch.einsum("km,bmt->bkt", _dct_ortho(cfg.n_mels, cfg.n_mfcc, dev), logmel)

    freq = torch.from_numpy(librosa.fft_frequencies(sr=cfg.sample_rate, n_fft=cfg.n_fft)).to(
        dev, torch.float32
    )
    total = mag.sum(1, keepdim=True)
    norm = mag / total.clamp_min(1e-20)
    centroid = (freq[None, :, None] * norm).sum(1, keepdim=True)
    bandwidth = (((freq[None, :, None] - centroid) ** 2) * norm).sum(1, keepdim=True).sqrt()
    cum = mag.cumsum(1)
    reached = cum >= cfg.rolloff * total
    rolloff = freq[reached.to(torch.int8).argmax(1)][:, None, :]
    pf = power.clamp_min(AMIN)
    flatness = pf.log().mean(1, keepdim=True).exp() / pf.mean(1, keepdim=True)

    bands = _contrast_bands(
        cfg.sample_rate, cfg.n_fft, cfg.contrast_fmin, cfg.contrast_bands, cfg.contrast_quantile
    )
    contrast = []
    for rows, alpha in bands:
        sub = mag[:, torch.as_tensor(rows, device=dev), :]
        valley = sub.topk(alpha, dim=1, largest=False).values.mean(1)
        peak = sub.topk(alpha, dim=1).values.mean(1)
        contrast.append(
            10 * torch.log10(peak.clamp_min(AMIN)) - 10 * torch.log10(valley.clamp_min(AMIN))
        )
    contrast_t = torch.stack(contrast, 1)

    zcr, rms = _zcr_rms(x, cfg.n_fft, cfg.hop, n)

    chroma = torch.einsum(
        "cf,bft->bct", torch.from_numpy(_chroma_basis_np(cfg.sample_rate, cfg.n_fft)).to(dev), power
    )
    chroma = chroma / chroma.amax(1, keepdim=True).clamp_min(1e-20)

    onset = torch.relu(logmel[..., 1:] - logmel[..., :-1]).mean(1, keepdim=True)
    onset = torch.nn.functional.pad(onset, (1, 0)) * mask[:, None, :]

    feats = {
        "mfcc": mfcc,
        "centroid": centroid,
        "bandwidth": bandwidth,
        "rolloff": rolloff,
        "flatness": flatness,
        "contrast": contrast_t,
        "zcr": zcr,
        "rms": rms,
        "chroma": chroma,
        "onset": onset,
    }
    return feats, mask


def tempo_bpm(onset: torch.Tensor, mask: torch.Tensor, cfg: SpectralConfig) -> torch.Tensor:
    """Global tempo (BPM, ``[B]``) from the onset envelope ``[B, frames]``.

    The autocorrelation r(ℓ) of the (masked) envelope is weighted by a log-normal prior
    centred on 120 BPM (one octave wide), as in librosa's tempo estimator; the answer is the
    lag maximising log1p(1e6 r(ℓ)/r(0)) − ½ (log2(bpm(ℓ)/120))², with bpm(ℓ) = 60 sr / (hop ℓ),
    searched between ``tempo_min_bpm`` and ``tempo_max_bpm``. 0 for a flat envelope.
    """
    env = onset * mask
    n = env.shape[-1]
    spec = torch.fft.rfft(env, n=2 * n)
    ac = torch.fft.irfft(spec.abs() ** 2, n=2 * n)[:, :n]
    fps = cfg.sample_rate / cfg.hop
    lags = torch.arange(n, device=env.device, dtype=env.dtype)
    bpm = 60.0 * fps / lags.clamp_min(1.0)
    ok = (lags >= 1) & (bpm >= cfg.tempo_min_bpm) & (bpm <= cfg.tempo_max_bpm)
    if not bool(ok.any()):
        return torch.zeros(env.shape[0], device=env.device)
    score = torch.log1p(1e6 * ac / ac[:, :1].clamp_min(1e-20)) - 0.5 * torch.log2(bpm / 120.0) ** 2
    score = score.masked_fill(~ok[None, :], -math.inf)
    best = bpm[score.argmax(-1)]
    return torch.where(ac[:, 0] > 1e-20, best, torch.zeros_like(best))


#: Names of the frame features in the order they are stacked into the AFD vector.
FRAME_FEATURES = (
    "mfcc",
    "centroid",
    "bandwidth",
    "rolloff",
    "flatness",
    "contrast",
    "zcr",
    "rms",
    "chroma",
    "onset",
)


def feature_names(cfg: SpectralConfig = SpectralConfig()) -> list[str]:
    """Names of the columns of :func:`clip_feature_vectors`'s output."""
    sizes = {"mfcc": cfg.n_mfcc, "contrast": cfg.contrast_bands + 1, "chroma": 12}
    names = []
    for stat in ("mean", "std"):
        for f in FRAME_FEATURES:
            k = sizes.get(f, 1)
            names += [f"{f}_{stat}" if k == 1 else f"{f}{i}_{stat}" for i in range(k)]
    return [*names, "tempo"]


def clip_feature_vectors(
    clips: Sequence[np.ndarray],
    cfg: SpectralConfig = SpectralConfig(),
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """AFD feature vectors of mono clips ``[T_i]`` at ``cfg.sample_rate`` -> ``float64 [B, D]``.

    ``D = 2 * (n_mfcc + 7 + (contrast_bands + 1) + 12) + 1`` (93 with the defaults): the
    mean and std over each clip's frames of :func:`frame_features`, then the tempo.
    """
    x, lengths = pad_batch(clips, device)
    with torch.no_grad():
        feats, mask = frame_features(x, lengths, cfg)
        means, stds = [], []
        for name in FRAME_FEATURES:
            m, s = masked_mean_std(feats[name], mask)
            means.append(m)
            stds.append(s)
        tempo = tempo_bpm(feats["onset"][:, 0], mask, cfg)
        vec = torch.cat([*means, *stds, tempo[:, None]], dim=1)
    return vec.double().cpu().numpy()


def log_mel_batch(
    clips: Sequence[np.ndarray],
    cfg: SpectralConfig = SpectralConfig(),
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Log-mel dB spectrograms (top_db 80 per clip) of mono clips -> list of ``float32 [n_mels, frames_i]``."""
    x, lengths = pad_batch(clips, device)
    with torch.no_grad():
        db, _ = log_mel_db(x, lengths, cfg)
    counts = frame_counts(lengths, cfg.hop).tolist()
    return [db[i, :, : counts[i]].cpu().numpy() for i in range(len(clips))]
