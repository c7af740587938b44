"""Pure metric functions. Inputs are numpy arrays; everything is computed in float64.

Shapes: feature/embedding sets are ``[N, D]`` (one row per clip or per frame), spectrograms
``[F, frames]``, audio ``[T]`` (mono). Lower is better for every distance here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-12


# --------------------------------------------------------------------------- AFD


def zscore_stats(ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the reference set ``[N, D]`` (std floored at 1e-8)."""
    ref = np.asarray(ref, dtype=np.float64)
    return ref.mean(0), np.maximum(ref.std(0), 1e-8)


def zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` of ``[N, D]`` with the reference statistics."""
    return (np.asarray(x, dtype=np.float64) - mean) / std


def cosine_similarity_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``K[i, j] = <x_i, y_j> / (|x_i| |y_j|)`` for ``[N, D]`` and ``[M, D]`` -> ``[N, M]``.

    A zero vector has similarity 0 with everything (its direction is undefined).
    """
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)
    yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), EPS)
    return xn @ yn.T


def afd_paired(gen: np.ndarray, ref: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-pair Audio Feature Distance ``[N]``: ``1 − cos(z(g_i), z(r_i))``.

    ``z(v) = (v − μ_ref) / σ_ref`` with the reference set's statistics. In [0, 2]; 0 for a clip
    paired with itself. The paired AFD of a system is the mean over pairs.
    """
    zg, zr = zscore(gen, mean, std), zscore(ref, mean, std)
    return 1.0 - np.einsum(
        "nd,nd->n",
        *(v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), EPS) for v in (zg, zr)),
    )


def afd_set(gen: np.ndarray, ref: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Set-level AFD: squared MMD with the cosine kernel on z-scored feature vectors.

    ``AFD_set = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') − 2 mean_{i,j} k(x_i, y_j)``,
    ``k`` = cosine similarity, ``x`` = z(gen), ``y`` = z(ref), all pairs including i = i' (the
    biased V-statistic: ≥ 0 because k is positive semi-definite, exactly 0 for identical sets,
    at most 4).
    """
    x, y = zscore(gen, mean, std), zscore(ref, mean, std)
    v = cosine_similarity_matrix(x, x).mean() + cosine_similarity_matrix(y, y).mean()
    return float(max(v - 2.0 * cosine_similarity_matrix(x, y).mean(), 0.0))


# --------------------------------------------------------------------------- spectral


def mel_mse_paired(gen_db: np.ndarray, ref_db: np.ndarray) -> float:
    """Log-mel MSE of a time-aligned pair: ``mean((G − R)²)`` over ``[n_mels, frames]`` in dB².

    Both are cropped to the shorter clip's frames (alignment is from the start).
    """
    n = min(gen_db.shape[-1], ref_db.shape[-1])
    d = gen_db[..., :n].astype(np.float64) - ref_db[..., :n].astype(np.float64)
    return float(np.mean(d**2))


def mean_spectrum(db: np.ndarray) -> np.ndarray:
    """Time-averaged log-mel spectrum ``[n_mels]`` of ``[n_mels, frames]``."""
    return np.asarray(db, dtype=np.float64).mean(-1)


def mel_mse_set(gen_spectra: np.ndarray, ref_spectra: np.ndarray) -> float:
    """Unpaired spectral distance: MSE (dB²) between the sets' mean time-averaged log-mel spectra.

    ``mean_m (mean_i G_i[m] − mean_j R_j[m])²`` with ``G_i``, ``R_j`` from :func:`mean_spectrum`
    (``[N, n_mels]`` and ``[M, n_mels]``).
    """
    d = np.asarray(gen_spectra, np.float64).mean(0) - np.asarray(ref_spectra, np.float64).mean(0)
    return float(np.mean(d**2))


@dataclass(frozen=True)
class MRSTFTResult:
    spectral_convergence: float
    log_magnitude: float


#: (n_fft, hop, win_length) triples of the multi-resolution STFT distance.
MRSTFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))


def mrstft_distance(
    gen: np.ndarray, ref: np.ndarray, resolutions=MRSTFT_RESOLUTIONS
) -> MRSTFTResult:
    """Multi-resolution STFT distance of a time-aligned mono pair ``[T]`` (cropped to the shorter).

    Averaged over resolutions (Hann window, centred): spectral convergence
    ``‖ |R| − |G| ‖_F / ‖ |R| ‖_F`` and log-magnitude L1 ``mean | log(|R| + ε) − log(|G| + ε) |``
    with ε = 1e-7 (as in Yamamoto et al., Parallel WaveGAN).
    """
    n = min(gen.shape[-1], ref.shape[-1])
    g = torch.as_tensor(np.asarray(gen[..., :n], np.float64)).reshape(-1)
    r = torch.as_tensor(np.asarray(ref[..., :n], np.float64)).reshape(-1)
    sc, lm = [], []
    for n_fft, hop, win in resolutions:
        w = torch.hann_window(win, dtype=torch.float64)
        kw = dict(
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            window=w,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        G, R = torch.stft(g, **kw).abs(), torch.stft(r, **kw).abs()
        sc.append(float(torch.linalg.norm(R - G) / torch.linalg.norm(R).clamp_min(EPS)))
        lm.append(float((torch.log(R + 1e-7) - torch.log(G + 1e-7)).abs().mean()))
    return MRSTFTResult(float(np.mean(sc)), float(np.mean(lm)))


# --------------------------------------------------------------------------- FAD family


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of ``[N, D]``."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings for a covariance, got {x.shape[0]}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), float64.

    ``FD = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}``, with the trace term computed from
    eigenvalues: ``tr (Σ1 Σ2)^{1/2} = Σ_k sqrt(λ_k)``, λ the eigenvalues of the symmetric PSD
    matrix ``Σ1^{1/2} Σ2 Σ1^{1/2}`` (same spectrum as Σ1 Σ2), negative round-off clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    lam = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_sqrt = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt, 0.0))


def fad(gen: np.ndarray, ref: np.ndarray) -> float:
    """Fréchet Audio Distance between frame embeddings ``[N, D]`` and ``[M, D]`` (Kilgour et al.)."""
    return frechet_distance(*gaussian_stats(gen), *gaussian_stats(ref))


@dataclass(frozen=True)
class FadInfResult:
    value: float  # the intercept a of FAD(N) = a + b / N
    slope: float  # b
    r2: float  # goodness of the linear fit in 1/N
    ns: tuple[int, ...]
    fads: tuple[float, ...]


def fad_inf(
    gen: np.ndarray, ref: np.ndarray, steps: int = 10, min_n: int | None = None, seed: int = 0
) -> FadInfResult:
    """FAD∞ (Jayasumana et al. 2024; fadtk): FAD extrapolated to infinitely many samples.

    For ``steps`` sizes N evenly spaced from ``min_n`` to ``len(gen)``, FAD(N) is computed
    between N generated embeddings drawn without replacement (seeded) and the full reference
    set; a least-squares line ``FAD(N) = a + b / N`` is fitted and ``a`` is FAD∞. ``min_n``
    defaults to ``max(D + 2, len(gen) // 5)`` (fadtk uses 500 frames).
    """
    gen = np.asarray(gen, np.float64)
    n_total, d = gen.shape
    mu_r, s_r = gaussian_stats(ref)
    lo = min_n if min_n is not None else max(d + 2, n_total // 5)
    lo = max(2, min(lo, n_total))
    ns = sorted({round(v) for v in np.linspace(lo, n_total, steps)})
    rng = np.random.default_rng(seed)
    fads = []
    for n in ns:
        sub = gen[rng.choice(n_total, size=n, replace=False)]
        fads.append(frechet_distance(*gaussian_stats(sub), mu_r, s_r))
    inv = 1.0 / np.asarray(ns, np.float64)
    y = np.asarray(fads)
    if len(ns) < 2:
        return FadInfResult(float(y[0]), 0.0, 0.0, tuple(ns), tuple(fads))
    b, a = np.polyfit(inv, y, 1)
    pred = a + b * inv
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return FadInfResult(float(a), float(b), r2, tuple(ns), tuple(float(f) for f in fads))


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def median_bandwidth(ref: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance within the reference set (i ≠ j), on ≤ ``max_points`` rows."""
    ref = np.asarray(ref, np.float64)
    if ref.shape[0] > max_points:
        ref = ref[np.random.default_rng(seed).choice(ref.shape[0], max_points, replace=False)]
    d = np.sqrt(_sq_dists(ref, ref))
    iu = np.triu_indices(ref.shape[0], k=1)
    med = float(np.median(d[iu])) if iu[0].size else 0.0
    return med if med > 0 else 1.0


def kad(gen: np.ndarray, ref: np.ndarray, bandwidth: float | None = None) -> float:
    """Kernel Audio Distance (Chung et al. 2025): unbiased squared MMD with a Gaussian kernel.

    ``k(a, b) = exp(−‖a − b‖² / (2 σ²))``, σ = ``bandwidth`` or the reference set's median
    pairwise distance. With X = gen (n rows), Y = ref (m rows):
    ``KAD = Σ_{i≠i'} k(x_i,x_i')/(n(n−1)) + Σ_{j≠j'} k(y_j,y_j')/(m(m−1)) − 2 Σ_{i,j} k(x_i,y_j)/(nm)``.
    Its expectation is 0 when both sets come from the same distribution (it can be < 0).
    """
    x, y = np.asarray(gen, np.float64), np.asarray(ref, np.float64)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("KAD needs at least 2 embeddings on each side")
    sigma = bandwidth if bandwidth is not None else median_bandwidth(y)
    g = -1.0 / (2.0 * sigma**2)
    kxx = np.exp(g * _sq_dists(x, x))
    kyy = np.exp(g * _sq_dists(y, y))
    kxy = np.exp(g * _sq_dists(x, y))
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


# --------------------------------------------------------------------------- sanity

#: Loudness given to clips whose integrated loudness is unmeasurable (silence), in LUFS.
LUFS_FLOOR = -70.0


def silence_ratio(
    x: np.ndarray, frame: int = 2048, hop: int = 512, threshold_db: float = -60.0
) -> float:
    """Fraction of ``frame``-sample frames (step ``hop``) of mono ``[T]`` whose RMS is below
    ``threshold_db`` dBFS. 1.0 for digital silence; a clip shorter than a frame is one frame."""
    x = np.asarray(x, np.float64).reshape(-1)
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.mean(rms < 10.0 ** (threshold_db / 20.0)))


def clipping_ratio(x: np.ndarray, threshold: float = 0.999) -> float:
    """Fraction of samples of ``[C, T]`` (or ``[T]``) with ``|x| >= threshold`` (full scale = 1)."""
    x = np.asarray(x)
    return float(np.mean(np.abs(x) >= threshold)) if x.size else 0.0


def lufs_difference(gen_lufs: np.ndarray, ref_lufs: np.ndarray) -> float:
    """``|mean(gen) − mean(ref)|`` of integrated loudness in LU, unmeasurable values (silence,
    −inf) floored at :data:`LUFS_FLOOR` so that silent generations are far from the reference."""

    def clean(v):
        v = np.asarray(v, np.float64)
        return np.where(np.isfinite(v), np.maximum(v, LUFS_FLOOR), LUFS_FLOOR)

    return float(abs(clean(gen_lufs).mean() - clean(ref_lufs).mean()))


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, statistic=np.mean
) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` of ``statistic`` over resampled ``values`` ``[N]``.

    NaN bounds when fewer than 2 finite values.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    stats = np.array([statistic(v[i]) for i in idx])
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def bootstrap_set_ci(
    n_items: int, fn, n_boot: int = 200, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap of a set metric: ``fn(indices)`` over ``n_items`` resampled with
    replacement (the generated clips), ``n_boot`` times. NaN bounds when ``n_items < 2``."""
    if n_items < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        try:
            vals.append(fn(rng.integers(0, n_items, size=n_items)))
        except (ValueError, np.linalg.LinAlgError):
            continue
    vals = np.asarray([v for v in vals if np.isfinite(v)])
    if vals.size < 2:
        return math.nan, math.nan
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))
