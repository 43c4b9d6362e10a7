"""Fits of NV calibration data: ODMR dips, Rabi oscillations, Ramsey fringes.

Pure functions over arrays (frequencies in Hz, times in s, populations P(ms = 0) as the
sequencer normalizes them). Each returns a :class:`Fit`: best values and standard errors
from the weighted least-squares covariance (``absolute_sigma``: the data's own error bars,
so the errors are honest when the model is right; ``chi2_red`` says whether it is).

Models
------
- ODMR dip, Lorentzian ``L(x) = w^2 / (x^2 + w^2)`` or Gaussian
  ``G(x) = exp(-ln2 x^2 / w^2)`` (``w`` the half width at half depth in both), optionally
  the 14N hyperfine triplet ``(1/3) sum_m shape(f - f0 - m A)``:
  ``y = baseline - depth * shape``.
- Rabi: ``y = offset - amplitude * sum_k a_k (Omega_k / Omega'_k)^2
  (1 - cos(2 pi f'_k t) exp(-t / tau)) / 2`` over the lines k (detunings ``d_k``, weights
  ``a_k``), ``f'_k = sqrt(f_R^2 + d_k^2)``: one line on resonance, or the three 14N lines.
- Ramsey: ``y = offset + exp(-(t / T2*)^p) sum_m [c_m cos(2 pi (d + m A) t) +
  s_m sin(2 pi (d + m A) t)]``, d the microwave-minus-resonance detuning of the centre line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import curve_fit

__all__ = ["Fit", "HYPERFINE_14N_SPLITTING", "fit_odmr", "fit_rabi", "fit_ramsey", "odmr_jacobian",
           "odmr_model", "pooled_sigma", "rabi_model", "ramsey_model"]

HYPERFINE_14N_SPLITTING = 2.16e6  # Hz, |A_parallel| of 14N
LN2 = math.log(2.0)


@dataclass
class Fit:
    """Best-fit values and standard errors.

    Attributes
    ----------
    values : dict of str to float
    errors : dict of str to float
        One-sigma standard errors (same units as ``values``).
    chi2_red : float
        Reduced chi-squared of the residuals with the given error bars.
    model : str
        Which model was fitted (``"lorentzian"``, ``"gaussian-triplet"``, ``"rabi"``...).
    extra : dict
        Fixed parameters of the model (hyperfine splitting, line detunings...).
    """

    values: dict
    errors: dict
    chi2_red: float
    model: str
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key):
        return self.values[key]

    def as_dict(self) -> dict:
        """JSON-safe summary: ``{name: value, name + "_error": error}`` plus the model."""
        out = {"model": self.model, "chi2_red": float(self.chi2_red)}
        for k, v in self.values.items():
            out[k] = float(v)
            out[f"{k}_error"] = float(self.errors.get(k, float("nan")))
        return out


def _check_xy(x, y, sigma, what):
    x, y = np.asarray(x, float), np.asarray(y, float)
    sigma = np.broadcast_to(np.asarray(sigma, float), y.shape).astype(float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{what}: x and y must be 1D arrays of one length")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(sigma) & (sigma > 0)
    if ok.sum() < 6:
        raise ValueError(f"{what}: need at least 6 points with finite values and positive "
                         f"errors, got {int(ok.sum())}")
    return x[ok], y[ok], sigma[ok]


def pooled_sigma(sigma, window=0.3) -> np.ndarray:
    """Per-point standard errors pooled over points of like error: each replaced by the
    geometric mean of the errors within a factor ``exp(window)`` of it.

    A population normalized from its own counts, ``(S - D) / (B - D)``, carries an error
    computed from those counts (:func:`mracq.sim.nv.normalize`), and that error is smaller
    where the noise made the point low: by the ``v^2 B`` term and by a large ``B - D``,
    which also lowers ``v``. A weighted fit then leans on the low points and finds the dip
    too deep and too narrow (benchmarks/calibration.py: adaptive ODMR runs 3.5-6.4 standard
    errors off at 250 000 shots a point, where corr(value, error) is 0.8 and the errors of
    equal-shot points spread 7 %; with the errors of the true populations instead, within
    2). Points of equal
    shots get one error, which no longer depends on their noise; points of other shots
    (errors more than ``exp(window)`` apart) keep theirs.

    Parameters
    ----------
    sigma : array_like
        Standard errors (> 0), in the units of the values.
    window : float
        Half width of the pool in ln sigma (0.3: a factor 1.35; a point at 4x the shots
        has half the error, ln 2 = 0.69 away).

    Returns
    -------
    ndarray
        The pooled errors, in the order given.
    """
    ls = np.log(np.asarray(sigma, float))
    order = np.argsort(ls)
    srt = ls[order]
    csum = np.r_[0.0, np.cumsum(srt)]
    lo = np.searchsorted(srt, srt - window, side="left")
    hi = np.searchsorted(srt, srt + window, side="right")
    out = np.empty_like(ls)
    out[order] = np.exp((csum[hi] - csum[lo]) / (hi - lo))
    return out


def _finish(popt, pcov, names, x, y, sigma, fn, model, extra=None) -> Fit:
    resid = (y - fn(x, *popt)) / sigma
    dof = max(len(x) - len(popt), 1)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else \
        np.full(len(popt), np.inf)
    values = dict(zip(names, map(float, popt), strict=True))
    errors = dict(zip(names, map(float, err), strict=True))
    return Fit(values, errors, float(np.sum(resid**2) / dof), model, dict(extra or {}))


# ----------------------------------------------------------------------------- ODMR
def _shape(x, width, kind):
    if kind == "lorentzian":
        return width**2 / (x**2 + width**2)
    return np.exp(-LN2 * x**2 / width**2)


def odmr_model(f, centre, width, depth, baseline, *, shape="lorentzian", splitting=0.0):
    """ODMR signal (population) at microwave frequencies ``f`` (Hz).

    Parameters
    ----------
    f : array_like
        Microwave frequencies, Hz.
    centre : float
        Centre (the m_I = 0 line for a triplet), Hz.
    width : float
        Half width at half depth of each line, Hz.
    depth : float
        Depth of the dip (of each line times 3 for a triplet: the lines share it).
    baseline : float
        Off-resonant population.
    shape : {"lorentzian", "gaussian"}
    splitting : float
        Hyperfine splitting of the triplet, Hz (0: a single line).
    """
    x = np.asarray(f, float) - centre
    if splitting == 0.0:
        return baseline - depth * _shape(x, width, shape)
    s = sum(_shape(x - m * splitting, width, shape) for m in (-1, 0, 1)) / 3
    return baseline - depth * s


def odmr_jacobian(f, params, *, shape="lorentzian", splitting=0.0) -> np.ndarray:
    """d :func:`odmr_model` / d (centre, width, depth, baseline) at ``params``.

    Central differences with steps of 1e-6 of each value (at least 1 Hz for centre and
    width, 1e-6 for depth and baseline).

    Parameters
    ----------
    f : array_like
        Microwave frequencies, Hz.
    params : array_like
        (centre Hz, width Hz, depth, baseline).
    shape, splitting
        As in :func:`odmr_model`.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(f), 4)``: population per Hz (centre, width) and per unit (depth,
        baseline).
    """
    p = np.asarray(params, float)
    steps = np.maximum(np.abs(p) * 1e-6, [1.0, 1.0, 1e-6, 1e-6])
    cols = []
    for i, h in enumerate(steps):
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        cols.append((odmr_model(f, *up, shape=shape, splitting=splitting)
                     - odmr_model(f, *dn, shape=shape, splitting=splitting)) / (2 * h))
    return np.array(cols).T


def fit_odmr(f, y, sigma, *, shape="lorentzian", triplet=False,
             splitting=HYPERFINE_14N_SPLITTING, centre_guess=None) -> Fit:
    """Fit an ODMR dip (or 14N triplet) to populations ``y`` at frequencies ``f``.

    Parameters
    ----------
    f, y, sigma : array_like
        Frequencies (Hz), normalized populations and their standard errors.
    shape : {"lorentzian", "gaussian"}
    triplet : bool or None
        Fit the three 14N lines (fixed ``splitting``); None: fit both and keep the
        triplet if it lowers chi^2 by more than 10 (a clear improvement).
    splitting : float
        |A_parallel| of the triplet, Hz.
    centre_guess : float, optional
        Start value of the centre (Hz); default: the lowest point (triplet: tried at it and
        one splitting either side).

    Returns
    -------
    Fit
        ``centre``, ``width`` (HWHM), ``depth``, ``baseline``; ``extra["splitting"]``.
    """
    if shape not in ("lorentzian", "gaussian"):
        raise ValueError(f"shape must be 'lorentzian' or 'gaussian', got {shape!r}")
    f, y, sigma = _check_xy(f, y, sigma, "fit_odmr")
    if triplet is None:
        single = fit_odmr(f, y, sigma, shape=shape, triplet=False, centre_guess=centre_guess)
        try:
            three = fit_odmr(f, y, sigma, shape=shape, triplet=True, splitting=splitting,
                             centre_guess=centre_guess)
        except RuntimeError:
            return single
        dof1, dof3 = len(f) - 4, len(f) - 4
        gain = single.chi2_red * dof1 - three.chi2_red * dof3
        return three if gain > 10 else single
    split = float(splitting) if triplet else 0.0
    order = np.argsort(f)
    f, y, sigma = f[order], y[order], sigma[order]
    span = f[-1] - f[0]
    step = np.median(np.diff(f)) if len(f) > 1 else span
    k = max(1, len(y) // 30)
    smooth = np.convolve(y, np.ones(2 * k + 1) / (2 * k + 1), mode="same")
    smooth[:k], smooth[-k:] = y[:k].mean(), y[-k:].mean()
    base0 = float(np.percentile(y, 90))
    depth0 = max(base0 - float(smooth.min()), 1e-3)
    c0 = float(f[np.argmin(smooth)]) if centre_guess is None else float(centre_guess)
    below = f[smooth < base0 - depth0 / 2]
    w0 = max((below.max() - below.min()) / 2 if below.size else span / 10, 2 * step)
    if split:
        w0 = max(min(w0, split / 2), 2 * step)
    starts = [c0] if not split or centre_guess is not None else [c0, c0 - split, c0 + split]

    def fn(x, c, w, d, b):
        return odmr_model(x, c, w, d, b, shape=shape, splitting=split)

    best = None
    for c in starts:
        p0 = [c, w0, depth0 * (3 if split else 1), base0]
        try:
            popt, pcov = curve_fit(fn, f, y, p0=p0, sigma=sigma, absolute_sigma=True,
                                   bounds=([f[0] - span, step / 20, 0, -np.inf],
                                           [f[-1] + span, 2 * span, np.inf, np.inf]),
                                   maxfev=5000)
        except RuntimeError:
            continue
        chi2 = float(np.sum(((y - fn(f, *popt)) / sigma) ** 2))
        if best is None or chi2 < best[0]:
            best = (chi2, popt, pcov)
    if best is None:
        raise RuntimeError("fit_odmr: no dip found (the fit did not converge)")
    model = shape + ("-triplet" if split else "")
    return _finish(best[1], best[2], ("centre", "width", "depth", "baseline"), f, y, sigma,
                   fn, model, {"splitting": split, "shape": shape})


# ----------------------------------------------------------------------------- Rabi
def rabi_model(t, rabi_frequency, decay, amplitude, offset, *, detunings=(0.0,), weights=None):
    """Rabi oscillation (population) after a pulse of length ``t`` (s).

    Parameters
    ----------
    t : array_like
        Pulse durations, s.
    rabi_frequency : float
        On-resonance Rabi frequency f_R, Hz (pi pulse ``1 / (2 f_R)``).
    decay : float
        1/e decay time of the oscillation, s.
    amplitude : float
        Full swing of the on-resonance line (1: ms = 0 to ms = -1).
    offset : float
        Population at ``t = 0``.
    detunings : sequence of float
        Microwave-minus-line detunings, Hz, of the lines driven.
    weights : sequence of float, optional
        Line weights (default equal, summing to 1).
    """
    t = np.asarray(t, float)
    d = np.asarray(detunings, float)
    w = np.full(d.shape, 1.0 / d.size) if weights is None else np.asarray(weights, float)
    gen = np.sqrt(rabi_frequency**2 + d**2)
    a = rabi_frequency**2 / gen**2
    env = np.exp(-t / decay)
    osc = sum(wk * ak * (1 - np.cos(2 * np.pi * gk * t) * env) / 2
              for wk, ak, gk in zip(w, a, gen, strict=True))
    return offset - amplitude * osc


def fit_rabi(t, y, sigma, *, detunings=(0.0,), weights=None) -> Fit:
    """Fit a damped Rabi oscillation; derive the pi and pi/2 durations.

    Parameters
    ----------
    t, y, sigma : array_like
        Pulse durations (s), populations and standard errors.
    detunings, weights
        Lines driven (Hz) and their weights, as for :func:`rabi_model`; for the 14N
        triplet driven at its centre: ``(-A, 0, A)``.

    Returns
    -------
    Fit
        ``rabi_frequency`` (Hz), ``decay`` (s), ``amplitude``, ``offset``, and derived
        ``pi_duration = 1 / (2 f_R)`` and ``pi2_duration = 1 / (4 f_R)`` (s) with errors.
    """
    t, y, sigma = _check_xy(t, y, sigma, "fit_rabi")
    order = np.argsort(t)
    t, y, sigma = t[order], y[order], sigma[order]
    dt = float(np.median(np.diff(t)))
    n = 16 * len(t)
    grid = np.arange(t[0], t[-1] + dt / 2, dt)
    yi = np.interp(grid, t, y) - y.mean()
    spec = np.abs(np.fft.rfft(yi * np.hanning(len(yi)), n))
    freqs = np.fft.rfftfreq(n, dt)
    spec[freqs < 1.0 / (t[-1] - t[0] + dt)] = 0
    f0 = float(freqs[np.argmax(spec)])
    span = t[-1] - t[0]
    offset0, amp0 = float(y[:3].mean()), max(float(np.ptp(y)), 0.05)

    def fn(x, fr, tau, amp, off):
        return rabi_model(x, fr, tau, amp, off, detunings=detunings, weights=weights)

    best = None
    for fstart in {f0, f0 * 0.97, f0 * 1.03}:
        for tau0 in (span, 10 * span):
            try:
                popt, pcov = curve_fit(fn, t, y, p0=[fstart, tau0, amp0, offset0], sigma=sigma,
                                       absolute_sigma=True,
                                       bounds=([0.2 * f0, dt, 0, -np.inf],
                                               [min(5 * f0, 0.5 / dt), 1e3 * span, 3, np.inf]),
                                       maxfev=5000)
            except RuntimeError:
                continue
            chi2 = float(np.sum(((y - fn(t, *popt)) / sigma) ** 2))
            if best is None or chi2 < best[0]:
                best = (chi2, popt, pcov)
    if best is None:
        raise RuntimeError("fit_rabi: no oscillation found (the fit did not converge)")
    fit = _finish(best[1], best[2], ("rabi_frequency", "decay", "amplitude", "offset"), t, y,
                  sigma, fn, "rabi", {"detunings": [float(x) for x in detunings]})
    fr, dfr = fit.values["rabi_frequency"], fit.errors["rabi_frequency"]
    fit.values["pi_duration"], fit.errors["pi_duration"] = 1 / (2 * fr), dfr / (2 * fr**2)
    fit.values["pi2_duration"], fit.errors["pi2_duration"] = 1 / (4 * fr), dfr / (4 * fr**2)
    return fit


# ----------------------------------------------------------------------------- Ramsey
def ramsey_model(t, detuning, t2_star, exponent, offset, *quadratures, splitting=0.0):
    """Ramsey fringes (population) after free evolution ``t`` (s).

    Parameters
    ----------
    t : array_like
        Free evolution between the pi/2 centres, s.
    detuning : float
        Microwave minus the (centre-line) resonance, Hz.
    t2_star : float
        Envelope decay time, s.
    exponent : float
        Envelope exponent p in ``exp(-(t / T2*)^p)``.
    offset : float
    *quadratures : float
        ``c, s`` per line (one line, or three for the triplet, m = -1, 0, 1).
    splitting : float
        Hyperfine splitting, Hz (0: one line).
    """
    t = np.asarray(t, float)
    lines = (0,) if splitting == 0.0 else (-1, 0, 1)
    env = np.exp(-np.abs(t / t2_star) ** exponent)
    out = np.full(t.shape, float(offset))
    for i, m in enumerate(lines):
        ph = 2 * np.pi * (detuning + m * splitting) * t
        out = out + env * (quadratures[2 * i] * np.cos(ph) + quadratures[2 * i + 1] * np.sin(ph))
    return out


def fit_ramsey(t, y, sigma, *, detuning_guess, detuning_range=None, splitting=0.0,
               t2_guess=None) -> Fit:
    """Fit Ramsey fringes; the detuning of the microwave from the resonance.

    The microwave should be detuned on purpose (``detuning_guess`` Hz, larger than the
    uncertainty of the resonance and, with a triplet, than the splitting) so that the sign
    of the detuning is known: cosine fringes cannot tell +d from -d.

    Parameters
    ----------
    t, y, sigma : array_like
        Evolution times (s), populations, standard errors.
    detuning_guess : float
        Expected detuning (Hz, > 0).
    detuning_range : float, optional
        Half width (Hz) of the range searched around the guess; default ``0.5 * guess``.
    splitting : float
        14N splitting (Hz) when the triplet is present, else 0.
    t2_guess : float, optional
        Start value of T2* (s); default half the time span.

    Returns
    -------
    Fit
        ``detuning`` (Hz), ``t2_star`` (s), ``exponent``, ``offset``, and the quadratures.
    """
    t, y, sigma = _check_xy(t, y, sigma, "fit_ramsey")
    d0 = float(detuning_guess)
    if not d0 > 0:
        raise ValueError(f"fit_ramsey: detuning_guess must be > 0 Hz, got {d0!r}")
    half = float(detuning_range) if detuning_range is not None else 0.5 * d0
    split = float(splitting)
    nq = 2 if split == 0.0 else 6
    tau0 = float(t2_guess) if t2_guess else 0.5 * (t.max() - t.min())

    def fn(x, d, tau, p, off, *q):
        return ramsey_model(x, d, tau, p, off, *q, splitting=split)

    def linear(d, tau, p):  # offset and quadratures by linear least squares at fixed d, tau
        env = np.exp(-np.abs(t / tau) ** p)
        cols = [np.ones_like(t)]
        for m in ((0,) if split == 0.0 else (-1, 0, 1)):
            ph = 2 * np.pi * (d + m * split) * t
            cols += [env * np.cos(ph), env * np.sin(ph)]
        a = np.array(cols).T / sigma[:, None]
        coef, *_ = np.linalg.lstsq(a, y / sigma, rcond=None)
        return float(np.sum((a @ coef - y / sigma) ** 2)), coef

    span = t.max() - t.min()
    grid = np.arange(d0 - half, d0 + half, 0.1 / span)
    scores = [linear(d, tau0, 2.0)[0] for d in grid]
    d_start = float(grid[int(np.argmin(scores))])
    _, coef = linear(d_start, tau0, 2.0)
    p0 = [d_start, tau0, 2.0, *coef]
    lo = [d0 - half, 0.02 * span, 0.5, -np.inf] + [-np.inf] * nq
    hi = [d0 + half, 100 * span, 4.0, np.inf] + [np.inf] * nq
    popt, pcov = curve_fit(fn, t, y, p0=p0, sigma=sigma, absolute_sigma=True, bounds=(lo, hi),
                           maxfev=20000)
    names = ("detuning", "t2_star", "exponent", "offset",
             *(f"{q}{m}" for m in (("0",) if split == 0.0 else ("-1", "0", "+1"))
               for q in ("c", "s")))
    return _finish(popt, pcov, names, t, y, sigma, fn, "ramsey" + ("-triplet" if split else ""),
                   {"splitting": split})
