"""Closed-loop choice of the next coherence measurement (seed Sec. III.3), as a strategy.

:class:`NextSequenceStrategy` follows the bluesky-adaptive naming: ``ingest(points)`` takes
measured decays, ``suggest(n)`` proposes what to measure next. It knows nothing about
Bluesky; :mod:`mracq.plans.vqns` drives it with real (or simulated) devices and the
benchmark drives it with a shot-noise model.

Each suggestion is a dict ``{"sequence": name, "t": times_s}``: the sequence whose Eq. 7
sensitivity best covers the widest part of the confidence band (per unit of measurement
time when ``cost_aware``), with times up to where the current estimate predicts that its
coherence has decayed to ``exp(-chi_end)``.
"""

from __future__ import annotations

import logging

import numpy as np

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
    reconstruct_kw : dict, optional
        Keyword arguments for :func:`mracq.recon.vqns.reconstruct`.
    seed : int, optional
        Seed for the reconstructions.
    """

    def __init__(self, candidates=DEFAULT_CANDIDATES, *, initial, n_points: int = 30,
                 chi_end: float = 4.0, target: float = 0.1, max_measurements: int = 8,
                 cost_aware: bool = False, overhead: float = 15e-6, reconstruct_kw=None,
                 seed=None):
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
        self.reconstruct_kw = dict(reconstruct_kw or {})
        self.rng = np.random.default_rng(seed)
        self.measurements: list[Measurement] = []
        self.result: VQNSResult | None = None
        self.history: list[dict] = []

    # -- bluesky-adaptive interface
    def ingest(self, points) -> None:
        """Add measured decays and update the reconstruction.

        Parameters
        ----------
        points : Measurement, dict or list of them
            Dicts need ``sequence``, ``t``, ``coherence`` and optionally ``sigma``.
        """
        if isinstance(points, (Measurement, dict)):
            points = [points]
        for p in points:
            if isinstance(p, dict):
                p = Measurement(p["sequence"], p["t"], p["coherence"], p.get("sigma"))
            self.measurements = [m for m in self.measurements if m.sequence != p.sequence]
            self.measurements.append(p)
        if self._pending_initial():
            return
        self.result = reconstruct(self.measurements, seed=self.rng, **self.reconstruct_kw)
        self.history.append({"sequences": [m.sequence for m in self.measurements],
                             "band_width": relative_band_width(self.result),
                             "result": self.result})
        log.info("VQNS loop: %d measurements, relative band width %.3g",
                 len(self.measurements), self.history[-1]["band_width"])

    def suggest(self, n: int = 1) -> list[dict]:
        """Up to ``n`` next measurements as ``{"sequence", "t"}`` dicts; [] means stop."""
        pending = self._pending_initial()
        if pending:
            return [{"sequence": s, "t": t} for s, t in pending[:n]]
        if self.should_stop():
            return []
        measured = {m.sequence for m in self.measurements}
        free = [c for c in self.candidates if canonical_name(pulse_number(c)) not in measured]
        if not free:
            return []
        scores = candidate_scores(self.result, self.measurements, free)
        fn = _coherence_fn(self.result)
        plans = []
        for c in free:
            te = predicted_decay_time(fn, pulse_number(c), chi_end=self.chi_end,
                                      t_hi=100 * max(m.t.max() for m in self.measurements))
            t = np.linspace(te / self.n_points, te, self.n_points)
            cost = float(np.sum(t + self.overhead)) if self.cost_aware else 1.0
            plans.append((scores[c] / cost, c, t))
        plans.sort(key=lambda x: -x[0])
        return [{"sequence": c, "t": t} for _, c, t in plans[:n]]

    def should_stop(self) -> bool:
        """True when the band is narrow enough or the measurement count is reached."""
        if self.result is None:
            return False
        if len(self.measurements) >= self.max_measurements:
            return True
        return self.history[-1]["band_width"] <= self.target

    def _pending_initial(self):
        have = {m.sequence for m in self.measurements}
        return [(s, t) for s, t in self.initial if canonical_name(pulse_number(s)) not in have]
