"""ADMM with isotropic 3D TV and non-negativity for block scan operators (seed App. B).

Problem: argmin_o 1/2 ||A o - i||^2 + gamma ||D o||_{2,1} + indicator(o >= 0), split as
o+ = o, o_TV = D o (scaled form of Alg. 1/2). D holds forward differences, periodic in x and
y (like the scan grid) and with a Neumann end in z. A^T A, D^T D and the identity are all
block diagonal after a 2D Fourier transform, so the o-update solves one n_z x n_z system per
(kx, ky); the inverses are computed once (App. B.3.1, Eq. 43-44).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mracq.sim.mrfm.psf import apply_blocks

logger = logging.getLogger(__name__)


def _group_shrink(v: np.ndarray, thr: float) -> np.ndarray:
    """Isotropic-TV prox: shrink each 3-vector ``v[:, ...]`` towards 0 by ``thr``."""
    norm = np.sqrt(np.einsum("i...,i...->...", v, v))
    return v * np.maximum(0.0, 1.0 - thr / np.maximum(norm, 1e-30))


def grad3(o: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Forward differences (3, nx, ny, nz): periodic in x, y; zero at the last z layer."""
    d = np.empty((3,) + o.shape, dtype=o.dtype) if out is None else out
    np.subtract(o[1:], o[:-1], out=d[0, :-1])
    np.subtract(o[:1], o[-1:], out=d[0, -1:])
    np.subtract(o[:, 1:], o[:, :-1], out=d[1, :, :-1])
    np.subtract(o[:, :1], o[:, -1:], out=d[1, :, -1:])
    np.subtract(o[:, :, 1:], o[:, :, :-1], out=d[2, :, :, :-1])
    d[2, :, :, -1] = 0.0
    return d


