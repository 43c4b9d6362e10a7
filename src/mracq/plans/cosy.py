"""2D COSY acquisition: random-mask sampling and adaptive sampling with live DLMC.

Both plans measure (t1, t2) points of the COSY map with `mracq.pulses.cosy.cosy_program`
on the NV sequencer, reconstruct with `mracq.recon.dlmc.reconstruct` while they go, and
store every measured point (``primary``: ``i``, ``j``, ``t1``, ``t2`` and the sequencer's
``nv_value``, ``nv_error``, ``nv_counts``) plus one ``reconstruction`` event at the end
(the mask, the measured map with 0 where missing, the reconstruction and its 2D
spectrum). They return a dict with the same arrays and the simulated hardware time.

Adaptive strategy (`EnsembleDisagreement`, ``suggest``/``ingest`` as bluesky-adaptive):
the ensemble is K DLMC reconstructions, each from a random 80% subset of the measured
points (bootstrap-like subsampling: a point the data pin down comes out the same in
all, a poorly constrained one varies); the score of an unmeasured point is its ensemble
standard deviation plus ``gap_weight`` (default 10) times a row/column sparsity term (each
normalized to its maximum)
(rows and columns with few data, where all low-rank completions guess alike); the next
batch is the highest-scoring points, at most one per 3 x 3 neighbourhood. Points to reach
the random 10% DLMC error on 5 held-out maps (benchmarks/cosy.py; random: 250): ensemble
alone 390, gap_weight 1: 325, 3: 265, 10: 210. So most of the gain comes from balancing
rows and columns (what a low-rank completion needs); the ensemble orders points within
equally sparse rows and columns.
"""

from __future__ import annotations

import logging

import numpy as np
from bluesky import plan_stubs as bps

from mracq.devices.soft import SoftSignal
from mracq.pulses.cosy import cosy_program
from mracq.recon.dlmc import reconstruct
from mracq.recon.metrics import spectrum2d
from mracq.sim.cosy import T_GRID

log = logging.getLogger(__name__)

__all__ = ["EnsembleDisagreement", "cosy_adaptive", "cosy_random_mask"]


