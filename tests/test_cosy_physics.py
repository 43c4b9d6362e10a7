"""The field-known coupling fit (recon/cosy/physics) and its place in ``method="auto"``."""

import logging

import numpy as np
import pytest

from mracq.recon.cosy.auto import reconstruct_auto
from mracq.recon.cosy.dlmc import reconstruct
from mracq.recon.cosy.physics import fit_clusters, resonant_harmonic, resonant_tau
from mracq.recon.cosy.physics_fit import KHZ
from mracq.sim.cosy.couplings import GAMMA_13C
from mracq.sim.cosy.families import family_couplings
from mracq.sim.cosy.model import B_FIELD, T_GRID, TAU, simulate_map

GRID = T_GRID[:32]
# a light search (one anchor, 3 kHz scan steps, one rescan): ~1-4 s per search here
GAMMA_13C_KHZ = GAMMA_13C / KHZ  # 13C Larmor frequency per T, kHz
LIGHT = {"n_anchors": 1, "scan_step": 3.0, "keep_b": 3, "rescans": 1}


def _cluster_map(a_zz, a_perp, d_khz, noise, coverage, seed):
    """Normalized noiseless map of a 2-spin cluster on `GRID` (A_zz, A_perp, d in kHz;
    nucleus 0's A_perp along x, nucleus 1's along y; dipolar axis 57 deg from the NV
    axis), its noisy copy and a random mask."""
    hyp = KHZ * np.array([[a_perp[0], 0, a_zz[0]], [0, a_perp[1], a_zz[1]]])
    n = np.array([np.sin(1.0), 0, np.cos(1.0)])
    dip = np.zeros((2, 2, 3, 3))
    dip[0, 1] = KHZ * d_khz * (np.eye(3) - 3 * np.outer(n, n))
    m = simulate_map(hyperfine=hyp, dipolar=dip, t1=GRID, t2=GRID, b_field=B_FIELD, tau=TAU)
    m = (m - m.min()) / np.ptp(m)
    rng = np.random.default_rng(seed)
    y = m + noise * rng.normal(size=m.shape)
    return m, y, rng.random(m.shape) < coverage


def test_fit_recovers_the_seen_nucleus_and_the_map():
    """300 points (30 % of 32 x 32) at noise 0.05, true field: the nucleus the decoupling
    block sees (A_zz -25 kHz) within 0.2 kHz, the field within 5 uT and the map within
    0.03 RMSE (below the noise). The other nucleus shows only in cross peaks of ~0.01: its
    couplings are not identified from these points, so nothing is asserted on them."""
    m, y, mask = _cluster_map((30.0, -25.0), (20.0, 15.0), 1.5, 0.05, 0.3, 1)
    fit = fit_clusters(y[mask], np.argwhere(mask), t1=GRID, t2=GRID, b_field=B_FIELD,
                       tau=TAU, spins=(2,), **LIGHT)[2]
    c = fit.couplings()
    assert min(abs(a + 25e3) for a in c["a_zz"]) < 200
    assert c["b_field"] == pytest.approx(B_FIELD, abs=5e-6)
    assert np.sqrt(np.mean((fit.grid() - m) ** 2)) < 0.03
    assert fit.n == mask.sum() and fit.spins == 2


def test_bad_field_or_tau_raises_before_any_work():
    m, y, mask = _cluster_map((30.0, -25.0), (20.0, 15.0), 1.5, 0.05, 0.3, 1)
    x = np.where(mask, y, np.nan)
    # a net that would fail if any reconstruction ran first
    for kw, match in (({"field": np.nan, "tau": TAU}, "field"),
                      ({"field": -0.1, "tau": TAU}, "field"),
                      ({"field": B_FIELD, "tau": 1.0}, "tau"),
                      ({"field": B_FIELD, "tau": 0.0}, "tau"),
                      ({"field": B_FIELD}, "both field"),
                      ({"tau": TAU}, "both field"),
                      ({"field": B_FIELD, "tau": TAU, "t1": T_GRID}, "map is 32 x 32"),
                      ({"field": B_FIELD, "tau": TAU, "physics_budget_s": -1}, "budget")):
        with pytest.raises(ValueError, match=match):
            reconstruct(x, mask, "auto", net="not a network", **kw)


