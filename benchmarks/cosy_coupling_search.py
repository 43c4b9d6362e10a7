"""Fit a COSY map by the couplings of its nuclear cluster, with the field known (issue 12).

Benchmark code, not product code: on a fresh seed (`benchmarks/cosy_physics_field.py`,
10 maps each) it reaches the started-at-the-truth fit's error (<= 1.5x) on 2/10 2-spin
maps at 8.7 s and 2/10 3-spin maps at 26 s, and beats auto on 4/10 and 7/10, although a
start within 1.5 kHz of both (all three) true frequencies is in its list on 8/10 (7/10):
with the frequencies right, the other couplings (A_perp, azimuths, the dipolar tensor)
still have several minima, and the screen (one default start per pair) does not rank
the right pair among its best. Given the TRUE pair, `grid_refit` (96 starts on a
dipolar x azimuth grid) lands on 10/10 of the same maps in 0.9 s (RMSE 0.024, auto 0.070):
what is missing is telling the right unfolded pair among ~1000 candidates. Short of the
>= 80 % in <= 15 s that `method="auto"` would need to carry it.

The map is a function of a few couplings (`mracq.sim.cosy.model`): per nucleus its
hyperfine ``A_zz``, ``A_perp`` and azimuth, per pair a dipolar tensor, and the field. A
least-squares fit of those through the simulator reaches ~0.02-0.03 RMSE on 10 % of a
2-spin map of noise 0.1, but its basin is ~1-2 kHz wide in each nucleus's frequency and
the grid (18 us steps) folds every frequency modulo 55.6 kHz. Without the field a search
must try every alias branch of the Larmor frequency and mostly misses (issue 12 notes).
After `mracq calibrate` the field is known to ~1-2 uT from the ODMR resonance, so the
13C Larmor frequency ``wL = gamma B`` is known to ~20 Hz; what is left per nucleus is its
ms=-1 frequency ``f1 = |wL z - A|``, which the data show folded.

Parameters ``theta`` (kHz and rad; `theta_names`): ``wL``; per nucleus ``f1``, ``A_perp``,
azimuth (``A_zz = wL - sqrt(f1^2 - A_perp^2)``); per pair ``i < j`` a dipolar tensor
``d (1 - 3 n n^T)`` with ``n`` at (polar, azimuth). The map is ``offset + scale P0(theta)``
(both linear, eliminated). The pulse spacing ``tau`` and count are the sequence's.

Search (`fit_couplings`): the frequencies of the shared-frequency fit of the measured
points (`mracq.recon.cosy.shared`) are the folded lines; every line is unfolded onto the
branches within ``wL +- a_zz_max`` (~4.5 per line: the +-60 kHz A_zz prior spans two
alias periods, each with two signs); every pair of such candidate frequencies is a start,
at two dipolar couplings (`DIPOLAR_STARTS`: in ms=0 both nuclei precess at wL, so the
dipolar coupling mixes them strongly; a d = 0 model fits no better than a constant).
Successive halving by batched Levenberg-Marquardt (finite-difference Jacobians, every
parameter free): as many starts as the budget allows take 3 steps, the best eighth 6
more, the best 8 (each with jittered azimuths and dipolar axis) 20 more; lowest residual
wins. Three spins: the 3 best pairs plus a third nucleus at every candidate frequency.

The model, the batched LM and the grid stage live in `mracq.recon.cosy.physics_fit` (moved
there when the anchor search became a candidate of ``method="auto"``); this file keeps the
pair search measured here.
"""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np

from mracq.recon.cosy.physics_fit import (
    DIPOLAR_STARTS,
    GRID_AZIMUTH,
    GRID_DIPOLAR,
    KHZ,
    CouplingFit,
    FitProblem,
    batch_lm,
    coupling_maps,
    grid_refit,
    theta_names,
    unfold,
)
from mracq.sim.cosy.couplings import GAMMA_13C

log = logging.getLogger(__name__)

__all__ = ["DIPOLAR_STARTS", "GRID_AZIMUTH", "GRID_DIPOLAR", "KHZ", "CouplingFit", "FitProblem",
           "batch_lm", "coupling_maps", "fit_couplings", "grid_refit", "refine_couplings",
           "theta_names", "unfold"]


def _scan(y, ij, shape, n_f=400):
    """Power of the single-spin plane waves (f, f), (f, -f), (f, 0), (0, f) per trial f."""
    u = ij[:, 0] - (shape[0] - 1) / 2
    v = ij[:, 1] - (shape[1] - 1) / 2
    yc = y - y.mean()
    fs = np.linspace(0, np.pi, n_f)
    p = np.empty(n_f)
    for k, f in enumerate(fs):
        ph = np.column_stack([f * (u + v), f * (u - v), f * u, f * v])
        a = np.column_stack([np.ones_like(y), np.cos(ph), np.sin(ph)])
        c, *_ = np.linalg.lstsq(a, yc, rcond=None)
        p[k] = yc @ (a @ c)
    return fs, p


