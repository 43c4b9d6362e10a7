"""COSY 2-spin maps: does a GLOBAL search of the couplings land in the physics fit's basin?

Follow-up of `benchmarks/cosy_physics_fit.py` (issue 12): a least-squares fit of a
2-spin cluster's couplings through the simulator (`mracq.sim.cosy.model.simulate_map`),
started near the truth, reaches RMSE ~0.02 on 10 % of a map of noise 0.1 (auto ~0.07),
but its basin is ~1 kHz wide: the grid aliases every frequency (18 us steps, 55.6 kHz).
This script searches from the data alone and measures how often it lands.

Model (``theta``, `PARAMS`): the Larmor frequency ``wL`` (the field; the pulse spacing
follows it, ``tau = TAU B_FIELD / B``), per nucleus its ms=-1 frequency ``f1 = |wL z - A|``,
``A_perp`` and azimuth (``A_zz = wL - sqrt(f1^2 - A_perp^2)``), one dipolar tensor
``d (1 - 3 n n^T)``; offset and scale eliminated linearly.

Global search (`fit_couplings`):

1. the power of the single-spin terms (plane waves along (f, f), (f, -f), (f, 0), (0, f))
   at each trial frequency; its peaks and the midpoints of close pairs of peaks (lines
   split by the dipolar coupling) are the candidate folded lines;
2. each of the strongest ``n_larmor`` lines as the Larmor line gives ``wL`` on every alias
   branch in the field prior (153-163 mT); at each, every pair of the next ``n_lines``
   lines on every alias branch with ``|A_zz| <= 65 kHz`` gives the nuclei (one start each:
   A_perp 25 kHz, azimuth 0, d = the split or 0.5 kHz);
3. all starts take 5 Levenberg-Marquardt steps together (batched finite-difference
   Jacobians, ~0.25 ms per simulated map); the best 6 take 25 more; lowest residual wins.
   ``--budget`` caps the wall time (starts ordered by line power and cut to fit).

Per map (couplings family, 2 spins, noise 0.1, one random 10 % mask, seeds of its own):
``near`` (the fit started at the truth: what a hit gives), ``global``, ``auto``,
``start_in_basin`` (a start within 1 kHz of the true wL and both f1: did the enumeration
contain the basin at all), ``hit`` (global <= 1.5 near), the wall time.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/cosy_physics_global.py --maps 6
--seed S [--budget 60]``; writes ``cosy_physics_global.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cosy_coupling_search import _scan  # noqa: E402
from cosy_physics_fit import _random_mask, physics_fit, true_theta  # noqa: E402
from mracq.recon.cosy.dlmc import reconstruct  # noqa: E402
from mracq.recon.metrics import rmse  # noqa: E402
from mracq.sim.cosy.couplings import GAMMA_13C  # noqa: E402
from mracq.sim.cosy.families import family_maps  # noqa: E402
from mracq.sim.cosy.model import B_FIELD, T_GRID, TAU, simulate_map  # noqa: E402

log = logging.getLogger(__name__)

KHZ = 2 * np.pi * 1e3
DT = float(T_GRID[1] - T_GRID[0])
F_ALIAS_KHZ = 1e-3 / DT
"""The grid's alias period, 55.6 kHz."""
B_RANGE = (0.153, 0.163)
"""Default prior range (T) of the field along the NV axis (158 mT +- 5 mT)."""
STEP = np.array([0.02, 0.02, 0.1, 0.01, 0.02, 0.1, 0.01, 0.02, 0.01, 0.01])
"""Finite-difference steps of the parameters (kHz, kHz, kHz, rad, ..., kHz, rad, rad)."""
PARAMS = ("wL_kHz", "f1_1_kHz", "A_perp_1_kHz", "azimuth_1", "f1_2_kHz", "A_perp_2_kHz",
          "azimuth_2", "d_kHz", "polar_n", "azimuth_n")


