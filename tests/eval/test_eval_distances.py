"""Metric functions against independent computations and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from eval import distances as D


def sqrtm_fd(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook Fréchet distance with scipy.linalg.sqrtm (as in pytorch-fid)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fad_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)) @ rng.standard_normal((8, 8))
    y = rng.standard_normal((300, 8)) * 2.0 + 0.5
    assert D.fad(x, y) == pytest.approx(sqrtm_fd(x, y), rel=1e-6)


def test_fad_matches_second_library_if_installed():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((200, 6)), rng.standard_normal((250, 6)) + 0.3
    mu1, s1 = D.gaussian_stats(x)
    mu2, s2 = D.gaussian_stats(y)
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance as other
    except Exception:
        try:
            from frechet_audio_distance import FrechetAudioDistance

            other = FrechetAudioDistance.calculate_frechet_distance.__get__(
                object.__new__(FrechetAudioDistance)
            )
        except Exception:
            pytest.skip(
                "no second Fréchet distance library (pytorch-fid, frechet-audio-distance) installed"
            )
    assert D.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        float(other(mu1, s1, mu2, s2)), rel=1e-5
    )


def test_fad_identical_sets_is_zero():
    x = np.random.default_rng(2).standard_normal((500, 16))
    assert D.fad(x, x) == pytest.approx(0.0, abs=1e-8)


def test_shifted_gaussian_closed_form():
    # Equal covariances: FD = ||mu1 - mu2||^2 exactly.
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + np.eye(5)
    mu1, mu2 = np.zeros(5), np.arange(5.0)
    assert D.frechet_distance(mu1, cov, mu2, cov) == pytest.approx(float(mu2 @ mu2), rel=1e-9)
    # Different isotropic covariances: ||dmu||^2 + d (s1 - s2)^2 with s the standard deviations.
    d = 4
    fd = D.frechet_distance(np.zeros(d), np.eye(d) * 4.0, np.ones(d), np.eye(d))
    assert fd == pytest.approx(d + d * (2.0 - 1.0) ** 2)


def test_frechet_handles_singular_covariance():
    # Fewer samples than dimensions: rank-deficient, must stay finite and >= 0.
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 20)), rng.standard_normal((6, 20))
    v = D.fad(x, y)
    assert np.isfinite(v) and v >= 0


def test_fad_inf_less_biased_than_fad():
    rng = np.random.default_rng(5)
    d = 16
    ref = rng.standard_normal((20000, d))
    gen = rng.standard_normal((1500, d))  # same distribution: true FAD = 0
    plain = D.fad(gen, ref)
    inf = D.fad_inf(gen, ref, steps=10, min_n=200, seed=0)
    assert plain > 0.05  # the small-sample bias is real (~d(d+1)/2N)
    assert abs(inf.value) < 0.5 * plain
    assert inf.slope > 0 and inf.r2 > 0.8


def test_kad_unbiased_for_same_distribution():
    vals = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        vals.append(D.kad(rng.standard_normal((60, 4)), rng.standard_normal((80, 4))))
    vals = np.array(vals)
    assert abs(vals.mean()) < 3 * vals.std() / np.sqrt(len(vals)) + 1e-4
    assert (vals < 0).any()  # unbiased: negative values happen
    rng = np.random.default_rng(7)
    assert D.kad(rng.standard_normal((60, 4)) + 1.0, rng.standard_normal((80, 4))) > 10 * vals.std()


def test_kad_matches_direct_loop():
    rng = np.random.default_rng(8)
    x, y, s = rng.standard_normal((7, 3)), rng.standard_normal((9, 3)), 1.3

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * s * s))

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(a, b) for a in x for b in y) / 63
    assert D.kad(x, y, bandwidth=s) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_afd_self_is_zero_and_set_mode():
    rng = np.random.default_rng(9)
    ref = rng.standard_normal((10, 12)) * 3 + 1
    mu, sd = D.zscore_stats(ref)
    assert np.allclose(D.afd_paired(ref, ref, mu, sd), 0.0, atol=1e-12)
    assert D.afd_set(ref, ref, mu, sd) == pytest.approx(0.0, abs=1e-12)
    far = rng.standard_normal((10, 12)) * 3 + 8
    assert D.afd_set(far, ref, mu, sd) > 0.5
    # cosine MMD by its formula
    zx, zy = D.zscore(far, mu, sd), D.zscore(ref, mu, sd)

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    direct = (np.mean([[cos(a, b) for b in zx] for a in zx]) + np.mean([[cos(a, b) for b in zy] for a in zy])
              - 2 * np.mean([[cos(a, b) for b in zy] for a in zx]))  # fmt: skip
    assert D.afd_set(far, ref, mu, sd) == pytest.approx(direct, rel=1e-10)


def test_mel_mse_and_mrstft_basic(synth):
    a = np.random.default_rng(10).standard_normal((8, 20))
    assert D.mel_mse_paired(a, a) == 0.0
    assert D.mel_mse_paired(a, a + 2.0) == pytest.approx(4.0)
    assert D.mel_mse_paired(a, np.concatenate([a + 1.0, a], 1)) == pytest.approx(1.0)  # cropped
    assert D.mel_mse_set(a[None].mean(-1), (a + 3.0)[None].mean(-1)) == pytest.approx(9.0)
    x = synth("tone")
    same = D.mrstft_distance(x, x)
    assert same.spectral_convergence == 0.0 and same.log_magnitude == 0.0
    other = D.mrstft_distance(synth("noise"), x)
    assert other.spectral_convergence > 0.5 and other.log_magnitude > 1.0


def test_silent_generations_score_badly_on_sanity(synth):
    ref = synth("tone")
    silent = synth("silence")
    assert D.silence_ratio(silent) == 1.0
    assert D.silence_ratio(ref) == 0.0
    assert D.lufs_difference([float("-inf")], [-18.0]) == pytest.approx(52.0)
    assert D.lufs_difference([-18.5], [-18.0]) == pytest.approx(0.5)
    clipped = np.clip(ref * 10, -1, 1)
    assert D.clipping_ratio(clipped) > 0.5 and D.clipping_ratio(ref) == 0.0


def test_bootstrap_ci_brackets_mean():
    v = np.random.default_rng(11).standard_normal(200) + 5
    lo, hi = D.bootstrap_ci(v, n_boot=500)
    assert lo < v.mean() < hi and hi - lo < 0.6
    assert np.isnan(D.bootstrap_ci(np.array([1.0]))[0])
