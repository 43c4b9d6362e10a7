"""A COSY map as a function of its cluster's couplings, and a batched least-squares fit of them.

The map of a 13C cluster (`mracq.sim.cosy.model`) depends on a few couplings: per nucleus
its hyperfine ``A_zz``, ``A_perp`` and azimuth, per pair a dipolar tensor, and the field.
With the field known (after `mracq calibrate` to ~1-2 uT from the ODMR line, so the 13C
Larmor frequency ``wL = gamma B`` to ~20 Hz), what is left per nucleus is its ms=-1
frequency ``f1 = |wL z - A|``, which the data show folded by the grid's time step.

Parameters ``theta`` (kHz and rad; `theta_names`): ``wL``; per nucleus ``f1``, ``A_perp``,
azimuth (``A_zz = wL - sqrt(f1^2 - A_perp^2)``); per pair ``i < j`` a dipolar tensor
``d (1 - 3 n n^T)`` with ``n`` at (polar, azimuth). The map is ``offset + scale P0(theta)``
(both linear, eliminated). The pulse spacing ``tau`` and count ``n`` are the sequence's.

`batch_lm` runs Levenberg-Marquardt on many starts at once (finite-difference Jacobians);
`grid_refit` starts the couplings other than the frequencies from a grid. The search that
uses them is `mracq.recon.cosy.physics`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from mracq.sim.cosy.couplings import GAMMA_13C
from mracq.sim.cosy.model import N_PULSES, cosy_propagators, nuclear_hamiltonians

__all__ = ["DIPOLAR_STARTS", "GRID_AZIMUTH", "GRID_DIPOLAR", "KHZ", "CouplingFit",
           "FitProblem", "batch_lm", "coupling_maps", "grid_refit", "n_spins",
           "theta_names", "unfold"]

KHZ = 2 * np.pi * 1e3
"""rad/s per kHz."""


def theta_names(m: int) -> list[str]:
    """Names of ``theta``'s entries for ``m`` nuclei (kHz, rad)."""
    out = ["wL_kHz"]
    for j in range(m):
        out += [f"f1_{j}_kHz", f"A_perp_{j}_kHz", f"azimuth_{j}"]
    for i, j in itertools.combinations(range(m), 2):
        out += [f"d_{i}{j}_kHz", f"polar_{i}{j}", f"azimuth_{i}{j}"]
    return out


def n_spins(p: int) -> int:
    """Number of nuclei of a ``theta`` of length ``p``."""
    for m in range(1, 7):
        if 1 + 3 * m + 3 * m * (m - 1) // 2 == p:
            return m
    raise ValueError(f"theta of length {p} matches no spin count")


def _steps(m: int) -> np.ndarray:
    """Finite-difference steps of ``theta``'s entries (kHz, rad)."""
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
    m = n_spins(p)
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
    (s) and ``pulses`` (pi pulses per block) the sequence the map belongs to.
    """

    theta: np.ndarray
    offset: float
    scale: float
    rss: float
    n: int
    t1: np.ndarray
    t2: np.ndarray
    tau: float
    pulses: int = N_PULSES

    @property
    def spins(self) -> int:
        """Number of nuclei."""
        return n_spins(len(self.theta))

    def grid(self) -> np.ndarray:
        """The fitted map on the sequence's (t1, t2) grid."""
        return self.offset + self.scale * coupling_maps(self.theta, self.t1, self.t2,
                                                        self.tau, self.pulses)[0]

    def at(self, ij: np.ndarray) -> np.ndarray:
        """Values at integer grid points ``ij`` (M, 2)."""
        ij = np.asarray(ij)
        return self.grid()[ij[:, 0], ij[:, 1]]

    def jacobian(self) -> np.ndarray:
        """``d map / d (theta, offset, scale)`` on the grid, (len(t1) * len(t2), P + 2) in
        row-major order: central differences with the fit's steps (`batch_lm`'s), every
        coupling free (the field too)."""
        th = np.asarray(self.theta, float)
        steps = _steps(self.spins)
        rows = np.repeat(th[None], 2 * th.size + 1, axis=0)
        k = np.arange(th.size)
        rows[1 + 2 * k, k] += steps
        rows[2 + 2 * k, k] -= steps
        maps = coupling_maps(rows, self.t1, self.t2, self.tau, self.pulses)
        maps = maps.reshape(len(rows), -1)
        d = self.scale * (maps[1::2] - maps[2::2]) / (2 * steps[:, None])
        return np.column_stack([d.T, np.ones(maps.shape[1]), maps[0]])

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


