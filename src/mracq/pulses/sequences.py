"""Generators for standard NV sequences and the evolution-timing helper.

Every shot is: laser initialization - wait - microwave part - laser readout with the
counter gate opening at its start. Timing convention (physics.md section 1): ``t`` is the
free evolution between the centres of the two pi/2 pulses; the k-th of N pi pulses is
centred at ``(k - 1/2) t / N`` after the first pi/2 centre (Hahn: N = 1, CPMG-n: N = n,
XY8-n: N = 8n).
"""

from __future__ import annotations

import math

import numpy as np

from .model import Delay, Parallel, Pulse, PulseProgram, Repeat, TimingLimits

PI = math.pi
X, Y = 0.0, PI / 2
XY8_PHASES = (X, Y, X, Y, Y, X, Y, X)
_TOL = 1e-15  # s, rounding tolerance on generated times


def _shot(mw_part, metadata, *, init_duration=3e-6, wait=1e-6, readout_duration=3e-6,
          gate_duration=300e-9, gate_delay=0.0, limits=None) -> PulseProgram:
    """Wrap a microwave part in initialization and readout and validate it."""
    readout = Parallel((
        (Pulse("laser", readout_duration),),
        (Delay(gate_delay), Pulse("gate", gate_duration)),
    ))
    elements = (Pulse("laser", init_duration), Delay(wait), *mw_part, readout)
    return PulseProgram(elements, metadata).validate(limits or TimingLimits())


def _check_t(t, n_pi, tp, tp2, label, limits):
    """Return float(t) if the pulses fit: back to back, or with every delay >= min_delay."""
    md = (limits or TimingLimits()).min_delay
    if n_pi:
        t_min, t_sep = n_pi * (tp + tp2), n_pi * max(tp + tp2 + 2 * md, tp + md)
    else:
        t_min, t_sep = tp2, tp2 + md
    t = float(t)
    if not math.isfinite(t) or t < t_min - _TOL:
        raise ValueError(f"{label}: t = {t!r} s is too short for the pulses to fit; "
                         f"minimum t = {t_min:.6g} s")
    if abs(t - t_min) > _TOL and t < t_sep - _TOL:
        raise ValueError(f"{label}: t = {t!r} s leaves a delay shorter than min_delay = "
                         f"{md:.3g} s; use the minimum t = {t_min:.6g} s (pulses back to "
                         f"back) or t >= {t_sep:.6g} s")
    return t


def _delay(duration):
    """Delay with rounding residues (|d| < 1 fs) at the back-to-back limit set to 0."""
    return Delay(0.0 if abs(duration) < _TOL else duration)


def rabi(duration, *, phase=0.0, frequency=None, **shot) -> PulseProgram:
    """Rabi shot: one microwave pulse of ``duration`` (s) between init and readout.

    Parameters
    ----------
    duration : float
        Microwave pulse length (s); 0 gives a shot without microwave (a bright reference).
    phase : float
        Microwave phase (rad).
    frequency : float, optional
        Microwave frequency (Hz) recorded on the pulse; None uses the source's setting.
    **shot
        Readout timing: ``init_duration`` (3e-6 s), ``wait`` (1e-6 s), ``readout_duration``
        (3e-6 s), ``gate_duration`` (300e-9 s), ``gate_delay`` (0 s); ``limits``
        (:class:`TimingLimits`).
    """
    duration = float(duration)
    if not math.isfinite(duration) or duration < 0:
        raise ValueError(f"rabi: duration = {duration!r} s must be finite and >= 0")
    mw = (Pulse("mw", duration, phase, None, frequency),) if duration > 0 else ()
    return _shot(mw, {"sequence": "rabi", "n": 0, "t": duration}, **shot)


def odmr_cw(duration=10e-6, *, frequency=None, limits=None) -> PulseProgram:
    """CW ODMR shot: laser, microwave and counter gate on together for ``duration`` (s).

    The photon rate under continuous laser and microwave drops where the microwave is
    resonant; the sequencer's bright/dark reference shots normalize it to a population.

    Parameters
    ----------
    duration : float
        Length of the illuminated, driven and counted window (s).
    frequency : float, optional
        Microwave frequency (Hz) recorded on the pulse; None uses the source's setting.
    limits : TimingLimits, optional
    """
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"odmr_cw: duration = {duration!r} s must be finite and > 0")
    both = Parallel(((Pulse("laser", duration),), (Pulse("mw", duration, 0.0, None, frequency),),
                     (Pulse("gate", duration),)))
    return PulseProgram((both,), {"sequence": "odmr_cw", "n": 0, "t": duration}).validate(
        limits or TimingLimits())


