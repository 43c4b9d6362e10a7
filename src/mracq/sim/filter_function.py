"""Filter functions and the decoherence integral chi (physics.md section 1).

``C(t) = exp(-chi(t))`` with ``chi(t) = (1/pi) Integral_0^inf S(w) F(w, t) / w^2 dw`` for a
two-sided spectrum S in rad^2/s (see :mod:`mracq.sim.spectra`). Pulses are instantaneous
pi rotations at the given times in ``[0, t]`` (finite pulse widths are neglected).

Three ways to get chi, checked against each other in the tests:

- :func:`chi_lorentzian`: closed form for sums of symmetrized Lorentzians under FID and
  equally spaced sequences (CPMG-n, Hahn echo, XY8-n, whose pi pulses sit at
  ``(k - 1/2) t / N``); float64, exact up to cancellation at ``g t / N << 1``.
- :func:`chi_quadrature`: Gauss-Legendre quadrature of any spectrum against the filter of
  any pulse timing, with the grid refined at the spectrum's narrow features and an
  analytic tail beyond the last panel.
- :func:`chi`: picks the closed form where it applies.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import integrate

from mracq.sim.spectra import Spectrum, lorentzian_parts

__all__ = [
    "segment_moments",
    "filter_cpmg",
    "filter_function",
    "equally_spaced",
    "chi_lorentzian",
    "chi_quadrature",
    "chi",
    "coherence",
]


def _check_t(t) -> np.ndarray:
    t = np.asarray(t, float)
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"evolution times must be finite and > 0 s, got {t}")
    return t


def equally_spaced(t: float, n: int) -> np.ndarray:
    """Pi-pulse times of CPMG-n, ``(k - 1/2) t / n`` for k = 1..n, in s (empty for n = 0)."""
    return (np.arange(1, n + 1) - 0.5) * t / n if n > 0 else np.zeros(0)


def _switching_transform(omega: np.ndarray, t: float, pulse_times: np.ndarray) -> np.ndarray:
    """Y(w) = Integral_0^t s(t') exp(i w t') dt' for the switching function s = +-1.

    Written with sinc so that w -> 0 is exact: each constant segment [a, b] contributes
    ``s exp(i w (a+b)/2) (b - a) sinc(w (b - a) / 2 pi)``.
    """
    edges = np.concatenate([[0.0], np.asarray(pulse_times, float), [t]])
    a, b = edges[:-1], edges[1:]
    sign = (-1.0) ** np.arange(len(a))
    w = np.asarray(omega, float)[..., None]
    seg = (b - a) * np.sinc(w * (b - a) / (2 * np.pi)) * np.exp(0.5j * w * (a + b))
    return (sign * seg).sum(-1)


def filter_function(omega, t: float, pulse_times) -> np.ndarray:
    """Filter function ``F(w t)`` of any pi-pulse timing.

    ``F = (w^2 / 2) |Integral_0^t s(t') exp(i w t') dt'|^2``, so that FID gives
    ``2 sin^2(w t / 2)``.

    Parameters
    ----------
    omega : array_like
        Angular frequency in rad/s.
    t : float
        Total evolution time in s.
    pulse_times : array_like
        Pi-pulse times in s, increasing, inside (0, t).
    """
    pulse_times = np.asarray(pulse_times, float)
    if pulse_times.size and (np.any(np.diff(pulse_times) <= 0) or pulse_times[0] <= 0
                             or pulse_times[-1] >= t):
        raise ValueError("pulse times must increase strictly inside (0, t)")
    w = np.asarray(omega, float)
    return 0.5 * w**2 * np.abs(_switching_transform(w, t, pulse_times)) ** 2


def filter_cpmg(z, n: int) -> np.ndarray:
    """Closed-form filter ``F(z)``, ``z = w t``, for FID (n = 0), Hahn (n = 1), CPMG-n.

    Table of physics.md section 1. The removable singularities at ``cos(z / 2n) = 0`` are
    evaluated through the switching-function integral instead.

    Parameters
    ----------
    z : array_like
        Dimensionless ``omega * t`` (rad).
    n : int
        Number of equally spaced pi pulses (>= 0).
    """
    z = np.asarray(z, float)
    if n < 0 or int(n) != n:
        raise ValueError(f"n must be an integer >= 0, got {n}")
    n = int(n)
    if n == 0:
        return 2 * np.sin(z / 2) ** 2
    c = np.cos(z / (2 * n)) ** 2
    core = np.sin(z / 2) ** 2 if n % 2 == 0 else np.cos(z / 2) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 8 * np.sin(z / (4 * n)) ** 4 * core / c
    bad = c < 1e-6
    if np.any(bad):
        f = np.array(f, float, ndmin=1)
        zb = np.atleast_1d(z)[np.atleast_1d(bad)]
        f[np.atleast_1d(bad)] = filter_function(zb, 1.0, equally_spaced(1.0, n))
        f = f.reshape(z.shape)
    return f


def chi_lorentzian(t, n: int, params) -> np.ndarray:
    """Closed-form chi for symmetrized Lorentzians under FID (n = 0) or CPMG-n.

    Parameters
    ----------
    t : array_like
        Evolution times in s (> 0).
    n : int
        Number of equally spaced pi pulses (0: FID, 1: Hahn echo).
    params : array_like, shape (K, 3)
        Rows (A, g, w0): variance in (rad/s)^2, half width in rad/s, centre in rad/s.

    Returns
    -------
    ndarray
        chi with the shape of ``t`` (sum over the K Lorentzians).
    """
    t = _check_t(t)
    p = np.atleast_2d(np.asarray(params, float))
    a, g, w0 = p[:, 0], p[:, 1], p[:, 2]
    lam = g + 1j * w0
    tt = t[..., None]
    closed = _chi_lorentzian_closed(tt, n, a, lam)
    small = np.abs(lam * tt) < SERIES_SWITCH
    if np.any(small):
        series = _chi_lorentzian_series(tt, n, a, lam)
        closed = np.where(small, series, closed)
    return closed.sum(-1)


#: below this ``|lam t|`` the Taylor series (exact moments) replaces the closed form
SERIES_SWITCH = 1.0


@functools.lru_cache(maxsize=512)
def segment_moments(n: int, kmax: int = 40) -> np.ndarray:
    """Moments of the switching function of n equally spaced pi pulses (n = 0: FID).

    ``m_k = (1/2) Integral Integral s(u1) s(u2) |u1 - u2|^k du1 du2`` on [0, 1], k < kmax;
    the Taylor series of chi in ``lam t`` is ``A t^2 sum_k (-lam t)^k / k! m_k``. Cached:
    treat the returned array as read-only.
    """
    e = np.concatenate([[0.0], equally_spaced(1.0, n), [1.0]])
    a, b = e[:-1], e[1:]
    sgn = (-1.0) ** np.arange(len(a))
    ss = sgn[:, None] * sgn[None, :]
    out = np.empty(kmax)
    for k in range(kmax):
        def pk(x, k=k):
            return np.abs(x) ** (k + 2) / ((k + 1) * (k + 2))
        blk = (pk(b[:, None] - a[None, :]) - pk(a[:, None] - a[None, :])
               - pk(b[:, None] - b[None, :]) + pk(a[:, None] - b[None, :]))
        out[k] = 0.5 * np.sum(ss * blk)
    return out


def _chi_lorentzian_series(tt, n, a, lam, kmax: int = 40):
    """Taylor series of chi in lam t (exact moments of the switching function).

    ``chi = Re[A t^2 sum_k (-lam t)^k / k! m_k]``: free of the cancellation that the closed
    form suffers at small ``|lam| t / n``.
    """
    from math import factorial

    m = segment_moments(n, kmax)
    x = -lam * tt
    acc = np.zeros(np.broadcast(x, tt).shape, complex)
    xk = np.ones_like(acc)
    for k in range(kmax):
        acc = acc + xk * (m[k] / factorial(k))
        xk = xk * x
    return np.real(a * tt**2 * acc)


def _chi_lorentzian_closed(tt, n, a, lam):
    if n == 0:
        val = (lam * tt - 1 + np.exp(-lam * tt)) / lam**2
        return np.real(a * val)
    q = np.exp(-lam * tt / (2 * n))
    x = q * q
    mx = (-x) ** (n - 1)
    br = (lam * tt - (n + 1) + 2 * q + (n - 1) * x + (-1) ** n * (1 - q) ** 2 * x ** (n - 1)
          - 2 * (1 - q) * (1 - x) * (1 - mx) / (1 + x)
          - (1 - x) ** 2 * (mx + (n - 1) * x + (n - 2)) / (1 + x) ** 2)
    return np.real(a * br / lam**2)


def _gl_grid(edges: np.ndarray, order: int = 10) -> tuple[np.ndarray, np.ndarray]:
    x, wts = np.polynomial.legendre.leggauss(order)
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    half = 0.5 * np.diff(edges)[:, None]
    return (mid + half * x).ravel(), (half * wts).ravel()


def chi_quadrature(spectrum: Spectrum, t, pulse_times=None, *, n: int | None = None,
                   panels_per_period: int = 4, cutoff_periods: float = 60.0) -> np.ndarray:
    """chi by quadrature of any spectrum against the filter of any pulse timing.

    Parameters
    ----------
    spectrum : Spectrum
        Callable S(omega), rad^2/s, omega in rad/s.
    t : array_like
        Evolution times in s.
    pulse_times : callable or array_like, optional
        Pi-pulse times in s: an array (for a single ``t``) or a callable ``t -> times``.
    n : int, optional
        Equally spaced pulses (CPMG-n); uses the closed-form filter. Give ``n`` or
        ``pulse_times``; neither means FID.
    panels_per_period, cutoff_periods : float
        Grid controls: Gauss-Legendre panels (10 nodes) per ``pi / t`` and the cutoff in
        units of ``pi (N + 1) / t``; beyond it the filter is replaced by its mean
        ``2N + 1`` (exact for the integral of a smooth spectrum).

    Returns
    -------
    ndarray
        chi with the shape of ``t``.
    """
    t = _check_t(t)
    out = np.empty(t.shape)
    for idx, ti in np.ndenumerate(t):
        if n is not None:
            times = equally_spaced(ti, n)
        elif pulse_times is None:
            times = np.zeros(0)
        else:
            times = np.asarray(pulse_times(ti) if callable(pulse_times) else pulse_times, float)
        out[idx] = _chi_one(spectrum, float(ti), times, n, panels_per_period, cutoff_periods)
    return out


def _chi_one(spectrum, t, times, n, panels_per_period, cutoff_periods) -> float:
    n_pulses = len(times)
    alpha = spectrum.low_frequency_exponent()
    # near 0, F / w^2 -> (Integral s)^2 / 2: nonzero for FID, O(w^2) for balanced echoes
    balanced = abs(float(np.real(_switching_transform(np.array([0.0]), t, times)[0]))) < 1e-9 * t
    if alpha >= (3 if balanced else 1):
        raise ValueError(f"chi diverges: the spectrum falls as omega^-{alpha:g} at 0, not "
                         "integrable against this filter (FID needs alpha < 1, balanced "
                         "echoes alpha < 3); use echo sequences")
    h = np.pi / t / panels_per_period
    w_cut = cutoff_periods * np.pi * (n_pulses + 1) / t
    feats = spectrum.features()
    for c, g in feats:
        w_cut = max(w_cut, c + 60 * g)
    edges = [np.arange(0.0, w_cut + h, h)]
    # geometric panels towards 0 for spectra that are singular or sharp there
    edges.append(np.geomspace(h * 1e-7, h, 60))
    for c, g in feats:
        lo, hi = max(c - 40 * g, 0.0), c + 40 * g
        step = min(g / 4, h)
        edges.append(np.linspace(lo, hi, int(min((hi - lo) / step, 4000)) + 2))
        if c - 40 * g <= 0:
            edges.append(np.geomspace(max(g * 1e-6, 1e-30), max(g, 1e-30), 40))
    e = np.unique(np.concatenate(edges))
    e = e[(e >= 0) & (e <= w_cut)]
    w, wts = _gl_grid(e)
    if n is not None:
        fw2 = filter_cpmg(w * t, n) / w**2
    else:
        fw2 = 0.5 * np.abs(_switching_transform(w, t, times)) ** 2
    s = spectrum(w)
    if not np.all(np.isfinite(s)):
        raise ValueError("spectrum is not finite on the quadrature grid")
    body = np.sum(wts * s * fw2)
    # Integral_{w_cut}^inf S(w) / w^2 dw = Integral_0^{1/w_cut} S(1/u) du (finite interval)
    tail, _ = integrate.quad(lambda u: spectrum(np.array([1.0 / u]))[0], 0.0, 1.0 / w_cut,
                             limit=200)
    return float((body + (2 * n_pulses + 1) * tail) / np.pi)


def chi(spectrum: Spectrum, t, pulse_times=None, *, n: int | None = None) -> np.ndarray:
    """chi for any spectrum and timing, using the Lorentzian closed form where it applies.

    Parameters are those of :func:`chi_quadrature`.
    """
    if n is None and pulse_times is not None and not callable(pulse_times):
        n = _equal_spacing(np.asarray(t, float), np.asarray(pulse_times, float))
        if n is not None:
            pulse_times = None
    params = lorentzian_parts(spectrum)
    if params is not None and (n is not None or pulse_times is None):
        return chi_lorentzian(t, n or 0, params)
    return chi_quadrature(spectrum, t, pulse_times, n=n)


def _equal_spacing(t: np.ndarray, times: np.ndarray) -> int | None:
    """N if ``times`` are the CPMG-N times ``(k - 1/2) t / N`` of a single t, else None."""
    if t.size != 1:
        return None
    n = times.size
    ref = equally_spaced(float(t.ravel()[0]), n)
    return n if np.allclose(times, ref, rtol=0, atol=1e-9 * float(t.ravel()[0])) else None


def coherence(spectrum: Spectrum, t, pulse_times=None, *, n: int | None = None) -> np.ndarray:
    """Coherence ``C(t) = exp(-chi(t))`` (dimensionless); see :func:`chi`."""
    return np.exp(-chi(spectrum, t, pulse_times, n=n))
