"""Closed-loop choice of the next coherence measurement (seed Sec. III.3), as a strategy.

:class:`NextSequenceStrategy` implements bluesky-adaptive 1.0's optimizer protocol
(:mod:`mracq.recon.protocol`): ``suggest(n)`` proposes what to measure next,
``ingest(outcomes)`` takes the measured decays keyed by the suggestion's ``_id``,
``should_stop()`` says whether and why to stop, ``get_best_points()`` names the best
state. It knows nothing about Bluesky; :mod:`mracq.plans.vqns` drives it with real (or
simulated) devices, bluesky-adaptive's ``optimize`` can drive it too
(:mod:`mracq.plans.adaptive`), and the benchmark drives it with a shot-noise model.

Each suggestion is a dict ``{"_id": id, "sequence": name, "t": times_s}``: the sequence whose Eq. 7
sensitivity best covers the widest part of the confidence band (per unit of measurement
time when ``cost_aware``), with times up to where the current estimate predicts that its
coherence has decayed to ``exp(-chi_end)``.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.protocol import ID_KEY
from mracq.recon.vqns.data import Measurement, canonical_name, pulse_number
from mracq.recon.vqns.model import VQNSResult, _coherence_fn, candidate_scores, reconstruct
from mracq.recon.vqns.sensitivity import predicted_decay_time

__all__ = ["NextSequenceStrategy", "DEFAULT_CANDIDATES", "relative_band_width"]

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = tuple(f"cpmg-{n}" for n in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))


def relative_band_width(result: VQNSResult, band=None) -> float:
    """Median over the band of ``std / mean`` (dimensionless): the loop's stopping measure."""
    lo, hi = band or result.band
    w = np.geomspace(lo, hi, 200)
    m = result.spectrum(w)
    return float(np.median(result.spectrum_std(w) / np.maximum(m, 1e-300)))