def test_auto_without_field_is_unchanged_and_physics_off_changes_nothing():
    m, y, mask = _cluster_map((30.0, -25.0), (20.0, 15.0), 1.5, 0.1, 0.2, 2)
    x = np.where(mask, y, np.nan)
    plain = reconstruct_auto(x, mask)
    off = reconstruct_auto(x, mask, field=B_FIELD, tau=TAU, physics_budget_s=0)
    np.testing.assert_array_equal(plain, off)
    assert plain.report.to_dict() == off.report.to_dict()
    assert not any(k.startswith("physics") for k in plain.report.cv_rmse)


def test_resonant_harmonic_says_where_the_map_holds_13c_signal():
    """The seed's tau is the 7th harmonic at 158 mT and off every harmonic at 50 mT (the
    default simulated rig); `resonant_tau` puts it back. On clusters of three families
    (their own field and tau: on the 7th harmonic) the simulated map has signal; with tau
    15 % longer, where the check finds no harmonic, it is flat to < 10 % of that."""
    assert resonant_harmonic(B_FIELD, TAU) == 7
    assert resonant_harmonic(0.05, TAU) is None
    assert resonant_harmonic(0.05, resonant_tau(0.05)) == 7
    assert resonant_harmonic(0.05, resonant_tau(0.05, 5)) == 5
    assert resonant_tau(B_FIELD) == pytest.approx(TAU, rel=0.02)
    rng = np.random.default_rng(31)
    for fam in ("couplings", "bonded_pair", "lattice2"):
        cls = family_couplings(fam, 6, rng)
        for c in (cls if isinstance(cls, list) else [cls]):
            ptp = {}
            for f in (1.0, 1.15):
                assert all((resonant_harmonic(b, t * f) is None) == (f != 1.0)
                           for b, t in zip(c.b_field, c.tau, strict=True))
                maps = simulate_map(hyperfine=c.hyperfine, dipolar=c.dipolar, t1=GRID,
                                    t2=GRID, b_field=c.b_field, tau=c.tau * f)
                ptp[f] = np.ptp(maps.reshape(len(maps), -1), axis=1)
            assert np.max(ptp[1.15]) < 0.1 * np.median(ptp[1.0]), (fam, ptp)


def test_auto_off_resonance_skips_physics_at_once(caplog):
    """Field 50 mT with the 158 mT tau (a simulated session at the default field): no
    physics candidates, a warning with field and tau, and the result of auto without
    the field, with the default 600 s budget not spent."""
    m, y, mask = _cluster_map((30.0, -25.0), (20.0, 15.0), 1.5, 0.1, 0.2, 2)
    x = np.where(mask, y, np.nan)
    plain = reconstruct_auto(x, mask)
    with caplog.at_level(logging.WARNING, logger="mracq.recon.cosy"):
        off = reconstruct_auto(x, mask, field=0.05, tau=TAU)
    np.testing.assert_array_equal(plain, off)
    assert not any(k.startswith("physics") for k in off.report.cv_rmse)
    assert any("no physics candidates at field 0.050000 T, tau 2.045e-06 s" in r.getMessage()
               for r in caplog.records)


