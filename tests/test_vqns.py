"""VQNS reconstruction (mracq.recon.vqns): input checks, recovery, threshold, suggestion."""

import numpy as np
import pytest

from mracq.recon.vqns.data import pulse_number, simulate_measurements
from mracq.recon.vqns.model import (
    Measurement,
    candidate_scores,
    lorentzian_spectrum,
    reconstruct,
    suggest_next_sequence,
)
from mracq.sim.filter_function import chi_lorentzian, coherence
from mracq.sim.spectra import Lorentzians

TP = 2 * np.pi
THREE = Lorentzians([(TP * 60e3) ** 2, (TP * 40e3) ** 2, (TP * 50e3) ** 2],
                    [TP * 30e3, TP * 150e3, TP * 100e3], [0.0, TP * 0.6e6, TP * 2e6])
SEQS = ["fid", "se", "cpmg-2", "cpmg-3", "cpmg-8", "cpmg-16", "cpmg-32"]


@pytest.fixture(scope="module")
def three_result():
    ms = simulate_measurements(THREE, SEQS, n_points=30)
    return ms, reconstruct(ms, n_lorentzians=4, restarts=10, seed=1)


def test_pulse_numbers():
    assert [pulse_number(s) for s in ("fid", "SE", "cpmg-0", "cpmg-1", "cpmg-16", "xy8-2")] \
        == [0, 1, 0, 1, 16, 16]
    for bad in ("cpmg", "foo-3", "xy8-0", "fid-2"):
        with pytest.raises(ValueError):
            pulse_number(bad)


@pytest.mark.parametrize("t, c, sigma, match", [
    ([1e-6, np.nan], [1.0, 0.9], None, r"t\[1\] is nan"),
    ([1e-6, 2e-6], [1.0, np.nan], None, r"coherence\[1\] is nan"),
    ([1e-6, 2e-6, 3e-6], [1.0, 0.9], None, "t has 3 values but coherence has 2"),
    ([2e-6, 1e-6], [1.0, 0.9], None, "not increasing at index 1"),
    ([1e-6, 2e-6], [1.0, 1.2], None, r"coherence\[1\] = 1.2 is outside"),
    ([1e-6, 2e-6], [-0.1, 0.5], None, r"coherence\[0\] = -0.1 is outside"),
    ([0.0, 2e-6], [1.0, 0.5], None, r"t\[0\] = 0.0 s"),
    ([1e-6, 2e-6], [1.0, 0.5], [0.01, -1], r"sigma\[1\]"),
])
def test_measurement_validation(t, c, sigma, match):
    with pytest.raises(ValueError, match=match):
        Measurement("cpmg-2", t, c, sigma)


def test_measurement_normalizes_names():
    m = Measurement("CPMG-1", [1e-6], [0.5], 0.01)
    assert m.sequence == "se" and m.n == 1 and m.sigma.shape == (1,)
    assert Measurement("xy8-2", [1e-6], [0.5]).n == 16


def test_lorentzian_spectrum_matches_sim():
    w = np.linspace(0, 2e7, 50)
    assert np.allclose(lorentzian_spectrum(THREE.params, w), THREE(w), rtol=1e-12)


def test_known_spectrum_recovery(three_result):
    ms, res = three_result
    # samples: K = 4 Lorentzian rows plus the background bank's pairs
    assert res.n_success == 10 and res.samples.shape[0] == 10 and res.samples.shape[2] == 3
    assert res.samples.shape[1] >= 4 and np.all(np.isfinite(res.losses))
    lo, hi = res.band
    w = np.linspace(lo, hi, 500)
    err = np.linalg.norm(res.spectrum(w) - THREE(w)) / np.linalg.norm(THREE(w))
    assert err < 0.12
    inside = np.abs(res.spectrum(w) - THREE(w)) <= 2 * res.spectrum_std(w) + 0.02 * THREE(w)
    assert inside.mean() > 0.8
    # the reconstruction reproduces the data it was fitted to
    for m in ms:
        assert np.max(np.abs(res.coherence(m.sequence, m.t) - m.coherence)) < 0.03
    assert res.mean.shape == res.omega.shape == res.std.shape
    assert np.allclose(res.spectrum(res.omega), res.mean)
    assert res.runtime_s > 0 and res.n_steps >= res.iterations.max()


