"""Batched closed-form chi for sums of symmetrized Lorentzians, in torch float64.

One call evaluates chi for R parameter sets (restarts), K Lorentzians each, at P points
``(t_p, n_p)`` that may mix FID (n = 0), Hahn echo (n = 1) and CPMG-n of any n. The
formulas are those of physics.md section 1 (and
:func:`mracq.sim.filter_function.chi_lorentzian`), written with the pulse number as a
per-point tensor so that all sequences go through the same few vectorized operations:
``x^(n-1) = exp(-lam t (n-1)/n)`` instead of a power.

The closed forms cancel catastrophically when ``|lam| t`` is small (a nearly static
component). Those elements are gathered and evaluated by the Taylor series
``chi = Re[A t^2 sum_k (-lam t)^k / k! m_k(n)]`` with the exact moments ``m_k`` of the
switching function, and scattered back; the closed form sees a harmless stand-in there so
that no NaN reaches the gradient.
"""

from __future__ import annotations

from math import factorial

import numpy as np
import torch

from mracq.sim.filter_function import segment_moments as _sim_moments

__all__ = ["PointSet", "chi_batch", "SERIES_SWITCH", "N_SERIES"]

#: below this ``|lam t|`` the Taylor series replaces the closed form
SERIES_SWITCH = 0.5
#: number of series terms (0.5^24 / 24! ~ 1e-31: exact to float64)
N_SERIES = 24


def segment_moments(n: int, kmax: int = N_SERIES) -> np.ndarray:
    """``m_k`` of :func:`mracq.sim.filter_function.segment_moments` (a copy), k < kmax."""
    return _sim_moments(n, kmax).copy()


class PointSet:
    """Measurement points ``(t, n)`` prepared for :func:`chi_batch`.

    Parameters
    ----------
    t : array_like
        Evolution times in s (> 0), any order.
    n : array_like of int
        Equally spaced pi pulses per point (0: FID, 1: Hahn echo, CPMG-n).

    Notes
    -----
    Points are stored FID first; :meth:`reorder` maps per-point arrays given in the
    caller's order to the internal order of :func:`chi_batch`'s output.
    """

    def __init__(self, t, n):
        t = np.asarray(t, float).ravel()
        n = np.asarray(n, int).ravel()
        if t.shape != n.shape:
            raise ValueError("t and n must have the same length")
        if np.any(~np.isfinite(t)) or np.any(t <= 0):
            raise ValueError("evolution times must be finite and > 0 s")
        if np.any(n < 0):
            raise ValueError("pulse numbers must be >= 0")
        self.size = t.size
        #: internal order (FID points first); chi_batch returns points in this order
        self.order = np.argsort(n > 0, kind="stable")
        t, n = t[self.order], n[self.order]
        self.t_np, self.n_np = t, n
        self.n_fid = int(np.sum(n == 0))
        self.t = torch.as_tensor(t, dtype=torch.float64)
        nd = n[self.n_fid:].astype(float)
        self.n_dd = torch.as_tensor(nd)
        self.sgn_dd = torch.as_tensor((-1.0) ** nd)
        moments = {int(k): segment_moments(int(k)) for k in np.unique(n)}
        fact = np.array([1.0 / factorial(k) for k in range(N_SERIES)])
        self.moments = torch.as_tensor(np.stack([moments[int(k)] for k in n]) * fact)

    def reorder(self, values) -> np.ndarray:
        """A per-point array in the caller's order, put in the internal order."""
        return np.asarray(values)[..., self.order]


def _closed_fid(lt, lam2):
    return (lt - 1 + torch.exp(-lt)) / lam2


def _closed_dd(lt, lam2, n, sgn):
    q = torch.exp(-lt / (2 * n))
    x = q * q
    xn1 = torch.exp(-lt * ((n - 1) / n))
    mx = -sgn * xn1
    omq, omx, opx = 1 - q, 1 - x, 1 + x
    br = (lt - (n + 1) + 2 * q + (n - 1) * x + sgn * omq * omq * xn1
          - 2 * omq * omx * (1 - mx) / opx
          - omx * omx * (mx + (n - 1) * x + (n - 2)) / (opx * opx))
    return br / lam2


def chi_batch(amp: torch.Tensor, lam: torch.Tensor, pts: PointSet) -> torch.Tensor:
    """chi for R parameter sets at all points.

    Parameters
    ----------
    amp : Tensor, shape (R, K)
        Lorentzian variances A in (rad/s)^2, float64.
    lam : Tensor, shape (R, K)
        ``g + i w0`` in rad/s, complex128 (g > 0).
    pts : PointSet
        The points.

    Returns
    -------
    Tensor, shape (R, P)
        chi summed over the K Lorentzians, in the point order of ``pts``.
    """
    lam3 = lam[:, :, None]
    lt = lam3 * pts.t  # (R, K, P), complex
    small = lt.abs() < SERIES_SWITCH
    any_small = bool(small.any())
    if any_small:
        # stand-in |lam t| = 1 where the series takes over, so the closed form stays finite
        lt_c = torch.where(small, torch.ones_like(lt), lt)
        lam_c = lt_c / pts.t
    else:
        lt_c, lam_c = lt, lam3.expand_as(lt)
    lam2 = lam_c * lam_c
    f = pts.n_fid
    parts = []
    if f:
        parts.append(_closed_fid(lt_c[:, :, :f], lam2[:, :, :f]))
    if f < pts.size:
        parts.append(_closed_dd(lt_c[:, :, f:], lam2[:, :, f:], pts.n_dd, pts.sgn_dd))
    out = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
    chi = amp[:, :, None] * out.real
    if any_small:
        idx = small.nonzero(as_tuple=True)
        x = -lt[idx]
        mom = pts.moments[idx[2]]
        acc = mom[:, -1].to(torch.complex128)
        for k in range(N_SERIES - 2, -1, -1):
            acc = acc * x + mom[:, k]
        tp = pts.t[idx[2]]
        ser = (amp[idx[0], idx[1]] * tp * tp) * acc.real
        chi = chi.index_put(idx, ser)
    return chi.sum(1)


