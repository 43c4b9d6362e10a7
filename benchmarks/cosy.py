"""COSY reconstruction benchmark: orig vs SVT vs DL vs DLMC on held-out simulated maps.

Held-out maps: random 13C pairs from a seed never used in training (training uses seed 0,
validation 12345), kept when the noiseless signal's peak-to-peak is >= --min-ptp (clusters
an experiment would pick), measured with photon shot noise of the experiment (1.5e5 shots
per point, 0.03 photons/shot, 30% contrast: physics.md section 2). For each map and
coverage, --masks random masks; every method reconstructs from the same masked data.

Figures (all against the noiseless map, errors divided by its peak-to-peak so they read on
the seed's [0, 1] scale): RMSE in time and frequency domain, SSIM, and the seed's SNR
(peak maximum over the mean amplitude of a blank spectral region) as a gain in dB over the
FFT of the fully sampled noisy map. Also: time per DL + SVT reconstruction of a 50 x 50 map.

Run: ``PYTHONPATH=src python benchmarks/cosy.py [--maps 20 --masks 5 --out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small SVDs: one thread is fastest

import numpy as np  # noqa: E402

from mracq.recon.cosy.dlmc import reconstruct
from mracq.recon.cosy.dlnet import default_net
from mracq.recon.metrics import rmse, rmse_freq, snr_db, spectral_regions, ssim
from mracq.sim.cosy.couplings import random_clusters
from mracq.sim.cosy.model import shot_noise, simulate_map

METHODS = ("orig", "svt", "dl", "dlmc")
COVERAGES = (0.1, 0.2, 0.4, 0.8)


def held_out_maps(n: int, seed: int, min_ptp: float) -> np.ndarray:
    """Noiseless held-out maps (n, 50, 50) with peak-to-peak >= min_ptp."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(len(o) for o in out) < n:
        maps = simulate_map(random_clusters(400, rng, m=2))
        out.append(maps[np.ptp(maps, axis=(1, 2)) >= min_ptp])
    return np.concatenate(out)[:n]


def random_mask(shape, coverage: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask with exactly round(coverage * size) True entries."""
    flat = np.zeros(int(np.prod(shape)), bool)
    flat[rng.choice(flat.size, int(round(coverage * flat.size)), replace=False)] = True
    return flat.reshape(shape)


_NET = None  # --weights: a retrained network instead of the shipped one


def _rec(measured, mask, method):
    return reconstruct(measured, mask, method, net=_NET)


def evaluate(truth, noisy, mask, method) -> dict:
    """Metrics of one reconstruction (errors on the truth's peak-to-peak scale)."""
    scale = np.ptp(truth)
    rec = _rec(np.where(mask, noisy, np.nan), mask, method)
    peak, blank = spectral_regions(truth)
    return {
        "rmse": rmse(rec, truth) / scale,
        "rmse_freq": rmse_freq(rec, truth) / scale,
        "ssim": ssim(rec, truth),
        "snr_gain_db": snr_db(rec, peak, blank) - snr_db(noisy, peak, blank),
    }


def timing(n: int = 20) -> dict:
    """Seconds per DL + SVT (dlmc) reconstruction of a 50 x 50 map at 10% coverage."""
    rng = np.random.default_rng(7)
    truth = simulate_map(random_clusters(1, rng)[0])
    mask = random_mask(truth.shape, 0.1, rng)
    default_net()
    _rec(truth, mask, "dlmc")
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        _rec(truth, mask, "dlmc")
        ts.append(time.perf_counter() - t)
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts))}


