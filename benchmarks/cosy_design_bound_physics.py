"""The Fisher-information bound of `cosy_design_bound` for the coupling model of auto's
physics candidates (`mracq.recon.cosy.physics_fit`).

`cosy_design_bound` bounds designs for maps that are sums of plane waves. With the field
known, auto may fit a map as a function of its cluster's couplings instead: a few
nonlinear parameters ``theta`` (`theta_names`) plus an offset and a scale. This script
linearises that model at each map's TRUE couplings (a design that knows the answer: an
upper bound on what any adaptive design can do), ``J = d map / d (theta, offset, scale)``
on the 50 x 50 grid, and compares the map's integrated variance
``sigma^2 tr(J (J_S^T J_S)^-1 J^T) / G`` for random masks of 250 (10 %) and 175 (7 %)
points against the greedy V-optimal design (`cosy_design_bound.greedy_design`) grown from
100 random points to 175 (the adaptive plan's start) and from ``P + 20`` random points.
The ratio printed is the design's variance at 7 % over random's at 10 %: <= 1 would mean
that 0.7 of random's points suffice. The field is known (``wL`` not fitted) or fitted
(``--fit-field``).

Maps: the couplings family (`mracq.sim.cosy.families`, 2 or 3 spins, field 153-163 mT),
normalised to [0, 1] as the benchmark's maps are.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/cosy_design_bound_physics.py --maps 10 --seed S``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cosy_design_bound import _grid, greedy_curve, integrated_variance  # noqa: E402
from cosy_physics_field import true_theta  # noqa: E402
from mracq.recon.cosy.physics_fit import CouplingFit, coupling_maps  # noqa: E402
from mracq.sim.cosy.families import FAMILIES, add_noise, family_maps  # noqa: E402
from mracq.sim.cosy.model import N_PULSES, T_GRID  # noqa: E402


def physics_jacobian(theta, tau, scale, fit_field=False) -> np.ndarray:
    """``d map / d (theta[free], offset, scale)`` (G, P) on the grid
    (`CouplingFit.jacobian`; ``wL`` dropped unless ``fit_field``);
    ``map = offset + scale * P0(theta)``."""
    jac = CouplingFit(np.asarray(theta, float), 0.0, scale, 0.0, 0, T_GRID, T_GRID,
                      tau).jacobian()
    return jac if fit_field else jac[:, 1:]


def family_clusters(fam: str, maps: int, seed: int, noise: float | None = None):
    """``maps`` maps of family ``fam`` from the stream ``[seed, family index]``: the
    normalised truths, each map's cluster (`Clusters` of one), the noisy maps (noise
    ``noise`` drawn next from the same stream; None: not drawn) and the stream."""
    rng = np.random.default_rng([seed, FAMILIES.index(fam)])
    truths, sel = family_maps(fam, maps, rng, return_clusters=True)
    cls = [next(c[int(np.flatnonzero(o == k)[0])] for o, c in sel if k in o)
           for k in range(maps)]
    noisy = None if noise is None else add_noise(truths, noise, rng)
    return truths, cls, noisy, rng


def true_jacobian(cl, truth, fit_field=False) -> tuple[np.ndarray, float]:
    """`physics_jacobian` of a normalised map ``truth`` at its cluster's true couplings,
    and the RMS difference between the coupling model and ``truth`` (~1e-13: the same
    model)."""
    th = true_theta(cl.hyperfine, cl.dipolar, float(cl.b_field))
    raw = coupling_maps(th[None], T_GRID, T_GRID, float(cl.tau), N_PULSES)[0]
    scale = float(np.ptp(truth) / max(np.ptp(raw), 1e-12))
    err = float(np.sqrt(np.mean((truth - truth.mean() - scale * (raw - raw.mean())) ** 2)))
    return physics_jacobian(th, float(cl.tau), scale, fit_field), err


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--seed", type=int, default=1797100001)
    ap.add_argument("--random-masks", type=int, default=5)
    ap.add_argument("--start", type=int, default=100, help="random points the design grows from")
    ap.add_argument("--fit-field", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ij = _grid()
    g = len(ij)
    out = {"config": {k: str(v) for k, v in vars(args).items()},
           "uptime_start": os.popen("uptime").read().strip(), "families": {}}
    for fam in args.families:
        truths, cls, _, rng = family_clusters(fam, args.maps, args.seed)
        r = []
        for k in range(args.maps):
            cl = cls[k]
            jac, model_err = true_jacobian(cl, truths[k], args.fit_field)
            p = jac.shape[1]
            iv = {n: float(np.mean([integrated_variance(jac, rng.choice(g, n, replace=False))
                                    for _ in range(args.random_masks)])) for n in (250, 175)}
            curve = greedy_curve(jac, 250, rng.choice(g, max(args.start, p + 1),
                                                      replace=False))[1]
            n0 = max(args.start, p + 1)
            reach = np.flatnonzero(curve <= iv[250])
            n_star = int(n0 + reach[0]) if reach.size else None
            d175 = float(curve[175 - n0])
            row = {"map": k, "spins": int(len(cl.hyperfine)), "P": p,
                   "model_vs_truth_rmse": model_err, "random_10pct": iv[250],
                   "random_7pct": iv[175], "design_7pct": d175,
                   "design7_over_random10": d175 / iv[250],
                   "random7_over_random10": iv[175] / iv[250],
                   "points_for_random10": n_star,
                   "points_ratio": (n_star / 250) if n_star else None}
            r.append(row)
            print(f"{fam} map {k}: {row['spins']} spins, P={p}, model-vs-truth {model_err:.1e}; "
                  f"design 7 % / random 10 %: {d175 / iv[250]:.3f}; design reaches random "
                  f"10 %'s variance at {n_star} points ({row['points_ratio']})", flush=True)
        pr = [x["points_ratio"] if x["points_ratio"] else 1.0 for x in r]
        summ = {"maps": r, "mean_points_ratio": float(np.mean(pr)),
                "min_points_ratio": float(min(pr)),
                "mean_design7_over_random10": float(np.mean([x["design7_over_random10"]
                                                             for x in r]))}
        out["families"][fam] = summ
        print(f"== {fam}: oracle design's points for random 10 %'s variance / 250, mean "
              f"{summ['mean_points_ratio']:.3f} (min {summ['min_points_ratio']:.3f}); design 7 % "
              f"/ random 10 %: {summ['mean_design7_over_random10']:.3f}", flush=True)
    out["mean_points_ratio_over_families"] = float(np.mean(
        [f["mean_points_ratio"] for f in out["families"].values()]))
    out["uptime_end"] = os.popen("uptime").read().strip()
    print("mean over families:", round(out["mean_points_ratio_over_families"], 3), "|",
          out["uptime_end"])
    path = args.out or Path(__file__).with_name(
        f"cosy_design_bound_physics{'_field_fitted' if args.fit_field else ''}.json")
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)
    return out


if __name__ == "__main__":
    main()
