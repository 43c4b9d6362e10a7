"""DLNet weights on the held-out validation maps of every COSY family (model card figures).

The validation set of `mracq.recon.cosy.training.family_validation`: per family ``--maps``
noiseless maps from seed 12345 (never a training seed), Gaussian noise 0.1, one fixed
random mask per map at 10 % and 40 % coverage. For each weights file: DL-only and DLMC
RMSE on the [0, 1] scale of the noiseless map; SVT alone for reference. Also the time of
one DL + SVT (DLMC) reconstruction of a 50 x 50 map (median of ``--timing`` runs, one
thread) and the load it ran at.

Run: ``PYTHONPATH=src python benchmarks/cosy_dlnet_validation.py [WEIGHTS ...] --out FILE``
(default: the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mracq.recon.cosy.dlmc import reconstruct  # noqa: E402
from mracq.recon.cosy.dlnet import load_weights  # noqa: E402
from mracq.recon.cosy.training import family_validation  # noqa: E402


def _rmse(rec, target, scale):
    return float(np.sqrt(np.mean(((rec - target) * scale) ** 2)))


def evaluate(val: dict, methods: dict) -> dict:
    """``{family: {method: {"rmse_10pct": .., "rmse_40pct": ..}}}`` plus ``"mean"``."""
    out = {}
    for fam, by_cov in val.items():
        out[fam] = {name: {} for name in methods}
        for cov, (x, mask, target, scale) in by_cov.items():
            key = f"rmse_{round(cov * 100)}pct"
            for name, (method, net) in methods.items():
                errs = [
                    _rmse(reconstruct(np.where(mask[i], x[i], np.nan), mask[i], method, net=net),
                          target[i], scale[i])
                    ** 2
                    for i in range(len(x))
                ]
                out[fam][name][key] = float(np.sqrt(np.mean(errs)))
    out["mean"] = {
        name: {k: float(np.mean([out[f][name][k] for f in val]))
               for k in out[next(iter(val))][name]}
        for name in methods
    }
    return out


def timing(net, runs: int, val: dict) -> float:
    """Median seconds of one DLMC (DL + SVT) reconstruction of a 50 x 50 validation map
    at 10 % coverage."""
    x, mask = (a[0] for a in next(iter(val.values()))[0.1][:2])
    x = np.where(mask, x, np.nan)
    reconstruct(x, mask, "dlmc", net=net)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        reconstruct(x, mask, "dlmc", net=net)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="*", help="weights files (default: the shipped ones)")
    ap.add_argument("--maps", type=int, default=40, help="maps per family (training: 40)")
    ap.add_argument("--timing", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/cosy_dlnet_validation.json")
    args = ap.parse_args()
    val = family_validation(n=args.maps)
    methods = {"svt": ("svt", None)}
    nets = {}
    for w in args.weights or [None]:
        name = w or "shipped"
        nets[name] = load_weights(w)
        methods[f"dl[{name}]"] = ("dl", nets[name])
        methods[f"dlmc[{name}]"] = ("dlmc", nets[name])
    load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    res = evaluate(val, methods)
    times = {name: timing(net, args.timing, val) for name, net in nets.items()}
    report = {"maps_per_family": args.maps, "noise": 0.1, "val_seed": 12345,
              "rmse": res, "dlmc_seconds_50x50": times, "load_before": load,
              "load_after": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    for fam, by in res.items():
        print(fam)
        for name, v in by.items():
            print(f"  {name:40s} 10%: {v['rmse_10pct']:.4f}  40%: {v['rmse_40pct']:.4f}")
    for name, t in times.items():
        print(f"DL + SVT 50 x 50 [{name}]: {1e3 * t:.1f} ms (median of {args.timing})")
    print(f"load before/after: {report['load_before']} / {report['load_after']}")


if __name__ == "__main__":
    main()