def test_threshold_from_error_bars_and_plateau():
    spec = Lorentzians([(TP * 50e3) ** 2], [TP * 100e3], [0.0])
    rng = np.random.default_rng(3)
    ms = simulate_measurements(spec, ["fid", "se", "cpmg-4"], n_points=25, noise=0.02, rng=rng)
    res = reconstruct(ms, n_lorentzians=2, restarts=6, seed=0, max_iter=400)
    # noise floor: 3 sequences x (0.02^2 / 3), times the default factor 1.1
    assert res.threshold_history[0][1] == pytest.approx(1.1 * 3 * 0.02**2 / 3)
    # without error bars the start is tight, and App. B raises it to the plateau
    bare = [Measurement(m.sequence, m.t, m.coherence) for m in ms]
    res2 = reconstruct(bare, n_lorentzians=2, restarts=6, seed=0, max_iter=300)
    assert len(res2.threshold_history) == 2
    assert res2.loss_threshold > 10 * res2.threshold_history[0][1]
    assert res2.n_success == 6


def test_bad_arguments():
    ms = simulate_measurements(THREE, ["fid"], n_points=10)
    with pytest.raises(ValueError, match="no measurements"):
        reconstruct([])
    with pytest.raises(ValueError, match="not a Measurement"):
        reconstruct([(1, 2)])
    with pytest.raises(ValueError, match="loss_threshold"):
        reconstruct(ms, loss_threshold=-1.0)


def test_suggestion_prefers_unmeasured_high_frequencies(three_result):
    """With FID and SE only, the band is widest at high frequency: a many-pulse CPMG wins."""
    ms = simulate_measurements(THREE, ["fid", "se"], n_points=30)
    res = reconstruct(ms, n_lorentzians=3, restarts=6, seed=2)
    cands = ["se", "cpmg-2", "cpmg-4", "cpmg-8", "cpmg-16", "cpmg-32"]
    scores = candidate_scores(res, ms, cands)
    assert scores["se"] == 0.0
    best = suggest_next_sequence(res, ms, cands)
    assert pulse_number(best) >= 4
    with pytest.raises(ValueError, match="measured already"):
        suggest_next_sequence(res, ms, ["fid", "se"])


def test_coherence_prediction_matches_filter_function(three_result):
    _, res = three_result
    t = np.linspace(1e-6, 3e-5, 7)
    # the background bank's pairs carry one negative A each: chi is linear in A, so the
    # closed form of the simulator applies row by row (no Lorentzians() spectrum object);
    # the robust aggregate is the 10 %-trimmed mean of the samples' chi
    from scipy.stats import trim_mean

    assert np.any(res.samples[:, :, 0] < 0) and res.settings["robust"]
    chis = np.array([chi_lorentzian(t, 8, p) for p in res.samples])
    assert np.allclose(res.coherence("cpmg-8", t), np.exp(-trim_mean(chis, 0.1, axis=0)),
                       rtol=1e-9)
    # and the positive Lorentzians alone against the simulator's own coherence
    k = res.settings["n_lorentzians"]
    lor = res.samples[:, :k].reshape(-1, 3).copy()
    lor[:, 0] /= res.n_success
    assert np.allclose(np.exp(-chi_lorentzian(t, 8, lor)),
                       coherence(Lorentzians(*lor.T), t, n=8), rtol=1e-9)