def adaptive_vs_random(truths, noisy, rng, batch: int = 25, start: float = 0.04) -> dict:
    """Points the adaptive strategy needs to reach the mean random-mask DLMC error at 10%.

    For each map: target = DLMC RMSE averaged over 3 random 10% masks; the adaptive loop
    (`mracq.plans.cosy.EnsembleDisagreement`, same data) grows the mask in batches until
    its DLMC RMSE is at or below the target, or 40% coverage.
    """
    from mracq.recon.cosy.strategy import EnsembleDisagreement

    n_rand = int(round(0.1 * truths[0].size))
    out = []
    for t, y in zip(truths, noisy, strict=True):
        scale = np.ptp(t)
        target = np.mean([
            rmse(_rec(y, m, "dlmc"), t) / scale
            for m in (random_mask(t.shape, 0.1, rng) for _ in range(3))
        ])
        s = EnsembleDisagreement(t.shape, rng)
        todo = s.suggest(int(round(start * t.size)))
        err = np.inf
        while todo:
            s.ingest([{"_id": p["_id"], "value": y[p["i"], p["j"]]} for p in todo])
            err = rmse(_rec(y, s.mask, "dlmc"), t) / scale
            if err <= target or s.mask.sum() >= 0.4 * t.size:
                break
            todo = s.suggest(batch)
        out.append({"target_rmse": float(target), "adaptive_points": int(s.mask.sum()),
                    "adaptive_rmse": float(err), "random_points": n_rand})
    pts = [o["adaptive_points"] for o in out]
    return {"per_map": out, "adaptive_points_mean": float(np.mean(pts)),
            "random_points": n_rand, "ratio": float(np.mean(pts) / n_rand)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--masks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--min-ptp", type=float, default=0.15)
    ap.add_argument("--shots", type=int, default=150_000)
    ap.add_argument("--adaptive-maps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    ap.add_argument("--weights", default=None,
                    help="DLNet weights to evaluate (default: the shipped ones)")
    args = ap.parse_args(argv)
    if args.weights:
        from mracq.recon.cosy.dlnet import load_weights

        global _NET
        _NET = load_weights(args.weights)
    import torch

    torch.set_num_threads(2)
    truths = held_out_maps(args.maps, args.seed, args.min_ptp)
    rng = np.random.default_rng(args.seed + 1)
    noisy = shot_noise(truths, rng, shots=args.shots)
    rows = {m: {c: [] for c in COVERAGES} for m in METHODS}
    full = []
    for k, (t, y) in enumerate(zip(truths, noisy, strict=True)):
        peak, blank = spectral_regions(t)
        full.append({"rmse": rmse(y, t) / np.ptp(t), "snr_db": snr_db(y, peak, blank)})
        for c in COVERAGES:
            for _ in range(args.masks):
                mask = random_mask(t.shape, c, rng)
                for m in METHODS:
                    rows[m][c].append(evaluate(t, y, mask, m))
        print(f"map {k + 1}/{len(truths)} done", flush=True)
    summary = {}
    for m in METHODS:
        summary[m] = {}
        for c in COVERAGES:
            r = rows[m][c]
            summary[m][f"{int(c * 100)}%"] = {
                key: {"mean": float(np.mean([x[key] for x in r])),
                      "std": float(np.std([x[key] for x in r]))}
                for key in r[0]
            }
    result = {
        "config": vars(args),
        "noisy_full_map": {
            "rmse_mean": float(np.mean([f["rmse"] for f in full])),
            "snr_db_mean": float(np.mean([f["snr_db"] for f in full])),
        },
        "methods": summary,
        "timing_dlmc_50x50": timing(),
    }
    if args.adaptive_maps > 0:
        k = args.adaptive_maps
        result["adaptive_vs_random"] = adaptive_vs_random(truths[:k], noisy[:k], rng)
    d10 = summary["dlmc"]["10%"]
    s40 = summary["svt"]["40%"]
    result["done_when"] = {
        "dlmc10_rmse_over_svt40_rmse": d10["rmse"]["mean"] / s40["rmse"]["mean"],
        "dlmc10_snr_gain_db": d10["snr_gain_db"]["mean"],
        "dlmc_time_s": result["timing_dlmc_50x50"]["median_s"],
    }
    print(f"{'method':6s} {'cov':>4s} {'rmse':>14s} {'rmse_f':>14s} {'snr gain dB':>14s} ssim")
    for m in METHODS:
        for c in COVERAGES:
            s = summary[m][f"{int(c * 100)}%"]
            print(
                f"{m:6s} {int(c * 100):3d}% {s['rmse']['mean']:.4f}+-{s['rmse']['std']:.4f} "
                f"{s['rmse_freq']['mean']:.4f}+-{s['rmse_freq']['std']:.4f} "
                f"{s['snr_gain_db']['mean']:6.2f}+-{s['snr_gain_db']['std']:.2f} "
                f"{s['ssim']['mean']:.3f}"
            )
    print("noisy full map:", result["noisy_full_map"])
    print("done-when:", result["done_when"])
    if "adaptive_vs_random" in result:
        a = result["adaptive_vs_random"]
        print(f"adaptive: {a['adaptive_points_mean']:.0f} points vs random {a['random_points']} "
              f"to reach the random 10% DLMC error (ratio {a['ratio']:.2f})")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
