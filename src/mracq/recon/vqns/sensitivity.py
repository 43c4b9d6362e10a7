"""Frequency sensitivity of a pulse sequence (seed 001, Sec. III.3, Eq. 7).

    Sens_p(w) = (1 / T) Int_0^T |F_p(w t)| / w^2 * C_p(t) dt

the time average of the filter weighted by the coherence that the current spectrum
estimate predicts (where ``C_p`` has decayed, the filter's sensitivity is useless). The
integral runs over the times a measurement of p would cover: up to the time where the
predicted ``C_p`` falls to ``exp(-chi_end)``.
"""

from __future__ import annotations

import numpy as np

from mracq.recon.vqns.data import pulse_number
from mracq.sim.filter_function import filter_cpmg

__all__ = ["sensitivity", "predicted_decay_time", "coverage"]


def predicted_decay_time(coherence_fn, n: int, *, chi_end: float = 4.0,
                         t_lo: float = 1e-9, t_hi: float = 1.0) -> float:
    """Time in s at which ``coherence_fn(n, t)`` falls to ``exp(-chi_end)`` (log bisection).

    Parameters
    ----------
    coherence_fn : callable
        ``(n, t_array) -> C`` under the current spectrum estimate.
    n : int
        Pulse number.
    """
    target = np.exp(-chi_end)
    lo, hi = np.log(t_lo), np.log(t_hi)
    if coherence_fn(n, np.array([t_hi]))[0] > target:
        return t_hi
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        if coherence_fn(n, np.array([np.exp(mid)]))[0] > target:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def sensitivity(omega, sequence: str, coherence_fn, *, t=None, chi_end: float = 4.0,
                n_times: int = 64) -> np.ndarray:
    """Eq. 7 sensitivity of one sequence on ``omega``.

    Parameters
    ----------
    omega : array_like
        Angular frequencies in rad/s (> 0).
    sequence : str
        "fid", "se", "cpmg-N" or "xy8-N".
    coherence_fn : callable
        ``(n, t_array) -> C`` predicted by the current spectrum (e.g.
        ``lambda n, t: result.coherence(f"cpmg-{n}", t)``).
    t : array_like, optional
        Measurement times in s; default ``n_times`` points up to the predicted decay time.
    chi_end : float
        Decay (in chi) that ends the default time range.

    Returns
    -------
    ndarray
        Sens(omega) in s^2 (filter / omega^2 averaged over t).
    """
    n = pulse_number(sequence)
    w = np.asarray(omega, float)
    if np.any(w <= 0):
        raise ValueError("sensitivity needs omega > 0 rad/s")
    if t is None:
        te = predicted_decay_time(coherence_fn, n, chi_end=chi_end)
        t = np.linspace(te / n_times, te, n_times)
    t = np.asarray(t, float)
    c = np.clip(coherence_fn(n, t), 0.0, 1.0)
    f = filter_cpmg(np.outer(w, t), n) / w[:, None] ** 2
    return (np.abs(f) * c).mean(1)


def coverage(omega, sequences, coherence_fn, **kw) -> np.ndarray:
    """Summed sensitivity of a set of sequences (the seed's collective measure), s^2."""
    return sum(sensitivity(omega, s, coherence_fn, **kw) for s in sequences)