@pytest.mark.parametrize("criterion, restarts", [("eq7", 4), ("variance", 8)])
def test_strategy_suggests_only_times_the_sequencer_can_play(criterion, restarts):
    """CPMG-64 on a fast decay: the suggested times start at 64 x (pi + pi/2), or the
    sequence is not suggested at all (the sequencer would refuse shorter ones)."""
    from mracq.pulses import coherence_programs
    from mracq.recon.vqns.data import pulse_number, simulate_measurements
    from mracq.recon.vqns.strategy import NextSequenceStrategy
    from mracq.sim.spectra import Lorentzians

    spec = Lorentzians([3e13, 1e13], [2 * np.pi * 2e5, 2 * np.pi * 5e4], [2 * np.pi * 2e6, 0.0])
    ms = simulate_measurements(spec, ["fid", "se"], n_points=15)
    st = NextSequenceStrategy(["cpmg-16", "cpmg-32", "cpmg-64"], n_points=15, seed=1, target=0,
                              initial=[(m.sequence, m.t) for m in ms],
                              reconstruct_kw={"restarts": restarts}, criterion=criterion)
    st.ingest(ms)
    suggested = st.suggest(3)
    assert suggested
    for sug in suggested:
        n = pulse_number(sug["sequence"])
        assert sug["t"][0] >= n * 60e-9 * (1 - 1e-12)
        coherence_programs("cpmg", sug["t"], n=n)  # the generators accept every time


def test_noise_stop_fits_no_closer_than_the_error_bars():
    """noise_stop=1 (Morozov's discrepancy principle): each restart stops once it fits
    the data as closely as their error bars explain; left to run, LM fits their noise as
    well (losses below the floor)."""
    rng = np.random.default_rng(2)
    ms = simulate_measurements(THREE, ["fid", "se", "cpmg-4", "cpmg-16"], n_points=25,
                               noise=0.02, rng=rng)
    off = reconstruct(ms, restarts=10, seed=1)
    on = reconstruct(ms, restarts=10, seed=1, noise_stop=1.0)
    floor = on.threshold_history[0][1] / 1.1  # the automatic threshold is 1.1 x the floor
    assert np.median(off.losses) < 0.95 * floor
    assert np.median(on.losses) >= 0.95 * floor
    assert np.median(on.losses) > np.median(off.losses)


def test_warm_start_maps_earlier_fits_exactly_and_keeps_k():
    """warm_start: the earlier fits, mapped onto a model of the same data, are the same
    spectra (Lorentzians kept, background projected onto the same bank); on more data K
    does not fall below the earlier K."""
    import torch

    from mracq.recon.vqns.lm import _Model
    from mracq.recon.vqns.optim import _Init, _Problem

    rng = np.random.default_rng(4)
    ms = simulate_measurements(THREE, ["fid", "se", "cpmg-8"], n_points=20, noise=0.01,
                               rng=rng)
    first = reconstruct(ms[:2], restarts=6, seed=1)
    k = first.settings["n_lorentzians"]
    prob = _Problem(ms[:2], True, "torch")
    model = _Model(prob, _Init(prob, k, torch.Generator().manual_seed(0)))
    th = model.warm(first.samples, k)
    w = np.geomspace(*first.band, 50)
    np.testing.assert_allclose(lorentzian_spectrum(model.samples(th), w),
                               first.sample_spectra(w), rtol=1e-3)
    more = reconstruct(ms, restarts=6, seed=1, warm_start=first)
    assert more.n_success == 6 and more.settings["n_lorentzians"] >= k