def test_auto_with_field_scores_and_picks_physics(caplog):
    """Auto with the field: ``physics:2`` is scored by the honest held-out error (the search
    rerun on each of 5 folds), reported beside the others, and chosen where it predicts
    held-out points best; its map beats auto's without the field. ~90 points (8 % of
    32 x 32) at noise 0.02 of a cluster with strong A_perp: the plane-wave fits run short
    of points, the 10 couplings do not (on seeds 3, 4, 5 its held-out error was 14-18 %
    below the others' best, its map error 15-45 % below)."""
    m, y, mask = _cluster_map((30.0, -25.0), (45.0, 40.0), 2.5, 0.02, 0.08, 3)
    x = np.where(mask, y, np.nan)
    plain = reconstruct_auto(x, mask)
    with caplog.at_level(logging.INFO, logger="mracq.recon.cosy"):
        got = reconstruct_auto(x, mask, field=B_FIELD, tau=TAU, t1=GRID, t2=GRID,
                               physics_search={**LIGHT, "spins": (2,)})
    rep = got.report
    assert "physics:2" in rep.cv_rmse and "physics:3" not in rep.cv_rmse
    assert sum("searched in" in r.getMessage() for r in caplog.records) == 5
    assert rep.method == "physics:2"
    assert rep.validation_rmse == rep.cv_rmse["physics:2"] < plain.report.validation_rmse
    assert rep.couplings["b_field"] == pytest.approx(B_FIELD, abs=1e-5)
    assert rep.to_dict()["couplings"] == rep.couplings
    assert got.physics.spins == 2 and got.physics.couplings() == rep.couplings
    err = np.sqrt(np.mean((got - m) ** 2))
    assert err < np.sqrt(np.mean((plain - m) ** 2))


def test_coupling_jacobian_predicts_a_small_change_of_the_couplings():
    """`CouplingFit.jacobian` times a small step of every coupling, the offset and the
    scale predicts the map's change to < 3 % of it (a column in the wrong place or scale
    would miss by ~100 %)."""
    from mracq.recon.cosy.physics_fit import CouplingFit, coupling_maps

    th = np.array([GAMMA_13C_KHZ * B_FIELD, 60.0, 45.0, 0.3, 1700.0, 40.0, 1.2, 2.5, 1.0,
                   0.5])
    fit = CouplingFit(th, 0.2, 3.0, 0.0, 0, GRID, GRID, TAU)
    jac = fit.jacobian()
    assert jac.shape == (GRID.size ** 2, th.size + 2)
    step = np.random.default_rng(1).normal(size=th.size + 2) * np.r_[
        0.002, 0.002, 0.01, 0.001, 0.002, 0.01, 0.001, 0.001, 0.002, 0.002, 1e-3, 1e-3]
    moved = CouplingFit(th + step[:-2], 0.2 + step[-2], 3.0 + step[-1], 0.0, 0, GRID, GRID,
                        TAU)
    change = (moved.grid() - fit.grid()).ravel()
    assert np.linalg.norm(jac @ step - change) < 0.03 * np.linalg.norm(change)
    assert np.allclose(fit.grid(), 0.2 + 3.0 * coupling_maps(th, GRID, GRID, TAU)[0])


