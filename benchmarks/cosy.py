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
import time
from pathlib import Path

import numpy as np

from mracq.recon.dlmc import reconstruct
from mracq.recon.dlnet import default_net
from mracq.recon.metrics import rmse, rmse_freq, snr_db, spectral_regions, ssim
from mracq.sim.cosy import shot_noise, simulate_map
from mracq.sim.cosy_couplings import random_clusters

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


def evaluate(truth, noisy, mask, method) -> dict:
    """Metrics of one reconstruction (errors on the truth's peak-to-peak scale)."""
    scale = np.ptp(truth)
    rec = reconstruct(np.where(mask, noisy, np.nan), mask, method)
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
    reconstruct(truth, mask, "dlmc")
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        reconstruct(truth, mask, "dlmc")
        ts.append(time.perf_counter() - t)
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=20)
    ap.add_argument("--masks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--min-ptp", type=float, default=0.15)
    ap.add_argument("--shots", type=int, default=150_000)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)
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
    d10 = summary["dlmc"]["10%"]
    s40 = summary["svt"]["40%"]
    result["done_when"] = {
        "dlmc10_rmse_over_svt40_rmse": d10["rmse"]["mean"] / s40["rmse"]["mean"],
        "dlmc10_snr_gain_db": d10["snr_gain_db"]["mean"],
        "dlmc_time_s": result["timing_dlmc_50x50"]["median_s"],
    }
    print(f"{'method':6s} {'cov':>4s} {'rmse':>14s} {'rmse_f':>14s} {'snr gain dB':>14s} {'ssim':>6s}")
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
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("wrote", args.out)
    return result


if __name__ == "__main__":
    main()
