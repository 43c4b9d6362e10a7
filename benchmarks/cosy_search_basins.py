"""Does the field-known coupling search land in the truth's basin? Variants side by side.

Per map of a family (`mracq.sim.cosy.families`, 2-spin maps only, noise 0.1, the true
field), per random mask (``--masks``) and per point count (nested: the first ``n`` of
one permutation),
the search (`mracq.recon.cosy.physics.fit_clusters`, ``spins=(2,)``) is compared with LM
started at the true couplings on the same points (`batch_lm`, 20 steps): the search's
residual minus the truth-started one, in units of the noise variance, says whether the
search missed a better basin (``> 10``: a miss, counted as ``wrong``) or the points
prefer another one (``< 0``: nothing a search can fix, only more or better points).
Both fits' RMSE against the noiseless map is reported.

Variants: ``full`` (the defaults), ``no_alias`` (no `alias_shifts` stage),
``session7`` (neither the alias stage nor the starts beside the other nucleus:
the search before issue 12's session 8).

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/cosy_search_basins.py --family
bonded_pair --maps 6 --seed S --variants full session7``
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
from cosy_design_bound_physics import family_clusters  # noqa: E402
from cosy_physics_field import true_theta  # noqa: E402
from mracq.recon.cosy.physics import fit_clusters  # noqa: E402
from mracq.recon.cosy.physics_fit import FitProblem, batch_lm  # noqa: E402
from mracq.sim.cosy.model import N_PULSES, T_GRID  # noqa: E402

VARIANTS = {"full": {}, "no_alias": {"aliases": False},
            "session7": {"aliases": False, "near_khz": 0.0}}
WRONG = 10.0
"""Residual excess (noise variances) over the truth-started fit counted as a missed basin."""


def truth_fit(noisy, cl, ij):
    """LM started at the true couplings on the points ``ij`` (20 steps), as a
    `CouplingFit`."""
    v = noisy[tuple(ij.T)]
    prob = FitProblem(v, ij, T_GRID, T_GRID, float(cl.tau), N_PULSES)
    th0 = true_theta(cl.hyperfine, cl.dipolar, float(cl.b_field))
    return prob.fit(batch_lm(prob, th0[None], np.arange(th0.size), 20)[0][0])


def basin_row(truth, noisy, cl, ij, noise, search_kw, ref) -> dict:
    """The search on the points ``ij`` of one map against ``ref`` (`truth_fit`)."""
    v = noisy[tuple(ij.T)]
    t0 = time.perf_counter()
    fit = fit_clusters(v, ij, t1=T_GRID, t2=T_GRID, b_field=float(cl.b_field),
                       tau=float(cl.tau), spins=(2,), **search_kw)[2]
    dt = time.perf_counter() - t0
    return {"rmse": float(np.sqrt(np.mean((fit.grid() - truth) ** 2))),
            "rmse_truth_lm": float(np.sqrt(np.mean((ref.grid() - truth) ** 2))),
            "excess": float((fit.rss - ref.rss) / noise ** 2), "time_s": dt}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="bonded_pair")
    ap.add_argument("--maps", type=int, default=6)
    ap.add_argument("--points", type=int, nargs="+", default=[175, 250])
    ap.add_argument("--masks", type=int, default=1, help="random masks per map")
    ap.add_argument("--seed", type=int, default=1798300001)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--variants", nargs="+", default=["full", "session7"],
                    choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    path = args.out or Path(__file__).with_name(
        f"cosy_search_basins_{args.family}_{args.seed}.json")
    out = {"config": {k: str(v) for k, v in vars(args).items()},
           "uptime_start": os.popen("uptime").read().strip(), "rows": []}
    truths, cls, noisy, _ = family_clusters(args.family, args.maps, args.seed, args.noise)
    grid = np.argwhere(np.ones(truths[0].shape, bool))
    for k in range(args.maps):
        if len(cls[k].hyperfine) != 2:
            continue
        for rep in range(args.masks):
            order = np.random.default_rng([args.seed, k, 7 + rep]).permutation(truths[k].size)
            for n in args.points:
                ij = grid[np.sort(order[:n])]
                ref = truth_fit(noisy[k], cls[k], ij)
                for name in args.variants:
                    r = {"map": k, "mask": rep, "points": n, "variant": name,
                         **basin_row(truths[k], noisy[k], cls[k], ij, args.noise,
                                     VARIANTS[name], ref)}
                    out["rows"].append(r)
                    print(f"map {k} mask {rep} n={n} {name:9s} RMSE {r['rmse']:.4f} "
                          f"(truth-started {r['rmse_truth_lm']:.4f}) excess "
                          f"{r['excess']:+7.1f} {r['time_s']:.0f} s", flush=True)
        path.write_text(json.dumps(out, indent=1))
    summary = {}
    for name in args.variants:
        for n in args.points:
            rs = [r for r in out["rows"] if r["variant"] == name and r["points"] == n]
            summary[f"{name}@{n}"] = {
                "fits": len(rs), "rmse_mean": float(np.mean([r["rmse"] for r in rs])),
                "wrong": int(sum(r["excess"] > WRONG for r in rs)),
                "time_s_mean": float(np.mean([r["time_s"] for r in rs]))}
            s = summary[f"{name}@{n}"]
            print(f"{name:9s} n={n}: mean RMSE {s['rmse_mean']:.4f}, wrong basins "
                   f"{s['wrong']}/{s['fits']}, {s['time_s_mean']:.0f} s per search")
    out["summary"] = summary
    out["uptime_end"] = os.popen("uptime").read().strip()
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path, "|", out["uptime_end"])
    return out


if __name__ == "__main__":
    main()
