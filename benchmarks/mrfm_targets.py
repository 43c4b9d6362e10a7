"""MRFM targets of issue #17, converged and with spreads (seed 002), written to mrfm.json.

Problem size (stated, not the seed's): 2 nm voxels, 84 x 84 x 23 grid (the seed's field and
sample, coarsened 2x in every direction), 23 pulses (every other of the seed's 46, so the
multislice blocks stay square) or 23 XYZ heights (15-59 nm in 2 nm steps). The seed's 1 nm
grid is 8x the voxels and 4x the positions; the protocol ratios measured at 1 nm in the
earlier, iteration-limited runs (docs/mrfm.md) sit within the spreads found here.

Every reconstruction runs ADMM (TV + non-negativity, nu1 = nu2 = 1e-3) to convergence: it
stops when the estimate's relative change per iteration falls below ``TOL`` (2e-5; at that
point the RMSE is within 0.1 % of a 1500-iteration run), at most ``MAX_ITER``. The RMSE is
the final iterate's (no best-iteration oracle). The TV weight ``gamma_rel`` is tuned per
protocol / arm on a separate phantom and noise draw (``TUNE_PHANTOM``) and then used on the
reported phantoms (seeds 1, 2) x noise draws (0, 1, 2).

Parts (``--parts``, each written to ``benchmarks/mrfm.json`` under ``converged`` as it ends):

- ``protocols``: RMSE vs T_m in {5, 15, 30, 60, 300} s, multislice and XYZ, membrane and
  cantilever; the time multislice needs to reach XYZ's 30 s RMSE, the equal-T_m ratio, the
  time the membrane needs to reach the cantilever's 30 s RMSE, the interior detail.
- ``cs``: compressed sensing (joint CS + ADMM) at p = 1/2 and 1/3, T_m = 60 s, against full
  sampling at 30 s and 60 s through the same pipeline (``reconstruct(mask=...)``, all-ones
  mask for the full arms).
- ``adaptive``: :class:`~mracq.recon.mrfm.strategy.HardwareTimeStrategy` against the uniform
  full scan at T_m = 60 s on three phantoms (centred, off-centre, hollow) in hardware time.

Usage: ``PYTHONPATH=src nice -n 15 python benchmarks/mrfm_targets.py [--parts P,..]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np

from mracq.recon.mrfm.pipeline import reconstruct
from mracq.recon.mrfm.strategy import HardwareTimeStrategy
from mracq.sim.mrfm.field import SEED_F0
from mracq.sim.mrfm.setup import default_setup

log = logging.getLogger("benchmarks.mrfm_targets")

SIZE = {"voxel_size": 2e-9, "n_xy": 84, "n_z": 23}
F0 = SEED_F0[::2]
TOL, MAX_ITER = 2e-5, 3000
NU = {"nu1": 1e-3, "nu2": 1e-3}
GAMMAS = (0.003, 0.01, 0.03, 0.1)
T_MS = (5.0, 15.0, 30.0, 60.0, 300.0)
PHANTOMS, DRAWS, TUNE_PHANTOM = (1, 2), (0, 1, 2), 101
OUT = Path(__file__).with_name("mrfm.json")


def setup_for(geo, prot):
    kw = dict(SIZE, f0=F0) if prot == "multislice" else dict(SIZE)
    return default_setup(geo, prot, **kw)


def metrics(x, truth):
    """RMSE (nm^-3, whole grid) and interior detail inside the sample.

    ``interior_r2``: share of the density fluctuations about the sample's mean that the
    reconstruction recovers inside the sample, 1 - sum (x - o)^2 / sum (o - mean)^2;
    ``interior_corr``: correlation of x and o inside the sample.
    """
    inside = truth > 0
    xi, oi = x[inside], truth[inside]
    fluct = ((oi - oi.mean()) ** 2).sum()
    return {"rmse": float(np.sqrt(np.mean((x - truth) ** 2)) / 1e27),
            "interior_rmse": float(np.sqrt(np.mean((xi - oi) ** 2)) / 1e27),
            "interior_r2": float(1 - ((xi - oi) ** 2).sum() / fluct),
            "interior_corr": float(np.corrcoef(xi, oi)[0, 1])}


def solve(data, setup, truth, gamma_rel, mask=None, **kw):
    n = []
    t = time.perf_counter()
    x = reconstruct(data, setup, mask=mask, gamma_rel=gamma_rel, n_iter=MAX_ITER, tol=TOL,
                    callback=lambda k, _x: n.append(k), **NU, **kw)
    return {**metrics(x, truth), "iterations": len(n), "wall_s": time.perf_counter() - t}


def rng_for(*key):
    """Generator seeded by a key of ints and strings (stable across processes)."""
    return np.random.default_rng([zlib.crc32(k.encode()) if isinstance(k, str) else int(k)
                                  for k in key])


def tune(make_data, setup, truth, **kw):
    """gamma_rel with the lowest converged RMSE on one tuning draw; all scores returned."""
    scores = {g: solve(make_data(), setup, truth, g, **kw)["rmse"] for g in GAMMAS}
    return min(scores, key=scores.get), {str(g): v for g, v in scores.items()}


def stats(values):
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def time_to_rmse(curve, target):
    """T_m (s) at which a log-log interpolated RMSE(T_m) curve reaches ``target``."""
    ts = np.array(sorted(curve))
    rs = np.array([curve[t] for t in ts])
    for i in range(len(ts) - 1):
        (t0, r0), (t1, r1) = (ts[i], rs[i]), (ts[i + 1], rs[i + 1])
        if r1 <= target <= r0:
            slope = np.log(r1 / r0) / np.log(t1 / t0)
            return float(t0 * (target / r0) ** (1 / slope)), False
    # out of range: extrapolate along the nearest segment (flagged)
    i = 0 if target > rs[0] else len(ts) - 2
    slope = np.log(rs[i + 1] / rs[i]) / np.log(ts[i + 1] / ts[i])
    return float(ts[i] * (target / rs[i]) ** (1 / slope)), True


def done_protocols(summary):
    """Issue #17's protocol targets: on the mean over phantoms x draws, and on every pair."""
    geos = ("membrane", "cantilever")
    tf = {g: summary[g]["time_fraction_multislice_to_xyz_30s_rmse"] for g in geos}
    eq = {f"{g}/{tm}": summary[g]["equal_tm_ratio_multislice_over_xyz"][str(tm)]
          for g in geos for tm in T_MS}
    done = {"time_fraction_mean": {g: v["mean"] for g, v in tf.items()},
            "time_fraction_sd": {g: v["sd"] for g, v in tf.items()},
            "time_fraction_worst_pair": {g: v["max"] for g, v in tf.items()},
            "equal_tm_ratio_mean_worst": max(v["mean"] for v in eq.values()),
            "equal_tm_ratio_worst_pair": max(v["max"] for v in eq.values()),
            "targets": {"time_fraction": 0.5, "equal_tm_ratio": 0.95}}
    done["pass_mean"] = bool(max(done["time_fraction_mean"].values()) <= 0.5
                             and done["equal_tm_ratio_mean_worst"] <= 0.95)
    done["pass_every_pair"] = bool(max(done["time_fraction_worst_pair"].values()) <= 0.5
                                   and done["equal_tm_ratio_worst_pair"] <= 0.95)
    return done


