"""The shared-frequency COSY fit (`mracq.recon.cosy.shared`) and its place in method="auto"."""

import numpy as np

from mracq.recon.cosy.auto import reconstruct_auto
from mracq.recon.cosy.shared import fit_shared_path
from mracq.recon.cosy.spectral import fit_path

FREQS = np.array([0.7, 1.9, 2.6])  # rad per grid step, the same set on both axes
TERMS = [(0, 0, 1, 0.25), (1, 1, -1, 0.2), (0, 1, 1, 0.12), (1, 0, 1, 0.12), (2, 2, 1, 0.15),
         (2, 0, -1, 0.1)]  # (p, q, s, amplitude): cos(f_p u + s f_q' v + phase)


def _map(seed, t2_shift=0.0):
    """Map with 6 terms on 3 frequencies (t2's shifted by ``t2_shift``: not shared), its
    noisy copy (noise 0.1) and a 10 % random mask."""
    rng = np.random.default_rng(seed)
    u, v = np.indices((50, 50)) - 24.5
    g = FREQS + t2_shift
    truth = 0.5 + sum(a * np.cos(FREQS[p] * u + s * g[q] * v + rng.uniform(0, 2 * np.pi))
                      for p, q, s, a in TERMS)
    flat = np.zeros(2500, bool)
    flat[rng.choice(2500, 250, replace=False)] = True
    return truth, truth + 0.1 * rng.normal(size=truth.shape), flat.reshape(50, 50)


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - b) ** 2)))


def test_shared_fit_recovers_a_shared_frequency_map_from_noisy_10_percent():
    truth, y, mask = _map(0)
    ij = np.argwhere(mask)
    path = fit_shared_path(y[mask], ij, truth.shape, 7)
    fit = path[6]
    # 3 frequencies + 2 x 6 amplitudes + offset = 16 parameters from 250 points of noise
    # 0.1: RMS error about 0.1 sqrt(16 / 250) = 0.025 over the map
    assert _rmse(fit.grid(truth.shape), truth) < 0.04
    assert _rmse(path[5].grid(truth.shape), truth) > 0.05  # one term short cannot
    assert len(fit.freqs) == 3
    np.testing.assert_allclose(np.sort(fit.freqs), FREQS, atol=0.01)
    want = {(round(FREQS[p], 1), round(s * FREQS[q], 1)) for p, q, s, _ in TERMS}
    assert set(map(tuple, np.round(fit.pair_freqs(), 1))) == want
    # sharing pays: the generic plane-wave fit (4 parameters a peak) at its best is worse
    generic = min(_rmse(p.grid(truth.shape), truth)
                  for p in fit_path(y[mask], ij, truth.shape, 8))
    assert _rmse(fit.grid(truth.shape), truth) < 0.9 * generic


def test_shared_fit_adds_frequencies_when_the_axes_do_not_share_them():
    truth, y, mask = _map(0, t2_shift=0.3)
    fit = fit_shared_path(y[mask], np.argwhere(mask), truth.shape, 6)[6]
    assert len(fit.freqs) == 6  # t1's three and t2's three
    assert _rmse(fit.grid(truth.shape), truth) < 0.045


def test_auto_scores_the_shared_fit_and_uses_it_where_it_predicts_best():
    truth, y, mask = _map(1)
    out = reconstruct_auto(np.where(mask, y, np.nan), mask, use_dl=False)
    cv = out.report.cv_rmse
    assert "shared:6" in cv and cv["shared:6"] < min(cv["svt:50%"], cv["svt:100%"])
    assert "shared" in out.report.method, out.report.method
    assert _rmse(out, truth) < 0.045
