"""2D COSY acquisition: random-mask sampling and adaptive sampling with live DLMC.

Both plans measure (t1, t2) points of the COSY map with `mracq.pulses.cosy.cosy_program`
on the NV sequencer, reconstruct with `mracq.recon.dlmc.reconstruct` while they go, and
store every measured point (``primary``: ``i``, ``j``, ``t1``, ``t2`` and the sequencer's
``nv_value``, ``nv_error``, ``nv_counts``) plus one ``reconstruction`` event at the end
(the mask, the measured map with 0 where missing, the reconstruction and its 2D
spectrum). They return a dict with the same arrays and the simulated hardware time.

Adaptive strategy: `mracq.recon.cosy.design.PlaneWaveDesign` (V-optimal design under the
fitted plane-wave model, the default), `mracq.recon.cosy.design.CouplingDesign` (under the
cluster couplings fitted with the calibrated field) or
`mracq.recon.cosy.strategy.EnsembleDisagreement`.
"""

from __future__ import annotations

import logging

import numpy as np
from bluesky import plan_stubs as bps

from mracq.devices.soft import SoftSignal
from mracq.plans._stored import StoredEvents, point_done
from mracq.plans.calibration import calibrated_program_kw
from mracq.pulses.cosy import cosy_program
from mracq.recon.cosy.auto import PHYSICS_BUDGET_S
from mracq.recon.cosy.design import CouplingDesign, PlaneWaveDesign
from mracq.recon.cosy.dlmc import reconstruct
from mracq.recon.cosy.physics import (
    A_ZZ_MAX,
    FIELD_RANGE,
    physics_sequence,
    resonant_harmonic,
    resonant_tau,
)
from mracq.recon.cosy.strategy import EnsembleDisagreement
from mracq.recon.metrics import spectrum2d
from mracq.sim.cosy.model import T_GRID

log = logging.getLogger(__name__)

__all__ = ["cosy_adaptive", "cosy_random_mask"]


def _check_grid(t1, t2):
    t1 = T_GRID if t1 is None else np.asarray(t1, float)
    t2 = T_GRID if t2 is None else np.asarray(t2, float)
    for name, t in (("t1", t1), ("t2", t2)):
        if t.ndim != 1 or t.size < 2 or t.size > 64 or not np.all(np.isfinite(t)):
            raise ValueError(f"{name} must be 1D with 2..64 finite times (s)")
    return t1, t2


class _Recorder:
    """Soft signals for per-point coordinates and the final reconstruction."""

    def __init__(self):
        self.i = SoftSignal(name="i", value=0)
        self.j = SoftSignal(name="j", value=0)
        self.t1 = SoftSignal(name="t1", value=0.0)
        self.t2 = SoftSignal(name="t2", value=0.0)
        self.mask = SoftSignal(name="mask", value=np.zeros((1, 1), np.uint8))
        self.measured = SoftSignal(name="measured", value=np.zeros((1, 1)))
        self.recon = SoftSignal(name="reconstruction", value=np.zeros((1, 1)))
        self.spectrum = SoftSignal(name="spectrum", value=np.zeros((1, 1)))
        # how far to trust the map (method="auto": mracq.recon.cosy.auto.AutoReport)
        self.chosen = SoftSignal(name="recon_method", value="")
        self.val_rmse = SoftSignal(name="validation_rmse", value=float("nan"))
        self.map_error = SoftSignal(name="map_error", value=float("nan"))
        self.map_error_fraction = SoftSignal(name="map_error_fraction", value=float("nan"))
        self.errors: list[float] = []  # the sequencer's standard error per measured point

    def noise(self) -> float | None:
        """RMS standard error of the measured points (None: none reported)."""
        e = np.asarray(self.errors, float)
        e = e[np.isfinite(e)]
        return float(np.sqrt(np.mean(e**2))) if e.size else None