def test_expected_variance_reduction_counts_only_what_is_new():
    """After FID and SE, measuring SE again narrows little; the early part of a CPMG-16
    decay, which probes the unmeasured 0.6 and 2 MHz peaks, narrows the band there much
    more. The reduction never exceeds the ensemble's own variance."""
    from mracq.recon.vqns.strategy import _winsorize, expected_variance_reduction

    rng = np.random.default_rng(3)
    ms = simulate_measurements(THREE, ["fid", "se"], n_points=30, noise=0.01, rng=rng)
    res = reconstruct(ms, restarts=16, seed=2)
    w = np.geomspace(res.band[0], TP * 5e6, 120)
    var = np.var(_winsorize(lorentzian_spectrum(res.band_samples, w), 0.1), axis=0, ddof=1)
    sigma = 0.01 / np.sqrt(3)
    se = expected_variance_reduction(res, "se", ms[1].t, sigma, w)
    cpmg = expected_variance_reduction(res, "cpmg-16", np.linspace(1e-6, 12e-6, 30), sigma, w)
    for red in (se, cpmg):
        assert np.all(red >= -1e-9 * var.max()) and np.all(red <= var * (1 + 1e-9))
    high = w > TP * 0.3e6
    # (seeds 3, 4, 5: CPMG-16 removes 80-96 % of the variance above 0.3 MHz, SE 12-27 %)
    assert cpmg[high].sum() > 0.6 * var[high].sum()
    assert se[high].sum() < 0.4 * var[high].sum()
    assert cpmg[high].sum() > 2.5 * se[high].sum()


def test_misfit_field_response_matches_quadrature():
    """The misfit term's linear response dC/da_k of a CPMG-8 point equals -C times the
    decoherence integral (1/pi) Int phi_k F / w^2 dw done by adaptive quadrature, and the
    bumps' squares sum to 1 inside the node range (the band's misfit variance)."""
    from scipy import integrate

    from mracq.recon.vqns.model import MISFIT_WIDTH
    from mracq.recon.vqns.strategy import _misfit_field
    from mracq.sim.filter_function import filter_cpmg

    ms = simulate_measurements(THREE, ["fid", "se"], n_points=30, noise=0.01,
                               rng=np.random.default_rng(3))
    res = reconstruct(ms, restarts=8, seed=2)
    assert res.settings["misfit_factor"] > 0 and len(res.misfit[0])
    w = np.geomspace(res.band[0], TP * 5e6, 50)
    t = np.array([2e-6, 5e-6])
    c = np.ones((1, t.size))  # unit coherence: the response is minus the integral
    phi, amp_sd, jac = _misfit_field(res, "cpmg-8", t, None, c, w, 2.0)
    assert np.allclose((phi**2).sum(1)[5:-5], 1.0, rtol=0.02)
    assert np.all(amp_sd >= 0) and amp_sd.max() > 0
    k = int(np.argmax(np.abs(jac[0])))
    # bump k's node: nodes MISFIT_WIDTH apart from 2 widths below the grid or data
    u_lo = min(np.log(w[0]), np.log(res.misfit[0][0])) - 2 * MISFIT_WIDTH
    centre, scale = u_lo + k * MISFIT_WIDTH, np.pi**-0.25
    assert phi[:, k].max() <= scale * (1 + 1e-12)
    for i, ti in enumerate(t):
        def f(lw, ti=ti):
            om = np.exp(lw)
            bump = scale * np.exp(-0.5 * ((lw - centre) / MISFIT_WIDTH) ** 2)
            return bump * filter_cpmg(om * ti, 8) / om / np.pi
        ref, _ = integrate.quad(f, centre - 8 * MISFIT_WIDTH, centre + 8 * MISFIT_WIDTH,
                                limit=400)
        assert jac[i, k] == pytest.approx(-ref, rel=0.02)


