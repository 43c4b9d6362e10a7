"""Closed-loop noise spectroscopy: measure, reconstruct (VQNS), choose the next sequence.

The plan asks a strategy (:class:`mracq.recon.vqns.strategy.NextSequenceStrategy`, or any
object with ``suggest(n)`` / ``ingest(points)``) what to measure, measures it with
:func:`mracq.plans.coherence.coherence_scan` (one stored run per measurement), hands the
decay to the strategy, and stores the spectrum estimate after each step as its own run
(``plan_name = "vqns_estimate"``; one event with ``omega``, ``mean`` and ``std``; the uids
of the measurement runs it used in the start document). It stops when the strategy has
nothing more to suggest (band narrow enough, sequences exhausted) or the hardware-time
budget would be exceeded.
"""

from __future__ import annotations

import logging

import numpy as np
from bluesky import plan_stubs as bps
from ophyd import Signal

from mracq.plans.coherence import coherence_scan
from mracq.recon.vqns.data import COHERENCE_RANGE, pulse_number

__all__ = ["vqns_loop", "store_estimate", "family_of", "LiveSpectrumPlot"]

log = logging.getLogger(__name__)


def family_of(sequence: str) -> tuple[str, int | None]:
    """(family, n) for :func:`coherence_scan` from "fid", "se", "cpmg-N" or "xy8-N"."""
    s = sequence.lower().strip()
    n = pulse_number(s)
    if s.startswith("xy8"):
        return "xy8", n // 8
    if n == 0:
        return "fid", None
    if n == 1:
        return "hahn", None
    return "cpmg", n


def store_estimate(result, measurement_uids, *, step: int, md: dict | None = None):
    """Store one spectrum estimate as its own run; returns its uid.

    Parameters
    ----------
    result : mracq.recon.vqns.VQNSResult
        The estimate.
    measurement_uids : list of str
        Runs whose data it used (recorded in the start document).
    step : int
        Loop step (number of measurements so far).
    """
    sigs = [Signal(name="omega", value=np.asarray(result.omega, float)),
            Signal(name="mean", value=np.asarray(result.mean, float)),
            Signal(name="std", value=np.asarray(result.std, float))]
    _md = {
        "plan_name": "vqns_estimate",
        "plan_args": {"step": step},
        "measurement_uids": list(measurement_uids),
        "sequences": list(result.settings.get("sequences", [])),
        "step": step,
        "units": {"omega": "rad/s", "mean": "rad^2/s", "std": "rad^2/s"},
        "band_rad_s": [float(x) for x in result.band],
        "loss_threshold": float(result.loss_threshold),
        "n_success": int(result.n_success),
        "n_failed": int(result.n_failed),
        "runtime_s": float(result.runtime_s),
        "samples": np.asarray(result.samples).tolist(),
        **(md or {}),
    }
    uid = yield from bps.open_run(md=_md)
    yield from bps.checkpoint()
    yield from bps.trigger_and_read(sigs)
    yield from bps.close_run()
    yield from bps.checkpoint()  # a hard pause after this run never replays it
    return uid


def _resumed(resume, lo, hi):
    """The measurement and estimate runs of an interrupted loop, from a resume state.

    Returns (complete measurements [(uid, sequence, point dict, hardware time)], the
    partial measurement (uid, sequence, planned times, stored point dict) or None, estimate
    uids, steps that have an estimate).
    """
    runs = resume.get("group") or [resume]
    done, partial, e_uids, estimated = [], None, [], set()
    for r in runs:
        start, table = r["start"], r.get("primary") or {}
        if start.get("plan_name") == "vqns_estimate":
            e_uids.append(start["uid"])
            estimated.add(int(start.get("step", 0)))
            continue
        if start.get("plan_name") != "coherence_scan" or "vqns_sequence" not in start:
            continue
        t = np.asarray(table.get("t", []), float)
        point = {"sequence": start["vqns_sequence"], "t": t,
                 "coherence": np.clip(np.asarray(table.get("coherence", []), float), lo, hi),
                 "sigma": np.maximum(np.asarray(table.get("coherence_error", []), float),
                                     1e-6)}
        planned = np.asarray((start.get("plan_args") or {}).get("times", []), float)
        if t.size >= planned.size:
            done.append((start["uid"], start["vqns_sequence"], point,
                          float(start.get("hardware_time_estimate", 0.0))))
        else:
            partial = (start["uid"], start["vqns_sequence"], planned, point)
    return done, partial, e_uids, estimated