def _measure(nv, rec, prog, i, j, t1, t2, stored=None):
    """Plan: one point between checkpoints; (value, hardware time in s).

    With ``stored`` (a :class:`StoredEvents` of the open run) the value is the one stored
    (after a hard pause: the replayed point's); None in a dry run (a simulator answers no
    reading).
    """
    yield from bps.checkpoint()
    yield from bps.mv(nv.program, prog, rec.i, int(i), rec.j, int(j), rec.t1, float(t1),
                      rec.t2, float(t2))
    reading = yield from bps.trigger_and_read([nv, rec.i, rec.j, rec.t1, rec.t2])
    yield from point_done()
    key = f"{nv.name}_value"
    if not reading or key not in reading:  # simulators answer None ({} from trigger_and_read)
        return None, 0.0
    row = ({k: v["value"] for k, v in reading.items()} if stored is None
           else stored.take(reading))
    err = row.get(f"{nv.name}_error")
    if err is not None:
        rec.errors.append(float(err))
    return row.get(key), nv.duration.get()


def _open(md):
    """Plan: subscribe a :class:`StoredEvents`, open the run, checkpoint; (uid, stored)."""
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(md=md)
    yield from point_done()
    return uid, stored


def _close():
    yield from bps.close_run()
    yield from point_done()


def _finish(rec, values, mask, method, dry=False, physics=None):
    measured = np.where(mask, values, np.nan)
    report = None
    if dry:  # dry run: no data to reconstruct, the documents keep their shapes
        recon = spec = np.zeros(mask.shape)
        values = np.zeros(mask.shape)
    else:
        noise = rec.noise() if method in ("auto", "spectral") else None
        recon = reconstruct(measured, mask, method, noise=noise, **(physics or {}))
        report = getattr(recon, "report", None)
        recon = np.asarray(recon)
        spec = np.fft.fftshift(spectrum2d(recon))
    nan = float("nan")
    val = report.to_dict() if report is not None else None
    # stored with 0 where missing (the mask says which entries are data): a NaN would never
    # compare equal to itself and the soft signal's set would not finish
    yield from bps.mv(rec.mask, mask.astype(np.uint8), rec.measured, np.where(mask, values, 0.0),
                      rec.recon, recon, rec.spectrum, spec,
                      rec.chosen, val["method"] if val else method,
                      rec.val_rmse, val["validation_rmse"] if val else nan,
                      rec.map_error, val["error"] if val else nan,
                      rec.map_error_fraction, val["error_fraction"] if val else nan)
    yield from bps.trigger_and_read([rec.mask, rec.measured, rec.recon, rec.spectrum,
                                     rec.chosen, rec.val_rmse, rec.map_error,
                                     rec.map_error_fraction], name="reconstruction")
    if report is not None:
        log.info("COSY reconstruction: %s", report.summary())
    return measured, recon, spec, val


def _resumed_points(resume, t1, t2):
    """(i, j, value) of a stored run's points, after checking it used the same grid."""
    start = resume.get("start") or {}
    for name, t in (("t1", t1), ("t2", t2)):
        grid = start.get(f"{name}_grid")
        if grid is not None and not np.allclose(grid, t, rtol=1e-12, atol=0):
            raise ValueError(f"run {resume.get('uid', '?')[:8]} used another {name} grid: "
                             "resume with the same t1 and t2")
    table = resume.get("primary") or {}
    i, j, v = (np.asarray(table.get(k, []), float) for k in ("i", "j", "nv_value"))
    return [(int(a), int(b), float(c)) for a, b, c in zip(i, j, v, strict=True)
            if np.isfinite(c)]


def _physics(nv, field, t1, t2, program_kw, method, budget):
    """The field (T), pulse spacing (s) and pi pulses per block for the reconstruction's
    physics candidates, checked before the run: ``(reconstruct keywords or {}, start
    metadata)``. ``field`` None: the calibration's (``nv.calibration.field``), left out
    (logged) when outside the fit's range; given: a bad value raises."""
    example = cosy_program(t1[0], t2[0], **program_kw).metadata
    tau, n = float(example["tau"]), int(example["n"])
    source = "argument"
    if field is None:
        cal = getattr(nv, "calibration", None)
        field, source = (cal.field, "calibration") if cal is not None else (None, None)
        if field is not None and not FIELD_RANGE[0] <= field <= FIELD_RANGE[1]:
            log.warning("COSY: the calibration's field %.4g T is outside the coupling fit's "
                        "range %s T: no physics candidates", field, FIELD_RANGE)
            field = None
    md = {"field": None if field is None else float(field), "field_source": source,
          "tau": tau, "n_pulses": n}
    if field is None:
        return {}, md
    if resonant_harmonic(field, tau, n) is None:
        log.warning("COSY: tau %.4g s is off the 13C resonance at B = %.4f T: no odd harmonic "
                    "of the decoupling block reaches a 13C nucleus with |A_zz| <= %.0f kHz, so "
                    "the map will hold no 13C signal; the 7th harmonic at this field is tau = "
                    "%.4g s (program_kw={'tau': ...})", tau, field, A_ZZ_MAX,
                    resonant_tau(field))
    kw = {"field": field, "tau": tau, "t1": t1, "t2": t2, "n_pulses": n,
          "physics_budget_s": PHYSICS_BUDGET_S if budget is None else budget}
    physics_sequence(*(kw[k] for k in ("field", "tau", "t1", "t2", "n_pulses")),
                     (t1.size, t2.size), kw["physics_budget_s"])
    return (kw if method == "auto" else {}), md