def done_cs(sm):
    """Issue #17's CS targets: on the mean over phantoms x draws, and on every pair."""
    a, b = sm["cs_half_60_over_full30"], sm[f"cs{0.5:.3f}_60_over_full60"]
    done = {"cs_half_60_over_full30": {k: a[k] for k in ("mean", "sd", "max")},
            "cs_half_over_full_same_tm_60s": {k: b[k] for k in ("mean", "sd", "max")},
            "targets": {"cs_half_60_over_full30": 1.05, "cs_half_over_full_same_tm": 1.10}}
    done["pass_mean"] = bool(a["mean"] <= 1.05 and b["mean"] <= 1.10)
    done["pass_every_pair"] = bool(a["max"] <= 1.05 and b["max"] <= 1.10)
    return done


def part_protocols():
    configs = [(g, p) for g in ("membrane", "cantilever") for p in ("multislice", "xyz")]
    res = {"tuning": {}, "runs": {}}
    for geo, prot in configs:
        s = setup_for(geo, prot)
        key = f"{geo}/{prot}"
        tp = s.phantom(np.random.default_rng(TUNE_PHANTOM))
        g, scores = tune(lambda s=s, tp=tp, key=key: s.measure(
            tp, 30.0, rng_for(TUNE_PHANTOM, 9, key)), s, tp)
        res["tuning"][key] = {"gamma_rel": g, "rmse_by_gamma_at_30s": scores}
        log.info("tuned %s: gamma_rel %s %s", key, g, scores)
        for ph in PHANTOMS:
            truth = s.phantom(np.random.default_rng(ph))
            for d in DRAWS:
                for tm in T_MS:
                    r = solve(s.measure(truth, tm, rng_for(ph, d, key, int(tm))), s, truth, g)
                    res["runs"][f"{key}/{ph}/{d}/{tm}"] = r
                    log.info("%s phantom %d draw %d T_m %g: %s", key, ph, d, tm, r)
    runs = res["runs"]

    def rm(key, ph, d, tm):
        return runs[f"{key}/{ph}/{d}/{tm}"]["rmse"]

    summary = {}
    for geo in ("membrane", "cantilever"):
        ms, xy = f"{geo}/multislice", f"{geo}/xyz"
        tfrac, flags, eq = [], [], {tm: [] for tm in T_MS}
        for ph in PHANTOMS:
            for d in DRAWS:
                curve = {tm: rm(ms, ph, d, tm) for tm in T_MS}
                t, ex = time_to_rmse(curve, rm(xy, ph, d, 30.0))
                tfrac.append(t / 30.0)
                flags.append(ex)
                for tm in T_MS:
                    eq[tm].append(rm(ms, ph, d, tm) / rm(xy, ph, d, tm))
        summary[geo] = {
            "time_fraction_multislice_to_xyz_30s_rmse": stats(tfrac),
            "extrapolated": sum(flags),
            "equal_tm_ratio_multislice_over_xyz": {str(tm): stats(v) for tm, v in eq.items()}}
    for prot in ("multislice", "xyz"):
        tfrac, flags = [], []
        for ph in PHANTOMS:
            for d in DRAWS:
                curve = {tm: rm(f"membrane/{prot}", ph, d, tm) for tm in T_MS}
                t, ex = time_to_rmse(curve, rm(f"cantilever/{prot}", ph, d, 30.0))
                tfrac.append(t / 30.0)
                flags.append(ex)
        summary[f"membrane_vs_cantilever/{prot}"] = {
            "time_fraction_membrane_to_cantilever_30s_rmse": stats(tfrac),
            "extrapolated": sum(flags)}
    summary["interior"] = {
        f"{key}/{tm}": {m: stats([runs[f"{key}/{ph}/{d}/{tm}"][m] for ph in PHANTOMS
                                  for d in DRAWS]) for m in ("interior_r2", "interior_corr")}
        for key in ("membrane/multislice", "membrane/xyz", "cantilever/multislice",
                    "cantilever/xyz") for tm in (30.0, 300.0)}
    summary["rmse"] = {f"{g}/{p}/{tm}": stats([rm(f"{g}/{p}", ph, d, tm) for ph in PHANTOMS
                                               for d in DRAWS])
                       for g, p in configs for tm in T_MS}
    res["summary"] = summary
    done = done_protocols(summary)
    return res, {"done_multislice_vs_xyz": done}


