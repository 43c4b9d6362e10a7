"""SVT matrix completion and the COSY metrics."""

import numpy as np
import pytest

from mracq.recon.metrics import rmse, rmse_freq, snr_db, spectral_regions, spectrum2d, ssim
from mracq.recon.svt import svt


def low_rank(n=50, r=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, r)) @ rng.normal(size=(r, n))


def test_svt_recovers_low_rank_matrix():
    m = low_rank(r=2)
    rng = np.random.default_rng(1)
    mask = rng.random(m.shape) < 0.5  # 1250 samples >> 2 * (100 - 2) = 196 dof
    res = svt(np.where(mask, m, np.nan), mask, eps=1e-3, max_iter=1500)
    assert res.converged
    assert res.rank <= 3  # rank 2 plus the removed mean
    assert np.linalg.norm(res.x - m) / np.linalg.norm(m) < 5e-3


def test_svt_fails_below_degrees_of_freedom():
    """Fewer samples than r (2n - r) cannot determine the matrix (physics.md section 3)."""
    m = low_rank(r=8)
    rng = np.random.default_rng(2)
    mask = rng.random(m.shape) < 0.1  # 250 samples < 8 * 92 = 736
    res = svt(m, mask, eps=1e-4, max_iter=300)
    assert np.linalg.norm(res.x - m) / np.linalg.norm(m) > 0.3


def test_svt_warm_start_and_errors():
    m = low_rank(r=2)
    mask = np.random.default_rng(3).random(m.shape) < 0.5
    res = svt(m, mask, tau=50.0, eps=1e-3, max_iter=200, init=m)
    assert np.linalg.norm(res.x - m) / np.linalg.norm(m) < 1e-2
    with pytest.raises(ValueError, match="NaN"):
        svt(np.full((4, 4), np.nan), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="empty"):
        svt(m, np.zeros_like(mask))
    with pytest.raises(ValueError, match="shape"):
        svt(m, mask[:10])


def test_metrics_known_answers():
    t = np.arange(50) * 18e-6
    f0 = 20e3
    truth = np.cos(2 * np.pi * f0 * t)[:, None] * np.cos(2 * np.pi * f0 * t)[None, :]
    assert rmse(truth + 0.1, truth) == pytest.approx(0.1)
    # a constant offset leaves the mean-subtracted spectrum unchanged
    assert rmse_freq(truth + 0.3, truth) == pytest.approx(0.0, abs=1e-12)
    # Parseval with the orthonormal FFT
    x = np.random.default_rng(0).normal(size=(50, 50))
    assert np.sum(spectrum2d(x) ** 2) == pytest.approx(np.sum((x - x.mean()) ** 2))
    peak, blank = spectral_regions(truth)
    assert peak.sum() >= 4 and blank.mean() > 0.5
    noisy = truth + 0.1 * np.random.default_rng(1).normal(size=truth.shape)
    assert snr_db(truth, peak, blank) > snr_db(noisy, peak, blank) + 20
    # amplitude ratio 10 -> 20 dB: blank mean of |FFT| of unit white noise is sqrt(pi)/2
    assert ssim(truth, truth) == pytest.approx(1.0)
    assert ssim(noisy, truth) < 0.9