@dataclass(frozen=True)
class CouplingFit:
    """Fitted two-spin couplings and the map they give.

    ``theta`` (10,) in the order of `PARAMS`; the map is ``offset + scale * P0(theta)``
    on the data's scale; ``rss`` its residual sum of squares on the ``n`` points fitted.
    """

    theta: np.ndarray
    offset: float
    scale: float
    rss: float
    n: int

    def grid(self, shape: tuple[int, int] = (50, 50)) -> np.ndarray:
        """The fitted map on the experiment's grid."""
        if tuple(shape) != (T_GRID.size, T_GRID.size):
            raise ValueError(f"the coupling fit lives on the {T_GRID.size}^2 grid, got {shape}")
        return self.offset + self.scale * coupling_maps(self.theta)[0]

    def couplings(self) -> dict:
        """Field (T), A_zz and A_perp (Hz) per nucleus and dipolar d (Hz): plain floats."""
        wl, th = self.theta[0], self.theta
        azz = [wl - np.sqrt(max(th[1 + 3 * j] ** 2 - th[2 + 3 * j] ** 2, 0.0)) for j in (0, 1)]
        return {"b_field": float(wl * KHZ / GAMMA_13C), "a_zz": [float(a * 1e3) for a in azz],
                "a_perp": [float(th[2] * 1e3), float(th[5] * 1e3)], "d": float(th[7] * 1e3)}


def coupling_maps(theta: np.ndarray) -> np.ndarray:
    """Raw P(ms=0) maps (n, 50, 50) of two nuclei from ``theta`` rows (n, 10) (`PARAMS`)."""
    th = np.atleast_2d(np.asarray(theta, dtype=float))
    n = len(th)
    wl = th[:, 0]
    hyp = np.zeros((n, 2, 3))
    for j in range(2):
        f1, ap, az = th[:, 1 + 3 * j], th[:, 2 + 3 * j], th[:, 3 + 3 * j]
        azz = wl - np.sqrt(np.maximum(f1 ** 2 - ap ** 2, 1e-6))
        hyp[:, j] = KHZ * np.column_stack([ap * np.cos(az), ap * np.sin(az), azz])
    d, pol, azn = th[:, 7], th[:, 8], th[:, 9]
    nv = np.column_stack([np.sin(pol) * np.cos(azn), np.sin(pol) * np.sin(azn), np.cos(pol)])
    dip = np.zeros((n, 2, 2, 3, 3))
    dip[:, 0, 1] = KHZ * d[:, None, None] * (np.eye(3) - 3 * nv[:, :, None] * nv[:, None, :])
    b = wl * KHZ / GAMMA_13C
    return simulate_map(hyperfine=hyp, dipolar=dip, b_field=b, tau=TAU * B_FIELD / b,
                        batch=128)


