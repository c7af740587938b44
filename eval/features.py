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

Speed: one STFT per batch feeds every feature. Spectra are kept frame-major (``[B, frames,
bins]``, as the FFT writes them) so per-frame reductions run along contiguous memory; the mel
and chroma filterbanks are applied as matrix products (the sparse mel bank in dense bands of
16 filters); on CPU, power, magnitude, centroid, bandwidth and roll-off come from one
vectorised numba pass per frame and the spectral-contrast band extremes from numpy's sort
(``torch.topk`` is slow on CPU; torch ops on other devices); ZCR and RMS use block sums
instead of framing. On CPU a batch runs in chunks of a few clips (their spectra stay in
cache), spread over torch's thread count as coarse tasks (see :func:`_in_chunks`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import librosa
import numba
import numpy as np
import torch
import torch.nn.functional as F

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


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Complex STFT of ``[B, T]`` -> frame-major ``[B, frames, n_fft // 2 + 1]``.

    Hann window, centred frames with zero padding: the same frames as
    ``torch.stft(..., center=True, pad_mode="constant")`` and ``librosa.stft``.
    """
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True
    )
    return spec.transpose(1, 2)  # torch computes frames contiguously: this view is contiguous


def _power(spec: torch.Tensor) -> torch.Tensor:
    """``|X|²`` of a complex tensor, as a real tensor of the same shape."""
    ri = torch.view_as_real(spec)
    return torch.addcmul(ri[..., 0].square(), ri[..., 1], ri[..., 1])


def stft_power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Power spectrogram ``|STFT|²`` of ``[B, T]`` -> frame-major ``[B, frames, n_fft // 2 + 1]``
    (see :func:`stft`)."""
    return _power(stft(x, n_fft, hop))


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Magnitude STFT of ``[B, T]`` -> ``[B, n_fft // 2 + 1, frames]`` (Hann, centred, zero pad)."""
    return stft_power(x, n_fft, hop).sqrt_().transpose(1, 2)


@functools.lru_cache(maxsize=16)
def _banded_np(sr: int, n_fft: int, n_mels: int, group: int = 16):
    """The mel bank cut into groups of ``group`` filters, each kept on the bins where it is nonzero.

    Returns a tuple of ``(first_bin, end_bin, weights [end - first, group])``: multiplying only
    those bins skips the ~98% of the bank that is zero (128 Slaney filters on 1025 bins).
    """
    basis = _mel_basis_np(sr, n_fft, n_mels)
    parts = []
    for s in range(0, n_mels, group):
        rows = basis[s : s + group]
        cols = np.flatnonzero(rows.any(0))
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
        parts.append((lo, hi, np.ascontiguousarray(rows[:, lo:hi].T)))
    return tuple(parts)


def mel_project(power: torch.Tensor, sr: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Mel power of a frame-major power spectrogram ``[..., n_fft // 2 + 1]`` -> ``[..., n_mels]``.

    Equal to ``power @ mel_filterbank(sr, n_fft, n_mels).T`` (up to float rounding).
    """
    flat = power.reshape(-1, power.shape[-1])
    out = torch.cat(
        [
            flat[:, lo:hi] @ torch.from_numpy(w).to(power.device)
            for lo, hi, w in _banded_np(sr, n_fft, n_mels)
        ],
        dim=1,
    )
    return out.reshape(*power.shape[:-1], n_mels)


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


def _log_mel_from_power(
    power: torch.Tensor, lengths: torch.Tensor, cfg: SpectralConfig, top_db: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-major power ``[B, N, F]`` -> (log-mel dB ``[B, n_mels, N]``, mask ``[B, N]``)."""
    mel = mel_project(power, cfg.sample_rate, cfg.n_fft, cfg.n_mels).transpose(1, 2)
    mask = frame_mask(lengths, cfg.hop, mel.shape[-1])
    return power_to_db(mel, top_db, mask), mask


def log_mel_db(
    x: torch.Tensor, lengths: torch.Tensor, cfg: SpectralConfig, top_db: float | None = TOP_DB
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel power spectrogram in dB of ``[B, T]`` -> (``[B, n_mels, frames]``, mask ``[B, frames]``)."""
    return _log_mel_from_power(stft_power(x, cfg.n_fft, cfg.hop), lengths, cfg, top_db)


def _zcr_rms(x: torch.Tensor, frame: int, hop: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-crossing rate and RMS of centred zero-padded time frames of ``[B, T]`` -> 2 x ``[B, 1, n]``.

    Frame ``i`` covers padded samples ``[i hop, i hop + frame)``; a crossing is a sign change
    between two consecutive samples of the frame; samples within ``TOP_DB`` of silence (|x| <=
    the clip's peak × 10^(−TOP_DB/20), at least 1e-10) count as 0, and 0 as positive, as
    librosa's ``threshold`` (there fixed at 1e-10), so dither and round-off in quiet passages
    are not counted as crossings. Without materialising the frames: the padded signal is cut into blocks of
    ``g = gcd(frame, hop)`` samples, each block's Σx² (float32, over g samples) and crossing
    count are summed once, and a frame's totals are differences of running sums (float64) of
    those block totals.
    """
    g = math.gcd(frame, hop)
    b, t = x.shape
    blocks = -(-((n - 1) * hop + frame) // g)
    xp = F.pad(x, (frame // 2, blocks * g - t - frame // 2))  # [B, blocks * g]
    energy = xp.square().view(b, blocks, g).sum(-1)
    thr = (x.abs().amax(-1, keepdim=True) * 10 ** (-TOP_DB / 20)).clamp_min(1e-10)
    neg = xp < -thr
    cross = torch.zeros_like(neg)
    torch.ne(neg[:, 1:], neg[:, :-1], out=cross[:, 1:])  # cross[j]: sign change from j-1 to j
    # (summing bools is slow: sum their bytes)
    counts = cross.view(torch.uint8).view(b, blocks, g).sum(-1, dtype=torch.int32)
    q = F.pad(energy.double().cumsum(-1), (1, 0))
    cz = F.pad(counts.cumsum(-1), (1, 0))
    start = torch.arange(n, device=x.device) * hop
    first, last = start // g, (start + frame) // g
    # the change into a frame's first sample is not inside the frame
    crossings = cz[:, last] - cz[:, first] - cross[:, start].long()
    zcr = crossings.double() / frame
    rms = ((q[:, last] - q[:, first]) / frame).clamp_min(0.0).sqrt()
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
    """``(first_bin, end_bin, alpha)`` of each contrast band (librosa's rule).

    Band ``k`` is the contiguous bin range ``[first, end)``; its peak (valley) is the mean of
    its ``alpha`` largest (smallest) magnitudes.
    """
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
        assert rows.size and np.all(np.diff(rows) == 1), "contrast bands are contiguous"
        bands.append((int(rows[0]), int(rows[-1]) + 1, alpha))
    return tuple(bands)


_SHAPE_BLOCK = 32  # bins per partial sum in the roll-off search
#: Let LLVM reorder float sums (so the loops vectorise), never assume away NaN or inf.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)  # pragma: no cover - compiled
def _spectral_moments_numba(spec, freq, rolloff, power, mag, out):
    """Per row of a complex spectrum ``spec [R, F, 2]`` (float32 re, im) write ``power [R, F]``
    = re² + im², ``mag [R, F]`` = sqrt(power) (float32) and ``out [R, 4]`` (float64):
    centroid, bandwidth, roll-off frequency, mean of max(P, 1e-10).

    ``freq [F]`` are the bin frequencies. Sums are float64 in vectorised (reassociated) order;
    the bandwidth is a second pass around the centroid (exact, unlike E[f²] − E[f]²); the
    roll-off search skips :data:`_SHAPE_BLOCK`-bin blocks by their (float32) sums.
    """
    n_rows, n_bins = power.shape
    n_blocks = (n_bins + _SHAPE_BLOCK - 1) // _SHAPE_BLOCK
    row = np.zeros(n_blocks * _SHAPE_BLOCK, np.float32)  # magnitudes, zero-padded to blocks
    for r in range(n_rows):
        s0 = 0.0
        s1 = 0.0
        floored = 0.0
        for i in range(n_bins):
            re = spec[r, i, 0]
            im = spec[r, i, 1]
            p = re * re + im * im
            m = np.sqrt(p)
            power[r, i] = p
            mag[r, i] = m
            row[i] = m
            s0 += m
            s1 += freq[i] * m
            floored += max(p, np.float32(1e-10))
        den = max(s0, 1e-20)
        centroid = s1 / den
        s2 = 0.0
        for i in range(n_bins):
            d = freq[i] - centroid
            s2 += d * d * row[i]
        # roll-off: the first bin where the running sum reaches rolloff * total
        target = rolloff * s0
        run = 0.0
        bl = 0
        while bl < n_blocks - 1:
            acc = np.float32(0.0)
            for i in range(bl * _SHAPE_BLOCK, (bl + 1) * _SHAPE_BLOCK):
                acc += row[i]
            if run + acc >= target:
                break
            run += acc
            bl += 1
        idx = min(n_bins, (bl + 1) * _SHAPE_BLOCK) - 1
        for i in range(bl * _SHAPE_BLOCK, min(n_bins, (bl + 1) * _SHAPE_BLOCK)):
            run += row[i]
            if run >= target:
                idx = i
                break
        out[r, 0] = centroid
        out[r, 1] = np.sqrt(max(s2 / den, 0.0))
        out[r, 2] = freq[idx]
        out[r, 3] = floored / n_bins


def _spectral_shape_cpu(spec: np.ndarray, freq: np.ndarray, bands, rolloff: float):
    """:func:`spectral_shape` of ``spec [R, F, 2]`` (numpy float32) -> ``(power [R, F], shape
    [R, 4 + 2K])``: the moments from the numba kernel, the contrast-band extremes from sorting
    each band (numpy's vectorised sort)."""
    n_rows, n_bins = spec.shape[:2]
    power = np.empty((n_rows, n_bins), np.float32)
    mag = np.empty((n_rows, n_bins), np.float32)
    out = np.empty((n_rows, 4 + 2 * len(bands)), np.float64)
    _spectral_moments_numba(spec, freq, float(rolloff), power, mag, out)
    for j, (lo, hi, alpha) in enumerate(bands):
        band = np.sort(mag[:, lo:hi], axis=-1)
        out[:, 4 + j] = band[:, -alpha:].mean(-1, dtype=np.float64)
        out[:, 4 + len(bands) + j] = band[:, :alpha].mean(-1, dtype=np.float64)
    return power, out


def _spectral_shape_torch(power, freq, bands, rolloff) -> torch.Tensor:
    """:func:`spectral_shape` with torch ops (for GPUs): power ``[..., F]`` -> ``[..., 4 + 2K]``."""
    mag = power.sqrt()
    w = torch.stack([torch.ones_like(freq), freq, freq * freq], 1)  # [F, 3] float64
    mom = mag.double() @ w  # Σ S, Σ f S, Σ f² S (float64: the expanded variance stays exact)
    den = mom[..., 0].clamp_min(1e-20)
    centroid = mom[..., 1] / den
    bandwidth = (mom[..., 2] / den - centroid**2).clamp_min(0.0).sqrt()
    cum = mag.cumsum(-1)  # non-decreasing along F
    idx = torch.searchsorted(cum, rolloff * cum[..., -1:]).clamp_max(freq.numel() - 1)
    cols = [centroid, bandwidth, freq[idx[..., 0]], power.clamp_min(AMIN).double().mean(-1)]
    peaks, valleys = [], []
    for lo, hi, alpha in bands:
        sub = mag[..., lo:hi]
        peaks.append(sub.topk(alpha, dim=-1).values.double().mean(-1))
        valleys.append(sub.topk(alpha, dim=-1, largest=False).values.double().mean(-1))
    return torch.stack([*cols, *peaks, *valleys], -1)


def spectral_shape(
    spec: torch.Tensor, sr: int, n_fft: int, bands, rolloff: float, use_numba: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power and per-frame shape statistics of a frame-major complex STFT ``[B, N, F]``.

    Returns ``(power [B, N, F], shape [B, N, 4 + 2K] float64)``, the shape columns being
    centroid, bandwidth, roll-off frequency, mean max(P, 1e-10), K band peaks, K valleys.
    ``bands`` are ``(first_bin, end_bin, alpha)`` triples (:func:`_contrast_bands`). CPU
    complex64 tensors go through a numba kernel and numpy's sort (``torch.topk`` is slow on
    CPU), the rows split over as many threads as torch uses; other devices, or
    ``use_numba=False``, through torch ops. Both agree to float rounding.
    """
    freq = torch.from_numpy(librosa.fft_frequencies(sr=sr, n_fft=n_fft)).to(spec.device)
    if use_numba is None:
        use_numba = spec.device.type == "cpu" and spec.dtype == torch.complex64
    if not use_numba:
        power = _power(spec)
        return power, _spectral_shape_torch(power, freq.double(), bands, rolloff)
    flat = torch.view_as_real(spec).reshape(-1, spec.shape[-1], 2).contiguous().numpy()
    args = (freq.numpy().astype(np.float64), bands, rolloff)
    # the kernel and the sort release the GIL: split the rows over as many threads as torch uses
    cuts = np.linspace(0, flat.shape[0], max(1, torch.get_num_threads()) + 1).astype(int)
    parts = [flat[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    if len(parts) == 1:
        results = [_spectral_shape_cpu(parts[0], *args)]
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            results = list(pool.map(lambda part: _spectral_shape_cpu(part, *args), parts))
    power = np.concatenate([p for p, _ in results]) if len(results) > 1 else results[0][0]
    shape = np.concatenate([o for _, o in results]) if len(results) > 1 else results[0][1]
    return (
        torch.from_numpy(power).reshape(spec.shape),
        torch.from_numpy(shape).reshape(*spec.shape[:-1], -1),
    )


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

    Returns ``({name: [B, K, frames]}, mask [B, frames])``; see :func:`_frame_features`.
    """
    feats, mask, _ = _frame_features(x, lengths, cfg)
    return feats, mask


def _frame_features(
    x: torch.Tensor, lengths: torch.Tensor, cfg: SpectralConfig
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Frame-level hand-crafted features of a padded mono batch ``[B, T]``, and its log-mel.

    Returns ``({name: [B, K, frames]}, mask [B, frames], log-mel dB [B, n_mels, frames])``.
    Formulas (S = |STFT|, f = bin frequency, P = S², per frame), all from one STFT:

    - ``mfcc``: DCT-II (ortho) of the log-mel dB, first ``n_mfcc`` coefficients.
    - ``centroid`` = Σ f S / Σ S; ``bandwidth`` = sqrt(Σ (f − centroid)² S / Σ S), summed in
      float64 (see :func:`spectral_shape`).
    - ``rolloff``: lowest f where the cumulative Σ S reaches ``rolloff`` of the total.
    - ``flatness`` = exp(mean log P) / mean P (P floored at 1e-10).
    - ``contrast``: per octave band, dB(mean top-q bins of S) − dB(mean bottom-q bins), both
      floored ``TOP_DB`` below the clip's largest band peak.
    - ``zcr``: sign changes per sample in ``n_fft`` time frames; ``rms`` = sqrt(mean x²).
    - ``chroma``: librosa chroma filterbank (tuning 0) on P, divided by each frame's max (at
      least ``TOP_DB`` below the clip's loudest frame).
    - ``onset``: mean over mel bands of max(0, Δ log-mel dB) (librosa's onset strength, lag 1).
    """
    dev = x.device
    bands = _contrast_bands(
        cfg.sample_rate, cfg.n_fft, cfg.contrast_fmin, cfg.contrast_bands, cfg.contrast_quantile
    )
    spec = stft(x, cfg.n_fft, cfg.hop)  # [B, N, F] frame-major
    n = spec.shape[1]
    zcr, rms = _zcr_rms(x, cfg.n_fft, cfg.hop, n)
    # Frames more than TOP_DB below the clip's loudest hold only dither or FFT round-off, whose
    # spectral shape (centroid, contrast, chroma...) is noise that even differs between
    # machines: treat them as digital silence.
    spec[rms[:, 0] < rms[:, 0].amax(-1, keepdim=True) * 10 ** (-TOP_DB / 20)] = 0
    power, shape = spectral_shape(spec, cfg.sample_rate, cfg.n_fft, bands, cfg.rolloff)
    del spec
    logmel, mask = _log_mel_from_power(power, lengths, cfg, TOP_DB)  # [B, M, N]
    mfcc = torch.einsum("km,bmt->bkt", _dct_ortho(cfg.n_mels, cfg.n_mfcc, dev), logmel)

    chroma_basis = torch.from_numpy(_chroma_basis_np(cfg.sample_rate, cfg.n_fft)).to(dev)
    chroma = (power @ chroma_basis.T).transpose(1, 2)  # [B, 12, N]
    # each frame over its max, but no frame's max counts below TOP_DB under the clip's loudest
    # (quiet frames stay near 0 instead of blowing round-off up to 1)
    frame_max = chroma.amax(1, keepdim=True)
    floor = frame_max.amax(-1, keepdim=True) * 10 ** (-TOP_DB / 10)
    chroma = chroma / torch.maximum(frame_max, floor).clamp_min(1e-20)

    shape = shape.to(dev).float().transpose(1, 2)  # [B, 4 + 2K, N]
    k = len(bands)
    centroid, bandwidth, rolloff = shape[:, 0:1], shape[:, 1:2], shape[:, 2:3]
    # power is not needed any more: take the logs in place
    log_p = power.clamp_min_(AMIN).log_().mean(-1)[:, None, :]
    flatness = log_p.exp() / shape[:, 3:4]
    peak, valley = shape[:, 4 : 4 + k], shape[:, 4 + k :]
    # Floor both (magnitudes) TOP_DB below the clip's loudest band peak: in digital silence
    # the bins hold FFT round-off, whose dB values differ between machines.
    floor = (peak.amax(dim=(1, 2), keepdim=True) * 10 ** (-TOP_DB / 20)).clamp_min(AMIN)
    contrast = 10 * torch.log10(torch.maximum(peak, floor) / torch.maximum(valley, floor))

    onset = torch.relu(logmel[..., 1:] - logmel[..., :-1]).mean(1, keepdim=True)
    onset = F.pad(onset, (1, 0)) * mask[:, None, :]

    feats = {
        "mfcc": mfcc,
        "centroid": centroid,
        "bandwidth": bandwidth,
        "rolloff": rolloff,
        "flatness": flatness,
        "contrast": contrast,
        "zcr": zcr,
        "rms": rms,
        "chroma": chroma,
        "onset": onset,
    }
    return feats, mask, logmel


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


def _vectors(feats: dict, mask: torch.Tensor, cfg: SpectralConfig) -> torch.Tensor:
    """Per-clip means and stds of the frame features, then the tempo -> ``[B, D]``."""
    stacked = torch.cat([feats[name] for name in FRAME_FEATURES], dim=1)  # [B, K, N]
    means, stds = masked_mean_std(stacked, mask)
    tempo = tempo_bpm(feats["onset"][:, 0], mask, cfg)
    return torch.cat([means, stds, tempo[:, None]], dim=1)


def clip_feature_vectors(
    clips: Sequence[np.ndarray],
    cfg: SpectralConfig = SpectralConfig(),
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """AFD feature vectors of mono clips ``[T_i]`` at ``cfg.sample_rate`` -> ``float64 [B, D]``.

    ``D = 2 * (n_mfcc + 7 + (contrast_bands + 1) + 12) + 1`` (93 with the defaults): the
    mean and std over each clip's frames of :func:`frame_features`, then the tempo.
    """
    return clip_features_and_log_mels(clips, cfg, device)[0]


def clip_features_and_log_mels(
    clips: Sequence[np.ndarray],
    cfg: SpectralConfig = SpectralConfig(),
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`clip_feature_vectors` and :func:`log_mel_batch` of the same clips from one STFT.

    Returns ``(float64 [B, D], list of float32 [n_mels, frames_i])``.
    """
    parts = _in_chunks(clips, device, lambda c: _features_and_log_mels(c, cfg, device))
    vec = np.concatenate([v for v, _ in parts])
    return vec, [m for _, mels in parts for m in mels]


def _features_and_log_mels(
    clips: Sequence[np.ndarray], cfg: SpectralConfig, device: str | torch.device
) -> tuple[np.ndarray, list[np.ndarray]]:
    x, lengths = pad_batch(clips, device)
    with torch.no_grad():
        feats, mask, logmel = _frame_features(x, lengths, cfg)
        vec = _vectors(feats, mask, cfg)
    counts = frame_counts(lengths, cfg.hop).tolist()
    mels = [logmel[i, :, : counts[i]].cpu().numpy() for i in range(len(clips))]
    return vec.double().cpu().numpy(), mels


def log_mel_batch(
    clips: Sequence[np.ndarray],
    cfg: SpectralConfig = SpectralConfig(),
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Log-mel dB spectrograms (top_db 80 per clip) of mono clips -> list of ``float32 [n_mels, frames_i]``."""

    def run(chunk: Sequence[np.ndarray]) -> list[np.ndarray]:
        x, lengths = pad_batch(chunk, device)
        with torch.no_grad():
            db, _ = log_mel_db(x, lengths, cfg)
        counts = frame_counts(lengths, cfg.hop).tolist()
        return [db[i, :, : counts[i]].cpu().numpy() for i in range(len(chunk))]

    return [m for part in _in_chunks(clips, device, run) for m in part]


@functools.cache
def _keep_freed_memory() -> None:
    """Free one 30 MB block, once per process, so that glibc's malloc keeps freed arrays.

    glibc returns memory to the OS once more free memory sits at the top of the heap than
    twice the largest block it recently freed, so each chunk's arrays (~25 MB) were paged in
    afresh: ~800 page faults per 5 s clip, a fifth of the CPU time. Freeing a block just below
    glibc's 32 MB cap raises those dynamic thresholds for the process (other allocators: no
    effect).
    """
    torch.empty(30 << 20, dtype=torch.uint8)  # allocated (not touched) and freed at once


#: Samples per chunk on CPU (about 12 s at 22.05 kHz): a chunk's frames and spectra stay in
#: cache, which makes a small batch faster per clip than a large one.
CHUNK_SAMPLES = 1 << 18


def _in_chunks(clips: Sequence[np.ndarray], device: str | torch.device, fn) -> list:
    """``[fn(chunk) for chunk in chunks of clips]``: chunks of consecutive clips, on CPU.

    On CPU the clips are grouped into chunks of about :data:`CHUNK_SAMPLES` samples (at least
    one clip each) and the chunks run in ``torch.get_num_threads()`` threads, torch using one
    thread each meanwhile (set process-wide for the duration of the call, then restored).
    Coarse tasks keep every core busy without torch's per-operation thread barriers, which
    stall whenever another process holds a core (measured on 2 shared cores: 16 clips in one
    piece with 2 torch threads took ~9x longer than in chunks). Elsewhere (GPU) this is
    ``[fn(clips)]``. Batching changes no value, only speed.
    """
    if torch.device(device).type != "cpu":
        return [fn(clips)]
    _keep_freed_memory()
    chunks, start, size = [], 0, 0
    for i, c in enumerate(clips):
        size += int(c.shape[-1])
        if size >= CHUNK_SAMPLES or i == len(clips) - 1:
            chunks.append(clips[start : i + 1])
            start, size = i + 1, 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threads == 1 or len(chunks) == 1:
            return [fn(c) for c in chunks]
        with ThreadPoolExecutor(min(threads, len(chunks)), thread_name_prefix="features") as pool:
            return list(pool.map(fn, chunks))
    finally:
        torch.set_num_threads(threads)
