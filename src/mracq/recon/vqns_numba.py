"""Optional fused kernel for the VQNS loss and gradient (numba, if installed).

The same closed form and series as :mod:`mracq.recon.vqns_torch`, evaluated element by
element in one compiled loop: for each restart and point, chi is summed over the K
Lorentzians, the coherence residual formed, and the gradient of the loss with respect to
(A, g, w0) accumulated, without the ~150 intermediate (R, K, P) tensors the vectorized
torch version allocates. :func:`available` says whether it can be used; the torch path
is the reference and the fallback (tests compare the two).
"""

from __future__ import annotations

import numpy as np

try:  # pragma: no cover - depends on the environment
    import numba

    _HAVE = True
except ImportError:  # pragma: no cover
    _HAVE = False

__all__ = ["available", "loss_and_grad"]


def available() -> bool:
    """True when numba is importable."""
    return _HAVE


if _HAVE:

    @numba.njit(cache=True)
    def _bracket(z, n, sgn):
        if n == 0:
            e = np.exp(-z)
            return z - 1.0 + e, 1.0 - e
        q = np.exp(-z / (2.0 * n))
        x = q * q
        c = (n - 1.0) / n
        xn = np.exp(-z * c)
        m = -sgn * xn
        omq = 1.0 - q
        omx = 1.0 - x
        r1 = 1.0 / (1.0 + x)
        poly = m + (n - 1.0) * x + (n - 2.0)
        t4 = omq * omx * (1.0 - m) * r1
        t5 = omx * omx * poly * r1 * r1
        br = (z - (n + 1.0) + 2.0 * q + (n - 1.0) * x + sgn * omq * omq * xn
              - 2.0 * t4 - t5)
        dq = -q / (2.0 * n)
        dx = -x / n
        dxn = -xn * c
        dm = -sgn * dxn
        d4 = (-dq * omx * (1.0 - m) - omq * dx * (1.0 - m) - omq * omx * dm) * r1 \
            - t4 * dx * r1
        d5 = (-2.0 * omx * dx * poly + omx * omx * (dm + (n - 1.0) * dx)) * r1 * r1 \
            - 2.0 * t5 * dx * r1
        dbr = (1.0 + 2.0 * dq + (n - 1.0) * dx + sgn * (-2.0 * omq * dq * xn + omq * omq * dxn)
               - 2.0 * d4 - d5)
        return br, dbr

    @numba.njit(cache=True, parallel=True)
    def _kernel(amp, g, w0, t, n, sgn, mom, y, wt, switch, loss, grad):
        r_, k_ = amp.shape
        p_ = t.size
        ns = mom.shape[1]
        for r in numba.prange(r_):
            val = np.empty((k_, 3, p_))
            chi = np.zeros(p_)
            for k in range(k_):
                a = amp[r, k]
                lam = complex(g[r, k], w0[r, k])
                inv = 1.0 / (lam * lam)
                ilam = 1.0 / lam
                for p in range(p_):
                    tp = t[p]
                    z = lam * tp
                    if abs(z) < switch:
                        zz = -z
                        s = complex(mom[p, ns - 1], 0.0)
                        ds = 0j
                        for j in range(ns - 2, -1, -1):
                            ds = ds * zz + s
                            s = s * zz + mom[p, j]
                        t2 = tp * tp
                        v = t2 * s.real
                        d = -a * t2 * tp * ds
                    else:
                        br, dbr = _bracket(z, n[p], sgn[p])
                        v = (br * inv).real
                        d = a * (tp * dbr - 2.0 * br * ilam) * inv
                    chi[p] += a * v
                    val[k, 0, p] = v
                    val[k, 1, p] = d.real
                    val[k, 2, p] = -d.imag
            acc = 0.0
            for p in range(p_):
                c = np.exp(-chi[p])
                res = c - y[p]
                acc += wt[p] * res * res
                chi[p] = -2.0 * wt[p] * res * c  # reuse as d loss / d chi
            loss[r] = acc
            for k in range(k_):
                for j in range(3):
                    sacc = 0.0
                    for p in range(p_):
                        sacc += chi[p] * val[k, j, p]
                    grad[r, k, j] = sacc


def loss_and_grad(amp, g, w0, pts, y, wt, switch):
    """Loss per restart (R,) and d loss / d(A, g, w0) (R, K, 3), numpy float64 arrays.

    Parameters
    ----------
    amp, g, w0 : ndarray (R, K)
        Parameters in (rad/s)^2, rad/s, rad/s.
    pts : PointSet
        Points (internal order).
    y, wt : ndarray (P,)
        Measured coherences and loss weights in the same order.
    switch : float
        ``|lam t|`` below which the series is used.
    """
    r, k = amp.shape
    loss = np.zeros(r)
    grad = np.zeros((r, k, 3))
    n = pts.n_np.astype(np.float64)
    sgn = (-1.0) ** n
    _kernel(amp, g, w0, pts.t_np, n, sgn, pts.moments.numpy(), y, wt, switch, loss, grad)
    return loss, grad