def part_cs(ps=(0.5, 1 / 3)):
    s = setup_for("membrane", "multislice")
    ones = np.ones(s.data_shape[:2], bool)
    arms = {"full30": (30.0, 1.0), "full60": (60.0, 1.0)}
    arms.update({f"cs{p:.3f}_60": (60.0, p) for p in ps})
    res = {"tuning": {}, "runs": {}, "pipeline": "reconstruct(mask=...) joint CS + ADMM in "
           "every arm (all-ones mask for full sampling)"}

    def draw(truth, tm, p, key):
        rng = rng_for(*key)
        data = s.measure(truth, tm, rng)
        mask = ones if p >= 1 else rng.random(ones.shape) < p
        return np.where(mask[:, :, None], data, 0.0), mask

    for arm, (tm, p) in arms.items():
        tp = s.phantom(np.random.default_rng(TUNE_PHANTOM))
        scores = {}
        for g in GAMMAS:
            data, mask = draw(tp, tm, p, (TUNE_PHANTOM, 9, arm))
            scores[str(g)] = solve(data, s, tp, g, mask=mask)["rmse"]
        g = float(min(scores, key=scores.get))
        res["tuning"][arm] = {"gamma_rel": g, "rmse_by_gamma": scores}
        log.info("tuned %s: %s", arm, res["tuning"][arm])
        for ph in PHANTOMS:
            truth = s.phantom(np.random.default_rng(ph))
            for d in DRAWS:
                # CS at 60 s and full at 60 s share the draw: the CS data are its subset
                data, mask = draw(truth, tm, 1.0, (ph, d, "60" if tm == 60 else "30"))
                if p < 1:
                    mask = rng_for(ph, d, arm, "mask").random(ones.shape) < p
                    data = np.where(mask[:, :, None], data, 0.0)
                r = solve(data, s, truth, g, mask=mask)
                res["runs"][f"{arm}/{ph}/{d}"] = r
                log.info("cs %s phantom %d draw %d: %s", arm, ph, d, r)

    def ratio(a, b):
        return stats([res["runs"][f"{a}/{ph}/{d}"]["rmse"] / res["runs"][f"{b}/{ph}/{d}"]["rmse"]
                      for ph in PHANTOMS for d in DRAWS])

    half = f"cs{0.5:.3f}_60"
    res["summary"] = {"cs_half_60_over_full30": ratio(half, "full30"),
                      "full60_over_full30": ratio("full60", "full30")}
    for p in ps:
        res["summary"][f"cs{p:.3f}_60_over_full60"] = ratio(f"cs{p:.3f}_60", "full60")
    done = done_cs(res["summary"])
    return res, {"done_cs": done}


