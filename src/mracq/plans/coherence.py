"""Coherence measurements: one sequence family over a list of evolution times."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
from bluesky import plan_stubs as bps
from bluesky.utils import Msg

from mracq.devices.nv import CoherenceDetector
from mracq.plans._stored import StoredEvents
from mracq.plans.calibration import calibrated_program_kw
from mracq.pulses import coherence_programs

__all__ = ["coherence_scan", "pack_programs", "prepare_nv", "sequence_label", "stored_programs"]


PACKED = "zlib+base64:"


def pack_programs(programs) -> str:
    """Exact JSON of the programs, zlib-compressed and base64-encoded.

    A scan's programs differ only in their timing, so they compress ~30x; a 100-point
    run's start document stays small, which keeps storing it cheap (the Tiled writer
    diffs and rewrites run metadata at the stop document).
    """
    text = json.dumps([p.to_dict() for p in programs], separators=(",", ":"))
    return PACKED + base64.b64encode(zlib.compress(text.encode(), 6)).decode()


def stored_programs(start: dict) -> list:
    """The pulse programs a run played, from its start document (exact round trip)."""
    from mracq.pulses import PulseProgram

    raw = start.get("programs", [])
    if isinstance(raw, str):
        if not raw.startswith(PACKED):
            raise ValueError("unknown program encoding in the start document")
        raw = json.loads(zlib.decompress(base64.b64decode(raw[len(PACKED):])))
    return [PulseProgram.from_dict(json.loads(p) if isinstance(p, str) else p) for p in raw]


def _measure_point(det, program):
    """checkpoint; set the program; trigger; read one ``primary`` event; checkpoint.

    The messages of ``bps.checkpoint``, ``bps.mv`` and ``bps.trigger_and_read``, yielded
    directly: bluesky wraps each stub call in a ``Plan`` that formats the whole call
    stack, which at ~8 stub calls per point cost more than the point itself.
    """
    yield Msg("checkpoint")
    yield Msg("set", det.program, program, group="mracq-set")
    yield Msg("wait", None, group="mracq-set")
    yield Msg("trigger", det, group="mracq-trigger")
    yield Msg("wait", None, group="mracq-trigger")
    yield Msg("create", None, name="primary")
    reading = yield Msg("read", det)
    yield Msg("save")
    yield Msg("checkpoint")
    return reading


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

    Every value is checked against the devices' limits before the first one is sent.
    """
    for sig, v in ((mw.frequency, frequency), (mw.power, power_dbm),
                   (laser.power, laser_power), (mw.output, True), (laser.output, True)):
        sig.check_value(v)
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
        Extra keywords for :func:`mracq.pulses.coherence_programs` (pulse durations...);
        the pi and pi/2 durations not given come from ``nv.calibration`` when the session
        holds one (:mod:`mracq.plans.calibration`).
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    dict
        ``uid``, ``sequence``, ``t`` (s), ``coherence``, ``sigma`` (standard error),
        ``population``, ``hardware_time`` (s of instrument time for the run),
        ``dry_run`` (True when a simulator answered no readings: values are NaN).

    Notes
    -----
    All programs are built and validated against the sequencer's timing limits before
    the run opens, and stored in the start document (``programs``: the exact JSON,
    compressed; :func:`stored_programs` decodes it), so a stored run records exactly
    what was played. Each point is one event with ``t``, ``coherence``
    and ``coherence_error`` next to the sequencer's raw counts. Every point starts at a
    checkpoint: a pause and resume re-measures at most the interrupted point and stores
    each point once. A ``primary`` event holds ``t``, ``coherence``,
    ``coherence_error`` and the raw photon counts ``signal_counts``, ``bright_counts``,
    ``dark_counts`` (the normalized population is ``(S - D) / (B - D)``). Scalars only,
    and the programs compressed in the start document, keep the per-point overhead near
    a plain ``count`` (benchmarks/overhead.py).
    """
    times = np.asarray(times, float)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a non-empty 1D array of finite values (s)")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times must increase strictly")
    program_kw = calibrated_program_kw(nv, program_kw)
    programs = coherence_programs(family, times, n=n, **program_kw)
    for p in programs:
        p.validate(nv.timing_limits)
    nv.shots.check_value(shots)
    label = sequence_label(family, programs[0].metadata.get("n"))
    det = CoherenceDetector(nv)
    _md = {
        "plan_name": "coherence_scan",
        "plan_args": {"family": family, "times": times.tolist(), "n": n, "shots": shots,
                      "program_kw": program_kw},
        "sequence": label,
        "detectors": [nv.name],
        "num_points": len(times),
        "hardware_time_estimate": nv.estimate_time(programs, shots),
        "programs": pack_programs(programs),
        "hints": {"dimensions": [(["t"], "primary")]},
        **(md or {}),
    }
    yield from bps.mv(nv.shots, shots)
    out = {"coherence": [], "sigma": [], "duration": [], "dry_run": False}

    stored = StoredEvents()

    def points():
        for prog in programs:
            reading = yield from _measure_point(det, prog)
            if not reading:  # a simulator (check_limits, summarize_plan): no data
                out["dry_run"] = True
                out["coherence"].append(float("nan"))
                out["sigma"].append(float("nan"))
            else:
                row = stored.take(reading)  # what was stored (after a hard pause: the replay)
                out["coherence"].append(row.get("coherence"))
                out["sigma"].append(row.get("coherence_error"))
            out["duration"].append(nv.duration.get())  # local bookkeeping, not stored

    yield Msg("subscribe", None, stored, "all")
    uid = stored.run_uid = yield from bps.open_run(md=_md)
    yield Msg("checkpoint")
    yield from points()
    yield from bps.close_run()
    yield Msg("checkpoint")
    return {
        "uid": uid,
        "sequence": label,
        "t": times,
        "coherence": np.array(out["coherence"]),
        "sigma": np.array(out["sigma"]),
        "hardware_time": float(np.sum(out["duration"])),
        "dry_run": out["dry_run"],
    }
