"""Optional fused kernel for the VQNS loss and gradient (numba, if installed).

The same closed form and series as :mod:`mracq.recon.vqns.chi`, evaluated element by
element in one compiled loop: for each restart and point, chi is summed over the K
Lorentzians, the coherence residual formed, and the gradient of the loss with respect to
(A, g, w0) accumulated, without the ~150 intermediate (R, K, P) tensors the vectorized
torch version allocates. :func:`available` says whether it can be used; the torch path
is the reference and the fallback (tests compare the two).

Exponentials are shared where the formulas allow: ``x^(n-1) = exp(-lam t (n-1)/n)`` is
formed as an integer power of ``x = q^2`` (``q = exp(-lam t / (2n))``), and along a run of
equally spaced times of one sequence ``q`` is advanced by one complex product per point
(refreshed directly every ``_CHAIN`` points), so most elements need no exp, cos or sin.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

try:  # pragma: no cover - depends on the environment
    import numba

    _HAVE = True
except ImportError:  # pragma: no cover
    _HAVE = False

__all__ = ["available", "chi_basis", "loss_and_grad", "residual_and_jacobian", "threads"]


def available() -> bool:
    """True when numba is importable."""
    return _HAVE


#: fast-math flags that keep NaN/inf semantics (failed draws must still show up as NaN)
#: longest run of points whose exponential is built by products (bounds the rounding)
_CHAIN = 16
_FM = {"contract", "nsz", "arcp"}

@contextmanager
def threads(n: int):
    """Run the kernel on ``n`` threads inside the block (no-op without numba).

    One call is ~10 ms of work; on a shared 2-core machine (load ~2) a second thread
    mostly waits for the first (measured: 10.1 s wall, 10.4 s CPU for the 100-restart
    benchmark on 2 threads against 7.6 s, 7.5 s on one), so :func:`reconstruct` uses one.
    Only the loss/gradient kernel (Adam) is threaded: the LM Jacobian and the chi basis
    kernels are serial (``parallel=True`` made them 20-30 % slower on one thread).
    """
    if not _HAVE:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


if _HAVE:

    @numba.njit(cache=True, fastmath=_FM)
    def _cexp(re, im):
        """exp(re + i im) from one real exp and cos/sin."""
        e = np.exp(re)
        return complex(e * np.cos(im), e * np.sin(im))

    @numba.njit(cache=True, fastmath=_FM)
    def _recip(z):
        """1 / z as conj(z) / |z|^2 (here z = 1 + x, 0 < |z| <= 2: no scaling needed)."""
        d = 1.0 / (z.real * z.real + z.imag * z.imag)
        return complex(z.real * d, -z.imag * d)

    @numba.njit(cache=True, fastmath=_FM)
    def _ipow(x, e):
        """x**e for an integer e >= 0 by repeated squaring (a few complex products)."""
        out = complex(1.0, 0.0)
        while e > 0:
            if e & 1:
                out *= x
            x *= x
            e >>= 1
        return out

    @numba.njit(cache=True, fastmath=_FM)
    def _bracket(z, q, h, n, sgn, ni):
        """Bracket of physics.md and its z-derivative, given ``q = exp(-z h)``.

        ``h = 1 / (2 n)`` for CPMG-n (n >= 1); for the FID (n = 0) ``h = 1`` and q is
        ``exp(-z)`` itself.
        """
        if ni == 0:
            return z - 1.0 + q, 1.0 - q
        x = q * q
        c = (n - 1.0) / n
        # x^(n-1) = exp(-z (n-1)/n): products instead of a second complex exponential
        xn = _ipow(x, ni - 1)
        m = -sgn * xn
        omq = 1.0 - q
        omx = 1.0 - x
        r1 = _recip(1.0 + x)
        poly = m + (n - 1.0) * x + (n - 2.0)
        t4 = omq * omx * (1.0 - m) * r1
        t5 = omx * omx * poly * r1 * r1
        br = (z - (n + 1.0) + 2.0 * q + (n - 1.0) * x + sgn * omq * omq * xn
              - 2.0 * t4 - t5)
        dq = -q * h
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

    @numba.njit(cache=True, fastmath=_FM)
    def _row(a, lam, t, n, ni, sgn, h, rec, mom, nterm, switch, val, k):
        """chi / A and d chi / d(A, g, w0) of one Lorentzian at every point -> val[k]."""
        p_ = t.size
        inv = 1.0 / (lam * lam)
        ilam = 1.0 / lam
        have = False  # q of the previous point is known
        havef = False  # f = q_p / q_(p-1) of the current run is known
        qprev = 0j
        f = 0j
        for p in range(p_):
            tp = t[p]
            z = lam * tp
            if not rec[p]:
                havef = False
            if abs(z) < switch:
                have = False
                zz = -z
                ns = nterm[p]
                s = complex(mom[p, ns - 1], 0.0)
                ds = 0j
                for j in range(ns - 2, -1, -1):
                    ds = ds * zz + s
                    s = s * zz + mom[p, j]
                t2 = tp * tp
                v = t2 * s.real
                d = -a * t2 * tp * ds
            else:
                hp = h[p]
                if rec[p] and have:
                    # equally spaced times: q_p = q_(p-1) exp(-lam dt h)
                    if not havef:
                        dz = lam * (tp - t[p - 1]) * hp
                        f = _cexp(-dz.real, -dz.imag)
                        havef = True
                    q = qprev * f
                else:
                    q = _cexp(-z.real * hp, -z.imag * hp)
                qprev = q
                have = True
                br, dbr = _bracket(z, q, hp, n[p], sgn[p], ni[p])
                v = (br * inv).real
                d = a * (tp * dbr - 2.0 * br * ilam) * inv
            val[k, 0, p] = v
            val[k, 1, p] = d.real
            val[k, 2, p] = -d.imag

    @numba.njit(cache=True, parallel=True, fastmath=_FM)
    def _kernel(amp, g, w0, t, n, ni, sgn, h, rec, mom, nterm, y, wt, switch, loss, grad):
        r_, k_ = amp.shape
        p_ = t.size
        for r in numba.prange(r_):
            val = np.empty((k_, 3, p_))
            chi = np.zeros(p_)
            for k in range(k_):
                a = amp[r, k]
                _row(a, complex(g[r, k], w0[r, k]), t, n, ni, sgn, h, rec, mom, nterm, switch,
                     val, k)
                for p in range(p_):
                    chi[p] += a * val[k, 0, p]
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

    @numba.njit(cache=True, fastmath=_FM)
    def _jac_kernel(amp, g, w0, t, n, ni, sgn, h, rec, mom, nterm, y, sw, xb, vb, dsc, switch,
                    res, jac):
        r_, k_ = amp.shape
        m_ = xb.shape[0]
        p_ = t.size
        for r in numba.prange(r_):
            val = np.empty((k_, 3, p_))
            chi = np.zeros(p_)
            for j in range(m_):
                v = vb[r, j]
                for p in range(p_):
                    chi[p] += v * xb[j, p]
            for k in range(k_):
                a = amp[r, k]
                _row(a, complex(g[r, k], w0[r, k]), t, n, ni, sgn, h, rec, mom, nterm, switch,
                     val, k)
                for p in range(p_):
                    chi[p] += a * val[k, 0, p]
            for p in range(p_):
                c = np.exp(-chi[p])
                res[r, p] = sw[p] * (c - y[r, p])
                f = -sw[p] * c
                for k in range(k_):
                    for j in range(3):
                        jac[r, p, 3 * k + j] = f * val[k, j, p] * dsc[r, 3 * k + j]
                for j in range(m_):
                    jac[r, p, 3 * k_ + j] = f * xb[j, p] * vb[r, j]

    @numba.njit(cache=True, fastmath=_FM)
    def _basis_kernel(g, w0, t, n, ni, sgn, h, rec, mom, nterm, switch, out):
        r_, k_ = g.shape
        for r in numba.prange(r_):
            val = np.empty((k_, 3, t.size))
            for k in range(k_):
                _row(1.0, complex(g[r, k], w0[r, k]), t, n, ni, sgn, h, rec, mom, nterm,
                     switch, val, k)
                out[r, k, :] = val[k, 0, :]


def _point_constants(pts, switch):
    """Per-point constants of the kernel, cached on the PointSet (per ``switch``).

    ``rec[p]`` marks a point whose time continues an equally spaced run of the same
    sequence (``t_p - t_(p-1)`` equal to the run's first step within 1e-13 relative, at
    most ``_CHAIN`` points since the last directly evaluated exponential); the kernel then
    builds ``exp(-lam t_p h)`` as the previous value times ``exp(-lam dt h)``.

    ``nterm[p]`` is the number of series terms at point p: the tail
    ``sum_(j >= J) (j + 1) |m_j| s^j`` (``s = switch``, the largest ``|lam t|`` the series
    sees) below 1e-17 of the kept terms, i.e. below the rounding of the sum itself (the
    ratio grows with ``|lam t|``, so ``s`` is the worst case).
    """
    cache = pts.__dict__.setdefault("_numba_consts", {})
    if switch in cache:
        return cache[switch]
    t = pts.t_np
    ni = pts.n_np.astype(np.int64)
    n = ni.astype(np.float64)
    sgn = (-1.0) ** n
    h = np.where(ni > 0, 0.5 / np.maximum(n, 1.0), 1.0)
    size = t.size
    dt = np.diff(t, prepend=t[0])
    same = np.zeros(size, dtype=np.bool_)  # t_p - t_(p-1) a positive step of one sequence
    same[1:] = (ni[1:] == ni[:-1]) & (dt[1:] > 0)
    rec = np.zeros(size, dtype=np.bool_)
    step, run = 0.0, 0
    for p in range(1, size):
        if same[p] and rec[p - 1] and run < _CHAIN and abs(dt[p] - step) <= 1e-13 * step:
            rec[p] = True
            run += 1
        elif (same[p] and not rec[p - 1] and p + 1 < size and same[p + 1]
              and abs(dt[p + 1] - dt[p]) <= 1e-13 * dt[p]):
            rec[p], step, run = True, dt[p], 1  # a run of at least two equal steps starts
        else:
            run = 0
    mom = np.ascontiguousarray(pts.moments.numpy())
    ns = mom.shape[1]
    c = np.abs(mom) * (np.arange(ns) + 1.0) * float(switch) ** np.arange(ns)
    tail = np.cumsum(c[:, ::-1], axis=1)[:, ::-1]
    head = np.cumsum(c, axis=1) - c
    ok = tail <= 1e-17 * head
    nterm = np.where(ok.any(1), np.argmax(ok, 1), ns).astype(np.int64)
    nterm = np.maximum(nterm, 1)
    out = (n, ni, sgn, h, rec, mom, nterm)
    cache[switch] = out
    return out


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
    n, ni, sgn, h, rec, mom, nterm = _point_constants(pts, switch)
    _kernel(amp, g, w0, pts.t_np, n, ni, sgn, h, rec, mom, nterm, y, wt, switch, loss, grad)
    return loss, grad


def residual_and_jacobian(amp, g, w0, pts, y, sw, switch, xb=None, vb=None, dsc=None):
    """Weighted residuals (R, P) and their Jacobian (R, P, 3K + M), numpy float64 arrays.

    ``res_p = sw_p (exp(-chi_p) - y_p)`` with ``sw = sqrt(loss weight)``, so that the loss
    is ``sum_p res_p^2``. chi is the K Lorentzians' plus ``sum_j vb_j xb_jp`` (M further
    components of fixed shape, variances vb). Column ``3k + j`` of the Jacobian is the
    derivative with respect to parameter j (A, g, w0) of Lorentzian k times ``dsc[3k+j]``
    (a chain-rule factor, e.g. the parameter itself for log parameters), column ``3K + j``
    the derivative with respect to ``log vb_j``.

    Parameters
    ----------
    amp, g, w0 : ndarray (R, K)
        Parameters in (rad/s)^2, rad/s, rad/s.
    pts : PointSet
        Points (internal order).
    y : ndarray (R, P) or (P,)
        Target coherences (per restart, or one set for all), same order as the points.
    sw : ndarray (P,)
        Square roots of the loss weights.
    switch : float
        ``|lam t|`` below which the series is used.
    xb : ndarray (M, P), optional
        chi of each fixed-shape component at unit variance, s^2... (dimensionless per
        unit variance times s^2).
    vb : ndarray (R, M), optional
        Their variances in (rad/s)^2.
    dsc : ndarray (R, 3K), optional
        Chain-rule factors of the Lorentzian columns (default 1).
    """
    r, k = amp.shape
    p = pts.t_np.size
    if xb is None:
        xb, vb = np.zeros((0, p)), np.zeros((r, 0))
    m = xb.shape[0]
    dsc = np.ones((r, 3 * k)) if dsc is None else np.ascontiguousarray(dsc, dtype=np.float64)
    res = np.empty((r, p))
    jac = np.empty((r, p, 3 * k + m))
    n, ni, sgn, h, rec, mom, nterm = _point_constants(pts, switch)
    y = np.ascontiguousarray(np.broadcast_to(y, (r, p)), dtype=np.float64)
    _jac_kernel(np.ascontiguousarray(amp), np.ascontiguousarray(g), np.ascontiguousarray(w0),
                pts.t_np, n, ni, sgn, h, rec, mom, nterm, y, sw, np.ascontiguousarray(xb),
                np.ascontiguousarray(vb), dsc, switch, res, jac)
    return res, jac


def chi_basis(g, w0, pts, switch):
    """chi of each Lorentzian with unit variance A = 1, (R, K, P) float64 (s^2).

    Parameters
    ----------
    g, w0 : ndarray (R, K)
        Half widths and centres in rad/s.
    pts : PointSet
        Points (internal order).
    switch : float
        ``|lam t|`` below which the series is used.
    """
    out = np.empty(g.shape + (pts.t_np.size,))
    n, ni, sgn, h, rec, mom, nterm = _point_constants(pts, switch)
    _basis_kernel(np.ascontiguousarray(g), np.ascontiguousarray(w0), pts.t_np, n, ni, sgn,
                  h, rec, mom, nterm, switch, out)
    return out
