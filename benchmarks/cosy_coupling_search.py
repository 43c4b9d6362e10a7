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
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np

from mracq.sim.cosy.couplings import GAMMA_13C
from mracq.sim.cosy.model import N_PULSES, cosy_propagators, nuclear_hamiltonians

log = logging.getLogger(__name__)

__all__ = ["CouplingFit", "coupling_maps", "fit_couplings", "refine_couplings", "theta_names"]

KHZ = 2 * np.pi * 1e3


def theta_names(m: int) -> list[str]:
    """Names of ``theta``'s entries for ``m`` nuclei (kHz, rad)."""
    out = ["wL_kHz"]
    for j in range(m):
        out += [f"f1_{j}_kHz", f"A_perp_{j}_kHz", f"azimuth_{j}"]
    for i, j in itertools.combinations(range(m), 2):
        out += [f"d_{i}{j}_kHz", f"polar_{i}{j}", f"azimuth_{i}{j}"]
    return out


def _n_spins(p: int) -> int:
    for m in range(1, 7):
        if 1 + 3 * m + 3 * m * (m - 1) // 2 == p:
            return m
    raise ValueError(f"theta of length {p} matches no spin count")


def _steps(m: int) -> np.ndarray:
    s = [0.02]
    s += [0.02, 0.1, 0.01] * m
    s += [0.01, 0.02, 0.02] * (m * (m - 1) // 2)
    return np.array(s)


def coupling_maps(theta: np.ndarray, t1: np.ndarray, t2: np.ndarray, tau: float,
                  n: int = N_PULSES, ij: np.ndarray | None = None,
                  batch: int = 256) -> np.ndarray:
    """Raw P(ms=0) from ``theta`` rows (k, p) (`theta_names`): maps (k, len(t1), len(t2)),
    or (k, N) at the grid points ``ij`` (N, 2) only.

    ``t1``, ``t2``, ``tau`` in s; ``n`` pi pulses per decoupling block.
    """
    th = np.atleast_2d(np.asarray(theta, dtype=float))
    k, p = th.shape
    m = _n_spins(p)
    t1, t2 = np.asarray(t1, float), np.asarray(t2, float)
    wl = th[:, 0]
    hyp = np.zeros((k, m, 3))
    for j in range(m):
        f1, ap, az = th[:, 1 + 3 * j], th[:, 2 + 3 * j], th[:, 3 + 3 * j]
        azz = wl - np.sqrt(np.maximum(f1 ** 2 - ap ** 2, 1e-6))
        hyp[:, j] = KHZ * np.column_stack([ap * np.cos(az), ap * np.sin(az), azz])
    dip = np.zeros((k, m, m, 3, 3))
    c = 1 + 3 * m
    for i, j in itertools.combinations(range(m), 2):
        d, pol, azn = th[:, c], th[:, c + 1], th[:, c + 2]
        nv = np.column_stack([np.sin(pol) * np.cos(azn), np.sin(pol) * np.sin(azn),
                              np.cos(pol)])
        dip[:, i, j] = KHZ * d[:, None, None] * (np.eye(3) - 3 * nv[:, :, None] * nv[:, None, :])
        c += 3
    b = wl * KHZ / GAMMA_13C
    out = np.empty((k, len(ij)) if ij is not None else (k, t1.size, t2.size))
    for s in range(0, k, batch):
        sl = slice(s, s + batch)
        h0, h1 = nuclear_hamiltonians(hyp[sl], dip[sl], b[sl])
        pop = cosy_propagators(h0, h1, tau, n).population(t1, t2)
        out[sl] = pop if ij is None else pop[:, ij[:, 0], ij[:, 1]]
    return out


@dataclass(frozen=True)
class CouplingFit:
    """Fitted couplings and their map ``offset + scale * P0(theta)`` on the data's scale.

    ``rss``: residual sum of squares on the ``n`` points fitted; ``t1``, ``t2``, ``tau``
    (s) the sequence the map belongs to.
    """

    theta: np.ndarray
    offset: float
    scale: float
    rss: float
    n: int
    t1: np.ndarray
    t2: np.ndarray
    tau: float

    @property
    def spins(self) -> int:
        """Number of nuclei."""
        return _n_spins(len(self.theta))

    def grid(self) -> np.ndarray:
        """The fitted map on the sequence's (t1, t2) grid."""
        return self.offset + self.scale * coupling_maps(self.theta, self.t1, self.t2,
                                                        self.tau)[0]

    def at(self, ij: np.ndarray) -> np.ndarray:
        """Values at integer grid points ``ij`` (M, 2)."""
        ij = np.asarray(ij)
        return self.grid()[ij[:, 0], ij[:, 1]]

    def couplings(self) -> dict:
        """Field (T), per nucleus A_zz and A_perp (Hz), per pair d (Hz): plain floats."""
        th, m = self.theta, self.spins
        wl = th[0]
        azz = [wl - np.sqrt(max(th[1 + 3 * j] ** 2 - th[2 + 3 * j] ** 2, 0.0))
               for j in range(m)]
        return {"b_field": float(wl * KHZ / GAMMA_13C),
                "a_zz": [float(a * 1e3) for a in azz],
                "a_perp": [float(th[2 + 3 * j] * 1e3) for j in range(m)],
                "d": [float(th[1 + 3 * m + 3 * q] * 1e3) for q in range(m * (m - 1) // 2)]}


class _Problem:
    """Measured points in the mask's (row-major) order and the model on them."""

    def __init__(self, values, ij, t1, t2, tau):
        self.t1, self.t2, self.tau = np.asarray(t1, float), np.asarray(t2, float), float(tau)
        shape = (self.t1.size, self.t2.size)
        ij = np.asarray(ij)
        self.mask = np.zeros(shape, bool)
        self.mask[tuple(ij.T)] = True
        order = np.ravel_multi_index(tuple(ij.T), shape)
        self.y = np.asarray(values, float)[np.argsort(order)]
        self.ij = np.argwhere(self.mask)

    def resid(self, theta):
        maps = coupling_maps(theta, self.t1, self.t2, self.tau, ij=self.ij)
        sc = maps - maps.mean(axis=1, keepdims=True)
        yc = self.y - self.y.mean()
        c = (sc @ yc) / np.maximum((sc * sc).sum(axis=1), 1e-30)
        return c[:, None] * sc - yc[None, :]

    def fit(self, theta) -> CouplingFit:
        raw = coupling_maps(theta, self.t1, self.t2, self.tau, ij=self.ij)[0]
        a = np.column_stack([np.ones(len(self.y)), raw])
        c = np.linalg.lstsq(a, self.y, rcond=None)[0]
        return CouplingFit(np.asarray(theta, float), float(c[0]), float(c[1]),
                           float(np.sum((a @ c - self.y) ** 2)), len(self.y), self.t1,
                           self.t2, self.tau)


def _batch_lm(prob: _Problem, theta, free, iters, lam0=1e-2):
    """Levenberg-Marquardt on every row of ``theta`` at once over the entries ``free``."""
    th = np.array(theta, dtype=float)
    k, p = th.shape
    free = np.asarray(free)
    step = _steps(_n_spins(p))[free]
    q = free.size
    r = prob.resid(th)
    loss = (r * r).sum(axis=1)
    lam = np.full(k, lam0)
    eye = np.eye(q)
    for _ in range(iters):
        pert = np.repeat(th[:, None, :], q, axis=1)
        pert[:, np.arange(q), free] += step
        rj = prob.resid(pert.reshape(-1, p)).reshape(k, q, -1)
        jac = (rj - r[:, None, :]) / step[None, :, None]
        a = jac @ np.swapaxes(jac, 1, 2)
        g = (jac @ r[:, :, None])[..., 0]
        dg = np.diagonal(a, axis1=1, axis2=2)
        best_th, best_loss, best_r = th.copy(), loss.copy(), r.copy()
        for mult in (1.0, 10.0):
            mm = a + (lam * mult)[:, None, None] * ((dg + 1e-9)[:, :, None] * eye[None])
            tn = th.copy()
            tn[:, free] -= np.linalg.solve(mm, g[..., None])[..., 0]
            rn = prob.resid(tn)
            ln = (rn * rn).sum(axis=1)
            ok = ln < best_loss
            best_th[ok], best_loss[ok], best_r[ok] = tn[ok], ln[ok], rn[ok]
        lam = np.where(best_loss < loss, lam / 3, lam * 10)
        th, loss, r = best_th, best_loss, best_r
    return th, loss


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


def _unfold(f_rad, dt, lo_khz, hi_khz):
    alias = 1e-3 / dt
    fh = f_rad / (2 * np.pi * dt) / 1e3
    k = np.arange(int(lo_khz // alias) - 1, int(hi_khz // alias) + 2)
    c = np.concatenate([k * alias + fh, k * alias - fh])
    return np.unique(c[(c >= lo_khz) & (c <= hi_khz)])


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
    out = [_unfold(f, dt, wl_khz - a_zz_max, wl_khz + a_zz_max + 1) for f in folded]
    return np.concatenate(out) if out else np.zeros(0)


DIPOLAR_STARTS = ((1.0, 0.0), (1.5, 1.5))
"""Dipolar starts (d kHz, polar angle rad of n). In ms=0 both nuclei precess at the Larmor
frequency, so their dipolar coupling mixes them strongly (it shapes the cross peaks; a
d = 0 model fits no better than a constant); to first order only its secular part
``d (1 - 3 cos^2 polar)`` matters: these start at -2 and +1.5 kHz."""


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
    prob = _Problem(values, ij, t1, t2, tau)
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
    th, loss = _batch_lm(prob, starts, np.arange(starts.shape[1]), refine_iters)
    fit = prob.fit(th[int(np.argmin(loss))])
    log.info("coupling fit, %d spins: %d candidate f1, %d starts screened in %.1f s, rss "
             "%.4g on %d points, %.1f s", m, len(f1s), n_fit, t_screen, fit.rss, fit.n,
             time.perf_counter() - t_start)
    return fit


GRID_DIPOLAR = ((0.5, 0.0), (1.2, 0.0), (2.5, 0.0), (0.8, 0.5 * np.pi), (1.8, 0.5 * np.pi),
                (3.0, 0.5 * np.pi))
"""Dipolar (d kHz, polar angle) of the grid stage (secular part -5 to +3 kHz)."""
GRID_AZIMUTH = tuple(np.arange(4) * 0.5 * np.pi)


def grid_refit(prob: _Problem, wl, pairs, iters=3, keep=8, azimuth0=GRID_AZIMUTH
               ) -> np.ndarray:
    """Each 2-spin row of ``pairs`` keeps its (f1_0, f1_1); A_perp at 25 kHz, the azimuths
    and the dipolar coupling start on ``azimuth0`` x `GRID_AZIMUTH` x `GRID_DIPOLAR` (96
    starts per pair); successive halving (``iters`` steps, the best quarter ``2 iters``
    more); the ``keep`` best rows. (Turning every azimuth by pi changes the map by ~6 % of
    its spread, so ``azimuth0`` = (0, pi/2) halves the grid at a small risk.)"""
    rows = [np.r_[wl, th[1], 25.0, a1, th[4], 25.0, a2, d, pol, 0.3]
            for th in pairs for (d, pol) in GRID_DIPOLAR
            for a1 in azimuth0 for a2 in GRID_AZIMUTH]
    th, loss = _batch_lm(prob, np.array(rows), np.arange(10), iters)
    best = np.argsort(loss)[:max(keep, len(rows) // 4)]
    th, loss = _batch_lm(prob, th[best], np.arange(10), 2 * iters)
    return th[np.argsort(loss)[:keep]]


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


def _screen(prob: _Problem, starts, budget_s, iters, keep):
    """Successive halving: as many ``starts`` as fit ``budget_s`` (s) take ``iters`` LM
    steps, the best eighth ``2 iters`` more; the ``keep`` best rows and the count screened."""
    allp = np.arange(starts.shape[1])
    t0 = time.perf_counter()
    prob.resid(starts[:16])
    per = (time.perf_counter() - t0) / min(16, len(starts))
    cost = per * (allp.size + 2)  # one LM step of one start
    room = 0.75 * budget_s - (time.perf_counter() - t0)
    n_fit = int(np.clip(room / (cost * iters * 1.25), keep, len(starts)))
    th, loss = _batch_lm(prob, starts[:n_fit], allp, iters)
    best = np.argsort(loss)[:max(4 * keep, n_fit // 8)]
    th, loss = _batch_lm(prob, th[best], allp, 2 * iters)
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
    prob = _Problem(values, ij, fit.t1, fit.t2, fit.tau)
    th, _ = _batch_lm(prob, fit.theta[None], np.arange(len(fit.theta)), iters)
    return prob.fit(th[0])