def _md(name, args, nv, t1, t2, program_kw, md):
    example = cosy_program(t1[0], t2[0], **program_kw)
    return {
        "plan_name": name,
        "plan_args": args,
        "detectors": [nv.name],
        "t1_grid": t1.tolist(),
        "t2_grid": t2.tolist(),
        "program_generator": "mracq.pulses.cosy.cosy_program",
        "program_kw": program_kw,
        "program_example": example.to_dict(),
        "hints": {"dimensions": [(["t1", "t2"], "primary")]},
        **(md or {}),
    }


def cosy_random_mask(nv, coverage: float = 0.1, *, t1=None, t2=None, shots: int = 150_000,
                     every: int = 50, method: str = "auto", rng=None, live=None,
                     program_kw: dict | None = None, md: dict | None = None,
                     field: float | None = None, physics_budget_s: float | None = None):
    """Measure a random subset of the COSY map and reconstruct it live.

    Parameters
    ----------
    nv : mracq.devices.nv.PulseSequencer
        Sequencer + counter with a COSY physics model (simulated) or real hardware.
    coverage : float
        Fraction of the t1 x t2 grid to measure, in (0, 1].
    t1, t2 : arrays, optional
        Evolution times in s (default the experiment's 50-point grid, 4 us to 886 us).
    shots : int
        Repetitions per point.
    every : int
        Reconstruct after every ``every`` points (live image).
    method : str
        Reconstruction method (`mracq.recon.cosy.dlmc.reconstruct`); the default
        ``"auto"`` picks one by cross-validation and stores its validation error
        (``recon_method``, ``validation_rmse``, ``map_error``, ``map_error_fraction`` in
        the ``reconstruction`` stream).
    rng : numpy.random.Generator, optional
        Draws the mask and the measuring order.
    live : callable, optional
        ``live(reconstruction, spectrum, n_points)`` after each live reconstruction.
    program_kw : dict, optional
        Extra keywords of `cosy_program`.
    md : dict, optional
        Extra start-document metadata.
    field : float, optional
        Field along the NV axis in T for the final ``"auto"`` reconstruction's physics
        candidates (`mracq.recon.cosy.physics`); default the calibration's
        (``nv.calibration.field``, after `mracq calibrate`). Stored in the start document
        as ``field`` (with ``field_source``), beside the sequence's ``tau`` (s) and
        ``n_pulses``; no field: no physics candidates.
    physics_budget_s : float, optional
        Wall time (s) of the physics candidates' held-out searches (default
        `mracq.recon.cosy.auto.PHYSICS_BUDGET_S`, minutes; 0: none). Live reconstructions
        never run them.

    Returns
    -------
    dict
        ``uid``, ``mask``, ``measured`` (NaN where missing), ``reconstruction``,
        ``spectrum`` (|2D FFT|, shifted), ``hardware_time`` (s), ``n_points``,
        ``validation`` (`mracq.recon.cosy.auto.AutoReport.to_dict`, None for a fixed
        method).
    """
    t1, t2 = _check_grid(t1, t2)
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    rng = rng if rng is not None else np.random.default_rng()
    program_kw = calibrated_program_kw(nv, program_kw)
    physics, phys_md = _physics(nv, field, t1, t2, program_kw, method, physics_budget_s)
    shape = (t1.size, t2.size)
    n = max(1, int(round(coverage * t1.size * t2.size)))
    order = rng.choice(t1.size * t2.size, n, replace=False)
    points = [np.unravel_index(k, shape) for k in order]
    programs = [cosy_program(t1[i], t2[j], **program_kw).validate(nv.timing_limits)
                for i, j in points]
    nv.shots.check_value(shots)
    rec = _Recorder()
    args = {"coverage": coverage, "shots": shots, "every": every, "method": method}
    _m = _md("cosy_random_mask", args, nv, t1, t2, program_kw, {**phys_md, **(md or {})})
    _m["num_points"] = n
    _m["hardware_time_estimate"] = nv.estimate_time(programs, shots)
    values = np.full(shape, np.nan)
    mask = np.zeros(shape, bool)
    hw = 0.0
    yield from bps.mv(nv.shots, shots)
    uid, stored = yield from _open(_m)
    dry = False
    for k, ((i, j), prog) in enumerate(zip(points, programs, strict=True), start=1):
        v, dt = yield from _measure(nv, rec, prog, i, j, t1[i], t2[j], stored)
        dry = dry or v is None
        values[i, j] = np.nan if v is None else v
        mask[i, j] = True
        hw += dt
        if k % every == 0 and k < n and live is not None and not dry:
            r = reconstruct(np.where(mask, values, np.nan), mask, method)
            live(r, np.fft.fftshift(spectrum2d(r)), k)
    if dry:
        log.warning("cosy_random_mask: no readings (dry run): nothing reconstructed")
    measured, recon, spec, val = yield from _finish(rec, values, mask, method, dry, physics)
    if live is not None and not dry:
        live(recon, spec, n)
    yield from _close()
    return {"uid": uid, "mask": mask, "measured": measured, "reconstruction": recon,
            "spectrum": spec, "hardware_time": hw, "n_points": n, "validation": val}


