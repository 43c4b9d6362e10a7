"""MRFM scan plans: XYZ, multislice, compressed-sensing multislice and an adaptive scan.

Every plan checks all its scan points against the scanner's interlock, soft limits and
maximum step, and all pulses, the bandwidth and the integration time against their limits,
before it emits a single message (so a refused plan moves nothing; the error names the
point). The scanner moves axis by axis (``scanner_x``, ``scanner_y``, then ``scanner_z`` when
the gap shrinks, first when it grows), so ``bluesky.simulators.plot_raster_path(plan,
"scanner_x", "scanner_y")`` draws the path; in a dry run (``check_limits``,
``summarize_plan``: no readings) the adaptive scan stops after its random first batch.
Each run records ``plan_name``, ``plan_args``, the geometry, the pulse list and the sampling
mask in the start document, one event per scan position in ``primary`` (scanner position,
in/out-of-phase variances, spin signal) and the assembled data cube with its mask in a
``cube`` stream. Plans return a :class:`ScanResult`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bluesky.plan_stubs as bps
import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.utils import LimitError

from mracq.plans._stored import StoredEvents, point_done
from mracq.recon.mrfm.strategy import SignalWeightedStrategy
from mracq.sim.mrfm.field import SEED_F0, SEED_F0_XYZ, SEED_F_BW

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """Data of one scan: cube (nx, ny, n_channels) in N^2 (NaN where not sampled), mask
    (nx, ny) of sampled positions, hardware time (s) and the run uid."""

    data: np.ndarray
    mask: np.ndarray
    hardware_time: float
    uid: str | None


class _Cube(Device):
    data = Cpt(Signal, value=[], kind="hinted")
    mask = Cpt(Signal, value=[], kind="hinted")

    def describe(self):
        d = super().describe()
        for sig in (self.data, self.mask):
            arr = np.asarray(sig.get())
            d[sig.name].update(dtype="array", shape=list(arr.shape))
        return d


def check_scan(scanner, rf, points, pulses, t_m=None, readout=None, f_bw=None,
               ordered=True):
    """Check every point (interlock, soft limits, steps), pulse, bandwidth and integration
    time before any motion.

    ``ordered``: the points are visited in this order from the scanner's position (each
    step checked); else in any order (the extent of the points and the way to the nearest
    one are checked against the maximum step).
    """
    pts = np.asarray([tuple(map(float, p)) for p in points], float).reshape(-1, 3)
    for p in pts:
        scanner.check_value(tuple(p))
    if pts.size:
        step = scanner.max_step.get()
        here = np.asarray(scanner.position, float)
        if ordered:
            path = np.vstack([here, pts])
            jumps = np.abs(np.diff(path, axis=0))
        else:
            near = pts[np.argmin(np.abs(pts - here).max(axis=1))]
            jumps = np.vstack([np.abs(near - here), np.ptp(pts, axis=0)])
        k, a = np.unravel_index(np.argmax(jumps), jumps.shape)
        if jumps[k, a] > step:
            raise LimitError(f"scanner {'xyz'[a]}: a step of {jumps[k, a]:g} m in this scan "
                             f"exceeds max_step {step:g} m")
    rf.pulse_list.check_value(list(pulses))
    if f_bw is not None:
        rf.bandwidth.check_value(f_bw)
    if t_m is not None and readout is not None:
        readout.integration_time.check_value(t_m)


def _move(scanner, point, last):
    """Move axis by axis to ``point`` (m): z first when the gap grows, last when it shrinks
    (every intermediate point keeps the standoff); x and y always, for raster plots."""
    x, y, z = (float(v) for v in point)
    z_change = last is None or z != last[2]
    up = last is not None and z > last[2]
    if z_change and up:
        yield from bps.mv(scanner.z, z)
    yield from bps.mv(scanner.x, x, scanner.y, y)
    if z_change and not up:
        yield from bps.mv(scanner.z, z)
    return (x, y, z)


def _spin_signal(reading, readout):
    """The spin signal of a reading (None in a dry run: simulators answer no reading, which
    ``trigger_and_read`` turns into {})."""
    if not reading or readout.spin_signal.name not in reading:
        return None
    return np.asarray(reading[readout.spin_signal.name]["value"], float)


def _clock(readout):
    backend = getattr(readout, "backend", None)
    return getattr(backend, "clock", None)


def _store_cube_and_close(cube, mask):
    """Write the data cube (NaN stored as 0; the mask says what was measured) and the mask
    as one event of the ``cube`` stream, then close the run."""
    store = _Cube(name="cube")
    store.data.put(np.nan_to_num(np.asarray(cube, float), nan=0.0).tolist())
    store.mask.put(np.asarray(mask).astype(int).tolist())
    yield from bps.create("cube")
    yield from bps.read(store)
    yield from bps.save()
    yield from bps.close_run()
    yield from point_done()


def _measure_at(scanner, readout, stored, position, last):
    """Plan: move, trigger and read one position; (stored spin signal per pulse, position).

    Checkpoint before and after: a deferred pause stops between points, a hard pause
    replays at most this point, and the value returned is the one stored (None in a dry
    run: simulators answer no reading).
    """
    yield from bps.checkpoint()
    last = yield from _move(scanner, position, last)
    reading = yield from bps.trigger_and_read([readout, scanner])
    yield from point_done()
    if _spin_signal(reading, readout) is None:
        return None, last
    return np.asarray(stored.take(reading).get(readout.spin_signal.name), float), last


def _grid_scan(scanner, rf, readout, x, y, heights, pulses, f_bw, t_m, mask, md, plan_name,
               plan_args):
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    heights = np.atleast_1d(np.asarray(heights, float))
    mask = np.ones((x.size, y.size), bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != (x.size, y.size):
        raise ValueError(f"mask shape {mask.shape} does not match ({x.size}, {y.size})")
    idx = [(i, j, k) for k in range(heights.size) for i in range(x.size) for j in range(y.size)
           if mask[i, j]]
    points = [(x[i], y[j], heights[k]) for i, j, k in idx]
    check_scan(scanner, rf, points, pulses, t_m, readout, f_bw)
    n_ch = len(pulses) if heights.size == 1 else heights.size
    meta = {
        "plan_name": plan_name,
        "plan_args": plan_args,
        "protocol": "multislice" if heights.size == 1 else "xyz",
        "pulses": [{"f0": float(f), "f_bw": float(f_bw)} for f in pulses],
        "geometry": {"x": x.tolist(), "y": y.tolist(), "z": heights.tolist(),
                     "t_m": float(t_m), "shape": [int(x.size), int(y.size), int(n_ch)],
                     "resonator": getattr(getattr(readout, "backend", None), "geometry", None)},
        "mask": mask.astype(int).tolist(),
        "hints": {"dimensions": [(["scanner_x"], "primary"), (["scanner_y"], "primary")]},
    }
    meta.update(md or {})
    clock = _clock(readout)
    t0 = clock.now if clock is not None else 0.0
    yield from bps.mv(readout.integration_time, t_m, rf.bandwidth, f_bw)
    yield from bps.mv(rf.pulse_list, [float(f) for f in pulses])
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(meta)
    yield from point_done()
    cube = np.full((x.size, y.size, n_ch), np.nan)
    last = None
    for i, j, k in idx:
        val, last = yield from _measure_at(scanner, readout, stored, (x[i], y[j], heights[k]),
                                           last)
        if val is None:
            continue
        if heights.size == 1:
            cube[i, j, :] = val
        else:
            cube[i, j, k] = val[0]
    yield from _store_cube_and_close(cube, mask)
    hw = (clock.now - t0) if clock is not None else float("nan")
    return ScanResult(cube, mask, hw, uid)


def multislice_scan(scanner, rf, readout, x, y, z=15e-9, f0_list=None, f_bw=SEED_F_BW,
                    t_m=1.0, mask=None, md=None, *, _plan_name="multislice_scan"):
    """Multislice scan: one xy plane at gap ``z``, all pulses of ``f0_list`` per position.

    Parameters
    ----------
    scanner, rf, readout : devices
        From :func:`mracq.devices.mrfm.build_mrfm_devices`.
    x, y : array
        Scan positions (m).
    z : float
        Gap between sample bottom and magnet surface (m), >= the minimum standoff.
    f0_list : array, optional
        Centre frequencies (Hz); default the seed's 46 of Table 2.
    f_bw : float
        Inversion half-bandwidth (Hz).
    t_m : float
        Integration time per pulse and position (s).
    mask : array of bool (nx, ny), optional
        Positions to measure (default all).
    md : dict, optional
        Extra start-document metadata.
    """
    f0 = list(SEED_F0 if f0_list is None else f0_list)
    args = {"x": list(map(float, x)), "y": list(map(float, y)), "z": float(z),
            "f0_list": [float(f) for f in f0], "f_bw": float(f_bw), "t_m": float(t_m)}
    if _plan_name != "multislice_scan":  # called by cs_multislice_scan
        args = {**args, **(md or {}).get("plan_args", {})}
        md = {k: v for k, v in (md or {}).items() if k != "plan_args"}
    return (yield from _grid_scan(scanner, rf, readout, x, y, [z], f0, f_bw, t_m, mask, md,
                                  _plan_name, args))


def xyz_scan(scanner, rf, readout, x, y, z, f0=SEED_F0_XYZ, f_bw=SEED_F_BW, t_m=1.0, md=None):
    """XYZ scan: one pulse (default 133.9 MHz) on a 3D grid of positions (m)."""
    args = {"x": list(map(float, x)), "y": list(map(float, y)),
            "z": list(map(float, np.atleast_1d(z))), "f0": float(f0), "f_bw": float(f_bw),
            "t_m": float(t_m)}
    return (yield from _grid_scan(scanner, rf, readout, x, y, z, [f0], f_bw, t_m, None, md,
                                  "xyz_scan", args))


def cs_multislice_scan(scanner, rf, readout, x, y, p, rng, z=15e-9, f0_list=None,
                       f_bw=SEED_F_BW, t_m=1.0, md=None):
    """Compressed-sensing multislice scan: each xy position kept with probability ``p``.

    ``rng`` (numpy Generator) draws the mask, which is stored in the run (start document
    and ``cube`` stream). Reconstruct with ``mracq.recon.mrfm.reconstruct(..., mask=mask)``.
    """
    if not 0 < p <= 1:
        raise ValueError(f"sampling ratio p must be in (0, 1], got {p!r}")
    mask = rng.random((len(x), len(y))) < p
    meta = {"sampling_ratio": float(p), "plan_args": {"p": float(p)}}
    meta.update(md or {})
    return (yield from multislice_scan(scanner, rf, readout, x, y, z, f0_list, f_bw, t_m, mask,
                                       meta, _plan_name="cs_multislice_scan"))


def _resumed_positions(resume, coords, n_pulses):
    """[((i, j), spin signal per pulse)] of a stored run, on this plan's grid."""
    geom = (resume.get("start") or {}).get("geometry") or {}
    if geom.get("x") is not None and not np.allclose(geom["x"], coords, rtol=0, atol=1e-15):
        raise ValueError(f"run {resume.get('uid', '?')[:8]} scanned another grid: resume "
                         "with the same setup")
    table = resume.get("primary") or {}
    xs = np.asarray(table.get("scanner_x", []), float)
    ys = np.asarray(table.get("scanner_y", []), float)
    sig = np.asarray(table.get("readout_spin_signal", np.empty((0, n_pulses))), float)
    out = {}
    for x, y, v in zip(xs, ys, sig.reshape(len(xs), -1), strict=True):
        i, j = int(np.abs(coords - x).argmin()), int(np.abs(coords - y).argmin())
        out.setdefault((i, j), v)
    return list(out.items())