class FitProblem:
    """Measured points in the mask's (row-major) order and the model on them.

    ``values`` (N,) at grid indices ``ij`` (N, 2) of the ``t1`` x ``t2`` grid (s); ``tau``
    (s) and ``n`` the sequence's pulse spacing and pi pulses per block.
    """

    def __init__(self, values, ij, t1, t2, tau, n: int = N_PULSES):
        self.t1, self.t2, self.tau = np.asarray(t1, float), np.asarray(t2, float), float(tau)
        self.n = int(n)
        shape = (self.t1.size, self.t2.size)
        ij = np.asarray(ij)
        self.mask = np.zeros(shape, bool)
        self.mask[tuple(ij.T)] = True
        order = np.ravel_multi_index(tuple(ij.T), shape)
        self.y = np.asarray(values, float)[np.argsort(order)]
        self.ij = np.argwhere(self.mask)

    def resid(self, theta):
        """Residuals (k, N) of every ``theta`` row, offset and scale fitted per row."""
        maps = coupling_maps(theta, self.t1, self.t2, self.tau, self.n, ij=self.ij)
        sc = maps - maps.mean(axis=1, keepdims=True)
        yc = self.y - self.y.mean()
        c = (sc @ yc) / np.maximum((sc * sc).sum(axis=1), 1e-30)
        return c[:, None] * sc - yc[None, :]

    def fit(self, theta) -> CouplingFit:
        """The `CouplingFit` of one ``theta`` (offset and scale by least squares)."""
        raw = coupling_maps(theta, self.t1, self.t2, self.tau, self.n, ij=self.ij)[0]
        a = np.column_stack([np.ones(len(self.y)), raw])
        c = np.linalg.lstsq(a, self.y, rcond=None)[0]
        return CouplingFit(np.asarray(theta, float), float(c[0]), float(c[1]),
                           float(np.sum((a @ c - self.y) ** 2)), len(self.y), self.t1,
                           self.t2, self.tau, self.n)


def batch_lm(prob: FitProblem, theta, free, iters, lam0=1e-2):
    """Levenberg-Marquardt on every row of ``theta`` at once over the entries ``free``:
    ``iters`` steps (each tries the damping and 10x it); the rows and their losses."""
    th = np.array(theta, dtype=float)
    k, p = th.shape
    free = np.asarray(free)
    step = _steps(n_spins(p))[free]
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


def unfold(f_rad, dt, lo_khz, hi_khz):
    """Frequencies (kHz) in [``lo_khz``, ``hi_khz``] that fold onto ``f_rad`` (rad per grid
    step ``dt`` s), both signs."""
    alias = 1e-3 / dt
    fh = f_rad / (2 * np.pi * dt) / 1e3
    k = np.arange(int(lo_khz // alias) - 1, int(hi_khz // alias) + 2)
    c = np.concatenate([k * alias + fh, k * alias - fh])
    return np.unique(c[(c >= lo_khz) & (c <= hi_khz)])


DIPOLAR_STARTS = ((1.0, 0.0), (1.5, 1.5))
"""Dipolar starts (d kHz, polar angle rad of n). In ms=0 both nuclei precess at the Larmor
frequency, so their dipolar coupling mixes them strongly (it shapes the cross peaks; a
d = 0 model fits no better than a constant); to first order only its secular part
``d (1 - 3 cos^2 polar)`` matters: these start at -2 and +1.5 kHz."""

GRID_DIPOLAR = ((0.5, 0.0), (1.2, 0.0), (2.5, 0.0), (0.8, 0.5 * np.pi), (1.8, 0.5 * np.pi),
                (3.0, 0.5 * np.pi))
"""Dipolar (d kHz, polar angle) of the grid stage (secular part -5 to +3 kHz)."""
GRID_AZIMUTH = tuple(np.arange(4) * 0.5 * np.pi)


def grid_refit(prob: FitProblem, wl, pairs, iters=3, keep=8, azimuth0=GRID_AZIMUTH
               ) -> np.ndarray:
    """Each 2-spin row of ``pairs`` keeps its (f1_0, f1_1); A_perp at 25 kHz, the azimuths
    and the dipolar coupling start on ``azimuth0`` x `GRID_AZIMUTH` x `GRID_DIPOLAR` (96
    starts per pair); successive halving (``iters`` steps, the best quarter ``2 iters``
    more); the ``keep`` best rows. (Turning every azimuth by pi changes the map by ~6 % of
    its spread, so ``azimuth0`` = (0, pi/2) halves the grid at a small risk.)"""
    rows = [np.r_[wl, th[1], 25.0, a1, th[4], 25.0, a2, d, pol, 0.3]
            for th in pairs for (d, pol) in GRID_DIPOLAR
            for a1 in azimuth0 for a2 in GRID_AZIMUTH]
    th, loss = batch_lm(prob, np.array(rows), np.arange(10), iters)
    best = np.argsort(loss)[:max(keep, len(rows) // 4)]
    th, loss = batch_lm(prob, th[best], np.arange(10), 2 * iters)
    return th[np.argsort(loss)[:keep]]