class EnsembleDisagreement:
    """Choose the next COSY points where an ensemble of reconstructions disagrees most.

    Parameters
    ----------
    shape : (int, int)
        Map shape.
    rng : numpy.random.Generator
    members : int
        Ensemble size K.
    keep : float
        Fraction of the measured points each member sees.
    method : str
        Reconstruction method of the members.
    gap_weight : float
        Weight of the row/column sparsity term (`gap`) against the normalized ensemble
        standard deviation in the score (module docstring for the measured effect).
    """

    def __init__(self, shape, rng, *, members: int = 4, keep: float = 0.8,
                 method: str = "dlmc", gap_weight: float = 10.0) -> None:
        if members < 2 or not 0 < keep < 1:
            raise ValueError(f"need members >= 2 and 0 < keep < 1, got {members}, {keep}")
        self.shape = tuple(shape)
        self.rng = rng
        self.members = members
        self.keep = keep
        self.method = method
        self.gap_weight = float(gap_weight)
        self.values = np.full(self.shape, np.nan)
        self.mask = np.zeros(self.shape, bool)

    def ingest(self, points) -> None:
        """Record measured points: iterable of ``(i, j, value)``."""
        for i, j, v in points:
            self.values[i, j] = v
            self.mask[i, j] = True

    def disagreement(self) -> np.ndarray:
        """Ensemble standard deviation per entry (0 where measured)."""
        idx = np.argwhere(self.mask)
        recs = []
        for _ in range(self.members):
            pick = self.rng.random(len(idx)) < self.keep
            sub = np.zeros(self.shape, bool)
            sub[tuple(idx[pick].T)] = True
            if not sub.any():
                sub = self.mask
            recs.append(reconstruct(np.where(sub, self.values, np.nan), sub, self.method))
        std = np.std(recs, axis=0)
        std[self.mask] = 0.0
        return std

    def gap(self) -> np.ndarray:
        """Row/column sparsity in [0, 1]: high where the entry's row and column hold few
        measured points (there every low-rank completion agrees on a guess, so the
        ensemble alone would not ask for data)."""
        rows = self.mask.sum(axis=1, keepdims=True)
        cols = self.mask.sum(axis=0, keepdims=True)
        return 0.5 * (1.0 / (1.0 + rows) + 1.0 / (1.0 + cols))

    def suggest(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` unmeasured points (i, j), largest disagreement first, spread out."""
        free = ~self.mask
        if not free.any():
            return []
        if not self.mask.any():
            flat = self.rng.choice(np.flatnonzero(free), min(n, free.sum()), replace=False)
            return [tuple(int(v) for v in np.unravel_index(k, self.shape)) for k in flat]
        d = self.disagreement()
        g = self.gap()
        d = d / (d.max() or 1.0) + self.gap_weight * g / g.max()
        d[self.mask] = -1.0
        order = np.argsort(d, axis=None)[::-1]
        blocked = self.mask.copy()
        out = []
        for k in order:
            i, j = np.unravel_index(k, self.shape)
            if blocked[i, j]:
                continue
            out.append((int(i), int(j)))
            blocked[max(i - 1, 0): i + 2, max(j - 1, 0): j + 2] = True
            if len(out) == n:
                break
        if len(out) < n:  # neighbourhood rule exhausted: fill with the next free points
            rest = [tuple(int(v) for v in np.unravel_index(k, self.shape)) for k in order]
            out += [p for p in rest if free[p] and p not in out][: n - len(out)]
        return out


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


def _measure(nv, rec, prog, i, j, t1, t2):
    yield from bps.checkpoint()
    yield from bps.mv(nv.program, prog, rec.i, int(i), rec.j, int(j), rec.t1, float(t1),
                      rec.t2, float(t2))
    reading = yield from bps.trigger_and_read([nv, rec.i, rec.j, rec.t1, rec.t2])
    return reading[f"{nv.name}_value"]["value"], nv.duration.get()


def _finish(rec, values, mask, method):
    measured = np.where(mask, values, np.nan)
    recon = reconstruct(measured, mask, method)
    spec = np.fft.fftshift(spectrum2d(recon))
    # stored with 0 where missing (the mask says which entries are data): a NaN would never
    # compare equal to itself and the soft signal's set would not finish
    yield from bps.mv(rec.mask, mask.astype(np.uint8), rec.measured, np.where(mask, values, 0.0),
                      rec.recon, recon, rec.spectrum, spec)
    yield from bps.trigger_and_read([rec.mask, rec.measured, rec.recon, rec.spectrum],
                                    name="reconstruction")
    return measured, recon, spec


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
                     every: int = 50, method: str = "dlmc", rng=None, live=None,
                     program_kw: dict | None = None, md: dict | None = None):
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
        Reconstruction method (`mracq.recon.dlmc.reconstruct`).
    rng : numpy.random.Generator, optional
        Draws the mask and the measuring order.
    live : callable, optional
        ``live(reconstruction, spectrum, n_points)`` after each live reconstruction.
    program_kw : dict, optional
        Extra keywords of `cosy_program`.
    md : dict, optional
        Extra start-document metadata.

    Returns
    -------
    dict
        ``uid``, ``mask``, ``measured`` (NaN where missing), ``reconstruction``,
        ``spectrum`` (|2D FFT|, shifted), ``hardware_time`` (s), ``n_points``.
    """
    t1, t2 = _check_grid(t1, t2)
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    rng = rng if rng is not None else np.random.default_rng()
    program_kw = dict(program_kw or {})
    shape = (t1.size, t2.size)
    n = max(1, int(round(coverage * t1.size * t2.size)))
    order = rng.choice(t1.size * t2.size, n, replace=False)
    points = [np.unravel_index(k, shape) for k in order]
    programs = [cosy_program(t1[i], t2[j], **program_kw).validate(nv.timing_limits)
                for i, j in points]
    nv.shots.check_value(shots)
    rec = _Recorder()
    args = {"coverage": coverage, "shots": shots, "every": every, "method": method}
    _m = _md("cosy_random_mask", args, nv, t1, t2, program_kw, md)
    _m["num_points"] = n
    _m["hardware_time_estimate"] = nv.estimate_time(programs, shots)
    values = np.full(shape, np.nan)
    mask = np.zeros(shape, bool)
    hw = 0.0
    yield from bps.mv(nv.shots, shots)
    uid = yield from bps.open_run(md=_m)
    for k, ((i, j), prog) in enumerate(zip(points, programs, strict=True), start=1):
        v, dt = yield from _measure(nv, rec, prog, i, j, t1[i], t2[j])
        values[i, j] = v
        mask[i, j] = True
        hw += dt
        if k % every == 0 and k < n and live is not None:
            r = reconstruct(np.where(mask, values, np.nan), mask, method)
            live(r, np.fft.fftshift(spectrum2d(r)), k)
    measured, recon, spec = yield from _finish(rec, values, mask, method)
    if live is not None:
        live(recon, spec, n)
    yield from bps.close_run()
    return {"uid": uid, "mask": mask, "measured": measured, "reconstruction": recon,
            "spectrum": spec, "hardware_time": hw, "n_points": n}


def cosy_adaptive(nv, *, t1=None, t2=None, shots: int = 150_000, initial: float = 0.04,
                  batch: int = 25, max_coverage: float = 0.4, tol: float = 0.02,
                  max_hardware_time: float | None = None, members: int = 4,
                  method: str = "dlmc", rng=None, live=None, program_kw: dict | None = None,
                  md: dict | None = None):
    """Grow the COSY mask in batches where an ensemble of reconstructions disagrees.

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
        Ensemble size (see the module docstring for how the ensemble is formed).
    method, rng, live, program_kw, md
        As for `cosy_random_mask` (``live`` is called after each batch).

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
    program_kw = dict(program_kw or {})
    shape = (t1.size, t2.size)
    budget = int(round(max_coverage * t1.size * t2.size))
    strategy = EnsembleDisagreement(shape, rng, members=members, method=method)
    nv.shots.check_value(shots)
    rec = _Recorder()
    args = {"shots": shots, "initial": initial, "batch": batch, "max_coverage": max_coverage,
            "tol": tol, "max_hardware_time": max_hardware_time, "members": members,
            "method": method}
    _m = _md("cosy_adaptive", args, nv, t1, t2, program_kw, md)
    _m["ensemble"] = (f"{members} {method} reconstructions from random 80% subsets "
                      "of the measured points; next points: largest ensemble std")
    hw = 0.0
    changes = []
    prev = None
    stop = "budget"
    todo = strategy.suggest(max(1, int(round(initial * t1.size * t2.size))))
    yield from bps.mv(nv.shots, shots)
    uid = yield from bps.open_run(md=_m)
    while todo:
        got = []
        for i, j in todo:
            prog = cosy_program(t1[i], t2[j], **program_kw).validate(nv.timing_limits)
            v, dt = yield from _measure(nv, rec, prog, i, j, t1[i], t2[j])
            got.append((i, j, v))
            hw += dt
        strategy.ingest(got)
        cur = reconstruct(np.where(strategy.mask, strategy.values, np.nan), strategy.mask,
                          method)
        if live is not None:
            live(cur, np.fft.fftshift(spectrum2d(cur)), int(strategy.mask.sum()))
        if prev is not None:
            changes.append(float(np.sqrt(np.mean((cur - prev) ** 2)) / (np.ptp(cur) or 1.0)))
            log.info("cosy_adaptive: %d points, change %.4f", strategy.mask.sum(), changes[-1])
            if changes[-1] < tol:
                stop = "converged"
                break
        prev = cur
        n_have = int(strategy.mask.sum())
        if n_have >= budget:
            break
        if max_hardware_time is not None and hw >= max_hardware_time:
            stop = "hardware_time"
            break
        todo = strategy.suggest(min(batch, budget - n_have))
    measured, recon, spec = yield from _finish(rec, strategy.values, strategy.mask, method)
    yield from bps.close_run()
    return {"uid": uid, "mask": strategy.mask.copy(), "measured": measured,
            "reconstruction": recon, "spectrum": spec, "hardware_time": hw,
            "n_points": int(strategy.mask.sum()), "changes": changes, "stop_reason": stop}