def test_coupling_design_asks_where_the_fitted_couplings_are_least_known():
    """`CouplingDesign` on the strong-A_perp cluster: after 90 random points auto picks
    ``physics:2``; no batch has confirmed that fit yet, so the next 30 points are random.
    The next fit starts also at the first (keep_basin), stays in its basin and agrees with
    it (confirmed). Then the 30 points are all V-optimal under the fit and lower the
    integrated variance of the map linearised at the fit below each of 20 draws of 30
    random points."""
    from mracq.recon.cosy.design import CouplingDesign

    m, y, mask = _cluster_map((30.0, -25.0), (45.0, 40.0), 2.5, 0.02, 0.08, 3)
    strat = CouplingDesign(m.shape, np.random.default_rng(0), field=B_FIELD, tau=TAU,
                           t1=GRID, t2=GRID, physics_search={**LIGHT, "spins": (2,)},
                           physics_budget_s=120)
    strat.ingest([(int(i), int(j), float(y[i, j])) for i, j in np.argwhere(mask)])
    first = strat.reconstruction.physics
    assert first is not None and first.spins == 2 and not strat.confirmed

    def answer(sug):
        picked = np.array([(s["i"], s["j"]) for s in sug])
        assert len({tuple(p) for p in picked}) == len(sug)
        assert not strat.mask[tuple(picked.T)].any()
        strat.ingest([{"_id": s["_id"], "value": float(y[s["i"], s["j"]])} for s in sug])
        return picked

    answer(strat.suggest(30))  # random: the fit is not confirmed yet
    assert np.array_equal(strat.reconstruct_kw["physics_search"]["starts"][0], first.theta)
    fit = strat.reconstruction.physics
    # in the basin (measured 0.018 at noise 0.02; a wrong basin is > 0.05 off), and the two
    # fits' maps agree to < 0.5 noise (measured 0.004)
    assert fit is not None and np.sqrt(np.mean((fit.grid() - m) ** 2)) < 0.03
    assert strat.confirmed
    base = np.flatnonzero(strat.mask.ravel())
    sug = strat.suggest(30)
    picked = np.array([(s["i"], s["j"]) for s in sug])
    assert len({tuple(p) for p in picked}) == 30 and not strat.mask[tuple(picked.T)].any()
    jac = fit.jacobian()

    def iv(flat):
        a = jac[flat].T @ jac[flat]
        return np.trace(np.linalg.solve(a + 1e-9 * np.eye(len(a)), jac.T @ jac))

    designed = iv(list(base) + list(np.ravel_multi_index(tuple(picked.T), m.shape)))
    rng = np.random.default_rng(5)
    free = np.setdiff1d(np.arange(m.size), base)
    rand = [iv(list(base) + list(rng.choice(free, 30, replace=False))) for _ in range(20)]
    # measured: 67.6 against random 82.6-88.3 (mean 85.1)
    assert designed < min(rand) and designed < 0.95 * np.mean(rand), (designed, rand)


def test_design_scores_counts_every_coupling_whatever_its_units():
    """The couplings Jacobian's columns span 3.5 decades here (offset 32, a weak A_perp
    0.018; 11 on the benchmark families). 40 designed points after 60 random ones lower
    the integrated variance (evaluated with unit columns) to < 0.85 of 40 random ones
    (measured 0.72-0.78 over four starts); with the former ridge (1e-3 of the mean
    diagonal on every parameter) the design read the weak directions as known: 0.90-0.96."""
    from mracq.recon.cosy.design import design_scores
    from mracq.recon.cosy.physics_fit import CouplingFit

    th = _strong_pair()[0]
    jac = CouplingFit(th, 0.0, 1.0, 0.0, 0, GRID, GRID, TAU).jacobian()
    unit = jac / np.linalg.norm(jac, axis=0)

    def iv(rows):
        return np.trace(np.linalg.solve(unit[rows].T @ unit[rows], unit.T @ unit))

    for seed in range(2):
        rng = np.random.default_rng(seed)
        base = np.zeros(len(jac), bool)
        base[rng.choice(len(jac), 60, replace=False)] = True
        rows = np.flatnonzero(base)
        rand = np.mean([iv(np.r_[rows, rng.choice(np.flatnonzero(~base), 40, replace=False)])
                        for _ in range(20)])
        picks = design_scores(jac, base, 40, noise=0.05 ** 2)
        assert len(set(picks)) == 40 and not base[picks].any()
        assert iv(np.r_[rows, picks]) < 0.85 * rand


