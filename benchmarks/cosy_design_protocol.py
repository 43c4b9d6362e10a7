"""COSY coupling design, linearised: which protocol of `CouplingDesign` can beat random?

`cosy_design_bound_physics` bounds any design by a greedy V-optimal one that knows the
true couplings. The plan does not: it starts from ``start`` random points, then takes
batches of 25 (``explore`` of each at random, the rest V-optimal among a random quarter
of the free points with ``pool``), each designed under the couplings FITTED to the points
so far. This script runs those protocols in the linearised model, where each one costs
seconds instead of the coupling search's minutes per batch, on many maps per family:

- the map's integrated variance ``sigma^2 tr(J (J_S^T J_S)^-1 J^T) / G`` at the TRUE
  couplings (``J``: `CouplingFit.jacobian`, every coupling and the field free, offset,
  scale) after each batch;
- the design's fit: Levenberg-Marquardt from the TRUE couplings (20 steps, `batch_lm`)
  on the measured points of one noisy map (Gaussian noise ``sigma``): the fit in its
  basin, as the coupling search gives it when it lands; the design uses the Jacobian
  there (or, with posterior draws, there and at draws of its linearised posterior);
- ``points`` = where the variance first reaches random 10 %'s (mean of 5 random masks
  of 250), interpolated in log variance between batches, / 250; ``batch_points`` the
  same at the end of the batch (what the plan would measure).

Protocols: ``oracle`` (true couplings, one point at a time, no random part: the bound),
``old_ridge`` (the design's ridge before this script: ``1e-3`` of the MEAN diagonal of
``J^T J`` for every parameter), and `design_scores` as shipped (ridge per parameter) with
explore / pool / start variants.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/cosy_design_protocol.py --maps 10 --seed S``
(about 1-3 min per family at load 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cosy_design_bound import integrated_variance  # noqa: E402
from cosy_design_bound_physics import family_clusters, true_jacobian  # noqa: E402
from cosy_physics_field import true_theta  # noqa: E402
from mracq.recon.cosy.design import design_scores, greedy_v_optimal  # noqa: E402
from mracq.recon.cosy.physics_fit import FitProblem, batch_lm  # noqa: E402
from mracq.sim.cosy.families import FAMILIES  # noqa: E402
from mracq.sim.cosy.model import N_PULSES, T_GRID  # noqa: E402

# name: (start, explore, pool, fitted, batch, old ridge)
PROTOCOLS = {
    "oracle": (100, 0.0, False, False, 1, False),
    "old_ridge": (100, 0.3, True, True, 25, True),
    "explore_0.3_pool": (100, 0.3, True, True, 25, False),
    "explore_0_no_pool": (100, 0.0, False, True, 25, False),
    "start_50_oracle": (50, 0.0, False, False, 1, False),
    "start_50_explore_0": (50, 0.0, False, True, 25, False),
}


def old_ridge_scores(jac, measured, n, noise, allowed):
    """`design_scores` with its former ridge, ``1e-3 * tr(J^T J) / P`` on every parameter,
    and the raw (unscaled) columns."""
    g = jac.T @ jac
    a = jac[measured].T @ jac[measured] + 1e-3 * np.trace(g) / len(g) * np.eye(len(g))
    free = ~measured if allowed is None else allowed & ~measured
    return greedy_v_optimal(jac, np.linalg.inv(a) * noise, free, n, noise)


def protocol_curve(jac_true, theta, tau, noisy, proto, rng, sigma, cap=300):
    """[(points, integrated variance at the truth)] after the start and each batch."""
    start, explore, pool, fitted, batch, old = proto
    g, p = jac_true.shape
    mask = np.zeros(g, bool)
    mask[rng.choice(g, max(start, p + 1), replace=False)] = True
    curve = [(int(mask.sum()), sigma ** 2 * integrated_variance(jac_true, np.flatnonzero(mask)))]
    while mask.sum() < cap:
        jac = jac_true
        if fitted:  # the fit in its basin: LM from the truth on the noisy points
            ij = np.argwhere(mask.reshape(len(T_GRID), len(T_GRID)))
            prob = FitProblem(noisy[mask], ij, T_GRID, T_GRID, tau, N_PULSES)
            fit = prob.fit(batch_lm(prob, theta[None], np.arange(theta.size), 20)[0][0])
            jac = fit.jacobian()
        free = np.flatnonzero(~mask)
        n = min(batch, cap - int(mask.sum()))
        rand = rng.choice(free, int(round(explore * n)), replace=False)
        measured = mask.copy()
        measured[rand] = True
        allowed = None
        if pool:
            allowed = np.zeros(g, bool)
            allowed[rng.choice(free, min(free.size, max(4 * n, free.size // 4)),
                               replace=False)] = True
            allowed[rand] = False
        score = old_ridge_scores if old else (
            lambda *a: design_scores(*a[:3], noise=a[3], allowed=a[4]))
        mask[list(rand) + score(jac, measured, n - len(rand), sigma ** 2, allowed)] = True
        curve.append((int(mask.sum()),
                      sigma ** 2 * integrated_variance(jac_true, np.flatnonzero(mask))))
    return curve


def first_reach(curve, target):
    """(interpolated points, points at the end of the batch) where ``curve`` first
    reaches ``target``; (nan, None) if it does not."""
    for (n0, v0), (n1, v1) in zip(curve, curve[1:], strict=False):
        if v0 <= target:
            return float(n0), n0
        if v1 <= target:
            return float(n0 + (n1 - n0) * np.log(v0 / target) / np.log(v0 / v1)), n1
    return float("nan"), None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--seed", type=int, default=1798800001)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = {"config": {k: str(v) for k, v in vars(args).items()},
           "uptime_start": os.popen("uptime").read().strip(), "families": {}}
    path = args.out or Path(__file__).with_name(f"cosy_design_protocol_{args.seed}.json")
    for fam in args.families:
        truths, cls, _, rng = family_clusters(fam, args.maps, args.seed)
        rows, t0 = [], time.perf_counter()
        for k in range(args.maps):
            cl = cls[k]
            jac, _ = true_jacobian(cl, truths[k], fit_field=True)
            theta = true_theta(cl.hyperfine, cl.dipolar, float(cl.b_field))
            g = len(jac)
            target = float(np.mean([args.noise ** 2 * integrated_variance(
                jac, rng.choice(g, 250, replace=False)) for _ in range(5)]))
            noisy = truths[k].ravel() + args.noise * rng.normal(size=g)
            row = {"map": k, "spins": int(len(cl.hyperfine)), "P": int(jac.shape[1])}
            for name in args.protocols:
                curve = protocol_curve(jac, theta, float(cl.tau), noisy,
                                       PROTOCOLS[name], np.random.default_rng([args.seed, k]),
                                       args.noise)
                x, nb = first_reach(curve, target)
                row[name] = {"points": x / 250 if np.isfinite(x) else 1.3,
                             "batch_points": (nb or 325) / 250}
            rows.append(row)
            print(f"{fam} map {k} ({row['spins']} spins): " + ", ".join(
                f"{n} {row[n]['points']:.2f}" for n in args.protocols), flush=True)
        summ = {n: {"points": float(np.mean([r[n]["points"] for r in rows])),
                    "batch_points": float(np.mean([r[n]["batch_points"] for r in rows]))}
                for n in args.protocols}
        out["families"][fam] = {"maps": rows, "mean": summ,
                                "time_s": time.perf_counter() - t0}
        print(f"== {fam}: " + ", ".join(f"{n} {s['points']:.3f} ({s['batch_points']:.3f})"
                                        for n, s in summ.items()), flush=True)
        path.write_text(json.dumps(out, indent=1))
    out["mean_over_families"] = {n: float(np.mean([f["mean"][n]["points"]
                                                   for f in out["families"].values()]))
                                 for n in args.protocols}
    out["uptime_end"] = os.popen("uptime").read().strip()
    path.write_text(json.dumps(out, indent=1))
    print("mean over families (points / random 10 %):", {
        n: round(v, 3) for n, v in out["mean_over_families"].items()}, "|", out["uptime_end"])
    return out


if __name__ == "__main__":
    main()
