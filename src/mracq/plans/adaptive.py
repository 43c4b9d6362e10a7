"""The strategies under bluesky-adaptive 1.0: acquisition plans and evaluation functions.

Each ``*_problem`` function returns a ``bluesky_adaptive.protocols.OptimizationProblem``
whose optimizer is one of our strategies (the same objects our own closed-loop plans
drive), so bluesky-adaptive's ``optimize`` plan runs the loop::

    from bluesky_adaptive.plans import optimize
    problem = vqns_problem(nv, NextSequenceStrategy(initial=...), shots=300_000)
    RE(optimize(problem, iterations=None))   # until strategy.should_stop()

The acquisition plan measures every suggestion of a step in a run of its own (run key
``"mracq-acquire"``, nested in the ``optimize`` run; the suggestion's ``_id`` is in each
event or start document) and returns that run's uid (VQNS: the tuple of its coherence-scan
uids); the evaluation function answers the outcomes of that acquisition, each keyed by the
suggestion's ``_id``. bluesky-adaptive is imported only when a problem is built.
"""

from __future__ import annotations

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np

from mracq.plans.coherence import coherence_scan
from mracq.plans.vqns import family_of
from mracq.recon.protocol import ID_KEY

__all__ = ["Acquisition", "cosy_problem", "mrfm_problem", "vqns_problem"]

RUN_KEY = "mracq-acquire"


class Acquisition:
    """An acquisition plan (``plan``) and its evaluation function (``__call__``).

    ``measure(suggestion)`` is a plan stub that measures one suggestion inside the open
    run and returns its outcome dict (without ``_id``); ``md`` goes to the start document.
    """

    def __init__(self, measure, md: dict, *, own_runs: bool = False):
        self._measure, self._md, self._own_runs = measure, dict(md), own_runs
        self._outcomes: dict = {}

    def plan(self, suggestions, actuators, sensors=None, md=None, **kwargs):
        """Measure ``suggestions`` (bluesky-adaptive ``AcquisitionPlan``); returns a uid."""
        def inner():
            outcomes, uids = {}, []
            if self._own_runs:  # each measurement opens its own run (coherence_scan)
                for s in suggestions:
                    out, uid = yield from self._measure(s)
                    outcomes[s[ID_KEY]] = out
                    uids.append(uid)
                key = tuple(uids)
            else:
                meta = {**self._md, "suggestions": [_plain(s) for s in suggestions],
                        **(md or {})}
                key = yield from bps.open_run(md=meta)
                for s in suggestions:
                    outcomes[s[ID_KEY]] = yield from self._measure(s)
                yield from bps.close_run()
            self._outcomes[key] = outcomes
            return key

        return (yield from bpp.set_run_key_wrapper(inner(), RUN_KEY))

    def __call__(self, uid, suggestions):
        """Outcomes of acquisition ``uid`` for ``suggestions`` (``EvaluationFunction``)."""
        got = self._outcomes.pop(uid)
        return [{ID_KEY: s[ID_KEY], **got[s[ID_KEY]]} for s in suggestions]


def _plain(s: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}


def _problem(strategy, actuators, sensors, acq):
    from bluesky_adaptive.protocols import OptimizationProblem

    return OptimizationProblem(optimizer=strategy, actuators=actuators, sensors=sensors,
                               evaluation_function=acq, acquisition_plan=acq.plan)


