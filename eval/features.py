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
16 filters); centroid, bandwidth, roll-off and the spectral-contrast band extremes (a top-k
per band, which ``torch.topk`` does slowly on CPU) come from one numba pass per frame on CPU
tensors (torch ops on other devices); ZCR and RMS use block sums instead of framing.
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


def stft_power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Power spectrogram ``|STFT|²`` of ``[B, T]`` -> frame-major ``[B, frames, n_fft // 2 + 1]``.

    Hann window, centred frames with zero padding: the same frames as
    ``torch.stft(..., center=True, pad_mode="constant")`` and ``librosa.stft``.
    """
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    xp = F.pad(x, (n_fft // 2, n_fft // 2))
    spec = torch.view_as_real(torch.fft.rfft(xp.unfold(-1, n_fft, hop) * window, dim=-1))
    return torch.addcmul(spec[..., 0].square(), spec[..., 1], spec[..., 1])


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
    between two consecutive samples of the frame (|x| <= 1e-10 counts as 0, 0 as positive, as
    librosa). Without materialising the frames: the padded signal is cut into blocks of
    ``g = gcd(frame, hop)`` samples, each block's Σx² (float32, over g samples) and crossing
    count are summed once, and a frame's totals are differences of running sums (float64) of
    those block totals.
    """
    g = math.gcd(frame, hop)
    b, t = x.shape
    blocks = -(-((n - 1) * hop + frame) // g)
    xp = F.pad(x, (frame // 2, blocks * g - t - frame // 2))  # [B, blocks * g]
    energy = xp.square().view(b, blocks, g).sum(-1)
    neg = xp < -1e-10
    cross = torch.zeros_like(neg)
    torch.ne(neg[:, 1:], neg[:, :-1], out=cross[:, 1:])  # cross[j]: sign change from j-1 to j
    counts = cross.view(b, blocks, g).sum(-1)
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


@numba.njit(cache=True, nogil=True)
def _spectral_shape_numba(power, freq, bands, rolloff, out):  # pragma: no cover - compiled
    """Per row of ``power [R, F]`` (float32) write ``out [R, 4 + 2K]`` (float64): centroid,
    bandwidth, roll-off frequency, mean of max(P, 1e-10), then the K contrast-band peaks and
    the K valleys (means of the alpha largest / smallest magnitudes of each band).

    ``freq [F]`` are the bin frequencies, ``bands [K, 3]`` the ``(first, end, alpha)`` of each
    band. One row is read once into a magnitude buffer; the band extremes come from inserting
    values into two sorted buffers of alpha values (alpha is small).
    """
    n_rows, n_bins = power.shape
    n_bands = bands.shape[0]
    kmax = 1
    for j in range(n_bands):
        kmax = max(kmax, bands[j, 2])
    n_blocks = (n_bins + _SHAPE_BLOCK - 1) // _SHAPE_BLOCK
    mag = np.empty(n_bins, np.float32)
    block = np.empty(n_blocks, np.float64)
    top = np.empty(kmax, np.float32)  # ascending: top[0] is the smallest of the largest
    bot = np.empty(kmax, np.float32)  # descending: bot[0] is the largest of the smallest
    for r in range(n_rows):
        total = 0.0
        first = 0.0
        floored = 0.0
        for bl in range(n_blocks):
            acc = 0.0
            for i in range(bl * _SHAPE_BLOCK, min(n_bins, (bl + 1) * _SHAPE_BLOCK)):
                p = power[r, i]
                m = np.sqrt(p)
                mag[i] = m
                acc += m
                first += freq[i] * m
                floored += max(p, np.float32(1e-10))
            block[bl] = acc
            total += acc
        den = max(total, 1e-20)
        centroid = first / den
        second = 0.0
        for i in range(n_bins):
            d = freq[i] - centroid
            second += d * d * mag[i]
        # roll-off: first bin where the running sum reaches rolloff * total
        target = rolloff * total
        run = 0.0
        bl = 0
        while bl < n_blocks - 1 and run + block[bl] < target:
            run += block[bl]
            bl += 1
        idx = min(n_bins, (bl + 1) * _SHAPE_BLOCK) - 1
        for i in range(bl * _SHAPE_BLOCK, min(n_bins, (bl + 1) * _SHAPE_BLOCK)):
            run += mag[i]
            if run >= target:
                idx = i
                break
        out[r, 0] = centroid
        out[r, 1] = np.sqrt(max(second / den, 0.0))
        out[r, 2] = freq[idx]
        out[r, 3] = floored / n_bins
        for j in range(n_bands):
            lo, hi, k = bands[j, 0], bands[j, 1], bands[j, 2]
            for n in range(k):  # insertion-sort the first k values into both buffers
                v = mag[lo + n]
                p = n
                while p > 0 and top[p - 1] > v:
                    top[p] = top[p - 1]
                    p -= 1
                top[p] = v
                p = n
                while p > 0 and bot[p - 1] < v:
                    bot[p] = bot[p - 1]
                    p -= 1
                bot[p] = v
            t0 = top[0]
            b0 = bot[0]
            for i in range(lo + k, hi):
                v = mag[i]
                if v > t0:
                    p = 0
                    while p + 1 < k and top[p + 1] < v:
                        top[p] = top[p + 1]
                        p += 1
                    top[p] = v
                    t0 = top[0]
                if v < b0:
                    p = 0
                    while p + 1 < k and bot[p + 1] > v:
                        bot[p] = bot[p + 1]
                        p += 1
                    bot[p] = v
                    b0 = bot[0]
            st = 0.0
            sb = 0.0
            for p in range(k):
                st += top[p]
                sb += bot[p]
            out[r, 4 + j] = st / k
            out[r, 4 + n_bands + j] = sb / k


def _spectral_shape_torch(power, freq, bands, rolloff) -> torch.Tensor:
    """The same as :func:`_spectral_shape_numba` with torch ops (for GPUs): ``[..., F] -> [..., 4 + 2K]``."""
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
    power: torch.Tensor, sr: int, n_fft: int, bands, rolloff: float, use_numba: bool | None = None
) -> torch.Tensor:
    """Per-frame shape statistics of a frame-major power spectrogram ``[B, N, F]`` -> ``[B, N, 4 + 2K]``
    float64: centroid, bandwidth, roll-off frequency, mean max(P, 1e-10), K band peaks, K valleys.

    ``bands`` are ``(first_bin, end_bin, alpha)`` triples (:func:`_contrast_bands`). CPU float32
    tensors go through a numba kernel (``torch.topk`` is slow on CPU) using as many threads as
    torch; other devices, or ``use_numba=False``, through torch ops. Both agree to float rounding.
    """
    freq = torch.from_numpy(librosa.fft_frequencies(sr=sr, n_fft=n_fft)).to(power.device)
    if use_numba is None:
        use_numba = power.device.type == "cpu" and power.dtype == torch.float32
    if not use_numba:
        return _spectral_shape_torch(power, freq.double(), bands, rolloff)
    flat = power.reshape(-1, power.shape[-1]).contiguous().numpy()
    out = np.empty((flat.shape[0], 4 + 2 * len(bands)), np.float64)
    args = (freq.numpy().astype(np.float64), np.asarray(bands, np.int64), float(rolloff))
    # the kernel releases the GIL: split the rows over as many threads as torch uses
    cuts = np.linspace(0, flat.shape[0], max(1, torch.get_num_threads()) + 1).astype(int)
    parts = [(flat[a:b], out[a:b]) for a, b in itertools.pairwise(cuts) if b > a]
    if len(parts) == 1:
        _spectral_shape_numba(parts[0][0], *args, parts[0][1])
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(lambda io: _spectral_shape_numba(io[0], *args, io[1]), parts))
    return torch.from_numpy(out).reshape(*power.shape[:-1], -1)


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
    - ``contrast``: per octave band, dB(mean top-q bins of S) − dB(mean bottom-q bins).
    - ``zcr``: sign changes per sample in ``n_fft`` time frames; ``rms`` = sqrt(mean x²).
    - ``chroma``: librosa chroma filterbank (tuning 0) on P, divided by each frame's max.
    - ``onset``: mean over mel bands of max(0, Δ log-mel dB) (librosa's onset strength, lag 1).
    """
    dev = x.device
    power = stft_power(x, cfg.n_fft, cfg.hop)  # [B, N, F] frame-major
    n = power.shape[1]
    logmel, mask = _log_mel_from_power(power, lengths, cfg, TOP_DB)  # [B, M, N]
    mfcc = torch.einsum("km,bmt->bkt", _dct_ortho(cfg.n_mels, cfg.n_mfcc, dev), logmel)

    chroma_basis = torch.from_numpy(_chroma_basis_np(cfg.sample_rate, cfg.n_fft)).to(dev)
    chroma = (power @ chroma_basis.T).transpose(1, 2)  # [B, 12, N]
    chroma = chroma / chroma.amax(1, keepdim=True).clamp_min(1e-20)

    bands = _contrast_bands(
        cfg.sample_rate, cfg.n_fft, cfg.contrast_fmin, cfg.contrast_bands, cfg.contrast_quantile
    )
    shape = spectral_shape(power, cfg.sample_rate, cfg.n_fft, bands, cfg.rolloff).to(dev)
    shape = shape.float().transpose(1, 2)  # [B, 4 + 2K, N]
    k = len(bands)
    centroid, bandwidth, rolloff = shape[:, 0:1], shape[:, 1:2], shape[:, 2:3]
    # power is not needed any more: take the logs in place
    log_p = power.clamp_min_(AMIN).log_().mean(-1)[:, None, :]
    flatness = log_p.exp() / shape[:, 3:4]
    peak, valley = shape[:, 4 : 4 + k], shape[:, 4 + k :]
    contrast = 10 * torch.log10(peak.clamp_min(AMIN)) - 10 * torch.log10(valley.clamp_min(AMIN))

    zcr, rms = _zcr_rms(x, cfg.n_fft, cfg.hop, n)

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
    x, lengths = pad_batch(clips, device)
    with torch.no_grad():
        db, _ = log_mel_db(x, lengths, cfg)
    counts = frame_counts(lengths, cfg.hop).tolist()
    return [db[i, :, : counts[i]].cpu().numpy() for i in range(len(clips))]
