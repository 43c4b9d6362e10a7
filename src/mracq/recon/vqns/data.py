"""Coherence measurements as VQNS, DDNS and FTNS take them.

A :class:`Measurement` is one coherence decay ``C(t)`` under one pulse sequence:
``"fid"`` (Ramsey, n = 0), ``"se"`` (Hahn echo, n = 1), ``"cpmg-N"`` (N equally spaced pi
pulses) or ``"xy8-N"`` (8N pi pulses with the timing of CPMG-8N; phases do not enter
pure dephasing). ``t`` is the total free evolution time in s (physics.md section 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Measurement", "pulse_number", "sensitive_band", "COHERENCE_RANGE"]

#: measured coherences outside this range are rejected as malformed
COHERENCE_RANGE = (-0.05, 1.05)

_SEQ = re.compile(r"^\s*(fid|ramsey|se|hahn|echo|cpmg|xy8)(?:[-_ ]?(\d+))?\s*$", re.IGNORECASE)


def pulse_number(sequence: str) -> int:
    """Number of equally spaced pi pulses of a sequence name.

    Parameters
    ----------
    sequence : str
        "fid", "se", "cpmg-N" or "xy8-N" (case-insensitive; "cpmg-0" is FID and
        "cpmg-1" the Hahn echo).

    Returns
    -------
    int
        0 for FID, 1 for SE, N for CPMG-N, 8N for XY8-N.
    """
    m = _SEQ.match(str(sequence))
    if not m:
        raise ValueError(f"unknown sequence {sequence!r}; use 'fid', 'se', 'cpmg-N' or 'xy8-N'")
    kind, num = m.group(1).lower(), m.group(2)
    if kind in ("fid", "ramsey"):
        if num not in (None, "0"):
            raise ValueError(f"FID takes no pulse number: {sequence!r}")
        return 0
    if kind in ("se", "hahn", "echo"):
        if num not in (None, "1"):
            raise ValueError(f"the Hahn echo has one pulse: {sequence!r}")
        return 1
    if num is None:
        raise ValueError(f"{sequence!r} needs a pulse number, e.g. '{kind}-8'")
    k = int(num)
    if kind == "xy8":
        if k < 1:
            raise ValueError(f"XY8-N needs N >= 1: {sequence!r}")
        return 8 * k
    return k


def canonical_name(n: int) -> str:
    """Sequence name for n equally spaced pulses: "fid", "se" or "cpmg-n"."""
    return "fid" if n == 0 else "se" if n == 1 else f"cpmg-{n}"


@dataclass(frozen=True)
class Measurement:
    """One measured coherence decay.

    Parameters
    ----------
    sequence : str
        "fid", "se", "cpmg-N" or "xy8-N".
    t : array_like
        Total free evolution times in s, strictly increasing, > 0.
    coherence : array_like
        Measured coherence ``C(t)`` (dimensionless), within [-0.05, 1.05].
    sigma : array_like or float, optional
        Standard error of each coherence value (dimensionless, > 0).
    """

    sequence: str
    t: np.ndarray
    coherence: np.ndarray
    sigma: np.ndarray | None = None

    def __post_init__(self):
        n = pulse_number(self.sequence)
        t = np.asarray(self.t, float).ravel()
        c = np.asarray(self.coherence, float).ravel()
        name = f"{self.sequence}"
        if t.size == 0:
            raise ValueError(f"{name}: no points")
        if t.shape != c.shape:
            raise ValueError(f"{name}: t has {t.size} values but coherence has {c.size}")
        for label, arr in (("t", t), ("coherence", c)):
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise ValueError(f"{name}: {label}[{bad[0]}] is {arr[bad[0]]} (not finite)")
        if np.any(t <= 0):
            i = int(np.flatnonzero(t <= 0)[0])
            raise ValueError(f"{name}: t[{i}] = {t[i]} s; times must be > 0 s")
        steps = np.flatnonzero(np.diff(t) <= 0)
        if steps.size:
            i = int(steps[0]) + 1
            raise ValueError(f"{name}: t is not increasing at index {i} "
                             f"({t[i - 1]} s then {t[i]} s)")
        lo, hi = COHERENCE_RANGE
        out = np.flatnonzero((c < lo) | (c > hi))
        if out.size:
            i = int(out[0])
            raise ValueError(f"{name}: coherence[{i}] = {c[i]} is outside [{lo}, {hi}]")
        s = None
        if self.sigma is not None:
            s = np.broadcast_to(np.asarray(self.sigma, float), c.shape).copy()
            bad = np.flatnonzero(~np.isfinite(s) | (s <= 0))
            if bad.size:
                raise ValueError(f"{name}: sigma[{bad[0]}] = {s[bad[0]]}; must be finite and > 0")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "coherence", c)
        object.__setattr__(self, "sigma", s)
        object.__setattr__(self, "sequence", canonical_name(n) if not
                           str(self.sequence).lower().startswith("xy8") else
                           str(self.sequence).lower())

    @property
    def n(self) -> int:
        """Number of equally spaced pi pulses (0: FID)."""
        return pulse_number(self.sequence)

    def __len__(self) -> int:
        return self.t.size


def decay_time(spectrum, n: int, chi_end: float = 4.0, t_hi: float = 1.0) -> float:
    """Time in s at which ``chi = chi_end`` for n equally spaced pulses (bisection in log t).

    Parameters
    ----------
    spectrum : callable
        S(omega), rad^2/s (:mod:`mracq.sim.spectra`).
    n : int
        Pulse number (0: FID).
    chi_end : float
        Target decay exponent (4: C = 0.018).
    t_hi : float
        Upper bound of the search in s.
    """
    from mracq.sim.filter_function import chi

    lo, hi = np.log(1e-10), np.log(t_hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if chi(spectrum, np.array([np.exp(mid)]), n=n)[0] < chi_end:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def simulate_measurements(spectrum, sequences, *, n_points: int = 40, noise: float = 0.0,
                          chi_end: float = 4.0, t_end=None, rng=None) -> list[Measurement]:
    """Coherence decays of a known spectrum, optionally with uniform error (seed Fig. 3).

    Parameters
    ----------
    spectrum : callable
        S(omega), rad^2/s.
    sequences : sequence of str
        Sequence names.
    n_points : int
        Times per sequence, equally spaced from ``t_end / n_points`` to ``t_end``.
    noise : float
        Half width of the uniform error added to each coherence (seed's error level).
    chi_end : float
        Each sequence runs until ``chi = chi_end`` unless ``t_end`` is given.
    t_end : dict or float, optional
        Last time in s, per sequence name or one for all.
    rng : numpy Generator, optional
        Randomness for the error.
    """
    from mracq.sim.filter_function import coherence

    rng = np.random.default_rng() if rng is None else rng
    out = []
    for name in sequences:
        n = pulse_number(name)
        te = t_end.get(name) if isinstance(t_end, dict) else t_end
        te = decay_time(spectrum, n, chi_end) if te is None else te
        t = np.linspace(te / n_points, te, n_points)
        c = coherence(spectrum, t, n=n)
        sigma = None
        if noise > 0:
            c = np.clip(c + rng.uniform(-noise, noise, c.shape), *COHERENCE_RANGE)
            sigma = np.full(c.shape, noise / np.sqrt(3))
        out.append(Measurement(name, t, c, sigma))
    return out


def sensitive_band(measurements) -> tuple[float, float]:
    """Frequencies (rad/s) the measurements constrain: ``pi max(n,1) / t`` over decaying points.

    A point counts when its coherence lies in (0.03, 0.97), or, with error bars, when its
    decay ``1 - C`` exceeds three of them (a decay of 1 % measured to 0.2 % constrains the
    spectrum as much as a larger one); falls back to all points.
    """
    w = []
    for m in measurements:
        top = 0.97 if m.sigma is None else np.maximum(0.97, 1 - 3 * m.sigma)
        sel = (m.coherence > 0.03) & (m.coherence < top)
        t = m.t[sel] if np.any(sel) else m.t
        w.append(np.pi * max(m.n, 1) / t)
    w = np.concatenate(w)
    return float(w.min()), float(w.max())