def _lines(fs, p, n_peaks):
    """Folded frequencies (rad per step) of the ``n_peaks`` strongest separated peaks."""
    idx = [i for i in range(len(p)) if (i == 0 or p[i] >= p[i - 1])
           and (i == len(p) - 1 or p[i] >= p[i + 1])]
    idx.sort(key=lambda i: -p[i])
    pk = []
    for i in idx:
        if all(abs(fs[i] - fs[j]) > 0.03 for j in pk):
            pk.append(i)
        if len(pk) == n_peaks:
            break
    return [(float(fs[i]), float(p[i])) for i in pk]


def candidate_f1(values, ij, t1, t2, wl_khz, *, n_lines=16, a_zz_max=65.0,
                 source="shared") -> np.ndarray:
    """Candidate ms=-1 frequencies (kHz), each folded line unfolded onto every branch within
    ``wl_khz +- a_zz_max`` (strongest line first).

    ``source`` "shared": the frequencies of the shared-frequency fit with ``n_lines`` terms
    (`mracq.recon.cosy.shared.fit_shared_path`, in the order the greedy fit added them);
    "scan": the ``n_lines`` strongest peaks of the single-spin scan.
    """
    t1 = np.asarray(t1, float)
    dt = float(t1[1] - t1[0])
    shape = (t1.size, np.asarray(t2).size)
    y, ij = np.asarray(values, float), np.asarray(ij)
    if source == "shared":
        from mracq.recon.cosy.shared import fit_shared_path

        folded = list(fit_shared_path(y, ij, shape, n_lines)[-1].freqs)
    else:
        folded = [f for f, _ in _lines(*_scan(y, ij, shape), n_lines)]
    out = [unfold(f, dt, wl_khz - a_zz_max, wl_khz + a_zz_max + 1) for f in folded]
    return np.concatenate(out) if out else np.zeros(0)


