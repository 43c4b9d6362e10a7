"""Coherence measurements: one sequence family over a list of evolution times."""

from __future__ import annotations

import numpy as np
from bluesky import plan_stubs as bps
from ophyd import Signal

from mracq.pulses import coherence_programs
from mracq.sim.nv import ideal_population

__all__ = ["coherence_scan", "prepare_nv", "sequence_label"]


def sequence_label(family: str, n: int | None) -> str:
    """Short name of a sequence: ``fid``, ``se``, ``cpmg-8``, ``xy8-2``."""
    f = family.lower()
    if f in ("fid", "ramsey"):
        return "fid"
    if f in ("hahn", "se", "echo"):
        return "se"
    return f"{f}-{n}"


def prepare_nv(mw, laser, *, frequency: float, power_dbm: float, laser_power: float = 0.02):
    """Set the microwave to ``frequency`` (Hz) at ``power_dbm`` (dBm) and switch on.

    Limits are checked by the devices before anything is sent.
    """
    yield from bps.mv(mw.frequency, frequency, mw.power, power_dbm, laser.power, laser_power)
    yield from bps.mv(mw.output, True, laser.output, True)


def coherence_scan(nv, family: str, times, *, n: int | None = None, shots: int = 1_000_000,
                   program_kw: dict | None = None, md: dict | None = None):
    """Measure the coherence C(t) of one sequence family over evolution times.

    Parameters
    ----------
    nv : mracq.devices.nv.PulseSequencer
        Sequencer + counter (simulated or real).
    family : str
        ``"fid"`` (Ramsey), ``"hahn"``/``"se"``, ``"cpmg"`` or ``"xy8"``.
    times : sequence of float
        Free evolution times in s (between the pi/2 centres), increasing.
    n : int, optional
        Pi pulses (CPMG-n) or XY8 repetitions (XY8-n).
    shots : int
        Repetitions per point.
    program_kw : dict, optional
        Extra keywords for :func:`mracq.pulses.coherence_programs` (pulse durations...).
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    dict
        ``uid``, ``sequence``, ``t`` (s), ``coherence``, ``sigma`` (standard error),
        ``population``, ``hardware_time`` (s of instrument time for the run).

    Notes
    -----
    All programs are built and validated against the sequencer's timing limits before
    the run opens, and stored in the start document (``programs``), so a stored run
    records exactly what was played. Each point is one event with ``t``, ``coherence``
    and ``coherence_error`` next to the sequencer's raw counts. Every point starts at a
    checkpoint: a pause and resume re-measures at most the interrupted point and stores
    each point once.
    """
    times = np.asarray(times, float)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a non-empty 1D array of finite values (s)")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times must increase strictly")
    programs = coherence_programs(family, times, n=n, **(program_kw or {}))
    for p in programs:
        p.validate(nv.timing_limits)
    nv.shots.check_value(shots)
    label = sequence_label(family, programs[0].metadata.get("n"))
    ideal = np.array([ideal_population(p) for p in programs])
    if np.any(np.abs(2 * ideal - 1) < 0.5):
        raise ValueError("the programs do not end in a population eigenstate without noise")

    t_sig = Signal(name="t", value=0.0)
    c_sig = Signal(name="coherence", value=0.0)
    e_sig = Signal(name="coherence_error", value=0.0)
    for s in (t_sig, c_sig, e_sig):
        s.kind = "hinted"
    _md = {
        "plan_name": "coherence_scan",
        "plan_args": {"family": family, "times": times.tolist(), "n": n, "shots": shots,
                      "program_kw": program_kw or {}},
        "sequence": label,
        "detectors": [nv.name],
        "num_points": len(times),
        "programs": [p.to_dict() for p in programs],
        "hints": {"dimensions": [(["t"], "primary")]},
        **(md or {}),
    }
    yield from bps.mv(nv.shots, shots)
    uid = yield from bps.open_run(md=_md)
    out = {k: [] for k in ("coherence", "sigma", "population", "duration")}
    for ti, prog, ide in zip(times, programs, ideal, strict=True):
        yield from bps.checkpoint()
        yield from bps.mv(nv.program, prog)
        yield from bps.trigger(nv, wait=True)
        p0 = yield from bps.rd(nv.value)
        err = yield from bps.rd(nv.error)
        dur = yield from bps.rd(nv.duration)
        c, ce = (2 * p0 - 1) / (2 * ide - 1), 2 * err / abs(2 * ide - 1)
        yield from bps.mv(t_sig, ti, c_sig, c, e_sig, ce)
        yield from bps.create("primary")
        for obj in (nv, t_sig, c_sig, e_sig):
            yield from bps.read(obj)
        yield from bps.save()
        for k, v in zip(out, (c, ce, p0, dur), strict=True):
            out[k].append(v)
    yield from bps.close_run()
    return {
        "uid": uid,
        "sequence": label,
        "t": times,
        "coherence": np.array(out["coherence"]),
        "sigma": np.array(out["sigma"]),
        "population": np.array(out["population"]),
        "hardware_time": float(np.sum(out["duration"])),
    }