def vqns_loop(nv, strategy, *, shots: int = 1_000_000, time_budget: float | None = None,
              on_estimate=None, on_scan=None, md: dict | None = None,
              resume: dict | None = None):
    """Adaptive noise spectroscopy: measure, reconstruct, ask for the next sequence.

    Parameters
    ----------
    nv : mracq.devices.nv.PulseSequencer
        Sequencer + counter (simulated or real).
    strategy : object
        bluesky-adaptive's optimizer protocol (:mod:`mracq.recon.protocol`):
        ``suggest(n) -> [{"_id", "sequence": str, "t": array}]`` ([] to stop),
        ``ingest(outcomes)`` taking dicts with ``_id``, ``coherence``, ``sigma`` (and
        ``sequence``, ``t``), ``should_stop() -> (bool, reason)``, and a ``result``
        attribute (the current VQNS result or None), as
        :class:`~mracq.recon.vqns.strategy.NextSequenceStrategy`.
    shots : int
        Repetitions per point.
    time_budget : float, optional
        Hardware time in s; a measurement whose estimated time would exceed what is left
        is not started. A strategy with a ``hardware_budget`` attribute (as
        :class:`~mracq.recon.vqns.strategy.NextSequenceStrategy`) gets it, when it has
        none of its own, and ``shots``, so that it sizes its suggestions to what is left
        (fewer points for the last one) instead of being cut off.
    on_estimate : callable, optional
        ``on_estimate(result, step)`` after each reconstruction (e.g.
        :class:`LiveSpectrumPlot`); None in tests and scripts.
    on_scan : callable, optional
        ``on_scan(res)`` with the result of each :func:`coherence_scan` (progress output).
    md : dict, optional
        Extra metadata for every run (each also records ``loop_plan = "vqns_loop"``
        beside its own ``plan_name``).
    resume : dict, optional
        Go on with an interrupted loop: :func:`mracq.storage.resume_state` of any of its
        runs (its ``group`` holds every run with the same ``vqns_loop_id``).  Complete
        measurements are handed to ``strategy`` (a fresh one, built as for the first
        start) and not measured again; of a measurement cut short only the missing times
        are measured (a new run, ``vqns_continues`` = the old uid, both uids linked in the
        estimates); step numbers, the loop id and the lists of uids continue.

    Returns
    -------
    dict
        ``measurement_uids``, ``estimate_uids``, ``sequences``, ``hardware_time`` (s),
        ``result`` (the final VQNS result or None) and ``stopped`` (why the loop ended:
        ``"strategy"``, ``"budget"``, or ``"dry run"`` when a simulator answered no
        readings and the next sequence would depend on them).

    Notes
    -----
    Coherences the device reports outside [-0.05, 1.05] (shot noise near C = 1 or 0) are
    clipped into that range before reconstruction; the stored runs keep the raw values.
    """
    import uuid

    nv.shots.check_value(shots)
    m_uids, e_uids, seqs = [], [], []
    spent = 0.0
    stopped = "strategy"
    lo, hi = COHERENCE_RANGE
    walked = set()  # dry run: sequences walked without data
    loop_id = str(uuid.uuid4())
    if resume is not None:
        loop_id = resume["start"].get("vqns_loop_id") or loop_id
        done, partial, e_uids, estimated = _resumed(resume, lo, hi)
        points = []
        for uid, seq, point, hw in done:
            m_uids.append(uid)
            seqs.append(seq)
            points.append({**point, "hardware_time": hw})
            spent += hw
        if partial is not None:  # measure only the times the cut-short run did not store
            uid, seq, planned, point = partial
            have = set(np.round(point["t"], 15).tolist())
            rest = np.array([t for t in planned if round(float(t), 15) not in have])
            family, n = family_of(seq)
            res = yield from coherence_scan(
                nv, family, rest, n=n, shots=shots,
                md={"vqns_step": len(seqs) + 1, "vqns_sequence": seq,
                    "loop_plan": "vqns_loop", "vqns_loop_id": loop_id, "vqns_continues": uid,
                    **(md or {})})
            spent += res["hardware_time"]
            order = np.argsort(np.concatenate([point["t"], res["t"]]))
            merged = {"sequence": seq}
            for key, new in (("t", res["t"]), ("coherence", np.clip(res["coherence"], lo, hi)),
                             ("sigma", np.maximum(res["sigma"], 1e-6))):
                merged[key] = np.concatenate([point[key], new])[order]
            m_uids += [uid, res["uid"]]
            seqs.append(seq)
            points.append(merged)
        if points:
            strategy.ingest(points)
        result = getattr(strategy, "result", None)
        if result is not None and len(seqs) not in estimated:
            uid = yield from store_estimate(result, m_uids, step=len(seqs),
                                            md={"loop_plan": "vqns_loop",
                                                "vqns_loop_id": loop_id, **(md or {})})
            e_uids.append(uid)
    if hasattr(strategy, "hardware_budget"):  # it sizes what it suggests to the budget
        strategy.shots = shots
        if time_budget is not None and strategy.hardware_budget is None:
            strategy.hardware_budget = float(time_budget)
    if hasattr(strategy, "min_spacing"):  # times the calibrated pulses can play
        from mracq.plans.calibration import calibrated_program_kw

        kw = calibrated_program_kw(nv)
        strategy.min_spacing = max(strategy.min_spacing, kw.get("pi_duration", 40e-9)
                                   + kw.get("pi2_duration", 20e-9))
    while True:
        sug = strategy.suggest(1 + len(walked))
        if not sug:
            break
        sug = [s for s in sug if s["sequence"] not in walked]
        if not sug:  # every sequence it can name without data has been walked
            log.warning("vqns_loop: no readings (dry run): the next sequence depends on the "
                        "data; stopping after the non-adaptive ones")
            stopped = "dry run"
            break
        seq, t = sug[0]["sequence"], np.asarray(sug[0]["t"], float)
        family, n = family_of(seq)
        if time_budget is not None:
            from mracq.pulses import coherence_programs

            est = nv.estimate_time(coherence_programs(family, t, n=n), shots)
            if spent + est > time_budget:
                log.info("vqns_loop: %s would take %.3g s; %.3g s of %.3g s left: stopping",
                         seq, est, time_budget - spent, time_budget)
                stopped = "budget"
                break
        step = len(seqs) + 1
        res = yield from coherence_scan(
            nv, family, t, n=n, shots=shots,
            md={"vqns_step": step, "vqns_sequence": seq, "loop_plan": "vqns_loop",
                "vqns_loop_id": loop_id,
                **(md or {})})
        spent += res["hardware_time"]
        if on_scan is not None:
            on_scan(res)
        m_uids.append(res["uid"])
        seqs.append(seq)
        if res.get("dry_run"):
            walked.add(seq)
            continue
        outcome = {"sequence": seq, "t": res["t"],
                   "coherence": np.clip(res["coherence"], lo, hi),
                   "sigma": np.maximum(res["sigma"], 1e-6),
                   "hardware_time": res["hardware_time"]}
        if "_id" in sug[0]:
            outcome["_id"] = sug[0]["_id"]
        strategy.ingest([outcome])
        result = getattr(strategy, "result", None)
        if result is not None:
            uid = yield from store_estimate(result, m_uids, step=step,
                                            md={"loop_plan": "vqns_loop",
                                                "vqns_loop_id": loop_id, **(md or {})})
            e_uids.append(uid)
            if on_estimate is not None:
                on_estimate(result, step)
        stop = strategy.should_stop() if hasattr(strategy, "should_stop") else (False, None)
        if isinstance(stop, tuple) and stop[0]:
            log.info("vqns_loop: stopping: %s", stop[1])
            break
    return {"measurement_uids": m_uids, "estimate_uids": e_uids, "sequences": seqs,
            "hardware_time": spent, "result": getattr(strategy, "result", None),
            "stopped": stopped}


class LiveSpectrumPlot:
    """Live plot of the spectrum estimate with its band (``on_estimate`` callback).

    Parameters
    ----------
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).
    truth : callable, optional
        A known S(omega) to overlay (simulations).
    """

    def __init__(self, ax=None, truth=None):
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        self.ax, self.truth = ax, truth

    def __call__(self, result, step):
        ax = self.ax
        ax.clear()
        lo, hi = result.band
        w = np.geomspace(lo / 3, hi * 3, 300)
        m, s = result.spectrum(w), result.spectrum_std(w)
        f = w / (2 * np.pi)
        ax.fill_between(f, np.maximum(m - 2 * s, m * 1e-3), m + 2 * s, alpha=0.3, color="teal")
        ax.plot(f, m, color="teal", label=f"step {step}: {', '.join(result.settings['sequences'])}")
        if self.truth is not None:
            ax.plot(f, self.truth(w), "k--", lw=1, label="truth")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("S(ω) (rad²/s)")
        ax.legend(fontsize=8)
        ax.figure.canvas.draw_idle()
        try:
            import matplotlib.pyplot as plt

            plt.pause(0.01)
        except Exception:  # noqa: BLE001 - non-interactive backends
            pass