def test_discrepancy_field_is_constrained_only_where_data_are():
    """Conditioned on FID and SE, the discrepancy field's standard deviation is a small
    fraction of its prior (the spectrum's scale) at 0.1-0.7 MHz, which their short times
    weigh most (seeds 3, 4: 0.08-0.2), and stays at the prior at 20 MHz, which no
    measured point reaches; counting it makes the
    variance criterion value a CPMG-16 window above what the refits alone give."""
    from mracq.recon.vqns.strategy import discrepancy_field, expected_variance_reduction

    ms = simulate_measurements(THREE, ["fid", "se"], n_points=30, noise=0.01,
                               rng=np.random.default_rng(3))
    res = reconstruct(ms, restarts=8, seed=2)
    w = np.geomspace(TP * 5e3, TP * 2e7, 120)
    field = discrepancy_field(res, ms, w, 0.01)
    phi, _, _, cov = field
    sd = np.sqrt(np.einsum("gk,kl,gl->g", phi, cov, phi))
    s0 = res.spectrum(w).max()
    probed = (w > TP * 120e3) & (w < TP * 700e3)
    assert np.all(sd[probed] < 0.3 * s0)
    assert sd[-10:] == pytest.approx(s0, rel=0.05)
    t = np.linspace(1e-6, 12e-6, 20)
    base = expected_variance_reduction(res, "cpmg-16", t, 0.01, w)
    both = expected_variance_reduction(res, "cpmg-16", t, 0.01, w, field=field)
    assert both.sum() > 2 * base.sum()


def test_strategy_budget_shrinks_the_last_measurement_and_stops():
    """With a hardware-time budget, a suggestion never passes it: the window that does not
    fit with n_points comes with fewer points (>= min_points), and the loop stops when not
    even min_points fit; reported hardware times count instead of the cost model."""
    from mracq.recon.vqns.data import simulate_measurements
    from mracq.recon.vqns.strategy import NextSequenceStrategy
    from mracq.sim.spectra import Lorentzians

    spec = Lorentzians([3e13, 1e13], [2 * np.pi * 2e5, 2 * np.pi * 5e4], [2 * np.pi * 2e6, 0.0])
    ms = simulate_measurements(spec, ["fid", "se"], n_points=15)
    shots = 100_000
    st = NextSequenceStrategy(["cpmg-2", "cpmg-4"], n_points=(12, 20), seed=1, chi_end=1.0,
                              target=0, initial=[(m.sequence, m.t) for m in ms], shots=shots,
                              min_points=6, reconstruct_kw={"restarts": 8})
    with pytest.raises(ValueError, match="hardware_budget"):
        NextSequenceStrategy(initial=[("fid", ms[0].t)], hardware_budget=-1.0)
    st.ingest(ms)
    spent = st.hardware_time
    assert spent == pytest.approx(shots * sum(np.sum(m.t + 15e-6) for m in ms))
    full = st.suggest(2)  # no budget: one of the offered counts, one window per sequence
    assert {len(s["t"]) for s in full} <= {12, 20} and st.should_stop() == (False, None)
    # left: less than min_points over any window -> nothing suggested, and should_stop
    # says why (a budget above the bare min_points floor, below every free window)
    shrunk = min(st.cost(np.linspace(s["t"][-1] / 6, s["t"][-1], 6)) for s in full)
    floor = st.cost(np.full(6, 2 * st.min_spacing))
    assert floor < shrunk
    st.hardware_budget = spent + 0.5 * (floor + shrunk)
    st._suggested.clear()
    assert st.suggest(1) == []
    stop, why = st.should_stop()
    assert stop and why.startswith("hardware budget: no free sequence fits"), why
    # left: 0.7 of the cheapest 12-point window -> fewer points, within what is left
    cheapest = min(st.cost(np.linspace(s["t"][-1] / 12, s["t"][-1], 12)) for s in full)
    st.hardware_budget = spent + 0.7 * cheapest
    st._suggested.clear()
    sug = st.suggest(1)
    assert sug, "a shrunk measurement fits"
    assert 6 <= len(sug[0]["t"]) < 12
    assert st.cost(sug[0]["t"]) <= st.hardware_budget - spent
    # a reported hardware time replaces the cost model; nothing fits -> stop
    st.ingest({"_id": sug[0]["_id"], "coherence": np.exp(-sug[0]["t"] / 1e-4),
               "hardware_time": st.hardware_budget - spent})
    assert st.hardware_time == pytest.approx(st.hardware_budget)
    stop, why = st.should_stop()
    assert stop and "hardware budget" in why
    assert st.suggest(1) == []