def vqns_problem(nv, strategy, *, shots: int = 1_000_000, md: dict | None = None):
    """VQNS: each suggestion ``{"_id", "sequence", "t"}`` is one :func:`coherence_scan`.

    Outcomes: ``coherence`` and ``sigma`` (clipped as :func:`mracq.plans.vqns.vqns_loop`
    does), plus the measured ``sequence`` and ``t``.
    """
    from mracq.recon.vqns.data import COHERENCE_RANGE

    nv.shots.check_value(shots)
    lo, hi = COHERENCE_RANGE

    def measure(s):
        family, n = family_of(s["sequence"])
        res = yield from coherence_scan(
            nv, family, np.asarray(s["t"], float), n=n, shots=shots,
            md={"vqns_sequence": s["sequence"], "suggestion_id": s[ID_KEY], **(md or {})})
        out = {"sequence": s["sequence"], "t": res["t"],
               "coherence": np.clip(res["coherence"], lo, hi),
               "sigma": np.maximum(res["sigma"], 1e-6)}
        return out, res["uid"]

    acq = Acquisition(measure, {}, own_runs=True)
    return _problem(strategy, [nv.program], [nv], acq)


def cosy_problem(nv, strategy, *, t1, t2, shots: int = 150_000,
                 program_kw: dict | None = None, md: dict | None = None):
    """COSY: each suggestion ``{"_id", "i", "j"}`` is the point (t1[i], t2[j]) (s).

    Outcome: ``value`` (normalized population). One run per step, events as
    :func:`mracq.plans.cosy.cosy_random_mask`'s ``primary`` stream.
    """
    from mracq.plans.cosy import _check_grid, _measure, _Recorder
    from mracq.pulses.cosy import cosy_program

    t1, t2 = _check_grid(t1, t2)
    nv.shots.check_value(shots)
    program_kw = dict(program_kw or {})
    rec = _Recorder()

    def measure(s):
        i, j = int(s["i"]), int(s["j"])
        prog = cosy_program(t1[i], t2[j], **program_kw).validate(nv.timing_limits)
        yield from bps.mv(nv.shots, shots)
        v, _ = yield from _measure(nv, rec, prog, i, j, t1[i], t2[j])
        return {"value": float("nan") if v is None else float(v)}

    meta = {"plan_name": "cosy_acquire", "detectors": [nv.name], "t1_grid": t1.tolist(),
            "t2_grid": t2.tolist(), "shots": shots, **(md or {})}
    return _problem(strategy, [nv.program], [nv], Acquisition(measure, meta))


def mrfm_problem(scanner, rf, readout, strategy, setup, *, t_m: float = 1.0,
                 md: dict | None = None):
    """MRFM: each suggestion ``{"_id", "i", "j", "x", "y"}`` is a position (m) at gap
    ``setup.z0``; every pulse of ``setup.f0`` is measured there.

    Outcome: ``spin_signal`` (N^2, one per pulse). Limits are checked for the whole grid
    before the problem is returned.
    """
    from mracq.plans.mrfm import _move, _spin_signal, check_scan

    n = setup.n_xy
    coords = np.fft.fftfreq(n, 1.0 / n) * setup.voxel_size
    pulses = [float(f) for f in setup.f0]
    check_scan(scanner, rf, [(coords[i], coords[j], setup.z0) for i in range(n)
                             for j in range(n)], pulses, t_m, readout, setup.f_bw,
               ordered=False)
    state = {"last": None}

    def measure(s):
        if state["last"] is None:
            yield from bps.mv(readout.integration_time, t_m, rf.bandwidth, setup.f_bw)
            yield from bps.mv(rf.pulse_list, pulses)
        i, j = int(s["i"]), int(s["j"])
        state["last"] = yield from _move(scanner, (coords[i], coords[j], setup.z0),
                                         state["last"])
        reading = yield from bps.trigger_and_read([readout, scanner])
        return {"spin_signal": _spin_signal(reading, readout)}

    meta = {"plan_name": "mrfm_acquire", "protocol": "multislice",
            "pulses": [{"f0": f, "f_bw": float(setup.f_bw)} for f in pulses],
            "geometry": {"x": coords.tolist(), "y": coords.tolist(), "z": [float(setup.z0)],
                         "t_m": float(t_m), "shape": [n, n, len(pulses)]}, **(md or {})}
    return _problem(strategy, [scanner.x, scanner.y], [readout, scanner],
                    Acquisition(measure, meta))
