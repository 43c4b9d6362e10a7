"""Singular value thresholding matrix completion (Cai, Candes & Shen, SIAM J. Optim. 2010).

Iteration (seed 000, Fig. 3)::

    X_k = D_tau(Y_{k-1})                 (soft-threshold the singular values)
    Y_k = Y_{k-1} + delta P_Omega(M - X_k)

stopped when ``||P_Omega(X - M)||_F / ||P_Omega(M)||_F < eps``. Scaling (physics.md
section 3): the observed mean is removed first (it is added back), ``tau`` defaults to
``5 sqrt(n1 n2)`` times the RMS of the centred observed entries, ``delta = 1.2 / p`` (p the
sampled fraction) capped below 2, and the step is halved (down to 0.1) whenever the residual
grows by more than 5%.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def single_thread_blas():
    """Context limiting BLAS to one thread (small SVDs are slower threaded, much slower on a
    loaded machine); a no-op when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@dataclass(frozen=True)
class SVTResult:
    """Completed matrix and diagnostics.

    Attributes
    ----------
    x : ndarray
        Completed matrix (same scale as the input).
    iterations : int
        Iterations run.
    residual : float
        Final relative residual on the observed entries.
    rank : int
        Rank of the final iterate.
    converged : bool
        Whether the residual fell below ``eps``.
    """

    x: np.ndarray
    iterations: int
    residual: float
    rank: int
    converged: bool


def _check(m: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(m, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2D, got shape {m.shape}")
    if mask.shape != m.shape:
        raise ValueError(f"mask shape {mask.shape} differs from matrix shape {m.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no observed entries")
    if not np.all(np.isfinite(m[mask])):
        raise ValueError("observed entries contain NaN or inf")
    return m, mask


def svt(
    m: np.ndarray,
    mask: np.ndarray,
    *,
    tau: float | None = None,
    delta: float | None = None,
    eps: float = 0.05,
    max_iter: int = 300,
    init: np.ndarray | None = None,
) -> SVTResult:
    """Complete ``m`` from its entries where ``mask`` is True.

    Parameters
    ----------
    m : array (n1, n2)
        Matrix; only masked entries are read (others may be NaN).
    mask : bool array (n1, n2)
        Observed entries.
    tau : float, optional
        Singular value threshold in units of the entries. Default ``5 sqrt(n1 n2)`` times
        the RMS of the centred observed entries.
    delta : float, optional
        Step size; default ``min(1.2 / p, 1.9)``.
    eps : float
        Relative residual on the observed entries at which to stop (set it near the
        relative noise level: smaller values fit the noise).
    max_iter : int
        Iteration limit.
    init : array (n1, n2), optional
        Starting ``Y_0`` (DLMC starts from the network output). Default: the CCS kick
        ``k0 delta P_Omega(M)`` with ``k0 = ceil(tau / (delta ||P_Omega M||_2))``.

    Returns
    -------
    SVTResult
    """
    m, mask = _check(m, mask)
    mean = m[mask].mean()
    obs = np.where(mask, m - mean, 0.0)
    p = mask.mean()
    norm_obs = np.linalg.norm(obs) or 1.0
    if tau is None:
        rms = np.sqrt(np.mean(obs[mask] ** 2)) or 1.0
        tau = 5.0 * np.sqrt(m.size) * rms
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    delta = min(1.2 / p, 1.9) if delta is None else float(delta)
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if init is None:
        s1 = np.linalg.norm(obs, 2) or 1.0
        k0 = int(np.ceil(tau / (delta * s1)))
        y = k0 * delta * obs
    else:
        init = np.asarray(init, dtype=float)
        if init.shape != m.shape or not np.all(np.isfinite(init)):
            raise ValueError("init must be finite with the matrix's shape")
        y = init - mean
    with single_thread_blas():
        return _iterate(obs, mask, mean, norm_obs, y, tau, delta, eps, max_iter)


def _iterate(obs, mask, mean, norm_obs, y, tau, delta, eps, max_iter) -> SVTResult:
    x = np.zeros_like(obs)
    res_prev = np.inf
    res = np.inf
    rank = 0
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007
        u, s, vt = np.linalg.svd(y, full_matrices=False)
        s = np.maximum(s - tau, 0.0)
        rank = int(np.count_nonzero(s))
        x = (u[:, :rank] * s[:rank]) @ vt[:rank]
        r = np.where(mask, obs - x, 0.0)
        res = np.linalg.norm(r) / norm_obs
        if res < eps:
            break
        if res > 1.05 * res_prev:
            delta = max(0.5 * delta, 0.1)  # step guard
            log.debug("svt: residual grew (%.3g > %.3g), delta -> %.3g", res, res_prev, delta)
        res_prev = res
        y = y + delta * r
    return SVTResult(x + mean, iterations, float(res), rank, bool(res < eps))
