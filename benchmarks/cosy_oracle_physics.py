"""Can a design that knows the answer save points for auto with the field known?

`cosy_design_bound_physics` shows that, linearised at the true couplings, a V-optimal
design of 175 points (7 %) has a smaller integrated variance than random 250 points (10 %)
on the 2-3 spin families. This script measures the real thing: auto with the field known
(``reconstruct(..., method="auto", field=, tau=)``, the physics candidates included) on
(a) a mask of 100 random points plus 75 V-optimal points under the coupling model at the
map's TRUE couplings (`cosy_design_bound_physics.physics_jacobian`; an oracle no adaptive
plan has), (b) a random 7 % mask and (c) a random 10 % mask, all of the same noisy map.
``design / random10 <= 1`` would mean 0.7 of random's points suffice on that map.

Maps: `mracq.sim.cosy.families` (noise 0.1), the field given with a 2 uT Gaussian error as
in `cosy_families --field-known`.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/cosy_oracle_physics.py --maps 3 --seed S``
(default families: bonded_pair lattice2 lattice3 couplings).
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
from cosy_adaptive_physics import field_kw  # noqa: E402
from cosy_design_bound import _grid, greedy_design  # noqa: E402
from cosy_design_bound_physics import family_clusters, true_jacobian  # noqa: E402
from mracq.recon.cosy.dlmc import reconstruct  # noqa: E402
from mracq.recon.metrics import rmse  # noqa: E402
from mracq.sim.cosy.families import FAMILIES  # noqa: E402


def _auto(truth, noisy, rows, kw) -> dict:
    mask = np.zeros(truth.size, bool)
    mask[rows] = True
    mask = mask.reshape(truth.shape)
    t0 = time.perf_counter()
    rec = reconstruct(np.where(mask, noisy, np.nan), mask, "auto", **kw)
    return {"rmse": rmse(rec, truth), "chose": rec.report.method,
            "time_s": time.perf_counter() - t0}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=3)
    ap.add_argument("--families", nargs="+",
                    default=["bonded_pair", "lattice2", "lattice3", "couplings"])
    ap.add_argument("--seed", type=int, default=1797200001)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--field-error", type=float, default=2e-6, help="T")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    ij = _grid()
    g = len(ij)
    out = {"config": {k: str(v) for k, v in vars(args).items()},
           "uptime_start": os.popen("uptime").read().strip(), "families": {}}
    path = args.out or Path(__file__).with_name(f"cosy_oracle_physics_{args.seed}.json")
    for fam in args.families:
        fi = FAMILIES.index(fam)
        truths, cls, noisy, _ = family_clusters(fam, args.maps, args.seed, args.noise)
        rows = []
        for k in range(args.maps):
            cl = cls[k]
            jac = true_jacobian(cl, truths[k])[0]
            mrng = np.random.default_rng([args.seed, fi, k])
            start = mrng.choice(g, args.start, replace=False)
            designed = greedy_design(jac, 175, start)
            kw = field_kw(cl, args.field_error, mrng)
            r = {"map": k, "spins": int(len(cl.hyperfine)),
                 "design7": _auto(truths[k], noisy[k], designed, kw),
                 "random7": _auto(truths[k], noisy[k], mrng.choice(g, 175, replace=False), kw),
                 "random10": _auto(truths[k], noisy[k], mrng.choice(g, 250, replace=False), kw)}
            r["design7_over_random10"] = r["design7"]["rmse"] / r["random10"]["rmse"]
            r["random7_over_random10"] = r["random7"]["rmse"] / r["random10"]["rmse"]
            rows.append(r)
            print(f"{fam} map {k} ({r['spins']} spins): auto with field, RMSE design 7 % "
                  f"{r['design7']['rmse']:.4f} [{r['design7']['chose']}], random 7 % "
                  f"{r['random7']['rmse']:.4f} [{r['random7']['chose']}], random 10 % "
                  f"{r['random10']['rmse']:.4f} [{r['random10']['chose']}]; design / random "
                  f"10 %: {r['design7_over_random10']:.3f}", flush=True)
        fr = {"maps": rows, **{f"mean_{q}": float(np.mean([x[q] for x in rows]))
                               for q in ("design7_over_random10", "random7_over_random10")}}
        fr["mean_rmse"] = {c: float(np.mean([x[c]["rmse"] for x in rows]))
                           for c in ("design7", "random7", "random10")}
        out["families"][fam] = fr
        print(f"== {fam}: mean RMSE design 7 % {fr['mean_rmse']['design7']:.4f}, random 7 % "
              f"{fr['mean_rmse']['random7']:.4f}, random 10 % {fr['mean_rmse']['random10']:.4f};"
              f" per map design / random 10 %: {fr['mean_design7_over_random10']:.3f}",
              flush=True)
        path.write_text(json.dumps(out, indent=1))
    out["uptime_end"] = os.popen("uptime").read().strip()
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path, "|", out["uptime_end"])
    return out


if __name__ == "__main__":
    main()