def phantom_family(s, seed):
    """Centred sphere, off-centre sphere (12 nm, 8 nm off axis), hollow sphere (inner 24 nm)."""
    base = s.phantom(np.random.default_rng(seed))
    shift = (int(round(12e-9 / s.voxel_size)), int(round(8e-9 / s.voxel_size)))
    off = np.roll(s.phantom(np.random.default_rng(seed + 1)), shift, axis=(0, 1))
    hollow = s.phantom(np.random.default_rng(seed + 2))
    idx = [np.fft.fftfreq(n, 1.0 / n) for n in s.sample_shape[:2]] + [
        np.arange(s.n_z) - (s.n_z - 1) / 2]
    X, Y, Z = np.meshgrid(*idx, indexing="ij")
    hollow[np.sqrt(X**2 + Y**2 + Z**2) * s.voxel_size < 12e-9] = 0.0
    return {"centred": base, "off_centre": off, "hollow": hollow}


#: gamma_rel tuned for the adaptive part (phantom 101, its own draw; set to skip the tuning)
ADAPTIVE_TUNED = {"0.003": 2.967350066999136, "0.01": 2.984969268121426,
                  "0.03": 3.2107138769130192, "0.1": 3.5406878916922957}


def part_adaptive(t_ref=60.0, pilot=5.0, round_frac=0.1, cap=0.8, tol=0.01, seed=1,
                  uniform_tms=(60.0,), gamma=0.01):
    """Adaptive vs uniform in hardware time; both arms use ``gamma`` (None: the tuned one).

    ``gamma`` = 0.01: within 0.6 % of the best (0.003) for the uniform arm on the tuning
    phantom; 0.003 under-regularizes the adaptive arm's low-time early rounds (centred
    phantom, one run: 3.08 against 2.89 nm^-3 at 0.78 of the time), disclosed in
    docs/mrfm.md.
    """
    s = setup_for("membrane", "multislice")
    n_pts = int(np.prod(s.data_shape))
    t_uniform = t_ref * n_pts
    sig_ref = float(s.noise_std(np.zeros(1), t_ref)[0])  # thermal floor at t_ref
    ones = np.ones(s.data_shape, float)
    scores = dict(ADAPTIVE_TUNED or {})
    if not scores:
        tp = phantom_family(s, TUNE_PHANTOM)["centred"]
        for g in GAMMAS:
            data = s.measure(tp, t_ref, rng_for(TUNE_PHANTOM, 9, "adaptive"))
            scores[str(g)] = solve(data, s, tp, g, mask=ones, noise_std=sig_ref)["rmse"]
    g = float(min(scores, key=scores.get)) if gamma is None else gamma
    res = {"settings": {"t_ref_s": t_ref, "pilot_s": pilot, "round_fraction": round_frac,
                        "budget_fraction": cap, "tol": tol, "gamma_rel": g,
                        "gamma_rmse": scores, "uniform_hardware_s": t_uniform,
                        "time_counted": "integration only (moves and rf switching excluded)"},
           "phantoms": {}}
    log.info("adaptive: gamma_rel %s %s", g, scores)
    fracs = []
    for name, truth in phantom_family(s, seed).items():
        clean = s.forward(truth)
        rng = rng_for(seed, name, "adaptive")
        uni = {}
        for tm in uniform_tms:
            data = clean + s.noise_std(clean, tm) * rng.standard_normal(clean.shape)
            uni[tm] = solve(data, s, truth, g, mask=ones * tm / t_ref, noise_std=sig_ref)
        target = uni[t_ref]["rmse"]
        strat = HardwareTimeStrategy(s.data_shape, t_ref, pilot, round_frac * t_uniform,
                                     cap * t_uniform, t_step=5.0, tol=tol)
        hist, stop = [], None
        while True:
            alloc = strat.suggest()
            if not alloc.any():
                break
            t_pts = np.maximum(alloc, 1.0)
            vals = clean + _std(s, clean, t_pts) * rng.standard_normal(clean.shape)
            strat.ingest(alloc, np.where(alloc > 0, vals, 0.0))
            x = reconstruct(strat.mean, s, mask=strat.weights(), gamma_rel=g, n_iter=MAX_ITER,
                            tol=TOL, noise_std=sig_ref, **NU)
            m = metrics(x, truth)
            strat.update(s.forward(x), s.noise_std(s.forward(x), t_ref))
            finished = strat.done(x)
            hist.append({"hardware_fraction": strat.spent / t_uniform, **m,
                         "change": strat.last_change,
                         "points_measured": float((strat.time > 0).mean()),
                         "positions_measured": float(np.any(strat.time > 0, -1).mean())})
            log.info("adaptive %s round %d: %s", name, strat.rounds, hist[-1])
            if finished and stop is None:
                stop = dict(hist[-1])
                break
        reach = _reach(hist, target)
        fracs.append(reach if reach is not None else np.nan)
        res["phantoms"][name] = {
            "uniform": {str(k): v for k, v in uni.items()}, "target_rmse": target,
            "rounds": hist, "stopped_at": stop,
            "hardware_fraction_to_uniform_rmse": reach,
            "final_rmse_over_uniform": hist[-1]["rmse"] / target}
    ok = [f for f in fracs if np.isfinite(f)]
    res["summary"] = {"hardware_fraction_to_uniform_rmse": stats(ok) if ok else None,
                      "reached_in": f"{len(ok)}/{len(fracs)}", "values": fracs}
    last = [p["rounds"][-1] for p in res["phantoms"].values()]
    done = {"hardware_fraction_max": max(fracs) if len(ok) == len(fracs) else None,
            "hardware_fraction_mean": float(np.mean(ok)) if ok else None,
            "reached_in": res["summary"]["reached_in"],
            "last_round_fraction": [h["hardware_fraction"] for h in last],
            "last_round_rmse_over_uniform": [p["final_rmse_over_uniform"]
                                             for p in res["phantoms"].values()],
            "target": 0.6}
    done["pass"] = bool(done["hardware_fraction_max"] is not None
                        and done["hardware_fraction_max"] <= 0.6)
    return res, {"done_adaptive_hardware_time": done}


