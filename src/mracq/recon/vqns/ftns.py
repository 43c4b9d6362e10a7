"""FTNS: Fourier-transform noise spectroscopy from FID or Hahn-echo decays (baseline).

Following Vezvaee et al., npj QI 10, 52 (2024), in the convention of physics.md section 1.

FID: ``chi'' = C_xi`` (the noise autocorrelation), so ``S(w) = 2 Int_0^inf chi''(tau)
cos(w tau) dtau``. With ``chi`` linear between samples (``chi(0) = 0``) and continued
linearly beyond the last kept time (slope from a linear fit to the last part of the
data: the seed's minimal denoising), ``chi''`` is a sum of point masses at the sample
times and the transform is exact for that interpolant:

    S(w) = 2 [s_0 + sum_k (s_k - s_{k-1}) cos(w t_k) + (s_tail - s_last) cos(w T)].

SE: ``F_SE(z) = 4 F_FID(z/2) - F_FID(z)`` gives ``chi_SE''(t) = C_xi(t/2) - C_xi(t)``, whose
transform (same formula) is ``G(w) = 2 S(2w) - S(w)``; hence
``S(w) = -sum_k 2^k G(2^k w)``, summed while ``2^k w`` stays well below the Nyquist limit
``pi / dt``. The truncated sum misses ``2^K S(2^K w)``; for a ``1/w^2`` tail that equals
the last term kept, which is added as the tail correction. The remainder still dominates
at low frequency: the SE filter vanishes at w = 0, so the quasi-static part is lost (the seed's
Appendix E observation; tested only at intermediate frequencies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mracq.recon.vqns.data import Measurement

__all__ = ["FTNSResult", "ftns"]


@dataclass(frozen=True)
class FTNSResult:
    """FTNS spectrum.

    Attributes
    ----------
    omega : ndarray
        Frequencies in rad/s.
    spectrum : ndarray
        S(omega) in rad^2/s (two-sided); may be negative where noise dominates.
    sequence : str
        "fid" or "se".
    omega_max : float
        Highest frequency the method resolves, rad/s: ``pi / dt`` (FID) or
        ``sum_limit * pi / dt`` (SE); the spectrum is NaN above it.
    t_cut : float
        Last time used before the linear continuation, in s.
    """

    omega: np.ndarray
    spectrum: np.ndarray
    sequence: str
    omega_max: float
    t_cut: float


def _transform(t, chi, tail_fraction, omega):
    """2 Int chi''(tau) cos(w tau) for piecewise-linear chi with a linear tail."""
    tk = np.concatenate([[0.0], t])
    ck = np.concatenate([[0.0], chi])
    slopes = np.diff(ck) / np.diff(tk)
    n_tail = max(3, int(round(tail_fraction * t.size)))
    tail = np.polyfit(t[-n_tail:], chi[-n_tail:], 1)[0]
    jumps = np.concatenate([[slopes[0]], np.diff(slopes), [tail - slopes[-1]]])
    knots = np.concatenate([[0.0], t[:-1], [t[-1]]])
    return 2 * np.cos(np.outer(omega, knots)) @ jumps


def ftns(measurement: Measurement, omega=None, *, c_cut: float = 0.02,
         tail_fraction: float = 0.2, sum_limit: float = 0.5) -> FTNSResult:
    """FTNS spectrum from one FID or SE decay.

    Parameters
    ----------
    measurement : Measurement
        A "fid" or "se" decay; times should start near 0 and be roughly evenly spaced.
    omega : array_like, optional
        Frequencies in rad/s (default: 400 points from 0 to the Nyquist limit).
    c_cut : float
        Data after the coherence first falls below this are dropped (ln C is noise there).
    tail_fraction : float
        Fraction of the kept points whose linear fit continues chi beyond the data.
    sum_limit : float
        SE only: the sum over ``2^k w`` stops at ``sum_limit * pi / dt``, where the
        piecewise-linear transform is still accurate (its error is multiplied by ``2^k``).

    Returns
    -------
    FTNSResult
    """
    if not isinstance(measurement, Measurement):
        raise ValueError("ftns takes a Measurement")
    n = measurement.n
    if n not in (0, 1):
        raise ValueError(f"FTNS inverts FID or SE decays, not {measurement.sequence!r}")
    t, c = measurement.t, measurement.coherence
    below = np.flatnonzero(c < c_cut)
    stop = below[0] if below.size else t.size
    if stop < 4:
        raise ValueError(f"FTNS: coherence falls below {c_cut} within the first {stop} points")
    t, chi = t[:stop], -np.log(c[:stop])
    dt = float(np.median(np.diff(np.concatenate([[0.0], t]))))
    w_max = np.pi / dt
    if n == 1:
        w_max = sum_limit * w_max  # the SE sum needs 2 w below the limit as well
    omega = np.linspace(0.0, w_max, 400) if omega is None else np.asarray(omega, float)
    if n == 0:
        s = _transform(t, chi, tail_fraction, omega)
    else:
        s = np.zeros(omega.shape)
        last = np.zeros(omega.shape)
        scale = np.ones(omega.shape)
        wk = omega.copy()
        for _ in range(60):
            live = wk <= w_max
            if not np.any(live):
                break
            last[live] = -scale[live] * _transform(t, chi, tail_fraction, wk[live])
            s[live] += last[live]
            scale *= 2
            wk = wk * 2
        # the truncated remainder 2^K S(2^K w) equals the last term for a 1/w^2 tail
        s = s + last
        s[omega > w_max] = np.nan
    return FTNSResult(omega=omega, spectrum=s, sequence=measurement.sequence,
                      omega_max=w_max, t_cut=float(t[-1]))