def _framed(sequence, t, n_units, unit_phases, *, pi_duration, pi2_duration, phase, final_phase,
            shot):
    """pi/2 - [N pi pulses at (k - 1/2) t / N] - pi/2, N = n_units * len(unit_phases)."""
    n_pi = n_units * len(unit_phases)
    tp, tp2 = float(pi_duration), float(pi2_duration)
    label = f"{sequence} (N = {n_pi} pi pulses, pi = {tp:.3g} s, pi/2 = {tp2:.3g} s)"
    t = _check_t(t, n_pi, tp, tp2, label, shot.get("limits"))

    def half(ph):
        return Pulse("mw", tp2, phase + ph, PI / 2)

    def pi(ph):
        return Pulse("mw", tp, phase + ph, PI)

    meta = {"sequence": sequence, "n": n_units if sequence == "xy8" else n_pi, "t": t,
            "pi_duration": tp, "pi2_duration": tp2}
    if n_pi == 0:
        mw = (half(0.0), _delay(t - tp2), half(final_phase))
        return _shot(mw, meta, **shot)
    tau = t / n_pi
    edge = _delay(0.5 * (tau - tp - tp2))  # pi/2 end to first pi start (and last pi to pi/2)
    gap = _delay(tau - tp)
    # pulse 1, then (gap, pulse 2 .. gap, pulse L, gap, pulse 1) x (n_units - 1), then the tail
    rotated = tuple(x for ph in (*unit_phases[1:], unit_phases[0]) for x in (gap, pi(ph)))
    body = (Repeat(rotated, n_units - 1),) if n_units > 1 else ()
    tail = rotated[:-2]
    mw = (half(0.0), edge, pi(unit_phases[0]), *body, *tail, edge, half(final_phase))
    return _shot(mw, meta, **shot)


def fid(t, *, pi2_duration=20e-9, phase=0.0, final_phase=0.0, pi_duration=None,
        **shot) -> PulseProgram:
    """Ramsey / free induction decay: pi/2 - t - pi/2.

    Parameters
    ----------
    t : float
        Free evolution between the pi/2 centres (s).
    pi2_duration : float
        pi/2 pulse length (s).
    phase : float
        Phase of the first pi/2 pulse, the X axis (rad).
    final_phase : float
        Phase of the last pi/2 pulse relative to ``phase`` (rad).
    pi_duration : float, optional
        Ignored (FID has no pi pulse): lets one set of calibrated durations
        (:meth:`mracq.pulses.calibration.PulseCalibration.program_kw`) serve every family.
    **shot
        Readout timing and ``limits``, as for :func:`rabi`.
    """
    return _framed("fid", t, 0, (), pi_duration=0.0, pi2_duration=pi2_duration, phase=phase,
                   final_phase=final_phase, shot=shot)