class NextSequenceStrategy:
    """Suggest the next CPMG sequence from the current VQNS reconstruction.

    Parameters
    ----------
    candidates : sequence of str
        Sequences that may be suggested (after the initial ones).
    initial : sequence of (str, array_like)
        (sequence, times in s) measured first, before any reconstruction (FID and SE).
    n_points : int
        Times per suggested sequence.
    chi_end : float
        Suggested times run until the predicted ``chi`` reaches this (4: C = 0.018).
    target : float
        Stop when :func:`relative_band_width` falls to this.
    max_measurements : int
        Stop after this many measurements.
    cost_aware : bool
        Rank candidates by score per second of measurement time (shots cost
        ``t + overhead`` each) instead of by the Eq. 7 score alone. Off by default: in the
        benchmark it favoured cheap low-n sequences and did worse.
    overhead : float
        Per-shot time besides the evolution in s, for the cost (15 us: the simulated
        sequencer's 7 us of laser and pulses plus two 4 us reference shots).
    min_spacing : float
        Shortest pulse spacing t / N the sequencer can play, s (one pi plus one pi/2
        pulse: 60 ns for the generators' default 40/20 ns; :func:`mracq.plans.vqns.vqns_loop`
        raises it to the calibrated pulses). Suggested times start at ``N * min_spacing``; a
        sequence whose predicted decay is within twice that is not suggested.
    reconstruct_kw : dict, optional
        Keyword arguments for :func:`mracq.recon.vqns.reconstruct`.
    seed : int, optional
        Seed for the reconstructions.
    """

    def __init__(self, candidates=DEFAULT_CANDIDATES, *, initial, n_points: int = 30,
                 chi_end: float = 4.0, target: float = 0.1, max_measurements: int = 8,
                 cost_aware: bool = False, overhead: float = 15e-6, reconstruct_kw=None,
                 seed=None, min_spacing: float = 60e-9):
        self.candidates = [str(c) for c in candidates]
        for c in self.candidates:
            pulse_number(c)
        self.initial = [(str(s), np.asarray(t, float)) for s, t in initial]
        if not self.initial:
            raise ValueError("give at least one initial (sequence, times) pair")
        self.n_points = int(n_points)
        self.chi_end = float(chi_end)
        self.target = float(target)
        self.max_measurements = int(max_measurements)
        self.cost_aware = bool(cost_aware)
        self.overhead = float(overhead)
        if not (np.isfinite(min_spacing) and min_spacing >= 0):
            raise ValueError(f"min_spacing must be >= 0 s, got {min_spacing!r}")
        self.min_spacing = float(min_spacing)
        self.reconstruct_kw = dict(reconstruct_kw or {})
        self.rng = np.random.default_rng(seed)
        self.measurements: list[Measurement] = []
        self.result: VQNSResult | None = None
        self.history: list[dict] = []
        self._suggested: dict = {}  # open suggestions by _id
        self._params: dict = {}  # parameters of every ingested point by _id
        self._next_id = 0

    # -- bluesky-adaptive 1.0 optimizer protocol
    def ingest(self, points) -> None:
        """Add measured decays and update the reconstruction.

        Parameters
        ----------
        points : Measurement, dict or list of them
            Outcome dicts keyed by the ``_id`` of a suggestion (``coherence`` and
            optionally ``sigma``; the sequence and times come from the suggestion), or
            dicts that name ``sequence`` and ``t`` themselves (data from elsewhere).
        """
        if isinstance(points, (Measurement, dict)):
            points = [points]
        last_id = None
        for p in points:
            if isinstance(p, dict):
                p = dict(p)
                sid = p.get(ID_KEY)
                params = self._suggested.pop(sid, {}) if sid is not None else {}
                merged = {**params, **p}
                if "sequence" not in merged or "t" not in merged:
                    raise ValueError(f"outcome {sid!r} names no sequence and times and matches "
                                     "no open suggestion")
                last_id = sid if sid is not None else merged["sequence"]
                self._params[last_id] = {"sequence": str(merged["sequence"]),
                                         "t": np.asarray(merged["t"], float)}
                p = Measurement(merged["sequence"], merged["t"], merged["coherence"],
                                merged.get("sigma"))
            else:
                last_id = p.sequence
                self._params[last_id] = {"sequence": p.sequence, "t": p.t}
            self.measurements = [m for m in self.measurements if m.sequence != p.sequence]
            self.measurements.append(p)
        if self._pending_initial():
            return
        self.result = reconstruct(self.measurements, seed=self.rng, **self.reconstruct_kw)
        self.history.append({"sequences": [m.sequence for m in self.measurements],
                             "band_width": relative_band_width(self.result),
                             "result": self.result, ID_KEY: last_id})
        log.info("VQNS loop: %d measurements, relative band width %.3g",
                 len(self.measurements), self.history[-1]["band_width"])

    def suggest(self, n: int | None = 1) -> list[dict]:
        """Up to ``n`` next measurements as ``{"_id", "sequence", "t"}`` dicts ([]: stop).

        ``t`` holds the evolution times in s; ``_id`` is unique and matches the outcome
        to :meth:`ingest`.
        """
        n = 1 if n is None else int(n)
        out = [{"sequence": s, "t": t} for s, t in self._pending_initial()[:n]]
        if not out and not self.should_stop()[0]:
            out = self._adaptive(n)
        for s in out:
            self._next_id += 1
            s[ID_KEY] = f"vqns-{self._next_id}"
            self._suggested[s[ID_KEY]] = {"sequence": s["sequence"], "t": s["t"]}
        return out

    def _free(self):
        measured = {m.sequence for m in self.measurements}
        return [c for c in self.candidates if canonical_name(pulse_number(c)) not in measured]

    def _adaptive(self, n):
        free = self._free()
        if not free:
            return []
        scores = candidate_scores(self.result, self.measurements, free)
        fn = _coherence_fn(self.result)
        plans = []
        for c in free:
            n_pi = pulse_number(c)
            te = predicted_decay_time(fn, n_pi, chi_end=self.chi_end,
                                      t_hi=100 * max(m.t.max() for m in self.measurements))
            # the sequencer needs t / N >= one pi plus one pi/2 pulse (min_spacing)
            t_lo = max(n_pi, 1) * self.min_spacing
            if te <= 2 * t_lo:
                log.info("VQNS loop: %s skipped: predicted decay %.3g s is within twice its "
                         "shortest playable time %.3g s", c, te, t_lo)
                continue
            t = np.linspace(max(te / self.n_points, t_lo), te, self.n_points)
            cost = float(np.sum(t + self.overhead)) if self.cost_aware else 1.0
            plans.append((scores[c] / cost, c, t))
        plans.sort(key=lambda x: -x[0])
        return [{"sequence": c, "t": t} for _, c, t in plans[:n]]

    def should_stop(self) -> tuple[bool, str | None]:
        """(stop, reason): band narrow enough, measurement count reached, or no sequence left."""
        if self.result is None:
            return False, None
        if len(self.measurements) >= self.max_measurements:
            return True, f"{len(self.measurements)} measurements (max_measurements)"
        bw = self.history[-1]["band_width"]
        if bw <= self.target:
            return True, f"relative band width {bw:.3g} <= target {self.target:g}"
        if not self._free():
            return True, "every candidate sequence measured"
        return False, None

    def get_best_points(self) -> list[tuple]:
        """``[(_id, {"sequence", "t"}, outcome)]`` of the step that left the narrowest band.

        ``outcome`` holds ``relative_band_width`` and the ``sequences`` of that
        reconstruction; [] before the first reconstruction.
        """
        if not self.history:
            return []
        best = min(self.history, key=lambda h: h["band_width"])
        sid = best[ID_KEY]
        return [(sid, dict(self._params.get(sid, {})),
                 {"relative_band_width": best["band_width"],
                  "sequences": list(best["sequences"])})]

    def _pending_initial(self):
        have = {m.sequence for m in self.measurements}
        return [(s, t) for s, t in self.initial if canonical_name(pulse_number(s)) not in have]