def pair_starts(f1s, wl, m=2, a_perp=25.0, azimuth_starts=1) -> np.ndarray:
    """Starting ``theta`` rows: every set of ``m`` candidate frequencies (in the order of
    ``f1s``, strongest lines first) times `DIPOLAR_STARTS` times ``azimuth_starts``
    relative azimuths of the nuclei (0.7 rad apart, then pi more)."""
    rows = []
    for combo in itertools.combinations(range(len(f1s)), m):
        f = [f1s[c] for c in combo]
        if min(np.diff(sorted(f))) < 0.5:
            continue
        for dp in DIPOLAR_STARTS:
            for a in range(azimuth_starts):
                th = [wl]
                for j, f1 in enumerate(f):
                    th += [f1, min(a_perp, 0.95 * f1), (0.7 + a * np.pi) * j]
                th += [dp[0], dp[1], 0.3] * (m * (m - 1) // 2)
                rows.append((max(combo), th))
    rows.sort(key=lambda r: r[0])  # stable: sets of stronger lines first
    return np.array([r[1] for r in rows], dtype=float).reshape(len(rows), -1)


def fit_couplings(values, ij, *, t1, t2, b_field, tau, spins=2, n_lines=16,
                  source="shared", keep=8, budget_s=12.0, screen_iters=3,
                  azimuth_starts=1, base_pairs=3, grid_pairs=0, dipolar_starts=3,
                  refine_iters=20, a_zz_max=65.0, seed=0) -> CouplingFit | None:
    """Least-squares fit of the cluster's couplings to measured points, field known.

    Parameters
    ----------
    values : array (N,)
        Measured values (any offset and scale).
    ij : int array (N, 2)
        Their grid indices (t1, t2).
    t1, t2 : arrays
        The sequence's evolution times in s (equal uniform steps; the folding period is
        ``1 / (t1[1] - t1[0])``).
    b_field : float
        Field along the NV axis in T (the calibration's; its error should be << 100 uT).
    tau : float
        The sequence's decoupling pi-pulse spacing in s.
    spins : int
        Number of nuclei in the model: 2, or 3 (the ``base_pairs`` best 2-spin fits plus
        a third nucleus at every candidate frequency, `third_starts`).
    n_lines, source, a_zz_max
        Lines unfolded into candidate frequencies (`candidate_f1`), largest |A_zz| (kHz).
    budget_s, screen_iters
        Wall-time cap of the screening (s; starts of the strongest lines first) and its LM
        steps per start (every parameter free).
    azimuth_starts
        Relative azimuths started per frequency set (`pair_starts`).
    grid_pairs
        2 spins: refit the screen's best ``grid_pairs`` frequency pairs by `grid_refit`
        (0: no). Tried on 6 development maps: 2/6 landed, as without (the right pair is
        not among the screen's best where the search misses).
    keep, dipolar_starts, refine_iters
        Screened starts kept, starts per kept one (azimuths and dipolar axis jittered),
        their LM steps.
    seed : int
        Seed of the dipolar starts.

    Returns
    -------
    CouplingFit or None (too few points, or no start).
    """
    values = np.asarray(values, float)
    if len(values) < 30 or not (np.isfinite(b_field) and b_field > 0 and tau > 0):
        return None
    t_start = time.perf_counter()
    prob = FitProblem(values, ij, t1, t2, tau)
    wl = GAMMA_13C * float(b_field) / KHZ
    f1s = candidate_f1(prob.y, prob.ij, t1, t2, wl, n_lines=n_lines, a_zz_max=a_zz_max,
                       source=source)
    if len(f1s) < spins:
        return None
    m = spins
    pair_budget = budget_s if m == 2 else 0.4 * budget_s
    starts = pair_starts(f1s, wl, 2, azimuth_starts=azimuth_starts)
    if not len(starts):
        return None
    top, n_fit = _screen(prob, starts, pair_budget - (time.perf_counter() - t_start),
                         screen_iters, max(keep, 3 * grid_pairs))
    if m == 2 and grid_pairs:
        # the pairs' frequencies from the screen, the other couplings on a grid
        top = grid_refit(prob, wl, _distinct(top, grid_pairs), screen_iters, keep)
    if m == 3:
        starts = third_starts(top[:base_pairs], f1s)
        top, n3 = _screen(prob, starts, budget_s - (time.perf_counter() - t_start),
                          screen_iters, keep)
        n_fit += n3
    t_screen = time.perf_counter() - t_start
    rng = np.random.default_rng(seed)
    starts = np.repeat(top, dipolar_starts, axis=0)
    starts[:, 3:1 + 3 * m:3] += rng.normal(0, 0.5, size=(len(starts), m))
    for q in range(m * (m - 1) // 2):
        c = 1 + 3 * m + 3 * q
        starts[:, c + 1] += rng.normal(0, 0.2, size=len(starts))
        starts[:, c + 2] = rng.uniform(0, 2 * np.pi, size=len(starts))
    starts[::dipolar_starts] = top  # each screened start as it is
    th, loss = batch_lm(prob, starts, np.arange(starts.shape[1]), refine_iters)
    fit = prob.fit(th[int(np.argmin(loss))])
    log.info("coupling fit, %d spins: %d candidate f1, %d starts screened in %.1f s, rss "
             "%.4g on %d points, %.1f s", m, len(f1s), n_fit, t_screen, fit.rss, fit.n,
             time.perf_counter() - t_start)
    return fit


def _distinct(rows, n, tol=0.5):
    """The first ``n`` rows whose (f1_0, f1_1) differ by > ``tol`` kHz from earlier ones."""
    out = []
    for th in rows:
        key = np.sort(th[[1, 4]])
        if all(np.any(np.abs(key - np.sort(o[[1, 4]])) > tol) for o in out):
            out.append(th)
        if len(out) == n:
            break
    return out


def _screen(prob: FitProblem, starts, budget_s, iters, keep):
    """Successive halving: as many ``starts`` as fit ``budget_s`` (s) take ``iters`` LM
    steps, the best eighth ``2 iters`` more; the ``keep`` best rows and the count screened."""
    allp = np.arange(starts.shape[1])
    t0 = time.perf_counter()
    prob.resid(starts[:16])
    per = (time.perf_counter() - t0) / min(16, len(starts))
    cost = per * (allp.size + 2)  # one LM step of one start
    room = 0.75 * budget_s - (time.perf_counter() - t0)
    n_fit = int(np.clip(room / (cost * iters * 1.25), keep, len(starts)))
    th, loss = batch_lm(prob, starts[:n_fit], allp, iters)
    best = np.argsort(loss)[:max(4 * keep, n_fit // 8)]
    th, loss = batch_lm(prob, th[best], allp, 2 * iters)
    return th[np.argsort(loss)[:keep]], n_fit


def third_starts(pairs, f1s, a_perp=25.0) -> np.ndarray:
    """3-spin starts: each fitted 2-spin ``theta`` row of ``pairs`` plus one more nucleus at
    every candidate frequency of ``f1s`` (strongest lines first), its two dipolar couplings
    both at one of `DIPOLAR_STARTS`."""
    rows = []
    for f in f1s:
        for th in pairs:
            if min(abs(f - th[1]), abs(f - th[4])) < 0.5:
                continue
            for dp in DIPOLAR_STARTS:
                rows.append(np.r_[th[:7], [f, min(a_perp, 0.95 * f), 1.4], th[7:10],
                                  [dp[0], dp[1], 0.3] * 2])
    return np.array(rows, dtype=float).reshape(len(rows), 19)


def _score(fit: CouplingFit) -> float:
    return fit.n * np.log(max(fit.rss, 1e-300) / fit.n) + len(fit.theta) * np.log(fit.n)


def refine_couplings(fit: CouplingFit, values, ij, iters: int = 8) -> CouplingFit:
    """``fit`` refined by ``iters`` LM steps on other points (e.g. a cross-validation fold)."""
    prob = FitProblem(values, ij, fit.t1, fit.t2, fit.tau)
    th, _ = batch_lm(prob, fit.theta[None], np.arange(len(fit.theta)), iters)
    return prob.fit(th[0])

