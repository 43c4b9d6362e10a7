"""Projected Landweber iteration with Barzilai-Borwein steps (seed App. D, Alg. 3).

The baseline: o <- max(o - g_k A^T (A o - i), 0), with the BB1 step
g_k = s^T s / s^T y (s = o_k - o_{k-1}, y = grad_k - grad_{k-1}; Alg. 3 prints the gradient
itself for y, which is the usual typo) clipped to [g_min, g_max].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mracq.sim.mrfm.psf import apply_blocks


def landweber_bb(
    blocks: np.ndarray,
    data: np.ndarray,
    n_iter: int = 500,
    step0: float | None = None,
    step_min: float = 1e-3,
    step_max: float = 1e6,
    callback: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Projected Landweber-BB reconstruction; returns the non-negative estimate.

    Parameters
    ----------
    blocks : ndarray (n_xy, n_xy // 2 + 1, n_l, n_z)
        Fourier blocks of A.
    data : ndarray (n_xy, n_xy, n_l)
        Scan data.
    n_iter : int
        Iterations.
    step0 : float, optional
        First step (default 1 / ||A||^2 from the largest block).
    step_min, step_max : float
        Clip range of the BB step, in units of 1 / ||A||^2.
    callback : callable, optional
        ``callback(k, x)`` after each iteration.
    """
    if not np.all(np.isfinite(data)):
        raise ValueError("data contain NaN or inf")
    lmax = float(np.max(np.linalg.norm(blocks, axis=(-2, -1)) ** 2))  # >= ||A||^2
    step = 1.0 / lmax if step0 is None else step0
    x = np.zeros(blocks.shape[:2][:1] * 2 + (blocks.shape[3],))

    def grad(v):
        return apply_blocks(blocks, apply_blocks(blocks, v) - data, transpose=True)

    g = grad(x)
    for k in range(n_iter):
        x_new = np.maximum(x - step * g, 0.0)
        g_new = grad(x_new)
        s = x_new - x
        y = g_new - g
        sy = float(np.vdot(s, y))
        step = float(np.vdot(s, s)) / sy if sy > 0 else step
        step = min(max(step, step_min / lmax), step_max / lmax)
        x, g = x_new, g_new
        if callback is not None:
            callback(k, x)
    return x
