"""method="auto" (cross-validated choice, validation error) and the off-grid spectral fit."""

import numpy as np
import pytest

from mracq.recon.cosy.auto import reconstruct_auto
from mracq.recon.cosy.dlmc import reconstruct
from mracq.recon.cosy.spectral import fit_path
from mracq.sim.cosy.families import add_noise, family_maps


def _mask(rng, coverage, shape=(50, 50)):
    flat = np.zeros(shape[0] * shape[1], bool)
    flat[rng.choice(flat.size, int(round(coverage * flat.size)), replace=False)] = True
    return flat.reshape(shape)


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - b) ** 2)))


def test_spectral_fit_recovers_off_grid_plane_waves():
    rng = np.random.default_rng(3)
    i, j = np.indices((50, 50)) - 24.5
    w = np.array([[0.91, -2.87], [2.203, 2.95], [-0.4, 1.333]])  # rad/sample, off grid
    truth = 0.5 + sum(a * np.cos(w1 * i + w2 * j + p) for (w1, w2), a, p
                      in zip(w, (0.3, 0.2, 0.1), (0.3, 1.0, -2.0), strict=True))
    mask = _mask(rng, 0.1)
    path = fit_path(truth[mask], np.argwhere(mask), truth.shape, 5)
    assert _rmse(path[3].grid(truth.shape), truth) < 1e-3  # 3 waves: exact from 10%
    assert _rmse(path[2].grid(truth.shape), truth) > 0.05  # 2 waves cannot be
    found = sorted(map(tuple, np.round(np.abs(path[3].freqs), 3)))
    assert found == sorted(map(tuple, np.round(np.abs(w), 3)))
    # shrinkage: none without noise; with noise the weakest wave (0.1) shrinks most
    np.testing.assert_allclose(path[3].shrunk(0.0).amps, path[3].amps)
    norms = np.hypot(*path[3].amps.T)
    g = np.hypot(*path[3].shrunk(0.1).amps.T) / norms  # 4 * 0.1 / 250 = 0.0016
    np.testing.assert_allclose(g, 1 - 0.0016 / norms**2, rtol=1e-9)
    assert g[np.argmin(norms)] == g.min() and np.all(path[3].shrunk(10.0).amps == 0)


def test_auto_error_tracks_true_error_and_beats_fixed_methods():
    rng = np.random.default_rng(11)
    truths = family_maps("lattice3", 2, rng)
    noisy = add_noise(truths, 0.1, rng)
    for t, y in zip(truths, noisy, strict=True):
        errs = {}
        for cov in (0.1, 0.4):
            mask = _mask(rng, cov)
            out = reconstruct(np.where(mask, y, np.nan), mask)  # default: auto
            rep = out.report
            true = _rmse(out, t)
            errs[cov] = rep.error
            # below the noise (0.1) the error is a small difference of two larger numbers:
            # within half the true error, or 0.02 on the map's [0, 1] scale
            assert abs(rep.error - true) < max(0.5 * true, 0.02), (cov, rep.method,
                                                                    rep.error, true)
            assert rep.validation_rmse > rep.error  # held-out error includes the noise
            assert rep.noise == pytest.approx(0.1, rel=0.35)
            assert rep.error_fraction == pytest.approx(rep.error / np.ptp(out))
            best_fixed = min(_rmse(reconstruct(y, mask, m), t) for m in ("dl", "svt"))
            assert true < 1.05 * best_fixed, (rep.method, true, best_fixed)
        assert errs[0.4] < errs[0.1]


