"""Closed-loop choice of the next coherence measurement (seed Sec. III.3), as a strategy.

:class:`NextSequenceStrategy` implements bluesky-adaptive 1.0's optimizer protocol
(:mod:`mracq.recon.protocol`): ``suggest(n)`` proposes what to measure next,
``ingest(outcomes)`` takes the measured decays keyed by the suggestion's ``_id``,
``should_stop()`` says whether and why to stop, ``get_best_points()`` names the best
state. It knows nothing about Bluesky; :mod:`mracq.plans.vqns` drives it with real (or
simulated) devices, bluesky-adaptive's ``optimize`` can drive it too
(:mod:`mracq.plans.adaptive`), and the benchmark drives it with a shot-noise model.

Each suggestion is a dict ``{"_id": id, "sequence": name, "t": times_s}``. By default
(``criterion="variance"``) it is the (sequence, time window) that is expected to shrink the
spectrum's squared error most per second of hardware time, given everything measured so
far (:func:`expected_variance_reduction`, with the refits' spread plus a model-discrepancy
field conditioned on the data, :func:`discrepancy_field`, as the prior); the windows run
from the shortest playable time to where the current estimate predicts ``chi = chi_end``
for each ``chi_end`` offered.
With ``criterion="eq7"`` it is the seed's choice: the sequence whose Eq. 7 sensitivity best
covers the widest part of the confidence band (per unit of measurement time when
``cost_aware``), with times up to the largest ``chi_end``.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.protocol import ID_KEY
from mracq.recon.vqns.chi import PointSet
from mracq.recon.vqns.data import Measurement, canonical_name, pulse_number
from mracq.recon.vqns.model import (
    MISFIT_WIDTH,
    VQNSResult,
    _chi,
    _coherence_fn,
    _misfit_sd,
    candidate_scores,
    lorentzian_spectrum,
    reconstruct,
)
from mracq.recon.vqns.sensitivity import predicted_decay_time
from mracq.sim.filter_function import filter_cpmg

__all__ = ["NextSequenceStrategy", "DEFAULT_CANDIDATES", "relative_band_width",
           "expected_variance_reduction", "discrepancy_field"]

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = tuple(f"cpmg-{n}" for n in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64))
#: decays (chi) at which the offered time windows of a candidate end: the early part of a
#: many-pulse decay probes high frequencies with short, cheap points
DEFAULT_CHI_END = (0.5, 1.0, 2.0, 4.0)


def expected_variance_reduction(result: VQNSResult, sequence: str, t, sigma, omega, *,
                                inflate: float | None = None, trim: float = 0.1,
                                misfit: bool = False, field=None) -> np.ndarray:
    """Expected drop of the spectrum's variance at ``omega`` if ``sequence`` is measured at ``t``.

    The band's samples (the refits to perturbed copies of every measurement so far) are
    an ensemble from the current posterior. Each predicts the candidate's coherences;
    conditioning the ensemble's spectra on those predictions as on linear Gaussian data
    (the ensemble Kalman update) gives the posterior variance after the measurement:

        dVar(w) = Cov(S(w), y) (Cov(y, y) + R)^-1 Cov(y, S(w)),   R = (inflate sigma)^2 I

    Frequencies the sequences already measured pin down vary little over the ensemble and
    gain little; so do frequencies the candidate's filter does not reach, since its
    predictions then do not covary with S there.

    Parameters
    ----------
    result : VQNSResult
        Current reconstruction (``band_samples``, else ``samples``).
    sequence : str
        Candidate sequence ("cpmg-N", ...).
    t : array_like
        Its evolution times in s.
    sigma : float or array_like
        Expected error of each measured coherence (dimensionless).
    omega : array_like
        Frequencies in rad/s.
    inflate : float, optional
        Factor between the errors the ensemble's refits were drawn with and the data's
        (``reconstruct``'s ``band_inflate``; default: the result's, 1 without refits).
    trim : float
        Fraction winsorized at each end per frequency and per point, so that a few
        samples with a spike do not dominate the covariances.
    misfit : bool
        Also count the band's misfit term (``settings["misfit_factor"]`` times the fit's
        local misfit, added in quadrature to the band) as prior variance: a smooth random
        field the candidate measures through its filter (:func:`_misfit_field`). Off by
        default: on 1-4 Lorentzian instances it changed no outcome (the term is 1-2
        orders below the refits' spread, and zero where no measured point maps, which is
        where the missed peaks were; benchmarks/vqns.json ``loop_family_..._misfit``).
    field : tuple, optional
        A model-discrepancy field conditioned on the data so far
        (:func:`discrepancy_field` at the same ``omega``), added to the ensemble's prior:
        frequencies no measured point constrains stay unknown at the spectrum's scale.

    Returns
    -------
    ndarray
        Variance reduction at each ``omega``, (rad^2/s)^2; zeros with fewer than 5 samples.
    """
    rows = result.samples if result.band_samples is None else result.band_samples
    if inflate is None:
        inflate = _band_inflate(result)
    w = np.asarray(omega, float)
    t = np.asarray(t, float)
    n_s = len(rows)
    if n_s < 5:
        return np.zeros(w.shape)
    pts = PointSet(t, np.full(t.shape, pulse_number(sequence)))
    c = np.empty((n_s, t.size))
    c[:, pts.order] = np.exp(-_chi(rows, pts))
    z = _winsorize(lorentzian_spectrum(rows, w), trim)
    y = _winsorize(c, trim)
    z -= z.mean(0)
    y -= y.mean(0)
    r2 = (inflate * np.broadcast_to(np.asarray(sigma, float), t.shape)) ** 2
    cyy = y.T @ y / (n_s - 1) + np.diag(np.maximum(r2, 1e-30))
    czy = z.T @ y / (n_s - 1)
    kappa = result.settings.get("misfit_factor", 0.0) if misfit else 0.0
    if kappa and len(result.misfit[0]):
        phi, amp_sd, jac = _misfit_field(result, sequence, t, pts, c, w, kappa)
        cam = amp_sd**2
        czy = czy + (phi * cam) @ jac.T
        cyy = cyy + (jac * cam) @ jac.T
    if field is not None:
        phi, fine, bf, cov = field
        jac = -_log_mean(c)[:, None] * (_chi_response(t, pulse_number(sequence), fine) @ bf)
        czy = czy + phi @ cov @ jac.T
        cyy = cyy + jac @ cov @ jac.T
    return np.einsum("gp,pg->g", czy, np.linalg.solve(cyy, czy.T))


def discrepancy_field(result: VQNSResult, measurements, omega, sigma, *,
                      inflate: float | None = None, width: float = MISFIT_WIDTH,
                      c_min: float = 0.05):
    """A model-discrepancy field ``d(omega)`` conditioned on the measured decays.

    ``S = S_model + d`` with ``d = sum_k a_k phi_k(omega)``: Gaussian bumps in
    ``ln omega`` of width ``width``, ``width`` apart (``sum_k phi_k^2 = 1``), with
    independent prior amplitudes of standard deviation ``max(mean spectrum over omega)``
    (a component as large as the largest the estimate shows may hide anywhere).
    Conditioning on every measured point with fitted ``C > c_min`` (linearised in chi,
    ``chi = (1/pi) Int S F(w t) / w^2 dw``, error ``inflate * sigma / C``) leaves it
    small where the data constrain the spectrum and at the prior elsewhere, unlike the
    refits, which all share the model's extrapolation.

    Returns
    -------
    tuple
        ``(phi at omega, fine grid rad/s, phi on it, posterior covariance of a)``, for
        :func:`expected_variance_reduction`'s ``field``.
    """
    if inflate is None:
        inflate = _band_inflate(result)
    w = np.asarray(omega, float)
    lw = np.log(w)
    nodes = np.arange(lw.min() - 2 * width, lw.max() + width, width)
    fine = np.exp(np.linspace(nodes[0] - 3 * width, nodes[-1] + 3 * width, 4000))

    bf = _log_bumps(fine, nodes, width)
    rows, weights = [], []
    for m in measurements:
        c = result.coherence(m.sequence, m.t)
        ok = np.isfinite(c) & (c > c_min)
        rows.append(_chi_response(m.t[ok], m.n, fine) @ bf)
        sd = np.broadcast_to(m.sigma if m.sigma is not None else sigma, m.t.shape)[ok]
        weights.append((c[ok] / (inflate * np.maximum(sd, 1e-12))) ** 2)
    jac, wt = np.vstack(rows), np.concatenate(weights)
    s0 = max(float(np.max(result.spectrum(w))), 1e-300)
    cov = np.linalg.inv(np.eye(len(nodes)) / s0**2 + (jac * wt[:, None]).T @ jac)
    return _log_bumps(w, nodes, width), fine, bf, 0.5 * (cov + cov.T)


def _misfit_field(result, sequence, t, pts, c, w, kappa, width: float = MISFIT_WIDTH):
    """The band's misfit term as a smooth random field the candidate would measure.

    The field is ``sum_k a_k phi_k(omega)``: Gaussian bumps in ``ln omega`` of width
    ``width`` on nodes ``width`` apart, scaled so that ``sum_k phi_k^2 = 1``, with
    independent amplitudes of standard deviation ``kappa`` times the local misfit
    (:func:`mracq.recon.vqns.model._misfit_sd`), i.e. the variance the band adds in
    quadrature. A candidate's coherence responds to it linearly,
    ``dC(t) = -C(t) (1/pi) Integral phi_k(w) F(w t) / w^2 dw a_k``.

    Returns
    -------
    phi : ndarray, (len(w), K)
        The bumps at ``w``.
    amp_sd : ndarray, (K,)
        Standard deviation of each amplitude, rad^2/s.
    jac : ndarray, (len(t), K)
        Response of the candidate's coherences to each amplitude, s / rad^2.
    """
    w_p = result.misfit[0]
    u_lo = min(np.log(w[0]), np.log(w_p[0])) - 2 * width
    u_hi = max(np.log(w[-1]), np.log(w_p[-1])) + 2 * width
    nodes = np.arange(u_lo, u_hi + width, width)
    amp_sd = kappa * _misfit_sd(np.exp(nodes), *result.misfit)
    fine = np.exp(np.linspace(u_lo - 3 * width, u_hi + 3 * width, 4000))
    filt = _chi_response(t, pulse_number(sequence), fine)
    jac = -_log_mean(c)[:, None] * (filt @ _log_bumps(fine, nodes, width))
    return _log_bumps(w, nodes, width), amp_sd, jac


def _band_inflate(result: VQNSResult) -> float:
    """Error factor the band's refits were drawn with (1 without refits)."""
    if result.band_samples is None:
        return 1.0
    return result.settings.get("band_inflate", 2.0)


