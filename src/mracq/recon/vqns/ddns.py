"""DDNS: dynamical-decoupling noise spectroscopy (Alvarez & Suter 2011), the baseline.

For CPMG-n with many pulses the filter ``F(w t) / w^2`` is a comb of peaks at odd multiples
of ``w_n = pi n / t``; in the convention of physics.md section 1 the first peak carries
weight ``4 / pi^2`` of ``t``, so ``chi(t) ~ 4 t S(w_n) / pi^2`` and

    S(w_n) ~ pi^2 chi(t) / (4 t),   chi = -ln C.

Higher peaks add ``S(3 w_n) / 9 + S(5 w_n) / 25 + ...``; with ``harmonics=True`` those are
subtracted using the first-pass estimate interpolated in log-log (a refinement, not in the
original method). Each point with a usable coherence gives one spectral point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mracq.recon.vqns.data import Measurement

__all__ = ["DDNSResult", "ddns"]


@dataclass(frozen=True)
class DDNSResult:
    """DDNS spectral points.

    Attributes
    ----------
    omega : ndarray
        ``pi n / t`` in rad/s, sorted.
    spectrum : ndarray
        S at ``omega`` in rad^2/s (two-sided).
    n : ndarray
        Pulse number behind each point.
    t : ndarray
        Evolution time in s behind each point.
    """

    omega: np.ndarray
    spectrum: np.ndarray
    n: np.ndarray
    t: np.ndarray


def ddns(measurements, *, c_min: float = 0.05, c_max: float = 0.98, min_pulses: int = 1,
         harmonics: bool = False) -> DDNSResult:
    """DDNS estimate from CPMG/XY8 decays.

    Parameters
    ----------
    measurements : sequence of Measurement
        Decays; FID and sequences with fewer than ``min_pulses`` pulses are skipped.
    c_min, c_max : float
        Use only coherences in (c_min, c_max): below, ln C is noise; above, chi is too small
        to resolve.
    min_pulses : int
        Smallest pulse number used (1 includes the Hahn echo).
    harmonics : bool
        Subtract the 3rd, 5th, 7th harmonic contributions (see module notes).

    Returns
    -------
    DDNSResult
    """
    ms = list(measurements)
    if not all(isinstance(m, Measurement) for m in ms):
        raise ValueError("ddns takes Measurement objects")
    if not (0 < c_min < c_max <= 1):
        raise ValueError(f"need 0 < c_min < c_max <= 1, got {c_min}, {c_max}")
    w, s, nn, tt = [], [], [], []
    for m in ms:
        if m.n < max(min_pulses, 1):
            continue
        sel = (m.coherence > c_min) & (m.coherence < c_max)
        t, c = m.t[sel], m.coherence[sel]
        w.append(np.pi * m.n / t)
        s.append(np.pi**2 * -np.log(c) / (4 * t))
        nn.append(np.full(t.shape, m.n))
        tt.append(t)
    if not w:
        raise ValueError("DDNS needs at least one CPMG/SE measurement with coherence in "
                         f"({c_min}, {c_max})")
    w, s, nn, tt = (np.concatenate(x) for x in (w, s, nn, tt))
    order = np.argsort(w)
    w, s, nn, tt = w[order], s[order], nn[order], tt[order]
    if harmonics and w.size > 1:
        first = s.copy()
        for _ in range(3):
            lw, ls = np.log(w), np.log(np.maximum(s, first * 1e-3))
            corr = np.zeros_like(s)
            for h in (3, 5, 7):
                inside = h * w <= w[-1]
                corr[inside] += np.exp(np.interp(np.log(h * w[inside]), lw, ls)) / h**2
            s = np.maximum(first - corr, 0.0)
    return DDNSResult(omega=w, spectrum=s, n=nn, t=tt)
