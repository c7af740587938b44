"""Score folders of generated audio against a reference folder.

:func:`evaluate` loads every file once (bad files are reported and skipped), computes
sanity values per file, AFD feature vectors and embeddings in batches (through the content
cache), pairs files by name, and returns an :class:`EvalResult` that :mod:`eval.report` writes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval import distances as D
from eval.embeddings import Embedding, EmbeddingCache, load_embedding
from eval.features import (
    SpectralConfig,
    clip_feature_vectors,
    clip_features_and_log_mels,
    log_mel_batch,
)
from lora_audio.audio import (
    AudioError,
    find_audio_files,
    load_audio,
    loudness_lufs,
    resample,
    rms_db,
)
from lora_audio.files import sha256_file

log = logging.getLogger(__name__)

FEATURES_ID = "afd-features-v1"

#: metric key -> (label, lower is better). The order is the report's column order.
METRICS: dict[str, tuple[str, bool]] = {
    "afd_paired": ("AFD (paired)", True),
    "afd_set": ("AFD (set, cosine MMD)", True),
    "mel_mse_paired": ("log-mel MSE (paired, dB²)", True),
    "mel_mse_set": ("log-mel MSE (set, dB²)", True),
    "mrstft_sc": ("MR-STFT spectral convergence", True),
    "mrstft_logmag": ("MR-STFT log-mag L1", True),
    "fad": ("FAD", True),
    "fad_inf": ("FAD∞", True),
    "kad": ("KAD", True),
    "lufs_diff": ("abs ΔLUFS vs ref (LU)", True),
    "silence_ratio": ("silence ratio", True),
    "clipping_ratio": ("clipping ratio", True),
}


@dataclass
class EvalConfig:
    """Everything that changes the numbers (hashed into ``metrics.json``)."""

    runs: dict[str, str]
    ref: str
    pairs: str = "auto"  # auto | none
    embedding: str = "logmel"
    device: str = "cpu"
    batch_size: int = 16
    n_boot: int = 1000
    seed: int = 0
    silent: str = (
        "keep"  # keep | exclude (generated silent files; reference ones are always excluded)
    )
    silence_db: float = -60.0
    spectral: SpectralConfig = field(default_factory=SpectralConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spectral"] = self.spectral.to_dict()
        return d


@dataclass
class Clip:
    """One file: what was measured on it and (while evaluating) its analysis arrays."""

    system: str
    path: Path
    rel: str
    status: str = "ok"  # ok | silent | bad
    error: str = ""
    sha256: str = ""
    sample_rate: int = 0
    channels: int = 0
    duration_s: float = 0.0
    lufs: float = math.nan
    silence_ratio: float = math.nan
    clipping_ratio: float = math.nan
    paired_with: str = ""
    per_pair: dict = field(default_factory=dict)
    n_frames: int = 0
    mono: np.ndarray | None = field(default=None, repr=False)  # [T] at spectral sample rate
    emb_in: np.ndarray | None = field(default=None, repr=False)  # [C, T] at the embedding's rate
    features: np.ndarray | None = field(default=None, repr=False)  # [D_afd]
    logmel: np.ndarray | None = field(default=None, repr=False)  # [n_mels, frames]
    frames: np.ndarray | None = field(default=None, repr=False)  # [frames, D_emb]

    @property
    def key(self) -> str:
        return str(Path(self.rel).with_suffix("")).replace("\\", "/")

    @property
    def used(self) -> bool:
        return self.status == "ok" or (self.status == "silent" and self.system != "__ref__")


@dataclass
class SystemResult:
    name: str
    folder: str
    clips: list[Clip]
    metrics: dict[str, dict]  # key -> {"value", "ci_low", "ci_high"}
    counts: dict[str, int]
    pairing: str  # "paired" | "unpaired"
    warnings: list[str]
    fad_inf_fit: dict | None = None


@dataclass
class EvalResult:
    config: EvalConfig
    embedding: dict
    reference: SystemResult
    systems: list[SystemResult]
    cache: dict


def load_clips(
    system: str, folder: str | Path, cfg: EvalConfig, emb: Embedding, progress: bool = True
) -> list[Clip]:
    """Read every audio file under ``folder``; bad files become ``status='bad'`` with the error."""
    folder = Path(folder)
    files = find_audio_files([folder])
    clips = []
    for p in tqdm(
        files,
        desc=f"load {system if system != '__ref__' else 'reference'}",
        unit="file",
        disable=not progress,
        leave=False,
    ):
        c = Clip(system, p, p.relative_to(folder.resolve()).as_posix())
        try:
            x, sr = load_audio(p)
            c.sha256 = sha256_file(p)
        except (AudioError, OSError) as e:
            c.status, c.error = "bad", str(e)
            log.warning("skipping %s", e)
            clips.append(c)
            continue
        c.sample_rate, c.channels, c.duration_s = sr, x.shape[0], x.shape[1] / sr
        c.lufs = loudness_lufs(x, sr)
        mono = x.mean(0)
        c.silence_ratio = D.silence_ratio(mono, threshold_db=cfg.silence_db)
        c.clipping_ratio = D.clipping_ratio(x)
        if rms_db(x) < cfg.silence_db:
            c.status = "silent"
            log.warning("%s: silent (RMS below %.0f dBFS)", p, cfg.silence_db)
            if system == "__ref__" or cfg.silent == "exclude":
                clips.append(c)
                continue
        c.mono = resample(mono[None], sr, cfg.spectral.sample_rate)[0]
        c.emb_in = emb.prepare(x, sr)
        clips.append(c)
    return clips


def compute_features(
    clips: list[Clip], cfg: EvalConfig, emb: Embedding, cache: EmbeddingCache, progress: bool = True
) -> None:
    """Fill ``features``, ``logmel`` and ``frames`` of the used clips, in batches of ``cfg.batch_size``."""
    todo = [c for c in clips if c.mono is not None]
    spec = cfg.spectral.to_dict()
    bar = tqdm(total=len(todo), desc="features", unit="file", disable=not progress, leave=False)
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        fkeys = [EmbeddingCache.key(c.sha256, FEATURES_ID, spec) for c in batch]
        ekeys = [EmbeddingCache.key(c.sha256, emb.id) for c in batch]
        for c, fk, ek in zip(batch, fkeys, ekeys, strict=True):
            c.features, c.frames = cache.get(fk), cache.get(ek)
        need_f = [i for i, c in enumerate(batch) if c.features is None]
        mono = [c.mono for c in batch]
        if len(need_f) == len(batch):  # nothing cached: features and log-mels from one STFT
            vecs, mels = clip_features_and_log_mels(mono, cfg.spectral, cfg.device)
        else:
            mels = log_mel_batch(mono, cfg.spectral, cfg.device)
            vecs = {}
            if need_f:
                done = clip_feature_vectors([mono[i] for i in need_f], cfg.spectral, cfg.device)
                vecs = dict(zip(need_f, done, strict=True))
        for c, m in zip(batch, mels, strict=True):
            c.logmel = m
        for i in need_f:
            batch[i].features = vecs[i]
            cache.put(fkeys[i], vecs[i])
        need_e = [i for i, c in enumerate(batch) if c.frames is None]
        if need_e:
            outs = emb.embed_batch([batch[i].emb_in for i in need_e])
            for i, e in zip(need_e, outs, strict=True):
                batch[i].frames = e
                cache.put(ekeys[i], e)
        for c in batch:
            c.n_frames = int(c.frames.shape[0])
        bar.update(len(batch))
    bar.close()


def pair_clips(gen: list[Clip], ref: list[Clip], mode: str) -> list[tuple[Clip, Clip]]:
    """Pairs (gen, ref) of used clips with the same relative path (minus extension), else the same
    stem when that stem is unique on both sides. ``mode='none'`` pairs nothing."""
    if mode == "none":
        return []
    g_used, r_used = (
        [c for c in gen if c.used and c.frames is not None],
        [c for c in ref if c.used and c.frames is not None],
    )
    by_key = {c.key: c for c in r_used}
    stems_r: dict[str, list[Clip]] = {}
    for c in r_used:
        stems_r.setdefault(Path(c.rel).stem, []).append(c)
    stems_g: dict[str, int] = {}
    for c in g_used:
        stems_g[Path(c.rel).stem] = stems_g.get(Path(c.rel).stem, 0) + 1
    pairs = []
    for c in g_used:
        r = by_key.get(c.key)
        stem = Path(c.rel).stem
        if r is None and len(stems_r.get(stem, [])) == 1 and stems_g[stem] == 1:
            r = stems_r[stem][0]
        if r is not None:
            c.paired_with = r.rel
            pairs.append((c, r))
    return pairs


def _metric(value: float, ci: tuple[float, float] = (math.nan, math.nan)) -> dict:
    return {"value": float(value), "ci_low": ci[0], "ci_high": ci[1]}


def score_system(
    name: str,
    folder: str,
    clips: list[Clip],
    ref: SystemResult,
    cfg: EvalConfig,
    emb: Embedding,
    kad_bandwidth: float,
) -> SystemResult:
    """All metrics of one system against the reference (see :data:`METRICS`).

    ``kad_bandwidth`` is the reference frames' median pairwise distance (the same for every system).
    """
    used = [c for c in clips if c.used and c.frames is not None]
    ref_used = [c for c in ref.clips if c.used and c.frames is not None]
    warnings: list[str] = []
    counts = {k: sum(c.status == k for c in clips) for k in ("ok", "silent", "bad")}
    counts.update(files=len(clips), used=len(used), frames=sum(c.n_frames for c in used))
    m: dict[str, dict] = {}
    readable = [c for c in clips if c.status != "bad"]
    ref_readable = [c for c in ref.clips if c.status == "ok"]
    if readable and ref_readable:
        m["lufs_diff"] = _metric(
            D.lufs_difference([c.lufs for c in readable], [c.lufs for c in ref_readable]),
            D.bootstrap_set_ci(
                len(readable),
                lambda i: D.lufs_difference(
                    [readable[j].lufs for j in i], [c.lufs for c in ref_readable]
                ),
                cfg.n_boot // 5,
                seed=cfg.seed,
            ),
        )
        for key in ("silence_ratio", "clipping_ratio"):
            v = np.array([getattr(c, key) for c in readable])
            m[key] = _metric(v.mean(), D.bootstrap_ci(v, cfg.n_boot, seed=cfg.seed))
    pairs = pair_clips(clips, ref.clips, cfg.pairs)
    counts["paired"] = len(pairs)
    pairing = "paired" if pairs else "unpaired"
    if len(used) < 2 or len(ref_used) < 2:
        warnings.append(
            f"{name}: {len(used)} usable generated and {len(ref_used)} reference clips; set metrics need at least 2 of each"
        )
        return SystemResult(name, folder, clips, m, counts, pairing, warnings)

    mu, sd = D.zscore_stats(np.stack([c.features for c in ref_used]))
    if pairs:
        afd = D.afd_paired(
            np.stack([g.features for g, _ in pairs]),
            np.stack([r.features for _, r in pairs]),
            mu,
            sd,
        )
        for (g, r), a in zip(pairs, afd, strict=True):
            mr = D.mrstft_distance(g.mono, r.mono)
            g.per_pair = {
                "afd": float(a),
                "mel_mse": D.mel_mse_paired(g.logmel, r.logmel),
                "mrstft_sc": mr.spectral_convergence,
                "mrstft_logmag": mr.log_magnitude,
            }
        for key, col in (
            ("afd_paired", "afd"),
            ("mel_mse_paired", "mel_mse"),
            ("mrstft_sc", "mrstft_sc"),
            ("mrstft_logmag", "mrstft_logmag"),
        ):
            v = np.array([g.per_pair[col] for g, _ in pairs])
            m[key] = _metric(v.mean(), D.bootstrap_ci(v, cfg.n_boot, seed=cfg.seed))

    gf, rf = np.stack([c.features for c in used]), np.stack([c.features for c in ref_used])
    # Set metrics get no bootstrap interval: resampling clips with replacement duplicates them,
    # which shrinks the set's spread and biases FAD/MMD upwards, so the interval would mislead.
    m["afd_set"] = _metric(D.afd_set(gf, rf, mu, sd))
    gs = np.stack([D.mean_spectrum(c.logmel) for c in used])
    rs = np.stack([D.mean_spectrum(c.logmel) for c in ref_used])
    m["mel_mse_set"] = _metric(D.mel_mse_set(gs, rs))

    ge = np.concatenate([c.frames for c in used]).astype(np.float64)
    re = np.concatenate([c.frames for c in ref_used]).astype(np.float64)
    for label, n in (("generated", ge.shape[0]), ("reference", re.shape[0])):
        if n < emb.dim:
            warnings.append(
                f"{name}: {n} {label} frames < embedding dim {emb.dim}: FAD is rank-deficient and badly biased; use more or longer clips (FAD∞ and KAD are less affected)"
            )
    mu_r, s_r = D.gaussian_stats(re)

    m["fad"] = _metric(D.frechet_distance(*D.gaussian_stats(ge), mu_r, s_r))
    fi = D.fad_inf(ge, re, seed=cfg.seed)
    m["fad_inf"] = _metric(fi.value)
    rng = np.random.default_rng(cfg.seed)
    cap = 4000  # KAD is O(n²) in memory: subsample frames beyond this (seeded)
    ge_k = ge if ge.shape[0] <= cap else ge[rng.choice(ge.shape[0], cap, replace=False)]
    re_k = re if re.shape[0] <= cap else re[rng.choice(re.shape[0], cap, replace=False)]
    m["kad"] = _metric(D.kad(ge_k, re_k, bandwidth=kad_bandwidth))
    silent = counts["silent"]
    if silent:
        warnings.append(
            f"{name}: {silent} silent file(s) "
            + (
                "kept in the metrics (they score badly)"
                if cfg.silent == "keep"
                else "excluded from the metrics"
            )
        )
    if counts["bad"]:
        warnings.append(f"{name}: {counts['bad']} unreadable file(s) excluded")
    return SystemResult(
        name,
        folder,
        clips,
        m,
        counts,
        pairing,
        warnings,
        fad_inf_fit={"slope": fi.slope, "r2": fi.r2, "ns": list(fi.ns), "fads": list(fi.fads)},
    )


def evaluate(
    cfg: EvalConfig, cache_dir: str | Path | None = None, progress: bool = True
) -> EvalResult:
    """Evaluate every run of ``cfg.runs`` against ``cfg.ref``. Never raises for bad audio files."""
    emb = load_embedding(cfg.embedding, cfg.device)
    cache = EmbeddingCache(cache_dir)
    ref_clips = load_clips("__ref__", cfg.ref, cfg, emb, progress)
    compute_features(ref_clips, cfg, emb, cache, progress)
    ref_used = [c for c in ref_clips if c.used]
    rcounts = {k: sum(c.status == k for c in ref_clips) for k in ("ok", "silent", "bad")}
    rcounts.update(
        files=len(ref_clips), used=len(ref_used), frames=sum(c.n_frames for c in ref_used)
    )
    rwarn = []
    if rcounts["silent"] or rcounts["bad"]:
        rwarn.append(
            f"reference: {rcounts['silent']} silent and {rcounts['bad']} unreadable file(s) excluded"
        )
    ref = SystemResult("reference", str(cfg.ref), ref_clips, {}, rcounts, "-", rwarn)
    bandwidth = 1.0
    if len(ref_used) >= 2:
        bandwidth = D.median_bandwidth(
            np.concatenate([c.frames for c in ref_used]).astype(np.float64), seed=cfg.seed
        )
    systems = []
    for name, folder in cfg.runs.items():
        clips = load_clips(name, folder, cfg, emb, progress)
        compute_features(clips, cfg, emb, cache, progress)
        res = score_system(name, str(folder), clips, ref, cfg, emb, bandwidth)
        systems.append(res)
        for w in res.warnings:
            log.warning(w)
    info = {**emb.describe(), "kad_bandwidth": bandwidth}
    return EvalResult(
        cfg,
        info,
        ref,
        systems,
        {"dir": str(cache_dir) if cache_dir else None, "hits": cache.hits, "misses": cache.misses},
    )