def test_auto_picks_svt_when_the_network_sees_an_out_of_family_map():
    # a generic rank-2 matrix: no COSY structure (the network's prior is wrong) and no
    # sparse 2D spectrum (the plane-wave fit's is wrong); low rank is all there is
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=(2, 50, 2))
    truth = u @ v.T
    truth = (truth - truth.min()) / np.ptp(truth)
    y = truth + 0.02 * rng.normal(size=truth.shape)
    mask = _mask(rng, 0.4)
    out = reconstruct_auto(np.where(mask, y, np.nan), mask)
    chosen = out.report.method
    assert chosen.startswith(("svt", "stack(", "aggregate(")) and "dl" not in chosen, chosen
    assert "more)" not in chosen  # every member of an aggregate is named (none is DL)
    assert "svt" in chosen
    cv = out.report.cv_rmse
    assert out.report.validation_rmse < 0.7 * min(cv["dl"], cv["dlmc"])
    assert _rmse(out, truth) < 0.7 * _rmse(reconstruct(y, mask, "dl"), truth)


def test_auto_report_scale_and_errors():
    rng = np.random.default_rng(2)
    t = family_maps("lattice2", 1, rng)[0]
    y = add_noise(t, 0.1, rng)
    mask = _mask(rng, 0.2)
    a = reconstruct_auto(y, mask)
    b = reconstruct_auto(3.0 * y - 1.0, mask)  # affine equivariant, deterministic folds
    assert b.report.method == a.report.method
    np.testing.assert_allclose(np.asarray(b), 3.0 * np.asarray(a) - 1.0, atol=1e-6)
    assert b.report.error == pytest.approx(3.0 * a.report.error, rel=1e-6)
    assert b.report.error_fraction == pytest.approx(a.report.error_fraction, rel=1e-6)
    d = a.report.to_dict()
    assert d["method"] == a.report.method and "spectral:0" in d["cv_rmse"]
    assert d["validation_rmse"] == pytest.approx(min(d["cv_rmse"].values()))
    known = reconstruct_auto(y, mask, noise=0.1)
    assert known.report.noise == pytest.approx(0.1)
    with pytest.raises(ValueError, match="measured points"):
        reconstruct_auto(y, _mask(rng, 0.002))
    # too few points for auto: reconstruct falls back to dlmc (a plain array)
    few = _mask(rng, 0.002)
    assert getattr(reconstruct(y, few), "report", None) is None


def test_design_lowers_integrated_variance_below_random_and_reaches_far_times():
    from mracq.recon.cosy.design import PlaneWaveDesign, design_scores, plane_wave_jacobian
    from mracq.recon.cosy.spectral import PlaneWaves

    pw = PlaneWaves(0.5, np.array([[0.91, -2.87], [2.2, 2.95]]),
                    np.array([[0.2, 0.1], [0.1, -0.15]]), (24.5, 24.5), 0.0, 0)
    ij = np.indices((50, 50)).reshape(2, -1).T
    jac = plane_wave_jacobian(pw, ij)
    rng = np.random.default_rng(0)
    measured = _mask(rng, 0.04).ravel()

    def integrated_variance(meas):
        a = jac[meas].T @ jac[meas]
        return float(np.trace(jac @ np.linalg.solve(a, jac.T)))

    picks = design_scores(jac, measured, 25)
    assert len(set(picks)) == 25 and not measured[picks].any()
    designed = measured.copy()
    designed[picks] = True
    rand = [integrated_variance(measured | _mask(np.random.default_rng(s), 0.01).ravel())
            for s in range(5)]
    assert integrated_variance(designed) < 0.9 * min(rand)  # measured: 0.83
    u = np.abs(ij[picks] - 24.5).max(axis=1)
    assert u.mean() > 17  # far from the grid centre (random: 12.5): the frequency rows

    # the strategy: random first points, then designed ones, never a point twice
    truth = pw.grid((50, 50))
    s = PlaneWaveDesign((50, 50), np.random.default_rng(1), method="svt", min_fit=40)
    todo = s.suggest(60)
    seen = set()
    for _ in range(3):
        s.ingest([{"_id": p["_id"], "value": truth[p["i"], p["j"]]} for p in todo])
        seen |= {(p["i"], p["j"]) for p in todo}
        todo = s.suggest(20)
        assert len(todo) == 20 and not seen & {(p["i"], p["j"]) for p in todo}
