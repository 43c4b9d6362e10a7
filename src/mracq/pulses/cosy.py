"""COSY correlation program for NV-detected 2D 13C spectroscopy (seed 000, Fig. 5a/7).

One shot::

    laser init - wait - pi/2_x - (tau/2 - pi - tau - pi - tau/2)^(n/2) - pi/2_y
    - t1 - RF pi/2 - t2
    - pi/2_y - (tau/2 - pi - tau - pi - tau/2)^(n/2) - pi/2_x - laser readout

``t1`` runs from the end of the first correlation block to the centre of the RF pulse and
``t2`` from that centre to the start of the second block. The physics model
(`mracq.sim.cosy.CosyModel`) reads ``t1``, ``t2``, ``tau`` and ``n`` from the metadata.
"""

from __future__ import annotations

import math

from .model import Delay, Parallel, Pulse, PulseProgram, Repeat, TimingLimits

PI = math.pi
X, Y = 0.0, PI / 2


def _block(tau, n, tp, tp2, first, last):
    """pi/2(first) - (tau/2 - pi - tau - pi - tau/2)^(n/2) - pi/2(last), pi phase X."""
    if tau / 2 - tp / 2 - tp2 / 2 <= 0 or tau - tp <= 0:
        raise ValueError(f"cosy: tau = {tau!r} s is too short for pi = {tp} s pulses")
    unit = (
        Delay(tau / 2 - tp / 2),
        Pulse("mw", tp, X, PI),
        Delay(tau - tp),
        Pulse("mw", tp, X, PI),
        Delay(tau / 2 - tp / 2),
    )
    return (Pulse("mw", tp2, first, PI / 2), Repeat(unit, n // 2), Pulse("mw", tp2, last, PI / 2))


def cosy_program(
    t1: float,
    t2: float,
    *,
    tau: float = 2045e-9,
    n: int = 40,
    pi_duration: float = 40e-9,
    pi2_duration: float = 20e-9,
    rf_duration: float = 4e-6,
    rf_frequency: float | None = None,
    init_duration: float = 3e-6,
    wait: float = 1e-6,
    readout_duration: float = 3e-6,
    gate_duration: float = 300e-9,
    limits: TimingLimits | None = None,
) -> PulseProgram:
    """One COSY shot for evolution times ``t1``, ``t2``.

    Parameters
    ----------
    t1, t2 : float
        Evolution times in s (each >= rf_duration / 2).
    tau : float
        pi-pulse spacing of the correlation blocks in s (2045 ns: 7th harmonic of 13C at
        158 mT).
    n : int
        pi pulses per correlation block (even, default 40).
    pi_duration, pi2_duration : float
        NV microwave pulse lengths in s.
    rf_duration : float
        Nuclear RF pi/2 pulse length in s.
    rf_frequency : float, optional
        RF carrier in Hz (the 13C Larmor frequency; None: the source's setting).
    init_duration, wait, readout_duration, gate_duration : float
        Laser initialization, wait, laser readout and counter gate lengths in s.
    limits : TimingLimits, optional
        Hardware limits to validate against.
    """
    t1, t2 = float(t1), float(t2)
    for name, t in (("t1", t1), ("t2", t2)):
        if not math.isfinite(t) or t < rf_duration / 2:
            raise ValueError(f"cosy: {name} = {t!r} s must be >= rf_duration / 2 = "
                             f"{rf_duration / 2:.3g} s")
    if isinstance(n, bool) or int(n) != n or n < 2 or n % 2:
        raise ValueError(f"cosy: n = {n!r} must be an even integer >= 2")
    n = int(n)
    tp, tp2 = float(pi_duration), float(pi2_duration)
    elements = (
        Pulse("laser", init_duration),
        Delay(wait),
        *_block(tau, n, tp, tp2, X, Y),
        Delay(t1 - rf_duration / 2),
        Pulse("rf", rf_duration, X, PI / 2, rf_frequency),
        Delay(t2 - rf_duration / 2),
        *_block(tau, n, tp, tp2, Y, X),
        Parallel(((Pulse("laser", readout_duration),), (Pulse("gate", gate_duration),))),
    )
    meta = {"sequence": "cosy", "t1": t1, "t2": t2, "tau": float(tau), "n": n,
            "pi_duration": tp, "pi2_duration": tp2, "rf_duration": float(rf_duration)}
    return PulseProgram(elements, meta).validate(limits or TimingLimits())