def _log_bumps(omega, nodes, width):
    """Gaussian bumps in ``ln omega`` at ``nodes``, ``width`` apart: (len(omega), K),
    scaled so that ``sum_k phi_k^2 = 1`` between the nodes."""
    return np.pi**-0.25 * np.exp(-0.5 * ((np.log(omega)[:, None] - nodes[None]) / width) ** 2)


def _chi_response(t, n_pi, fine):
    """Quadrature rows of ``chi(t) = (1/pi) Int S(w) F_N(w t) / w^2 dw`` on the grid
    ``fine`` (rad/s): ``chi = rows @ S(fine)``, (len(t), len(fine))."""
    return filter_cpmg(np.outer(t, fine), n_pi) / fine**2 * np.gradient(fine) / np.pi


def _log_mean(c):
    """Geometric mean over the ensemble (axis 0) of coherences, floored at 1e-12."""
    return np.exp(np.mean(np.log(np.maximum(c, 1e-12)), axis=0))


def _winsorize(x, trim):
    lo, hi = np.quantile(x, [trim, 1 - trim], axis=0)
    return np.clip(x, lo, hi)


def _noise_sd(result: VQNSResult, ms) -> float:
    """Typical coherence error: the median error bar, else the mean fit's RMS residual."""
    if all(m.sigma is not None for m in ms):
        return float(np.median(np.concatenate([np.broadcast_to(m.sigma, m.t.shape)
                                               for m in ms])))
    r = np.concatenate([m.coherence - result.coherence(m.sequence, m.t) for m in ms])
    return float(np.sqrt(np.mean(r**2)))


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
    n_points : int or sequence of int
        Times per suggested sequence; with several values, each is offered per (sequence,
        window) and the criterion's per-second score chooses among them.
    chi_end : float or sequence of float
        Suggested times run until the predicted ``chi`` reaches this (4: C = 0.018); with
        several values, each is a time window offered per candidate (``"variance"``
        chooses among them; ``"eq7"`` takes the largest).
    target : float
        Stop when :func:`relative_band_width` falls to this.
    max_measurements : int
        Stop after this many measurements.
    hardware_budget : float, optional
        Hardware time in s for the whole loop, the initial measurements included: a stop
        on time rather than on a count. Nothing is suggested that would pass it; a
        (sequence, window) that does not fit with ``n_points`` is offered with fewer
        points (down to ``min_points``) over the same window, so that the last
        measurement uses what is left. The time spent is what the outcomes report as
        ``hardware_time`` (s), else ``shots * sum(t + overhead)``.
    shots : int
        Repetitions per point, for the hardware-time cost (the per-second criterion is
        unchanged by it; the budget needs it).
    min_points : int
        Fewest times a suggestion shrunk to fit ``hardware_budget`` may have (at most the
        smallest ``n_points``).
    criterion : {"variance", "eq7"}
        "variance" (default): the (sequence, window) with the largest expected drop of
        the summed spectral variance (:func:`expected_variance_reduction`, over a
        logarithmic grid from the band's lower end to ``omega_max``) per second of
        hardware time, ``sum(t + overhead)`` per shot. "eq7": the seed's Eq. 7 score
        (:func:`mracq.recon.vqns.model.candidate_scores`).
    cost_aware : bool
        "eq7" only: rank candidates by score per second of measurement time instead of by
        the Eq. 7 score alone. Off by default: in the benchmark it favoured cheap low-n
        sequences and did worse.
    overhead : float
        Per-shot time besides the evolution in s, for the cost (15 us: the simulated
        sequencer's 7 us of laser and pulses plus two 4 us reference shots).
    omega_max : float, optional
        Upper end of the frequencies the "variance" criterion counts, rad/s (default: the
        highest any CPMG can probe, ``pi / min_spacing``, i.e. ``N / (2 t)`` at the
        shortest spacing; ``4 x`` the band's upper end when ``min_spacing`` is 0).
    min_spacing : float
        Shortest pulse spacing t / N the sequencer can play, s (one pi plus one pi/2
        pulse: 60 ns for the generators' default 40/20 ns; :func:`mracq.plans.vqns.vqns_loop`
        raises it to the calibrated pulses). Suggested times start at ``N * min_spacing``; a
        sequence whose predicted decay is within twice that is not suggested.
    reconstruct_kw : dict, optional
        Keyword arguments for :func:`mracq.recon.vqns.reconstruct`.
    seed : int, optional
        Seed for the reconstructions.
    misfit_prior : bool
        "variance" only: count the band's misfit term as prior variance too
        (``expected_variance_reduction(..., misfit=True)``); off by default.
    discrepancy : bool
        "variance" only: add a model-discrepancy field conditioned on the data
        (:func:`discrepancy_field`) to the refits' prior (default), so that frequencies
        no measurement constrains count as unknown although every refit extrapolates
        them alike (benchmarks/vqns.json ``loop_*_discrepancy``).
    warm_start : bool
        Start each reconstruction's restarts from the previous one's fits
        (``reconstruct(..., warm_start=)``); off by default (no gain measured).
    """

    def __init__(self, candidates=DEFAULT_CANDIDATES, *, initial, n_points: int = 30,
                 chi_end=DEFAULT_CHI_END, target: float = 0.1, max_measurements: int = 8,
                 cost_aware: bool = False, overhead: float = 15e-6, reconstruct_kw=None,
                 seed=None, min_spacing: float = 60e-9, criterion: str = "variance",
                 omega_max: float | None = None, misfit_prior: bool = False,
                 discrepancy: bool = True, warm_start: bool = False,
                 hardware_budget: float | None = None, shots: int = 1,
                 min_points: int = 8):
        self.candidates = [str(c) for c in candidates]
        for c in self.candidates:
            pulse_number(c)
        self.initial = [(str(s), np.asarray(t, float)) for s, t in initial]
        if not self.initial:
            raise ValueError("give at least one initial (sequence, times) pair")
        self.n_points = tuple(sorted({int(n) for n in np.atleast_1d(n_points)}))
        if not self.n_points or min(self.n_points) < 2:
            raise ValueError(f"n_points must be >= 2, got {n_points!r}")
        if hardware_budget is not None and not (np.isfinite(hardware_budget)
                                                and hardware_budget > 0):
            raise ValueError(f"hardware_budget must be > 0 s, got {hardware_budget!r}")
        self.hardware_budget = None if hardware_budget is None else float(hardware_budget)
        if int(shots) < 1:
            raise ValueError(f"shots must be >= 1, got {shots!r}")
        self.shots = int(shots)
        if int(min_points) < 2:
            raise ValueError(f"min_points must be >= 2, got {min_points!r}")
        self.min_points = min(int(min_points), self.n_points[0])
        self._hardware_time: dict = {}  # reported hardware time by sequence
        self.chi_end = tuple(float(c) for c in np.atleast_1d(chi_end))
        if not self.chi_end or not all(np.isfinite(c) and c > 0 for c in self.chi_end):
            raise ValueError(f"chi_end must be > 0, got {chi_end!r}")
        if criterion not in ("variance", "eq7"):
            raise ValueError(f"criterion must be 'variance' or 'eq7', got {criterion!r}")
        self.criterion = criterion
        if omega_max is not None and not (np.isfinite(omega_max) and omega_max > 0):
            raise ValueError(f"omega_max must be > 0 rad/s, got {omega_max!r}")
        self.omega_max = omega_max
        self.misfit_prior = bool(misfit_prior)
        self.discrepancy = bool(discrepancy)
        self.warm_start = bool(warm_start)
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
        self._stalled: str | None = None  # why the last adaptive choice found nothing

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
        self._stalled = None
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
                if merged.get("hardware_time") is not None:
                    self._hardware_time[p.sequence] = float(merged["hardware_time"])
                else:
                    self._hardware_time.pop(p.sequence, None)
            else:
                last_id = p.sequence
                self._params[last_id] = {"sequence": p.sequence, "t": p.t}
            self.measurements = [m for m in self.measurements if m.sequence != p.sequence]
            self.measurements.append(p)
        if self._pending_initial():
            return
        kw = dict(self.reconstruct_kw)
        if self.warm_start and self.result is not None:
            kw["warm_start"] = self.result
        self.result = reconstruct(self.measurements, seed=self.rng, **kw)
        self.history.append({"sequences": [m.sequence for m in self.measurements],
                             "band_width": relative_band_width(self.result),
                             "result": self.result, ID_KEY: last_id})
        log.info("VQNS loop: %d measurements, relative band width %.3g",
                 len(self.measurements), self.history[-1]["band_width"])

    def cost(self, t) -> float:
        """Hardware time in s of one measurement at times ``t`` (s):
        ``shots * sum(t + overhead)``."""
        return self.shots * float(np.sum(np.asarray(t, float) + self.overhead))

    @property
    def hardware_time(self) -> float:
        """Hardware time spent on the measurements so far, s (reported, else :meth:`cost`)."""
        return sum(self._hardware_time.get(m.sequence, self.cost(m.t))
                   for m in self.measurements)

    def _left(self) -> float:
        """Hardware time left in the budget, s (inf without one)."""
        if self.hardware_budget is None:
            return np.inf
        return self.hardware_budget - self.hardware_time

    def _grids(self, te, t_lo, left):
        """Time grids to ``te`` s offered for one (sequence, window): one per ``n_points``
        that fits in ``left`` s, or the largest count >= ``min_points`` that does."""
        out = []
        for n in self.n_points:
            t = np.linspace(max(te / n, t_lo), te, n)
            if self.cost(t) <= left:
                out.append(t)
        if out or not np.isfinite(left):
            return out
        for n in range(min(self.n_points) - 1, self.min_points - 1, -1):
            t = np.linspace(max(te / n, t_lo), te, n)
            if self.cost(t) <= left:
                return [t]
        return []

    def suggest(self, n: int | None = 1) -> list[dict]:
        """Up to ``n`` next measurements as ``{"_id", "sequence", "t"}`` dicts ([]: stop).

        ``t`` holds the evolution times in s; ``_id`` is unique and matches the outcome
        to :meth:`ingest`.
        """
        n = 1 if n is None else int(n)
        self._stalled = None
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
        fn = _coherence_fn(self.result)
        left = self._left()
        t_hi = 100 * max(m.t.max() for m in self.measurements)
        variance = self.criterion == "variance" and self.result.n_success >= 5
        if variance:
            lo, hi = self.result.band
            w_max = self.omega_max or (np.pi / self.min_spacing if self.min_spacing > 0
                                       else 4 * hi)
            omega = np.geomspace(lo, max(w_max, 2 * lo), 160)
            sigma = _noise_sd(self.result, self.measurements)
            windows = self.chi_end
            field = (discrepancy_field(self.result, self.measurements, omega, sigma)
                     if self.discrepancy else None)
        else:
            scores = candidate_scores(self.result, self.measurements, free)
            windows = (max(self.chi_end),)
        plans = []
        for c in free:
            n_pi = pulse_number(c)
            # the sequencer needs t / N >= one pi plus one pi/2 pulse (min_spacing)
            t_lo = max(n_pi, 1) * self.min_spacing
            for chi_end in windows:
                te = predicted_decay_time(fn, n_pi, chi_end=chi_end, t_hi=t_hi)
                if te <= 2 * t_lo:
                    log.info("VQNS loop: %s to chi = %g skipped: predicted decay %.3g s is "
                             "within twice its shortest playable time %.3g s", c, chi_end, te,
                             t_lo)
                    continue
                for t in self._grids(te, t_lo, left):
                    cost = self.cost(t)  # hardware s: the per-second score and the budget agree
                    if variance:
                        gain = expected_variance_reduction(self.result, c, t, sigma, omega,
                                                          misfit=self.misfit_prior,
                                                          field=field)
                        score = float(np.sum(gain)) / cost
                    else:
                        score = scores[c] / (cost if self.cost_aware else 1.0)
                    plans.append((score, c, chi_end, t))
        if not plans:
            self._stalled = (f"hardware budget: no free sequence fits the {left:.3g} s left"
                             if np.isfinite(left) else
                             "no free sequence has a playable window (predicted decays "
                             "within twice the shortest playable time)")
            log.info("VQNS loop: stop: %s", self._stalled)
        plans.sort(key=lambda x: -x[0])
        out, seen = [], set()
        for score, c, chi_end, t in plans:  # the best window of each sequence
            if c not in seen and len(out) < n:
                seen.add(c)
                out.append({"sequence": c, "t": t})
                log.info("VQNS loop: suggest %s up to chi = %g (%d points to %.3g s), "
                         "score %.3g", c, chi_end, len(t), t[-1], score)
        return out

    def should_stop(self) -> tuple[bool, str | None]:
        """(stop, reason): band narrow enough, measurement count reached, hardware budget
        spent (not even ``min_points`` at the shortest playable time fit, or the last
        :meth:`suggest` found no free sequence that fits what is left), or no sequence
        left."""
        if self.result is None:
            return False, None
        if len(self.measurements) >= self.max_measurements:
            return True, f"{len(self.measurements)} measurements (max_measurements)"
        left = self._left()
        if left < self.cost(np.full(self.min_points, 2 * self.min_spacing)):
            return True, (f"hardware budget: {max(left, 0.0):.3g} s of "
                          f"{self.hardware_budget:.3g} s left")
        bw = self.history[-1]["band_width"]
        if bw <= self.target:
            return True, f"relative band width {bw:.3g} <= target {self.target:g}"
        if not self._free():
            return True, "every candidate sequence measured"
        if self._stalled:
            return True, self._stalled
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