def adaptive_multislice_scan(scanner, rf, readout, setup, t_m=1.0, budget=0.5, batch=0.125,
                             target=None, strategy=None, rng=None, n_iter=20, md=None,
                             resume=None):
    """Adaptive multislice scan: measure a batch, reconstruct, choose the next batch.

    The grid and pulses are those of ``setup`` (an :class:`~mracq.sim.mrfm.MRFMSetup`, the
    scanner at gap ``setup.z0``, positions ``i * voxel_size``). Every batch comes from
    ``strategy`` (default :class:`SignalWeightedStrategy` with this setup, ``t_m``, budget,
    target and ``n_iter``: the first batch random, later ones weighted by the
    reconstruction it makes after each batch); any object with bluesky-adaptive's
    optimizer protocol (:mod:`mracq.recon.protocol`) taking outcomes
    ``{"_id", "spin_signal"}`` and a ``sampled`` mask will do. Stops when the measured
    fraction reaches ``budget``, when the reconstruction changes by less than ``target``
    (relative L2) between batches, or when ``strategy.should_stop()`` says so. In a dry run
    (no readings) it stops after the first batch with a warning.

    ``resume`` (``{"uid", "start", "primary"}`` of a stored run of this plan, as
    :func:`mracq.storage.resume_state` gives) goes on from that run: its positions seed
    the strategy and are not measured again, the new run stores only new positions and
    records ``resumed_from``; the result covers all positions.

    Returns
    -------
    ScanResult
        Data (NaN where not measured) and the final mask; reconstruct with
        ``reconstruct(np.nan_to_num(data), setup, mask=mask)``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    n = setup.n_xy
    coords = np.fft.fftfreq(n, 1.0 / n) * setup.voxel_size
    pulses = [float(f) for f in setup.f0]
    points = [(coords[i], coords[j], setup.z0) for i in range(n) for j in range(n)]
    check_scan(scanner, rf, points, pulses, t_m, readout, setup.f_bw, ordered=False)
    n_batch = max(1, int(round(batch * n * n)))
    n_budget = int(round(budget * n * n))
    strategy = strategy or SignalWeightedStrategy((n, n), rng, setup=setup, t_m=t_m,
                                                  budget=n_budget, target=target,
                                                  n_iter=n_iter)
    meta = {"plan_name": "adaptive_multislice_scan",
            "plan_args": {"t_m": float(t_m), "budget": float(budget), "batch": float(batch),
                          "target": target, "n_iter": int(n_iter)},
            "protocol": "multislice",
            "pulses": [{"f0": f, "f_bw": float(setup.f_bw)} for f in pulses],
            "geometry": {"x": coords.tolist(), "y": coords.tolist(), "z": [float(setup.z0)],
                         "t_m": float(t_m), "shape": [n, n, len(pulses)],
                         "resonator": setup.geometry},
            "criterion": getattr(strategy, "criterion", type(strategy).__name__)}
    meta.update(md or {})
    cube = np.zeros(setup.data_shape)
    if resume is not None:
        old = _resumed_positions(resume, coords, len(pulses))
        if old:  # one batch of outcomes: the strategy reconstructs and re-weights
            for (i, j), v in old:
                cube[i, j] = v
            strategy.ingest([{"i": i, "j": j, "spin_signal": v} for (i, j), v in old])
        meta["resumed_from"] = resume["uid"]
        meta["resumed_points"] = len(old)
    clock = _clock(readout)
    t0 = clock.now if clock is not None else 0.0
    yield from bps.mv(readout.integration_time, t_m, rf.bandwidth, setup.f_bw)
    yield from bps.mv(rf.pulse_list, pulses)
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(meta)
    yield from point_done()
    last = None
    while strategy.sampled.sum() < n_budget:
        todo = strategy.suggest(min(n_batch, n_budget - int(strategy.sampled.sum())))
        if not todo:
            break
        got = []
        for s in todo:
            i, j = s["i"], s["j"]
            val, last = yield from _measure_at(scanner, readout, stored,
                                               (coords[i], coords[j], setup.z0), last)
            got.append({"_id": s["_id"], "spin_signal": val})
            if val is not None:
                cube[i, j] = val
        if any(g["spin_signal"] is None for g in got):
            log.warning("adaptive_multislice_scan: no readings (dry run): the next positions "
                        "depend on the data; stopping after the random first batch")
            strategy.ingest([{"_id": g["_id"]} for g in got])
            break
        strategy.ingest(got)
        if strategy.should_stop()[0]:
            break
    mask = strategy.sampled.copy()
    yield from _store_cube_and_close(cube, mask)
    hw = (clock.now - t0) if clock is not None else float("nan")
    data = np.where(mask[:, :, None], cube, np.nan)
    return ScanResult(data, mask, hw, uid)


def adaptive_time_multislice_scan(scanner, rf, readout, setup, t_ref=60.0, pilot_time=5.0,
                                  round_fraction=0.1, budget_fraction=1.0, tol=0.01,
                                  t_step=5.0, strategy=None, gamma_rel=0.01, n_iter=3000,
                                  md=None):
    """Adaptive multislice scan in hardware time (:class:`HardwareTimeStrategy`).

    Each round the strategy says how many seconds each (position, pulse) gets: a pilot round
    of ``pilot_time`` on every point, then rounds of ``round_fraction`` of the uniform scan's
    time (every point at ``t_ref``) water-filled towards the predicted detectability of the
    current reconstruction (time-weighted joint CS + ADMM, run to a relative change of
    1e-4). A visit measures the chosen pulses of one position with one integration time;
    revisits are averaged, time-weighted. Stops when the reconstruction changes by less than
    ``tol`` between rounds or after ``budget_fraction`` of the uniform scan's time.

    Returns
    -------
    ScanResult
        The time-weighted mean cube (NaN where never measured), the measured positions and
        the hardware time; ``strategy.time`` holds the seconds spent per point (pass your
        own ``strategy`` to keep it). Reconstruct with
        ``reconstruct(np.nan_to_num(data), setup, mask=strategy.weights(), ...)``.
    """
    from mracq.recon.mrfm.pipeline import reconstruct
    from mracq.recon.mrfm.strategy import HardwareTimeStrategy

    n = setup.n_xy
    coords = np.fft.fftfreq(n, 1.0 / n) * setup.voxel_size
    pulses = np.array([float(f) for f in setup.f0])
    t_uniform = t_ref * n * n * len(pulses)
    for name, v in (("round_fraction", round_fraction), ("budget_fraction", budget_fraction)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be positive, got {v!r}")
    strategy = strategy or HardwareTimeStrategy(
        setup.data_shape, t_ref, pilot_time, round_fraction * t_uniform,
        budget_fraction * t_uniform, t_step=t_step, tol=tol)
    check_scan(scanner, rf, [(coords[i], coords[j], setup.z0) for i in range(n)
                             for j in range(n)], pulses, None, None, setup.f_bw, ordered=False)
    for t in (t_step, pilot_time, t_ref):
        readout.integration_time.check_value(t)
    sig_ref = float(setup.noise_std(np.zeros(1), t_ref)[0])
    meta = {"plan_name": "adaptive_time_multislice_scan",
            "plan_args": {"t_ref": float(t_ref), "pilot_time": float(pilot_time),
                          "round_fraction": float(round_fraction),
                          "budget_fraction": float(budget_fraction), "tol": float(tol),
                          "t_step": float(t_step), "gamma_rel": float(gamma_rel)},
            "protocol": "multislice",
            "pulses": [{"f0": float(f), "f_bw": float(setup.f_bw)} for f in pulses],
            "geometry": {"x": coords.tolist(), "y": coords.tolist(), "z": [float(setup.z0)],
                         "t_m": float(t_ref), "shape": [n, n, len(pulses)],
                         "resonator": setup.geometry},
            "criterion": strategy.criterion}
    meta.update(md or {})
    clock = _clock(readout)
    t0 = clock.now if clock is not None else 0.0
    yield from bps.mv(rf.bandwidth, setup.f_bw)
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(meta)
    yield from point_done()
    last = None
    while True:
        alloc = strategy.suggest()
        if not alloc.any():
            break
        values = np.zeros(setup.data_shape)
        dry = False
        for i, j, t, chans in strategy.visits(alloc):
            yield from bps.checkpoint()
            yield from bps.mv(readout.integration_time, t)
            yield from bps.mv(rf.pulse_list, pulses[chans].tolist())
            val, last = yield from _measure_at(scanner, readout, stored,
                                               (coords[i], coords[j], setup.z0), last)
            if val is None:
                dry = True
                continue
            values[i, j, chans] = val
        if dry:
            log.warning("adaptive_time_multislice_scan: no readings (dry run): the next "
                        "rounds need data; stopping after the pilot")
            break
        strategy.ingest(alloc, values)
        recon = reconstruct(strategy.mean, setup, mask=strategy.weights(), gamma_rel=gamma_rel,
                            n_iter=n_iter, tol=1e-4, noise_std=sig_ref, nu1=1e-3, nu2=1e-3)
        predicted = setup.forward(recon)
        strategy.update(predicted, setup.noise_std(predicted, t_ref))
        finished = strategy.done(recon)
        log.info("adaptive time scan: round %d, %.3g of the uniform time, change %.3g",
                 strategy.rounds, strategy.spent / t_uniform, strategy.last_change)
        if finished:
            break
    mask = np.any(strategy.time > 0, axis=-1)
    yield from _store_cube_and_close(np.where(strategy.time > 0, strategy.mean, np.nan), mask)
    hw = (clock.now - t0) if clock is not None else float("nan")
    return ScanResult(np.where(strategy.time > 0, strategy.mean, np.nan), mask, hw, uid)
