"""NV calibration benchmark: adaptive ODMR against a uniform sweep; calibrate accuracy.

Run from the worktree root::

    PYTHONPATH=src nice python benchmarks/calibration.py [--rigs 12] [--cal-rigs 8]
        [--parts adaptive calibrate] [--first-seed 0] [--out benchmarks/calibration.json]

Parts (figures printed and written to JSON with the load average):

- ``adaptive``: random rigs (field puts the 14N-split line anywhere within +-4 MHz of the
  guess, Rabi frequency 6-18 MHz at 0 dBm, CW ODMR power -34...-30 dBm). A uniform sweep of
  101 points (1e6 shots each) over the guess +-8 MHz, fitted with the triplet model, gives
  the centre uncertainty sigma_sweep. :class:`~mracq.recon.calibration.AdaptiveODMR`
  (same candidate range, centre prior +-5 MHz, 2.5e5 shots per point, criterion "auto")
  measures until its centre uncertainty is <= sigma_sweep. Figure: its hardware time
  over the sweep's; both errors against the truth in units of the stated uncertainty.
- ``pulls``: at a few of those rigs (``--pull-rigs``), the whole calibration repeated over
  ``--draws`` noise draws: mean, standard deviation and tails of the resonance pulls
  ``(f - f_true) / sigma_f`` (honest: 0, 1, 0.27 % beyond 3), the ODMR centre's pulls, the
  worst Ramsey chi^2 per point and pi error. Rig 4 (14N, Rabi 7.6 MHz at 0 dBm) is where
  the coarse line blends the triplet.
- ``calibrate``: random rigs (field 20-80 mT, searched +-1.5 mT around a value off by up to
  0.5 mT; Rabi frequency 6-18 MHz at 0 dBm; measurement power -6...+3 dBm; with and
  without the 14N triplet). :func:`mracq.plans.calibration.calibrate` on the simulated
  devices with the real RunEngine (no storage). Checks: |f - f_true| <= 3 sigma_f,
  |pi / pi_true - 1| <= 2 %, and a CPMG-8 measured with the calibration agrees with one
  measured with the true frequency and pulses (chi^2 per point, largest |z|); the
  uncalibrated default (40 ns pulses at the configured 1.469 GHz) for contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from mracq.pulses import odmr_cw
from mracq.recon.calibration.fits import fit_odmr, odmr_jacobian
from mracq.recon.calibration.strategy import AdaptiveODMR
from mracq.sim.nv import GAMMA_E, HYPERFINE_14N, ZERO_FIELD_SPLITTING, SimulatedNV, normalize

SPLIT = abs(HYPERFINE_14N)


def random_rig(seed: int):
    """The ``adaptive`` part's rig ``seed``: (SimulatedNV with its own generator, CW power
    dBm, guess Hz, true centre Hz)."""
    rng = np.random.default_rng(seed)
    guess = rng.uniform(1.2e9, 2.2e9)
    f_true = guess + rng.uniform(-4e6, 4e6)
    nv = SimulatedNV(rabi_frequency=rng.uniform(6e6, 18e6), hyperfine=HYPERFINE_14N,
                     field=(ZERO_FIELD_SPLITTING - f_true) / GAMMA_E, rng=rng)
    return nv, rng.uniform(-34, -30), guess, f_true


def adaptive_rig(seed: int, *, draw=0, sweep_points=101, sweep_shots=1_000_000,
                 adaptive_shots=250_000, criterion="auto") -> dict:
    """One rig (``seed``) and one noise draw (``draw`` 0: the rig's own generator)."""
    nv, power, guess, f_true = random_rig(seed)
    prog = odmr_cw()
    if draw:
        nv.rng = np.random.default_rng([seed, draw])

    def measure(f, shots):
        c = nv.run(prog, shots, nv.drive(f, power, True))
        v, e = normalize(c.signal, c.bright, c.dark)
        return float(v), float(e), c.duration

    fs = guess + np.linspace(-8e6, 8e6, sweep_points)
    y, e, d = np.array([measure(f, sweep_shots) for f in fs]).T
    fit = fit_odmr(fs, y, e, triplet=True, splitting=SPLIT)
    sigma_sweep, hw_sweep = fit.errors["centre"], float(d.sum())
    truth, sigma_crb = sweep_expected_sigma(nv, prog, power, fs, sweep_shots, f_true)
    t0 = time.perf_counter()
    st = AdaptiveODMR((guess - 8e6, guess + 8e6), centre_range=(guess - 5e6, guess + 5e6),
                      splitting=SPLIT, target=min(sigma_sweep, sigma_crb),
                      seed=np.random.default_rng([seed, draw, 1]) if draw else seed,
                      max_points=2000,
                      criterion=criterion)
    hw, found, trusted = 0.0, None, None
    stops = {}
    while not st.done:
        (f,) = (p["frequency"] for p in st.suggest(1))
        v, err, dur = measure(f, adaptive_shots)
        hw += dur
        st.ingest([(f, v, err)])
        n = len(st.measured)
        if found is None and st._line_found():
            found = n
        if n < st.MIN_POINTS:
            continue
        u = st.centre_uncertainty()
        if trusted is None and st._local_fit() is not None:
            trusted = n
        for name, tgt in (("sweep", sigma_sweep), ("crb", sigma_crb)):
            if name not in stops and (st.converged(tgt) or st.done):
                stops[name] = _stop_state(st, hw, u, truth)
    res = st.result()
    a, b = stops["sweep"], stops["crb"]
    return {"seed": seed, "draw": draw, "rabi_frequency_0dBm": nv.rabi_frequency,
            "power_dbm": power, "width_hz": a["width"], "sweep_width_hz": fit["width"],
            "sweep_depth": fit["depth"], "true_width_hz": truth[1], "true_depth": truth[2],
            "found_at": found, "fit_trusted_at": trusted,
            "sigma_sweep_hz": sigma_sweep, "sweep_z": (fit["centre"] - f_true) / sigma_sweep,
            "sweep_crb_sigma_hz": sigma_crb,
            "sweep_hardware_s": hw_sweep, "adaptive_points": a["points"],
            "adaptive_sigma_hz": a["sigma"], "adaptive_z": (a["centre"] - f_true) / a["sigma"],
            "honesty_factor": a["honesty"], "sigma_at_truth_hz": a["sigma_at_truth"],
            "adaptive_hardware_s": a["hw"], "time_ratio": a["hw"] / hw_sweep,
            "crb_points": b["points"], "crb_sigma_hz": b["sigma"],
            "crb_z": (b["centre"] - f_true) / b["sigma"],
            "crb_time_ratio": b["hw"] / hw_sweep,
            "adaptive_posterior_z": (st.mean()["centre"] - f_true) / st.std()["centre"],
            "adaptive_posterior_sigma_hz": st.std()["centre"],
            "adaptive_total_points": res["points"],
            "adaptive_wall_s": time.perf_counter() - t0}


def sweep_expected_sigma(nv, prog, power, fs, shots, f_true):
    """The sweep's expected centre uncertainty: the Cramer-Rao standard deviation of the
    triplet model's centre for the sweep design at the true line (Fisher information with
    the expected per-point errors; no noise draw). The true line is the triplet model fitted
    to the simulator's noise-free populations on a fine grid.

    Returns ((centre, width, depth, baseline), sigma_crb_Hz).
    """
    fine = np.linspace(fs[0], fs[-1], 801)
    p0 = np.array([nv.population(prog, nv.drive(f, power, True)) for f in fine])
    t = fit_odmr(fine, p0, np.full_like(p0, 1e-4), triplet=True, splitting=SPLIT,
                 centre_guess=f_true)
    p = np.array([t["centre"], t["width"], t["depth"], t["baseline"]])
    r = nv.readout
    a0, a1 = r.bright_rate, r.bright_rate * (1 - r.contrast)
    q = np.interp(fs, fine, p0)
    _, e = normalize(shots * (a1 + (a0 - a1) * q), np.full_like(q, shots * a0),
                     np.full_like(q, shots * a1))
    j = odmr_jacobian(fs, p, splitting=SPLIT) / e[:, None]
    fisher = j.T @ j
    dd = np.sqrt(np.diag(fisher))
    cov = np.linalg.inv(fisher / np.outer(dd, dd)) / np.outer(dd, dd)
    return tuple(map(float, p)), float(np.sqrt(cov[0, 0]))


def _stop_state(st, hw, u, truth) -> dict:
    """What a run stopping now states: centre, error, points, hardware time, the honesty
    factor exp(k s) of the stated error, and the least-squares error of the same points at
    the true line (Fisher at the truth)."""
    fit = st._local_fit()
    out = {"points": len(st.measured), "hw": hw, "sigma": u,
           "centre": st.centre(), "width": st.mean()["width"],
           "honesty": float("nan")}
    if fit is not None:
        out["width"] = fit["width"]
        with np.errstate(all="ignore"):
            sd, s = st._honesty(fit)
        out["honesty"] = float(np.exp(st.HONESTY_K * s))
    with np.errstate(all="ignore"):
        out["sigma_at_truth"] = float(st._design_sd(np.array(truth))[0])
    return out


def part_adaptive(n_rigs: int, first_seed: int = 0, draws: int = 1) -> dict:
    """Each rig with ``draws`` noise draws. Figures: the time ratio of draw 0 per rig
    (median, mean, max, rigs <= 0.3), its mean over draws per rig, and the pulls
    (centre - truth) / stated error over all draws (honest: spread 1)."""
    rows = []
    for seed in range(first_seed, first_seed + n_rigs):
        for draw in range(draws):
            r = adaptive_rig(seed, draw=draw)
            rows.append(r)
            print(f"  rig {seed:2d}.{draw}: sweep sigma {r['sigma_sweep_hz'] / 1e3:5.1f} kHz "
                  f"(z {r['sweep_z']:+.2f}; expected {r['sweep_crb_sigma_hz'] / 1e3:5.1f})  "
                  f"adaptive {r['adaptive_points']:4d} points (line at {r['found_at']}, fit "
                  f"at {r['fit_trusted_at']}), sigma {r['adaptive_sigma_hz'] / 1e3:5.1f} kHz "
                  f"(z {r['adaptive_z']:+.2f}; x{r['honesty_factor']:.2f} honesty; at truth "
                  f"{r['sigma_at_truth_hz'] / 1e3:5.1f}), width {r['width_hz'] / 1e3:4.0f}/"
                  f"{r['true_width_hz'] / 1e3:4.0f} kHz  ratio {r['time_ratio']:.3f} | to "
                  f"expected: {r['crb_points']:4d} points, z {r['crb_z']:+.2f}, ratio "
                  f"{r['crb_time_ratio']:.3f}  ({r['adaptive_wall_s']:.1f} s wall)", flush=True)
    first = [r for r in rows if r["draw"] == 0]
    ratios = np.array([r["time_ratio"] for r in first])
    per_rig = np.array([np.mean([r["time_ratio"] for r in rows if r["seed"] == s])
                        for s in range(first_seed, first_seed + n_rigs)])
    z = np.array([[r["sweep_z"], r["adaptive_z"]] for r in rows])
    summary = {"rigs": n_rigs, "draws": draws,
               "time_ratio_per_rig": [float(x) for x in ratios],
               "median_time_ratio": float(np.median(ratios)),
               "max_time_ratio": float(ratios.max()), "mean_time_ratio": float(ratios.mean()),
               "rigs_within_0.3": int(np.sum(ratios <= 0.3)),
               "mean_over_draws_per_rig": [float(x) for x in per_rig],
               "all_draws_median_time_ratio": float(np.median([r["time_ratio"] for r in rows])),
               "sweep_abs_z_max": float(np.abs(z[:, 0]).max()),
               "adaptive_abs_z_max": float(np.abs(z[:, 1]).max()),
               "adaptive_z_std": float(z[:, 1].std()), "adaptive_z_mean": float(z[:, 1].mean()),
               "adaptive_frac_abs_z_gt_2": float(np.mean(np.abs(z[:, 1]) > 2)),
               "sweep_z_std": float(z[:, 0].std())}
    zc = np.array([r["crb_z"] for r in rows])
    rc = np.array([r["crb_time_ratio"] for r in rows])
    rc0 = np.array([r["crb_time_ratio"] for r in first])
    allr = np.array([r["time_ratio"] for r in rows])
    summary.update({
        "crb_time_ratio_per_rig": [float(x) for x in rc0],
        "crb_median_time_ratio": float(np.median(rc0)), "crb_mean_time_ratio": float(rc0.mean()),
        "crb_max_time_ratio": float(rc0.max()), "crb_rigs_within_0.3": int(np.sum(rc0 <= 0.3)),
        "crb_all_runs_within_0.3": int(np.sum(rc <= 0.3)),
        "crb_all_runs_mean_time_ratio": float(rc.mean()),
        "all_runs_within_0.3": int(np.sum(allr <= 0.3)),
        "all_runs_mean_time_ratio": float(allr.mean()),
        "crb_z_std": float(zc.std()), "crb_abs_z_max": float(np.abs(zc).max()),
        "sweep_sigma_over_expected": [float(r["sigma_sweep_hz"] / r["sweep_crb_sigma_hz"])
                                      for r in rows]})
    so = np.array(summary["sweep_sigma_over_expected"])
    # the error the same points give at the true line over the stated one: ~1 where the
    # stated error is honest, > 2 where a run stopped on a too narrow or deep fit
    tr = np.array([r["sigma_at_truth_hz"] / r["adaptive_sigma_hz"] for r in rows])
    summary.update({"at_truth_over_stated_median": float(np.median(tr)),
                    "at_truth_over_stated_gt_2": int(np.sum(tr > 2)),
                    "sweep_stated_over_expected_mean": float(so.mean())})
    print(f"target = the sweep's stated error (one draw): draw 0 of each rig: median "
          f"{summary['median_time_ratio']:.3f}, mean {summary['mean_time_ratio']:.3f}, max "
          f"{summary['max_time_ratio']:.3f}, {summary['rigs_within_0.3']}/{n_rigs} rigs <= 0.3; "
          f"all {len(rows)} runs: mean {allr.mean():.3f}, {int(np.sum(allr <= 0.3))} <= 0.3; "
          f"mean over draws per rig: max {per_rig.max():.3f}")
    print(f"  pulls: adaptive mean {summary['adaptive_z_mean']:+.2f} std "
          f"{summary['adaptive_z_std']:.2f} max |z| {summary['adaptive_abs_z_max']:.2f}, "
          f"|z| > 2 {summary['adaptive_frac_abs_z_gt_2']:.3f}; sweep std "
          f"{summary['sweep_z_std']:.2f} max |z| {summary['sweep_abs_z_max']:.2f}")
    print(f"target = the sweep's expected error (Cramer-Rao at the true line; sweep's stated/"
          f"expected {so.min():.2f}-{so.max():.2f}): draw 0: median {np.median(rc0):.3f}, mean "
          f"{rc0.mean():.3f}, max {rc0.max():.3f}, {int(np.sum(rc0 <= 0.3))}/{n_rigs} rigs <= "
          f"0.3; all {len(rows)} runs: mean {rc.mean():.3f}, max {rc.max():.3f}, "
          f"{int(np.sum(rc <= 0.3))} <= 0.3; pulls std {zc.std():.2f} max |z| "
          f"{np.abs(zc).max():.2f}")
    print(f"error of the adaptive's points at the true line / its stated error: median "
          f"{np.median(tr):.2f}, {int(np.sum(tr > 2))}/{len(rows)} runs > 2; the sweep's "
          f"stated / expected error: mean {so.mean():.2f}")
    return {"summary": summary, "rigs": rows}


def calibrate_rig(seed: int, *, shots=1_000_000, cpmg_shots=2_000_000, sim_seed=None,
                  cpmg=True) -> dict:
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    from mracq.config import validate_config
    from mracq.devices import build_devices
    from mracq.plans.calibration import calibrate
    from mracq.plans.coherence import coherence_scan

    rng = np.random.default_rng(1000 + seed)
    field = rng.uniform(0.02, 0.08)
    f_rabi = rng.uniform(6e6, 18e6)
    power = float(np.round(rng.uniform(-6, 3), 1))
    hyperfine = HYPERFINE_14N if seed % 2 == 0 else 0.0
    cfg = validate_config({"sim": {"seed": seed if sim_seed is None else sim_seed,
                                   "field": field, "rabi_frequency": f_rabi,
                                   "hyperfine": hyperfine}})
    devices = build_devices(cfg)
    nv, mw, laser = devices["nv"], devices["mw"], devices["laser"]
    sim = nv.transport.nv
    f_true, pi_true = sim.transition_frequency, sim.pi_duration(power)
    guess = ZERO_FIELD_SPLITTING - GAMMA_E * (field + rng.uniform(-0.5e-3, 0.5e-3))
    half = GAMMA_E * 1.5e-3
    RE = RunEngine({}, call_returns_result=True)
    t0 = time.perf_counter()
    cal = RE(calibrate(nv, mw, laser, frequency_range=(guess - half, guess + half),
                       power_dbm=power, shots=shots)).plan_result
    wall = time.perf_counter() - t0
    fits = cal.extra["fits"]
    head = {"seed": seed, "sim_seed": sim_seed, "field_T": field, "rabi_frequency_0dBm": f_rabi,
            "power_dbm": power, "hyperfine_hz": hyperfine,
            "resonance_z": (cal.resonance_frequency - f_true) / cal.resonance_frequency_error,
            "resonance_error_hz": cal.resonance_frequency_error,
            "odmr_z": (cal.extra["odmr_centre"] - f_true) / cal.extra["odmr_centre_error"],
            "ramsey_chi2_red": fits["ramsey"]["chi2_red"] if fits["ramsey"] else float("nan"),
            "pi_rel_error": cal.pi_duration / pi_true - 1, "pi_true_s": pi_true,
            "calibration_hardware_s": cal.extra["hardware_time"], "calibration_wall_s": wall}
    if not cpmg:
        return head
    nv.calibration = cal
    times = np.linspace(4e-6, 40e-6, 8)
    c_cal = RE(coherence_scan(nv, "cpmg", times, n=8, shots=cpmg_shots)).plan_result
    nv.calibration = None
    RE(bps.mv(mw.frequency, f_true))
    c_true = RE(coherence_scan(nv, "cpmg", times, n=8, shots=cpmg_shots,
                               program_kw={"pi_duration": pi_true,
                                           "pi2_duration": pi_true / 2})).plan_result
    RE(bps.mv(mw.frequency, 1.469e9))
    c_def = RE(coherence_scan(nv, "cpmg", times, n=8, shots=cpmg_shots)).plan_result
    z = (c_cal["coherence"] - c_true["coherence"]) / np.hypot(c_cal["sigma"], c_true["sigma"])
    z_def = (c_def["coherence"] - c_true["coherence"]) / np.hypot(c_def["sigma"],
                                                                  c_true["sigma"])
    return {**head, "cpmg_chi2_per_point": float(np.mean(z**2)),
            "cpmg_max_abs_z": float(np.abs(z).max()),
            "uncalibrated_cpmg_chi2_per_point": float(np.mean(z_def**2))}


def part_calibrate(n_rigs: int, first_seed: int = 0) -> dict:
    rows = []
    for seed in range(first_seed, first_seed + n_rigs):
        r = calibrate_rig(seed)
        rows.append(r)
        print(f"  rig {seed}: B {r['field_T'] * 1e3:5.1f} mT, {r['power_dbm']:+.1f} dBm, "
              f"14N {'yes' if r['hyperfine_hz'] else 'no '}: resonance z {r['resonance_z']:+.2f}"
              f" (sigma {r['resonance_error_hz'] / 1e3:.2f} kHz), pi {r['pi_true_s'] * 1e9:.1f} ns "
              f"err {r['pi_rel_error'] * 100:+.2f} %, CPMG chi2/pt {r['cpmg_chi2_per_point']:.2f} "
              f"max|z| {r['cpmg_max_abs_z']:.2f} "
              f"(uncalibrated {r['uncalibrated_cpmg_chi2_per_point']:.0f})"
              f"  [{r['calibration_wall_s']:.0f} s wall]", flush=True)
    summary = {
        "rigs": n_rigs,
        "resonance_within_3_sigma": int(sum(abs(r["resonance_z"]) <= 3 for r in rows)),
        "pi_within_2_percent": int(sum(abs(r["pi_rel_error"]) <= 0.02 for r in rows)),
        "max_abs_pi_rel_error": float(max(abs(r["pi_rel_error"]) for r in rows)),
        "cpmg_agree": int(sum(r["cpmg_max_abs_z"] < 3 for r in rows)),
        "cpmg_chi2_per_point_mean": float(np.mean([r["cpmg_chi2_per_point"] for r in rows])),
    }
    print(f"calibrate: resonance within 3 sigma {summary['resonance_within_3_sigma']}/{n_rigs}, "
          f"pi within 2 % {summary['pi_within_2_percent']}/{n_rigs} (max "
          f"{summary['max_abs_pi_rel_error'] * 100:.2f} %), CPMG agrees (all |z| < 3) "
          f"{summary['cpmg_agree']}/{n_rigs}, mean chi2/point "
          f"{summary['cpmg_chi2_per_point_mean']:.2f}")
    return {"summary": summary, "rigs": rows}


def part_pulls(rigs, draws: int) -> dict:
    """Pulls of the calibrated resonance, (f - f_true) / sigma_f, over ``draws`` noise
    draws (simulator seeds 10^6 + ...) at each rig: honest errors give mean 0, standard
    deviation 1 and |z| > 3 in 0.27 % of draws."""
    out = {}
    for rig in rigs:
        rows = [calibrate_rig(rig, sim_seed=1_000_000 + 1000 * rig + k, cpmg=False)
                for k in range(draws)]
        z = np.array([r["resonance_z"] for r in rows])
        zo = np.array([r["odmr_z"] for r in rows])
        out[str(rig)] = {"draws": draws, "mean": float(z.mean()), "std": float(z.std()),
                         "frac_abs_gt_2": float(np.mean(np.abs(z) > 2)),
                         "frac_abs_gt_3": float(np.mean(np.abs(z) > 3)),
                         "max_abs": float(np.abs(z).max()), "odmr_std": float(zo.std()),
                         "ramsey_chi2_red_max": float(max(r["ramsey_chi2_red"] for r in rows)),
                         "pi_rel_error_max": float(max(abs(r["pi_rel_error"]) for r in rows))}
        o = out[str(rig)]
        print(f"  rig {rig}: resonance pulls over {draws} draws: mean {o['mean']:+.2f}, std "
              f"{o['std']:.2f}, |z|>2 {o['frac_abs_gt_2']:.3f}, |z|>3 {o['frac_abs_gt_3']:.3f}, "
              f"max {o['max_abs']:.2f}; ODMR pull std {o['odmr_std']:.2f}; worst Ramsey chi2/pt "
              f"{o['ramsey_chi2_red_max']:.2f}, worst pi error "
              f"{o['pi_rel_error_max'] * 100:.2f} %", flush=True)
    z_all = [v["std"] for v in out.values()]
    print(f"pulls: std per rig {min(z_all):.2f}-{max(z_all):.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rigs", type=int, default=12, help="rigs of the adaptive part (>= 10)")
    ap.add_argument("--cal-rigs", type=int, default=8, help="rigs of the calibrate part")
    ap.add_argument("--parts", nargs="+", default=["adaptive", "calibrate"],
                    choices=["adaptive", "calibrate", "pulls"])
    ap.add_argument("--pull-rigs", type=int, nargs="+", default=[4, 5],
                    help="rigs (calibrate seeds) of the pulls part")
    ap.add_argument("--draws", type=int, default=40, help="noise draws per rig (pulls part)")
    ap.add_argument("--adaptive-draws", type=int, default=1,
                    help="noise draws per rig (adaptive part; the time ratio is draw 0's)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seed of the first rig (another value: rigs not looked at before)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("calibration.json"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="an AdaptiveODMR class setting for this run, e.g. POOL_SIGMA=0 "
                         "GRID_HONESTY=0: the rule before the pooled errors")
    a = ap.parse_args()
    settings = {}
    for item in a.set:
        name, _, value = item.partition("=")
        if not name.isupper() or not hasattr(AdaptiveODMR, name):
            ap.error(f"--set {item!r}: AdaptiveODMR has no setting {name!r}")
        settings[name] = type(getattr(AdaptiveODMR, name))(float(value))
        setattr(AdaptiveODMR, name, settings[name])
    out = {"load_before": os.getloadavg()[0], "first_seed": a.first_seed, "settings": settings}
    t0 = time.perf_counter()
    if "adaptive" in a.parts:
        out["adaptive"] = part_adaptive(a.rigs, a.first_seed, a.adaptive_draws)
    if "calibrate" in a.parts:
        out["calibrate"] = part_calibrate(a.cal_rigs, a.first_seed)
    if "pulls" in a.parts:
        out["pulls"] = part_pulls(a.pull_rigs, a.draws)
    out["load_after"] = os.getloadavg()[0]
    out["wall_s"] = time.perf_counter() - t0
    print(f"load average {out['load_before']:.1f} -> {out['load_after']:.1f}; "
          f"{out['wall_s']:.0f} s wall")
    a.out.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