def _cexp(re, im):
    """exp(re + i im) from real exp/cos/sin (vectorized, unlike complex exp)."""
    return torch.polar(torch.exp(re), im)


def _bracket_fid(a, b):
    """FID bracket ``z - 1 + e^-z`` and its z-derivative, z = a + i b."""
    e = _cexp(-a, -b)
    z = torch.complex(a, b)
    return z - 1 + e, 1 - e


def _bracket_dd(a, b, n, sgn):
    """CPMG-n bracket of physics.md and its derivative with respect to z = a + i b."""
    z = torch.complex(a, b)
    q = _cexp(-a / (2 * n), -b / (2 * n))
    x = q * q
    c = (n - 1) / n
    xn = _cexp(-a * c, -b * c)
    m = -sgn * xn
    omq, omx, opx = 1 - q, 1 - x, 1 + x
    r1 = 1 / opx
    poly = m + (n - 1) * x + (n - 2)
    t4 = omq * omx * (1 - m) * r1
    t5 = omx * omx * poly * r1 * r1
    br = z - (n + 1) + 2 * q + (n - 1) * x + sgn * omq * omq * xn - 2 * t4 - t5
    dq, dx, dxn = -q / (2 * n), -x / n, -xn * c
    dm = -sgn * dxn
    d4 = (-dq * omx * (1 - m) - omq * dx * (1 - m) - omq * omx * dm) * r1 - t4 * dx * r1
    d5 = (-2 * omx * dx * poly + omx * omx * (dm + (n - 1) * dx)) * r1 * r1 - 2 * t5 * dx * r1
    dbr = (1 + 2 * dq + (n - 1) * dx + sgn * (-2 * omq * dq * xn + omq * omq * dxn)
           - 2 * d4 - d5)
    return br, dbr


def chi_and_grad(amp, g, w0, pts: PointSet):
    """chi and its derivatives with respect to (A, g, w0), without autograd.

    Parameters
    ----------
    amp, g, w0 : Tensor, shape (R, K)
        Variances in (rad/s)^2, half widths and centres in rad/s (float64, g > 0).
    pts : PointSet
        Measurement points.

    Returns
    -------
    chi : Tensor, shape (R, P)
        Summed over the K Lorentzians.
    grad : Tensor, shape (R, K, 3, P)
        d chi / d(A, g, w0) per Lorentzian.
    """
    t = pts.t
    a = g[:, :, None] * t
    b = w0[:, :, None] * t
    small = (a * a + b * b) < SERIES_SWITCH**2
    any_small = bool(small.any())
    if any_small:  # stand-in z = 1 where the series takes over
        a = torch.where(small, torch.ones_like(a), a)
        b = torch.where(small, torch.zeros_like(b), b)
    f = pts.n_fid
    brs, dbrs = [], []
    if f:
        br, dbr = _bracket_fid(a[:, :, :f], b[:, :, :f])
        brs.append(br)
        dbrs.append(dbr)
    if f < pts.size:
        br, dbr = _bracket_dd(a[:, :, f:], b[:, :, f:], pts.n_dd, pts.sgn_dd)
        brs.append(br)
        dbrs.append(dbr)
    br = torch.cat(brs, 2) if len(brs) > 1 else brs[0]
    dbr = torch.cat(dbrs, 2) if len(dbrs) > 1 else dbrs[0]
    # the stand-in z = lam' t with lam' = 1 / t: recover lam from a, b (exact where not small)
    lam = torch.complex(a, b) / t
    inv = 1 / (lam * lam)
    val = br * inv
    d = amp[:, :, None] * (t * dbr - 2 * br / lam) * inv
    grad = torch.stack([val.real, d.real, -d.imag], 2)
    chi_k = amp[:, :, None] * val.real
    if any_small:
        idx = small.nonzero(as_tuple=True)
        lam_s = torch.complex(g[idx[0], idx[1]], w0[idx[0], idx[1]])
        tp = t[idx[2]]
        z = -lam_s * tp
        mom = pts.moments[idx[2]]
        s = mom[:, -1].to(torch.complex128)
        ds = torch.zeros_like(s)
        for k in range(N_SERIES - 2, -1, -1):
            ds = ds * z + s
            s = s * z + mom[:, k]
        amp_s = amp[idx[0], idx[1]]
        t2 = tp * tp
        chi_k[idx] = amp_s * t2 * s.real
        dd = -amp_s * t2 * tp * ds
        grad[idx[0], idx[1], 0, idx[2]] = t2 * s.real
        grad[idx[0], idx[1], 1, idx[2]] = dd.real
        grad[idx[0], idx[1], 2, idx[2]] = -dd.imag
    return chi_k.sum(1), grad


class LorentzianChi(torch.autograd.Function):
    """Autograd wrapper around :func:`chi_and_grad` (one fused forward, cheap backward)."""

    @staticmethod
    def forward(ctx, amp, g, w0, pts):
        chi, grad = chi_and_grad(amp.detach(), g.detach(), w0.detach(), pts)
        ctx.save_for_backward(grad)
        return chi

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        gp = torch.einsum("rkjp,rp->rkj", grad, grad_out)
        return gp[:, :, 0], gp[:, :, 1], gp[:, :, 2], None