def grad3_adjoint(d: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`grad3`."""
    dx, dy, dz = d
    out = -dx - dy
    out[1:] += dx[:-1]
    out[:1] += dx[-1:]
    out[:, 1:] += dy[:, :-1]
    out[:, :1] += dy[:, -1:]
    out[:, :, :-1] -= dz[:, :, :-1]
    out[:, :, 1:] += dz[:, :, :-1]
    return out


def tv_iso(o: np.ndarray) -> float:
    """Isotropic total variation sum ||(D o)_r||_2."""
    return float(np.sqrt((grad3(o) ** 2).sum(axis=0)).sum())


def block_inverses(blocks: np.ndarray, nu1: float, nu2: float) -> np.ndarray:
    """(G^T G + nu1 I + nu2 (|d_xy(k)|^2 I + Lz))^-1 for kx = 0 .. n_xy // 2 (float32).

    The PSF is even in x, so the blocks of kx and n_xy - kx are equal and only half of them
    are inverted and stored (:func:`apply_inverses` mirrors the rest).
    """
    n_xy, nr, _, n_z = blocks.shape
    half = n_xy // 2 + 1
    gb = blocks[:half]
    gtg = np.swapaxes(gb, -1, -2) @ gb
    mx = np.fft.fftfreq(n_xy)[:half, None]
    my = np.fft.rfftfreq(n_xy)[None, :]
    dxy = 4 * np.sin(np.pi * mx) ** 2 + 4 * np.sin(np.pi * my) ** 2
    lz = np.zeros((n_z, n_z))
    if n_z > 1:
        lz = np.diag(np.r_[1.0, np.full(n_z - 2, 2.0), 1.0]) - np.eye(n_z, k=1) - np.eye(n_z, k=-1)
    gtg += (nu1 + nu2 * dxy)[..., None, None] * np.eye(n_z) + nu2 * lz
    return np.linalg.inv(gtg).astype(np.float32)


def apply_inverses(minv: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Multiply each lateral-frequency column of ``spec`` (n_xy, nr, n_z) by its inverse block."""
    n_xy = spec.shape[0]
    half = minv.shape[0]
    n_hi = n_xy - half  # rows kx = half .. n_xy - 1 use blocks n_xy - kx = n_hi .. 1
    rhs = np.zeros(minv.shape[:2] + (minv.shape[2], 4), dtype=np.float32)
    rhs[..., 0] = spec[:half].real
    rhs[..., 1] = spec[:half].imag
    mir = spec[half:][::-1]  # kx = n-1 .. half  ->  blocks 1 .. n_hi
    rhs[1 : n_hi + 1, ..., 2] = mir.real
    rhs[1 : n_hi + 1, ..., 3] = mir.imag
    out = minv @ rhs
    res = np.empty(spec.shape, dtype=np.complex64)
    res[:half] = out[..., 0] + 1j * out[..., 1]
    res[half:] = (out[1 : n_hi + 1, ..., 2] + 1j * out[1 : n_hi + 1, ..., 3])[::-1]
    return res


@dataclass(frozen=True)
class ADMMResult:
    """ADMM output: the non-negative estimate and per-iteration diagnostics."""

    x: np.ndarray
    iterations: int
    objective: np.ndarray
    setup_time: float


class _NonnegTVSplit:
    """The splittings both solvers share: p = o (o >= 0) and q = D o (isotropic TV).

    Holds p, q and their scaled duals u1, u2 (float32); :meth:`rhs` adds their part of the
    o-update's right-hand side, :meth:`update` does the p, q and dual steps for a new o.
    """

    def __init__(self, shape, gamma: float, nu1: float, nu2: float):
        self.nu1, self.nu2, self.thr = nu1, nu2, gamma / nu2
        self.p = np.zeros(shape, np.float32)
        self.u1 = np.zeros(shape, np.float32)
        self.q = np.zeros((3,) + tuple(shape), np.float32)
        self.u2 = np.zeros((3,) + tuple(shape), np.float32)
        self.do = np.empty((3,) + tuple(shape), np.float32)

    def rhs(self, base: np.ndarray) -> np.ndarray:
        return base + self.nu1 * (self.p - self.u1) + self.nu2 * grad3_adjoint(self.q - self.u2)

    def update(self, o: np.ndarray) -> None:
        self.p = np.maximum(o + self.u1, 0.0)
        grad3(o, out=self.do)
        self.q = _group_shrink(self.do + self.u2, self.thr)
        self.u1 += o - self.p
        self.u2 += self.do - self.q


def _converged(split: _NonnegTVSplit, p_prev: np.ndarray, tol: float | None) -> bool:
    """Stopping rule: relative change ||p_k - p_{k-1}|| <= tol ||p_k|| of the estimate."""
    if tol is None:
        return False
    return float(np.linalg.norm(split.p - p_prev)) <= tol * float(np.linalg.norm(split.p))


def _solve_o(minv: np.ndarray, rhs: np.ndarray, n_xy: int) -> np.ndarray:
    """o = (block system)^-1 rhs, per (kx, ky) in the 2D Fourier domain (float32)."""
    spec = np.fft.rfft2(rhs, axes=(0, 1))
    o = np.fft.irfft2(apply_inverses(minv, spec), s=(n_xy, n_xy), axes=(0, 1))
    return o.astype(np.float32)


def admm_tv(
    blocks: np.ndarray,
    data: np.ndarray,
    gamma: float,
    nu1: float = 0.05,
    nu2: float = 0.05,
    n_iter: int = 30,
    callback: Callable[[int, np.ndarray], None] | None = None,
    inverses: np.ndarray | None = None,
    tol: float | None = None,
) -> ADMMResult:
    """Solve the TV + non-negativity reconstruction with ADMM.

    Parameters
    ----------
    blocks : ndarray (n_xy, n_xy // 2 + 1, n_l, n_z)
        Fourier blocks of A (see :class:`mracq.recon.mrfm.operators.BlockScanOperator`).
    data : ndarray (n_xy, n_xy, n_l)
        Scan data in the units of A.
    gamma : float
        TV weight (units of data^2 / solution).
    nu1, nu2 : float
        ADMM penalties of the non-negativity and TV splittings.
    n_iter : int
        Iterations (the most, when ``tol`` is given).
    callback : callable, optional
        ``callback(k, x)`` after each iteration with the non-negative estimate.
    inverses : ndarray, optional
        Precomputed :func:`block_inverses` for these ``nu1, nu2``.
    tol : float, optional
        Stop when the estimate's relative change between iterations falls to ``tol``
        (``ADMMResult.iterations`` says when); None runs all ``n_iter``.
    """
    if not np.all(np.isfinite(data)):
        raise ValueError("data contain NaN or inf")
    if gamma < 0 or nu1 <= 0 or nu2 <= 0:
        raise ValueError(f"need gamma >= 0, nu1 > 0, nu2 > 0; got {gamma!r}, {nu1!r}, {nu2!r}")
    t0 = time.perf_counter()
    n_xy = blocks.shape[0]
    minv = block_inverses(blocks, nu1, nu2) if inverses is None else inverses
    atb = apply_blocks(blocks, data, transpose=True).astype(np.float32)
    setup_time = time.perf_counter() - t0
    split = _NonnegTVSplit(atb.shape, gamma, nu1, nu2)
    obj = []
    for k in range(n_iter):
        p_prev = split.p
        o = _solve_o(minv, split.rhs(atb), n_xy)
        split.update(o)
        if callback is not None:
            callback(k, split.p)
        obj.append(float(np.linalg.norm(o - split.p)))
        if _converged(split, p_prev, tol):
            break
    return ADMMResult(split.p.astype(np.float64), len(obj), np.asarray(obj), setup_time)


def admm_tv_masked(
    blocks: np.ndarray,
    data: np.ndarray,
    mask: np.ndarray,
    gamma: float,
    nu1: float = 1e-4,
    nu2: float = 1e-4,
    nu3: float = 1.0,
    n_iter: int = 40,
    callback: Callable[[int, np.ndarray], None] | None = None,
    tol: float | None = None,
) -> ADMMResult:
    """Joint compressed-sensing + TV reconstruction from sub-sampled scans (seed outlook).

    Solves argmin_o 1/2 ||W^1/2 (A o - i)||^2 + gamma TV(o) + indicator(o >= 0) with a third
    splitting v = A o: the o-update keeps the per-(kx, ky) inverses of
    (nu3 A^T A + nu1 I + nu2 D^T D), and the v-update is pointwise,
    v = (W i + nu3 (A o + u3)) / (W + nu3). Unsampled points are filled by the physical model
    instead of a Fourier-sparsity prior.

    Parameters
    ----------
    blocks, data, gamma, nu1, nu2, n_iter, callback, tol
        As in :func:`admm_tv`; ``data`` may hold anything at unsampled points.
    mask : ndarray of bool or float, (n_xy, n_xy) or data shape
        Sampled points W (bool), or non-negative data weights (float, 0 = not sampled): a
        point averaged over k times the reference integration time has weight k (its
        variance is 1/k of the reference), as the adaptive scan in hardware time uses.
    nu3 : float
        Penalty of the data splitting.
    """
    wts = np.asarray(mask)
    wts = wts.astype(np.float32) if wts.dtype == bool else wts.astype(np.float64)
    if wts.shape == data.shape[:2]:
        wts = np.broadcast_to(wts[:, :, None], data.shape)
    if wts.shape != data.shape:
        raise ValueError(f"mask shape {np.shape(mask)} does not fit data {data.shape}")
    if not np.all(np.isfinite(wts)) or np.any(wts < 0):
        raise ValueError("mask weights must be finite and >= 0")
    m = wts > 0
    if not np.all(np.isfinite(data[m])):
        raise ValueError("sampled data contain NaN or inf")
    t0 = time.perf_counter()
    n_xy = blocks.shape[0]
    minv = block_inverses(blocks * np.sqrt(nu3), nu1, nu2)
    w = wts.astype(np.float32)
    wi = np.where(m, w * data, 0.0).astype(np.float32)
    setup_time = time.perf_counter() - t0
    split = _NonnegTVSplit(blocks.shape[:1] * 2 + (blocks.shape[3],), gamma, nu1, nu2)
    v = wi.copy()
    u3 = np.zeros(data.shape, np.float32)
    obj = []
    for k in range(n_iter):
        p_prev = split.p
        o = _solve_o(minv, split.rhs(nu3 * apply_blocks(blocks, v - u3, transpose=True)), n_xy)
        split.update(o)
        ao = apply_blocks(blocks, o).astype(np.float32)
        v = (wi + nu3 * (ao + u3)) / (w + nu3)
        u3 += ao - v
        if callback is not None:
            callback(k, split.p)
        obj.append(float(np.linalg.norm(o - split.p)))
        if _converged(split, p_prev, tol):
            break
    return ADMMResult(split.p.astype(np.float64), len(obj), np.asarray(obj), setup_time)