def _reach(hist, target):
    """Hardware fraction at which the rounds' RMSE first reaches ``target``, interpolated
    linearly between the two rounds around it (None if never)."""
    for k, h in enumerate(hist):
        if h["rmse"] <= target:
            if k == 0:
                return h["hardware_fraction"]
            a = hist[k - 1]
            w = (a["rmse"] - target) / (a["rmse"] - h["rmse"])
            return a["hardware_fraction"] + w * (h["hardware_fraction"] - a["hardware_fraction"])
    return None


def _std(s, clean, t):
    """Per-point standard error (N^2) for per-point integration times ``t`` (s, > 2 tau_m)."""
    k_ref = 60.0 / s.tau_m
    return s.noise_std(clean, 60.0) * np.sqrt((k_ref - 1) / (t / s.tau_m - 1))


def write(part, res, done, wall):
    out = json.loads(OUT.read_text()) if OUT.exists() else {}
    for old in ("done_multislice_vs_xyz_30s", "done_cs_half_60s_vs_full_30s"):
        if old in out:  # issue #5's targets, replaced by issue #17's
            out.setdefault("superseded_iteration_limited", {})[old] = out.pop(old)
    conv = out.setdefault("converged", {})
    conv["settings"] = {"size": {"voxel_nm": 2.0, "n_xy": 84, "n_z": 23, "n_pulses": 23},
                        "tol": TOL, "max_iter": MAX_ITER, **NU, "gammas": list(GAMMAS),
                        "phantoms": list(PHANTOMS), "draws": list(DRAWS),
                        "tune_phantom": TUNE_PHANTOM}
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    conv[part] = {**res, "wall_s": wall, "uptime_after": up,
                  "threads": os.environ.get("OMP_NUM_THREADS")}
    out.update(done)
    OUT.write_text(json.dumps(out, indent=1))


PARTS = {"protocols": part_protocols, "cs": part_cs, "adaptive": part_adaptive}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for part in args.parts.split(","):
        if part not in PARTS:
            ap.error(f"unknown part {part!r}; choose from {sorted(PARTS)}")
        t = time.perf_counter()
        res, done = PARTS[part]()
        write(part, res, done, time.perf_counter() - t)
        print(json.dumps(done, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