def _resid(maps: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residuals (n, N) after the least-squares offset and scale of each map."""
    sc = maps - maps.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    c = (sc @ yc) / np.maximum((sc * sc).sum(axis=1), 1e-30)
    return c[:, None] * sc - yc[None, :]


def _batch_lm(theta, y, mask, iters, lam0=1e-2):
    """Levenberg-Marquardt on every row of ``theta`` at once (offset, scale eliminated)."""
    th = np.array(theta, dtype=float)
    n, p = th.shape
    r = _resid(coupling_maps(th)[:, mask], y)
    loss = (r * r).sum(axis=1)
    lam = np.full(n, lam0)
    eye = np.eye(p)
    for _ in range(iters):
        pert = (th[:, None, :] + eye[None] * STEP).reshape(-1, p)
        rj = _resid(coupling_maps(pert)[:, mask], y).reshape(n, p, -1)
        jac = (rj - r[:, None, :]) / STEP[None, :, None]
        a = jac @ np.swapaxes(jac, 1, 2)
        g = (jac @ r[:, :, None])[..., 0]
        dg = np.diagonal(a, axis1=1, axis2=2)
        best_th, best_loss, best_r = th.copy(), loss.copy(), r.copy()
        for mult in (1.0, 10.0):
            m = a + (lam * mult)[:, None, None] * ((dg + 1e-9)[:, :, None] * eye[None])
            tn = th - np.linalg.solve(m, g[..., None])[..., 0]
            rn = _resid(coupling_maps(tn)[:, mask], y)
            ln = (rn * rn).sum(axis=1)
            ok = ln < best_loss
            best_th[ok], best_loss[ok], best_r[ok] = tn[ok], ln[ok], rn[ok]
        lam = np.where(best_loss < loss, lam / 3, lam * 10)
        th, loss, r = best_th, best_loss, best_r
    return th, loss


def _make_fit(theta, y, mask) -> CouplingFit:
    raw = coupling_maps(theta)[0][mask]
    a = np.column_stack([np.ones(len(y)), raw])
    c = np.linalg.lstsq(a, y, rcond=None)[0]
    return CouplingFit(np.asarray(theta, float), float(c[0]), float(c[1]),
                       float(np.sum((a @ c - y) ** 2)), len(y))


def _lines(fs, p, n_peaks=8, max_split_khz=6.0):
    """(folded line rad/step, split kHz, power) of the peaks and of close peak pairs."""
    idx = [i for i in range(len(p)) if (i == 0 or p[i] >= p[i - 1])
           and (i == len(p) - 1 or p[i] >= p[i + 1])]
    idx.sort(key=lambda i: -p[i])
    pk = []
    for i in idx:
        if all(abs(fs[i] - fs[j]) > 0.05 for j in pk):
            pk.append(i)
        if len(pk) == n_peaks:
            break
    khz = 2 * np.pi * DT * 1e3
    out = [(fs[i], 0.0, p[i]) for i in pk]
    for a in range(len(pk)):
        for b in range(a + 1, len(pk)):
            fa, fb = fs[pk[a]], fs[pk[b]]
            if abs(fa - fb) <= max_split_khz * khz:
                f = 0.5 * (fa + fb)
                out.append((f, abs(fa - fb) / khz, float(np.interp(f, fs, p))))
    out.sort(key=lambda c: -c[2])
    return out


def _unfold(f_rad, lo_khz, hi_khz):
    fh = f_rad / (2 * np.pi * DT) / 1e3
    k = np.arange(int(lo_khz // F_ALIAS_KHZ) - 1, int(hi_khz // F_ALIAS_KHZ) + 2)
    c = np.concatenate([k * F_ALIAS_KHZ + fh, k * F_ALIAS_KHZ - fh])
    return np.unique(c[(c >= lo_khz) & (c <= hi_khz)])


def _starts(lines, n_larmor, n_lines, b_range, azz_max):
    lo, hi = (GAMMA_13C * b / KHZ for b in b_range)
    rows = []
    for i0, (c0, _, p0) in enumerate(lines[:n_larmor]):
        others = [c for k, c in enumerate(lines[:n_lines + 1]) if k != i0]
        for wl in _unfold(c0, lo - 1, hi + 1):
            nuc = [(f1, s, f, p) for f, s, p in others
                   for f1 in _unfold(f, wl - azz_max - 1, wl + azz_max + 2)]
            for a in range(len(nuc)):
                for b in range(a + 1, len(nuc)):
                    if nuc[a][2] == nuc[b][2] and abs(nuc[a][0] - nuc[b][0]) < 1.0:
                        continue  # one line may serve both nuclei on its two unfoldings
                    d = max(nuc[a][1], nuc[b][1], 0.5)
                    rows.append((p0 + nuc[a][3] + nuc[b][3],
                                 [wl, nuc[a][0], 25.0, 0.0, nuc[b][0], 25.0, 0.0, d, 0.5, 0.3]))
    rows.sort(key=lambda r: -r[0])
    return np.array([r[1] for r in rows]).reshape(-1, 10)


def fit_couplings(values: np.ndarray, ij: np.ndarray, shape: tuple[int, int], *,
                  budget_s: float = 20.0, b_range=B_RANGE, azz_max: float = 65.0,
                  n_larmor: int = 3, n_lines: int = 5, screen_iters: int = 5,
                  keep: int = 6, refine_iters: int = 25) -> CouplingFit | None:
    """Global least-squares fit of two spins' couplings to measured points (module docstring).

    Parameters
    ----------
    values : array (N,)
        Measured values (any offset and scale).
    ij : int array (N, 2)
        Their grid indices (t1, t2) on the experiment's grid (`T_GRID`).
    shape : (int, int)
        The map's shape; anything but (50, 50) returns None.
    budget_s : float
        Wall-time cap in s (the screening is cut to fit; the refinement adds ~10 %).
    b_range : (float, float)
        Prior range of the field along the NV axis in T.
    azz_max : float
        Largest |A_zz| in kHz considered.
    n_larmor, n_lines : int
        Candidate lines tried as the Larmor line, and lines tried as the nuclei's.
    screen_iters, keep, refine_iters : int
        LM steps of every start, starts kept, LM steps of those.

    Returns
    -------
    CouplingFit or None
    """
    if tuple(shape) != (T_GRID.size, T_GRID.size) or len(values) < 30:
        return None
    t_start = time.perf_counter()
    y = np.asarray(values, dtype=float)
    mask = np.zeros(shape, bool)
    mask[tuple(np.asarray(ij).T)] = True
    order = np.ravel_multi_index(tuple(np.asarray(ij).T), shape)
    y = y[np.argsort(order)]  # mask order (row-major), as maps[:, mask]
    lines = _lines(*_scan(y, np.argwhere(mask), shape))
    starts = _starts(lines, n_larmor, n_lines, b_range, azz_max)
    if not len(starts):
        return None
    t0 = time.perf_counter()
    coupling_maps(starts[:16])
    per_map = (time.perf_counter() - t0) / 16
    cost = per_map * (2 * screen_iters + STEP.size * screen_iters + 1)
    room = budget_s - (time.perf_counter() - t_start) - refine_iters * keep * 13 * per_map
    n_fit = int(np.clip(room / cost, keep, len(starts)))
    if n_fit < len(starts):
        log.info("coupling fit: %d of %d starts fit the %.0f s budget", n_fit, len(starts),
                 budget_s)
    th, loss = _batch_lm(starts[:n_fit], y, mask, screen_iters)
    best = np.argsort(loss)[:keep]
    th, loss = _batch_lm(th[best], y, mask, refine_iters)
    fit = _make_fit(th[int(np.argmin(loss))], y, mask)
    log.info("coupling fit: %d starts, rss %.4g on %d points, %.1f s", n_fit, fit.rss,
             fit.n, time.perf_counter() - t_start)
    return fit


def refine_couplings(fit: CouplingFit, values: np.ndarray, ij: np.ndarray,
                     shape: tuple[int, int], iters: int = 10) -> CouplingFit:
    """``fit`` refined by ``iters`` LM steps on other points (e.g. a cross-validation fold)."""
    mask = np.zeros(shape, bool)
    mask[tuple(np.asarray(ij).T)] = True
    order = np.ravel_multi_index(tuple(np.asarray(ij).T), shape)
    y = np.asarray(values, dtype=float)[np.argsort(order)]
    th, _ = _batch_lm(fit.theta[None], y, mask, iters)
    return _make_fit(th[0], y, mask)


SETTINGS = ((3, 5), (3, 8), (5, 8), (8, 8), (8, 12))
"""(n_larmor, n_lines) tried by `enumeration_coverage`."""


def _in_basin(st, wl, f1):
    return [i for i, s in enumerate(st) if abs(s[0] - wl) < 1 and (
        (abs(s[1] - f1[0]) < 1 and abs(s[4] - f1[1]) < 1)
        or (abs(s[1] - f1[1]) < 1 and abs(s[4] - f1[0]) < 1))]


def enumeration_coverage(args) -> dict:
    """Share of maps whose enumerated starts include one within 1 kHz of the true wL and
    both f1 (the basin), and the number of starts, per `SETTINGS`."""
    rng = np.random.default_rng([args.seed, 4242])
    truths, sel = family_maps("couplings", args.coverage_maps, rng, spins=(2,),
                              return_clusters=True)
    order, clusters = sel[0]
    found = {s: [] for s in SETTINGS}
    counts = {s: [] for s in SETTINGS}
    for k in range(args.coverage_maps):
        t = truths[k]
        y = t + args.noise * rng.normal(size=t.shape)
        m = _random_mask(t.shape, 0.1, rng)
        cl = clusters[int(np.flatnonzero(order == k)[0])]
        wl = GAMMA_13C * cl.b_field / KHZ
        f1 = np.linalg.norm(np.array([0, 0, wl]) - cl.hyperfine / KHZ, axis=-1)
        if args.lines_from == "auto":  # the lines of auto's full reconstructed map
            rec = np.asarray(reconstruct(np.where(m, y, np.nan), m))
            lines = _lines(*_scan(rec.ravel(), np.argwhere(np.ones_like(m)), m.shape),
                           n_peaks=12)
        else:
            lines = _lines(*_scan(y[m], np.argwhere(m), m.shape), n_peaks=12)
        for s in SETTINGS:
            st = _starts(lines, s[0], s[1], B_RANGE, 65.0)
            found[s].append(bool(_in_basin(st, wl, f1)))
            counts[s].append(len(st))
    out = {f"larmor{a}_lines{b}": {"start_in_basin": float(np.mean(found[(a, b)])),
                                   "median_starts": float(np.median(counts[(a, b)]))}
           for a, b in SETTINGS}
    for k_, v in out.items():
        print(f"coverage {k_}: {v}", flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=6)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--budget", type=float, default=60.0, help="s per map")
    ap.add_argument("--coverage-maps", type=int, default=0,
                    help="also: on this many maps, whether the enumeration holds a start in "
                         "the basin, per (n_larmor, n_lines) setting (no fitting)")
    ap.add_argument("--lines-from", choices=("data", "auto"), default="data",
                    help="coverage: scan the measured points or auto's reconstructed map")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args(argv)
    coverage = enumeration_coverage(args) if args.coverage_maps else None
    if not args.maps:
        Path(args.out).write_text(json.dumps({"config": vars(args), "coverage": coverage,
                                              "uptime": os.popen("uptime").read().strip()},
                                             indent=1))
        return {"coverage": coverage}
    rng = np.random.default_rng([args.seed, 1212])
    truths, sel = family_maps("couplings", args.maps, rng, spins=(2,), return_clusters=True)
    order, clusters = sel[0]
    up0 = os.popen("uptime").read().strip()
    rows = []
    for k in range(args.maps):
        t = truths[k]
        y = t + args.noise * rng.normal(size=t.shape)
        m = _random_mask(t.shape, 0.1, rng)
        cl = clusters[int(np.flatnonzero(order == k)[0])]
        cl = cl.__class__(cl.hyperfine[None], cl.dipolar[None], cl.b_field[None], cl.tau[None])
        wl = GAMMA_13C * cl.b_field[0] / KHZ
        f1 = np.linalg.norm(np.array([0, 0, wl]) - cl.hyperfine[0] / KHZ, axis=-1)
        lines = _lines(*_scan(y[m], np.argwhere(m), m.shape))
        st = _starts(lines, 3, 5, B_RANGE, 65.0)
        inside = _in_basin(st, wl, f1)
        r = {"near": rmse(physics_fit(y[m], m, true_theta(cl)), t),
             "auto": rmse(reconstruct(np.where(m, y, np.nan), m), t)}
        t0 = time.perf_counter()
        fit = fit_couplings(y[m], np.argwhere(m), m.shape, budget_s=args.budget)
        r["global_s"] = time.perf_counter() - t0
        r["global"] = rmse(fit.grid(), t)
        r["hit"] = bool(r["global"] <= 1.5 * r["near"])
        r["start_in_basin"] = bool(inside)
        r["starts"] = len(st)
        r["first_start_in_basin"] = inside[0] if inside else None
        r["true"] = {"wL_kHz": float(wl), "f1_kHz": sorted(f1.tolist())}
        r["found"] = {"wL_kHz": float(fit.theta[0]),
                      "f1_kHz": sorted([float(fit.theta[1]), float(fit.theta[4])])}
        rows.append(r)
        print(f"map {k}: near {r['near']:.3f} auto {r['auto']:.3f} global {r['global']:.3f} "
              f"hit {r['hit']} start_in_basin {r['start_in_basin']} "
              f"({r['first_start_in_basin']} of {len(st)}) {r['global_s']:.0f} s", flush=True)
    res = {"config": vars(args), "uptime_start": up0, "per_map": rows, "coverage": coverage,
           "uptime_end": os.popen("uptime").read().strip()}
    res["mean"] = {a: float(np.mean([r[a] for r in rows]))
                   for a in ("near", "auto", "global", "hit", "start_in_basin", "global_s")}
    res["mean"]["min_auto_global_if_cv_were_perfect"] = float(
        np.mean([min(r["auto"], r["global"]) for r in rows]))
    print("mean:", {a: round(v, 3) for a, v in res["mean"].items()}, "|", res["uptime_end"])
    Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