def cpmg(t, n, *, pi_duration=40e-9, pi2_duration=20e-9, phase=0.0, pi_phase=Y,
         final_phase=0.0, **shot) -> PulseProgram:
    """CPMG-n: pi/2_X - n pi pulses (phase ``pi_phase``, default Y) at (k - 1/2) t / n - pi/2.

    Parameters
    ----------
    t : float
        Total free evolution between the pi/2 centres (s).
    n : int
        Number of pi pulses (>= 1).
    pi_duration, pi2_duration : float
        pi and pi/2 pulse lengths (s).
    phase : float
        Phase of the first pi/2 pulse (rad); other phases are relative to it.
    pi_phase : float
        Phase of the pi pulses relative to ``phase`` (rad).
    final_phase : float
        Phase of the last pi/2 pulse relative to ``phase`` (rad).
    **shot
        Readout timing and ``limits``, as for :func:`rabi`.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"cpmg: n = {n!r} must be an integer >= 1")
    return _framed("cpmg", t, int(n), (pi_phase,), pi_duration=pi_duration,
                   pi2_duration=pi2_duration, phase=phase, final_phase=final_phase, shot=shot)


def hahn_echo(t, *, pi_duration=40e-9, pi2_duration=20e-9, phase=0.0, pi_phase=Y,
              final_phase=0.0, **shot) -> PulseProgram:
    """Hahn (spin) echo: pi/2 - t/2 - pi - t/2 - pi/2; arguments as for :func:`cpmg`."""
    return _framed("hahn", t, 1, (pi_phase,), pi_duration=pi_duration,
                   pi2_duration=pi2_duration, phase=phase, final_phase=final_phase, shot=shot)


def xy8(t, n, *, pi_duration=40e-9, pi2_duration=20e-9, phase=0.0, final_phase=0.0,
        **shot) -> PulseProgram:
    """XY8-n: pi/2_X - n x (X Y X Y Y X Y X) pi pulses, 8n in all - pi/2.

    Parameters
    ----------
    t : float
        Total free evolution between the pi/2 centres (s); pi pulse k of 8n is centred at
        (k - 1/2) t / (8n).
    n : int
        Number of XY8 units (>= 1).
    **kw
        ``pi_duration``, ``pi2_duration``, ``phase``, ``final_phase`` and readout timing as
        for :func:`cpmg`.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"xy8: n = {n!r} must be an integer >= 1")
    return _framed("xy8", t, int(n), XY8_PHASES, pi_duration=pi_duration,
                   pi2_duration=pi2_duration, phase=phase, final_phase=final_phase, shot=shot)


_FAMILIES = {"fid": "fid", "ramsey": "fid", "hahn": "hahn", "se": "hahn", "echo": "hahn",
             "cpmg": "cpmg", "xy8": "xy8"}


def coherence_programs(family, times, n=None, **kw) -> list[PulseProgram]:
    """One program per evolution time for a coherence family.

    Parameters
    ----------
    family : str
        ``"fid"`` (alias ``"ramsey"``), ``"hahn"`` (alias ``"se"``), ``"cpmg"``, ``"xy8"``.
    times : sequence of float
        Total free evolution times t (s).
    n : int, optional
        pi pulses (CPMG) or XY8 units (XY8); required for those, ignored (must be None or
        the implied value) for FID (0) and Hahn (1).
    **kw
        Passed to the generator (pulse durations, phases, readout timing, limits).
    """
    key = _FAMILIES.get(str(family).lower())
    if key is None:
        raise ValueError(f"unknown sequence family {family!r}; expected one of "
                         f"{sorted(_FAMILIES)}")
    if key in ("cpmg", "xy8"):
        if n is None:
            what = "pi pulses" if key == "cpmg" else "XY8 units"
            raise ValueError(f"{key} needs n (number of {what})")
        gen = cpmg if key == "cpmg" else xy8
        return [gen(t, n, **kw) for t in times]
    implied = 0 if key == "fid" else 1
    if n is not None and n != implied:
        raise ValueError(f"{key} has n = {implied}, got n = {n!r}")
    gen = fid if key == "fid" else hahn_echo
    return [gen(t, **kw) for t in times]


def evolution_timing(program: PulseProgram) -> tuple[float, np.ndarray]:
    """Free evolution time and pi-pulse centres from the program's microwave pulses.

    Parameters
    ----------
    program : PulseProgram
        Its ``mw`` pulses must be pi/2, any number of pi pulses, pi/2 (by ``rotation``).

    Returns
    -------
    t : float
        Time between the centres of the two pi/2 pulses (s).
    pi_centres : ndarray
        Centres of the pi pulses relative to the first pi/2 centre (s), ascending.
    """
    mw = program.pulses_on("mw")
    rot = [p.rotation for p in mw]

    def near(r, target):
        return r is not None and abs(r - target) < 1e-9

    if len(mw) < 2 or not (near(rot[0], PI / 2) and near(rot[-1], PI / 2)) or not all(
            near(r, PI) for r in rot[1:-1]):
        raise ValueError("evolution_timing needs mw pulses framed pi/2 ... pi/2 with only pi "
                         f"pulses between; got rotations {rot}")
    c0 = mw[0].centre
    return mw[-1].centre - c0, np.array([p.centre - c0 for p in mw[1:-1]], dtype=float)
