"""Adaptive ODMR: how far below the sweep's hardware time can ANY design go? (issue 16)

For each rig of ``benchmarks/calibration.py --parts adaptive`` (same generator, same
seeds), the best a design can do with the line KNOWN: the c-optimal design for the
centre of the 14N-triplet model (centre, width, depth, baseline; the other three are
nuisance parameters), over 801 candidate frequencies in the sweep's +-8 MHz, with the
simulator's shot-noise errors at the true line. Its centre variance per shot against the
101-point sweep's gives the fraction of the sweep's shots (= hardware time: both spend
the same time per shot) that a perfect design needs to reach the sweep's expected
(Cramer-Rao) centre error:

    ratio_opt = (c^T M_opt^-1 c) / (c^T M_sweep^-1 c),   M per shot, c = (1, 0, 0, 0).

A real adaptive run also pays for finding the line, for the points that pin the width
before its stated error can be trusted, and for the 60-point floor (0.149 of the sweep
at 2.5e5 shots a point), so ``ratio_opt`` is a floor under its time ratio, not a target.
Also printed: the same for a design on the centre line's two maximum-slope flanks only
(what a "flank" design reaches when the width is known) and the c-optimal design's
support (where the shots go).

Run: ``PYTHONPATH=src python benchmarks/calibration_design_bound.py --rigs 12
--first-seed N [--out benchmarks/calibration_design_bound.json]`` (seconds per rig).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

# (the script's folder is on sys.path)
from calibration import SPLIT, random_rig, sweep_expected_sigma
from mracq.pulses import odmr_cw
from mracq.recon.calibration.fits import odmr_jacobian
from mracq.sim.nv import normalize


def per_shot_rows(nv, prog, power, f, p, shots=1_000_000):
    """Rows a_k with a_k a_k^T the Fisher information of ONE shot at each frequency."""
    r = nv.readout
    a0, a1 = r.bright_rate, r.bright_rate * (1 - r.contrast)
    q = np.array([nv.population(prog, nv.drive(x, power, True)) for x in f])
    _, e = normalize(shots * (a1 + (a0 - a1) * q), np.full_like(q, shots * a0),
                     np.full_like(q, shots * a1))
    return odmr_jacobian(f, p, splitting=SPLIT) / (e * np.sqrt(shots))[:, None]


def c_variance(rows, w):
    """c^T M(w)^- c for c = centre, M = sum_k w_k a_k a_k^T.

    A c-optimal design may be singular (two symmetric flank points identify the centre
    alone), so the generalized inverse is used, on columns scaled by the candidates' norms.
    """
    d = np.sqrt(np.sum(rows ** 2, axis=0))
    r = rows / d
    m = (r * w[:, None]).T @ r
    return float(np.linalg.pinv(m, rcond=1e-10, hermitian=True)[0, 0] / d[0] ** 2)


def c_optimal(rows, iters=20000):
    """Weights of the c-optimal design (multiplicative algorithm, square-root update,
    which converges for c-optimality) and its per-shot centre variance."""
    n = len(rows)
    w = np.full(n, 1.0 / n)
    for _ in range(iters):
        m = (rows * w[:, None]).T @ rows
        g = np.linalg.solve(m + 1e-12 * np.trace(m) * np.eye(4), [1.0, 0, 0, 0])
        s = np.abs(rows @ g)
        w = w * s
        w /= w.sum()
    return w, c_variance(rows, w)


def one_rig(seed: int) -> dict:
    nv, power, guess, f_true = random_rig(seed)
    prog, fs = odmr_cw(), guess + np.linspace(-8e6, 8e6, 101)
    p, sigma_crb = sweep_expected_sigma(nv, prog, power, fs, 1_000_000, f_true)
    sweep = per_shot_rows(nv, prog, power, fs, p)
    v_sweep = c_variance(sweep, np.full(len(fs), 1.0 / len(fs)))
    cand = np.linspace(fs[0], fs[-1], 801)
    rows = per_shot_rows(nv, prog, power, cand, p)
    w, v_opt = c_optimal(rows)
    # two maximum-slope flanks of the centre line plus a far baseline point (the depth and
    # baseline must come from somewhere): equal shots on the flanks, 10 % on the baseline
    c, hw = p[0], p[1]
    flank = np.array([c - hw / np.sqrt(3), c + hw / np.sqrt(3), fs[0], fs[-1]])
    fr = per_shot_rows(nv, prog, power, flank, p)
    wide = np.array([c - 1.5 * hw, c + 1.5 * hw])
    fr = np.vstack([fr, per_shot_rows(nv, prog, power, wide, p)])
    v_flank = c_variance(fr, np.array([0.35, 0.35, 0.05, 0.05, 0.1, 0.1]))
    keep = w > 0.01
    return {"seed": seed, "true_width_hz": p[1], "true_depth": p[2],
            "sweep_crb_sigma_hz": sigma_crb,
            "ratio_opt": v_opt / v_sweep, "ratio_flank": v_flank / v_sweep,
            "support_offsets_hz": [float(x) for x in cand[keep] - c],
            "support_weights": [float(x) for x in w[keep]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rigs", type=int, default=12)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/calibration_design_bound.json")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    rows = []
    for s in range(a.first_seed, a.first_seed + a.rigs):
        r = one_rig(s)
        rows.append(r)
        print(f"rig {s}: width {r['true_width_hz'] / 1e3:5.0f} kHz depth {r['true_depth']:.3f}"
              f"  c-optimal {r['ratio_opt']:.3f}  flanks+wings+baseline {r['ratio_flank']:.3f}"
              f"  support (kHz from centre) "
              + " ".join(f"{o / 1e3:+.0f}:{x:.2f}" for o, x in
                         zip(r["support_offsets_hz"], r["support_weights"], strict=True)))
    ro = np.array([r["ratio_opt"] for r in rows])
    print(f"c-optimal fraction of the sweep's time: median {np.median(ro):.3f}, "
          f"max {ro.max():.3f}; load {load:.1f}")
    with open(a.out, "w") as fh:
        json.dump({"load_before": load, "first_seed": a.first_seed, "rigs": rows,
                   "median_ratio_opt": float(np.median(ro)), "max_ratio_opt": float(ro.max()),
                   "load_after": os.getloadavg()[0]}, fh, indent=1)


if __name__ == "__main__":
    main()