def _strong_pair():
    """A strongly coupled pair on `GRID` (A_zz -29 and -33 kHz, A_perp 20 and 15 kHz, d
    2.08 kHz): its ``theta``, the true frequencies f1 (kHz), the normalized map, its copy
    with noise 0.05 and a 30 % random mask."""
    from mracq.recon.cosy.physics_fit import coupling_maps

    wl = GAMMA_13C_KHZ * B_FIELD
    a_perp, a_zz = np.array([20.0, 15.0]), np.array([-29.0, -33.0])
    f1 = np.sqrt((wl - a_zz) ** 2 + a_perp ** 2)
    th = np.array([wl, f1[0], a_perp[0], 0.4, f1[1], a_perp[1], 2.0, 2.08, 1.0, 0.3])
    m = coupling_maps(th, GRID, GRID, TAU)[0]
    m = (m - m.min()) / np.ptp(m)
    rng = np.random.default_rng(4)
    mask = rng.random(m.shape) < 0.3
    return th, f1, m, m + 0.05 * rng.normal(size=m.shape), mask


def test_alias_shift_moves_a_fit_off_the_wrong_fold():
    """A strongly coupled pair (A_zz -29 and -33 kHz, d 2 kHz, as bonded pairs above the
    NV; 30 % of 32 x 32, noise 0.05). With the second nucleus one folding frequency
    (1 / 18 us = 55.6 kHz) low, where the search without the alias stage lands on these
    points, LM settles in a basin whose map misses the truth by > 0.05 RMS.
    `alias_shifts` finds the right fold: both frequencies within 0.5 kHz, the map within
    0.02 of the truth, and a residual lower by more than the noise's share of 100
    points."""
    from mracq.recon.cosy.physics import alias_shifts
    from mracq.recon.cosy.physics_fit import FitProblem, batch_lm

    th, f1, m, y, mask = _strong_pair()
    prob = FitProblem(y[mask], np.argwhere(mask), GRID, GRID, TAU)
    alias = 1e-3 / (GRID[1] - GRID[0])
    wrong = th + np.r_[0, 0, 0, 0, -alias, 0, 0, 0, 0, 0]
    wrong = batch_lm(prob, wrong[None], np.arange(10), 30)[0][0]
    fw = prob.fit(wrong)
    assert np.sqrt(np.mean((fw.grid() - m) ** 2)) > 0.05
    best, loss = alias_shifts(prob, wrong, th[0], 65.0, GRID[1] - GRID[0])
    fit = prob.fit(best)
    assert np.abs(np.sort(best[[1, 4]]) - np.sort(f1)).max() < 0.5
    assert np.sqrt(np.mean((fit.grid() - m) ** 2)) < 0.02
    assert fw.rss - fit.rss > 100 * 0.05 ** 2


def test_a_start_keeps_the_basin_and_stays_out_of_the_held_out_searches():
    """The alias test's pair (30 % of 32 x 32, noise 0.05): the light search without the
    alias stage misses the basin (map > 0.05 RMS off); given a start 0.3 kHz off the
    true frequencies (a basin found on earlier points) it keeps it (< 0.02). Only the
    final fit gets the start: the held-out searches' settings drop it."""
    from mracq.recon.cosy.physics import _search_kw, physics_sequence

    th, f1, m, y, mask = _strong_pair()
    kw = {"t1": GRID, "t2": GRID, "b_field": B_FIELD, "tau": TAU, "spins": (2,),
          "aliases": False, **LIGHT}
    cold = fit_clusters(y[mask], np.argwhere(mask), **kw)[2]
    warm = fit_clusters(y[mask], np.argwhere(mask), starts=[th + np.r_[0, 0.3, 0, 0, -0.3,
                                                                       0, 0, 0, 0, 0]],
                        **kw)[2]
    assert np.sqrt(np.mean((cold.grid() - m) ** 2)) > 0.05
    assert np.sqrt(np.mean((warm.grid() - m) ** 2)) < 0.02
    seq = physics_sequence(B_FIELD, TAU, GRID, GRID, 40, m.shape, 60.0,
                           {"starts": [th], "rescans": 1})
    assert "starts" not in _search_kw(seq) and _search_kw(seq)["rescans"] == 1
    assert _search_kw(seq, final=True)["starts"][0] is th