def cosy_adaptive(nv, *, t1=None, t2=None, shots: int = 150_000, initial: float = 0.04,
                  batch: int = 25, max_coverage: float = 0.4, tol: float = 0.02,
                  max_hardware_time: float | None = None, members: int = 4,
                  method: str = "auto", strategy: str = "design", rng=None, live=None,
                  program_kw: dict | None = None,
                  md: dict | None = None, resume: dict | None = None,
                  field: float | None = None, physics_budget_s: float | None = None):
    """Grow the COSY mask in batches where the map is least known (module docstring).

    Parameters
    ----------
    nv : mracq.devices.nv.PulseSequencer
        Sequencer + counter.
    t1, t2 : arrays, optional
        Evolution times in s (default: the experiment's grid).
    shots : int
        Repetitions per point.
    initial : float
        Coverage of the random starting mask.
    batch : int
        Points per batch.
    max_coverage : float
        Stop when this fraction of the grid is measured (budget).
    tol : float
        Stop when the reconstruction changes by less than ``tol`` (RMS change over its
        peak-to-peak) between batches.
    max_hardware_time : float, optional
        Stop when this much hardware time (s) is spent.
    members : int
        Ensemble size of ``strategy="ensemble"``.
    strategy : {"design", "couplings", "ensemble"}
        Next points by V-optimal design under the fitted plane-wave model
        (`PlaneWaveDesign`); under the couplings auto fits with the field known, every
        batch reconstructed with the physics candidates (`CouplingDesign`: needs the field,
        from the calibration or ``field``, and ``method="auto"``; each batch then costs the
        coupling search's minutes); or by ensemble disagreement (`EnsembleDisagreement`).
    method, rng, live, program_kw, md, field, physics_budget_s
        As for `cosy_random_mask` (``live`` is called after each batch; the physics
        candidates only in the final reconstruction).
    resume : dict, optional
        Go on from a stored run (one cut short by a crash, an abort, ...):
        ``{"uid": str, "start": start document, "primary": {"i", "j", "nv_value": arrays}}``
        as :func:`mracq.storage.resume_state` gives.  Its points seed the strategy and are
        not measured again; the new run stores only new points and records
        ``resumed_from`` (the uid); the result covers all points (``hardware_time``: the
        new run's).

    Returns
    -------
    dict
        As `cosy_random_mask`, plus ``changes`` (per batch), ``stop_reason``.
    """
    t1, t2 = _check_grid(t1, t2)
    if not 0 < initial < max_coverage <= 1:
        raise ValueError(f"need 0 < initial < max_coverage <= 1, got {initial}, {max_coverage}")
    if batch < 1 or not tol > 0:
        raise ValueError(f"batch must be >= 1 and tol > 0, got {batch}, {tol}")
    rng = rng if rng is not None else np.random.default_rng()
    program_kw = calibrated_program_kw(nv, program_kw)
    physics, phys_md = _physics(nv, field, t1, t2, program_kw, method, physics_budget_s)
    shape = (t1.size, t2.size)
    budget = int(round(max_coverage * t1.size * t2.size))
    if strategy not in ("design", "couplings", "ensemble"):
        raise ValueError(f"strategy must be 'design', 'couplings' or 'ensemble', got "
                         f"{strategy!r}")
    kind = strategy
    if kind == "couplings":
        if not physics:
            raise ValueError("strategy='couplings' needs method='auto' and the field: run "
                             "mracq calibrate first or pass field= (T)")
        strategy = CouplingDesign(shape, rng, field=physics["field"], tau=physics["tau"],
                                  t1=t1, t2=t2, n_pulses=physics["n_pulses"],
                                  physics_budget_s=physics["physics_budget_s"],
                                  budget=budget, tol=tol)
    elif kind == "design":
        strategy = PlaneWaveDesign(shape, rng, method=method, budget=budget, tol=tol)
    else:
        strategy = EnsembleDisagreement(shape, rng, members=members, method=method,
                                        budget=budget, tol=tol)
    nv.shots.check_value(shots)
    rec = _Recorder()
    args = {"shots": shots, "initial": initial, "batch": batch, "max_coverage": max_coverage,
            "tol": tol, "max_hardware_time": max_hardware_time, "members": members,
            "method": method, "strategy": kind}
    _m = _md("cosy_adaptive", args, nv, t1, t2, program_kw, {**phys_md, **(md or {})})
    _m["criterion"] = (
        "V-optimal design: largest drop of the integrated posterior variance of the "
        "linearized plane-wave model fitted to the measured points" if kind == "design" else
        "V-optimal design under the cluster couplings auto fitted with the field (the "
        "plane-wave model while auto chooses another candidate)" if kind == "couplings" else
        f"{members} {method} reconstructions from random 80% subsets of the measured "
        "points; next points: largest ensemble std")
    hw = 0.0
    stop = "budget"
    if resume is not None:
        got = _resumed_points(resume, t1, t2)
        if got:
            strategy.ingest(got)
        _m["resumed_from"] = resume["uid"]
        _m["resumed_points"] = len(got)
    if not strategy.mask.any():
        todo = strategy.suggest(max(1, int(round(initial * t1.size * t2.size))))
    else:  # resumed: go on as after a batch
        todo = [] if strategy.should_stop()[0] else strategy.suggest(batch)
    yield from bps.mv(nv.shots, shots)
    uid, stored = yield from _open(_m)
    while todo:
        got = []
        for s in todo:
            i, j = s["i"], s["j"]
            prog = cosy_program(t1[i], t2[j], **program_kw).validate(nv.timing_limits)
            v, dt = yield from _measure(nv, rec, prog, i, j, t1[i], t2[j], stored)
            got.append({"_id": s["_id"], "value": v})
            hw += dt
        if any(g["value"] is None for g in got):
            stop = "dry run"
            log.warning("cosy_adaptive: no readings (dry run): the next points depend on the "
                        "data; stopping after the random starting set")
            for s in todo:
                strategy.mask[s["i"], s["j"]] = True
            break
        strategy.ingest(got)
        cur = strategy.reconstruction
        if live is not None:
            live(cur, np.fft.fftshift(spectrum2d(cur)), int(strategy.mask.sum()))
        if strategy.changes:
            log.info("cosy_adaptive: %d points, change %.4f", strategy.mask.sum(),
                     strategy.changes[-1])
        done, why = strategy.should_stop()
        if done:
            stop = why.split(":")[0]
            break
        if max_hardware_time is not None and hw >= max_hardware_time:
            stop = "hardware_time"
            break
        todo = strategy.suggest(batch)
    measured, recon, spec, val = yield from _finish(rec, strategy.values, strategy.mask,
                                                    method, stop == "dry run", physics)
    yield from _close()
    return {"uid": uid, "mask": strategy.mask.copy(), "measured": measured,
            "reconstruction": recon, "spectrum": spec, "hardware_time": hw,
            "n_points": int(strategy.mask.sum()), "changes": list(strategy.changes),
            "stop_reason": stop, "validation": val}
