"""Adaptive ODMR: sequential Bayesian choice of the next microwave frequency.

:class:`AdaptiveODMR` keeps a particle posterior over the line (centre, width, depth,
baseline; :func:`mracq.recon.calibration.fits.odmr_model`, optionally the 14N triplet) and
picks the frequency whose predicted population the particles disagree on most relative to
the measurement noise: the expected information gain of a Gaussian measurement,
``0.5 ln(1 + Var_posterior[y(f)] / sigma^2)`` (the utility of NIST's optbayesexpt, used on
NV ODMR). It follows bluesky-adaptive 1.0's optimizer protocol (:mod:`mracq.recon.protocol`):
``suggest(n)`` -> ``[{"_id", "frequency"}]`` (Hz), ``ingest`` <- outcome dicts
``{"_id", "value", "sigma"}`` (population and its standard error; or ``(frequency, value,
sigma)`` triples), ``should_stop()``, ``get_best_points()``. It stops when the
uncertainty of the centre reaches ``target``. No Bluesky here:
:func:`mracq.plans.calibration.adaptive_odmr` drives it with devices,
``benchmarks/calibration.py`` with a shot-noise model.

Resampling: when the effective number of particles falls below half, particles are drawn
by weight and moved by Metropolis steps on the likelihood of all the data so far
(resample-move), which keeps them a sample of the posterior.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.calibration.fits import odmr_model
from mracq.recon.protocol import ID_KEY

__all__ = ["AdaptiveODMR"]

log = logging.getLogger(__name__)

PARAMS = ("centre", "width", "depth", "baseline")


class AdaptiveODMR:
    """Particle-filter ODMR line finder.

    Parameters
    ----------
    frequency_range : (float, float)
        Prior range of the centre and the candidate frequencies, Hz.
    width_range : (float, float)
        Prior range of the half width (log-uniform), Hz.
    depth_range : (float, float)
        Prior range of the dip depth (population units).
    baseline : (float, float)
        Prior mean and standard deviation of the off-resonant population.
    shape : {"lorentzian", "gaussian"}
    splitting : float
        14N splitting (Hz) of a triplet model; 0: one line.
    target : float
        Stop when the centre's posterior standard deviation is at most this, Hz.
    n_particles : int
    n_candidates : int
        Candidate frequencies, evenly spaced over ``frequency_range``.
    max_points : int
        Stop after this many measurements.
    criterion : {"auto", "centre", "information"}
        How :meth:`utility` ranks candidates; ``"auto"`` (default, best in
        ``benchmarks/calibration.py``): information until the centre is known to better
        than the line width, then the centre's variance reduction, computed from the
        least-squares fit once there is one (:meth:`_local_fit`).
    centre_range : (float, float), optional
        Prior range of the centre, Hz (default ``frequency_range``): the line is known to
        lie there, while its wings reach over the whole candidate range.
    seed : int or numpy.random.Generator, optional
    """

    def __init__(self, frequency_range, *, width_range=(50e3, 5e6), depth_range=(0.01, 0.6),
                 baseline=(1.0, 0.03), shape="lorentzian", splitting=0.0, target=10e3,
                 n_particles=4000, n_candidates=201, max_points=500, criterion="auto",
                 centre_range=None, min_flank_points=16, seed=None):
        lo, hi = (float(x) for x in frequency_range)
        if not hi > lo:
            raise ValueError(f"frequency_range must increase, got {frequency_range!r}")
        if not (0 < width_range[0] < width_range[1]):
            raise ValueError(f"width_range must be 0 < low < high Hz, got {width_range!r}")
        if criterion not in ("auto", "centre", "information"):
            raise ValueError("criterion must be 'auto', 'centre' or 'information', got "
                             f"{criterion!r}")
        if int(min_flank_points) < 4:
            raise ValueError(f"min_flank_points must be >= 4, got {min_flank_points!r}")
        self.min_flank_points = int(min_flank_points)
        self.criterion = criterion
        if not float(target) > 0:
            raise ValueError(f"target must be > 0 Hz, got {target!r}")
        self.range = (lo, hi)
        self.shape, self.splitting = shape, float(splitting)
        self.target, self.max_points = float(target), int(max_points)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n = int(n_particles)
        r = self.rng
        self.particles = np.column_stack([
            r.uniform(*(centre_range or (lo, hi)), n),
            np.exp(r.uniform(np.log(width_range[0]), np.log(width_range[1]), n)),
            r.uniform(*depth_range, n),
            r.normal(baseline[0], baseline[1], n),
        ])
        c_lo, c_hi = centre_range or (lo, hi)
        # prior support (Metropolis moves stay inside): flat in centre and depth
        self._lower = np.array([c_lo, width_range[0], depth_range[0], -np.inf])
        self._upper = np.array([c_hi, width_range[1], depth_range[1], np.inf])
        self.weights = np.full(n, 1.0 / n)
        self.candidates = np.linspace(lo, hi, int(n_candidates))
        self.measured: list[tuple[float, float, float]] = []
        self.noise_guess = None
        self._suggested: dict = {}
        self._next_id = 0
        self._flank_start: int | None = None  # points measured when the flank design began

    # ------------------------------------------------------------------ posterior
    def _predict(self, f, particles=None):
        p = self.particles if particles is None else particles
        f = np.asarray(f, float)[..., None]
        return odmr_model(f, p[:, 0], p[:, 1], p[:, 2], p[:, 3], shape=self.shape,
                          splitting=self.splitting)

    def mean(self) -> dict:
        """Posterior means of centre (Hz), width (Hz), depth, baseline."""
        m = self.weights @ self.particles
        return dict(zip(PARAMS, map(float, m), strict=True))

    def std(self) -> dict:
        """Posterior standard deviations (same units as :meth:`mean`)."""
        m = self.weights @ self.particles
        v = self.weights @ (self.particles - m) ** 2
        return dict(zip(PARAMS, map(float, np.sqrt(v)), strict=True))

    def centre_quantiles(self, q=(0.05, 0.5, 0.95)) -> np.ndarray:
        """Weighted quantiles of the centre, Hz."""
        order = np.argsort(self.particles[:, 0])
        cw = np.cumsum(self.weights[order])
        return self.particles[order, 0][np.minimum(np.searchsorted(cw, q), len(cw) - 1)]

    def _robust_spread(self) -> tuple[float, float]:
        """(median, (q95 - q05) / 3.29) of the centre, Hz: a standard deviation that a
        small leftover mode (a 14N alias one splitting away) does not inflate."""
        q05, q50, q95 = self.centre_quantiles()
        return float(q50), float(q95 - q05) / 3.29

    def alias_weight(self) -> float:
        """Posterior weight of centres more than half a 14N splitting (one line: one line
        width) from the median centre: a leftover alias mode."""
        med = self.centre_quantiles((0.5,))[0]
        half = 0.5 * self.splitting if self.splitting else self.mean()["width"]
        return float(self.weights @ (np.abs(self.particles[:, 0] - med) > half))

    def _lock_ready(self) -> bool:
        """One posterior mode (alias weight < 1 %) whose centre is known to a quarter of
        the line width: the flank design (:meth:`flank_offsets`) can start."""
        return (self.alias_weight() < 0.01
                and self._robust_spread()[1] < 0.25 * self.mean()["width"])

    @property
    def locked(self) -> bool:
        """Whether the flank design runs (criterion ``"auto"`` only)."""
        return self._flank_start is not None

    def flank_offsets(self, width: float | None = None) -> tuple[float, float]:
        """Offsets (Hz, >= 0) from the centre of the flank design for a line half width
        ``width`` (default: the posterior mean).

        Of the profile's slope ``|d shape / d f|`` (the centre's information per point),
        the offset ``x*`` of its maximum (the outer flank of the outer 14N line, or of the
        one line), and the offsets inside and outside it where the slope has fallen to 0.8
        of that maximum: for a Lorentzian 0.4 w and 0.8 w, each with 0.84 of the best
        point's centre information, and with different levels of the dip, so that width
        and depth are told apart (a design at one offset cannot, and then the centre's
        stated error, which scales with the slope, is not known).
        """
        w = float(width if width is not None else self.mean()["width"])
        x = np.linspace(0.0, self.splitting + 8 * w, 4001)
        prof = odmr_model(x, 0.0, w, 1.0, 0.0, shape=self.shape, splitting=self.splitting)
        slope = np.abs(np.gradient(prof, x))
        i = int(np.argmax(slope))
        level = 0.9 * slope[i]
        lo = i
        while lo > 0 and slope[lo - 1] >= level:
            lo -= 1
        hi = i
        while hi < len(x) - 1 and slope[hi + 1] >= level:
            hi += 1
        return float(x[lo]), float(x[hi])

    # the least-squares centre error counts once the width is known to this fraction: the
    # centre's error scales with the flank's slope, and with a width known worse the
    # linearised error understates the posterior's (benchmarks/calibration.py)
    WIDTH_KNOWN = 0.25

    # one cycle of the flank design: (offset kind, sign); "x1"/"x2" the flank offsets,
    # "dip" the deepest point of the profile, "far" the baseline beyond every line
    FLANK_CYCLE = (("x1", 1), ("x1", -1), ("x2", 1), ("x2", -1), ("dip", 1),
                   ("x1", -1), ("x1", 1), ("x2", -1), ("x2", 1), ("far", 1),
                   ("x1", 1), ("x1", -1), ("x2", 1), ("x2", -1), ("dip", -1),
                   ("x1", -1), ("x1", 1), ("x2", -1), ("x2", 1), ("far", -1))

    def _flank_point(self, k: int) -> float:
        """The k-th point of the flank design around the posterior median centre ``c``
        (:attr:`FLANK_CYCLE`), Hz: mirrored pairs ``c -+ x1``, ``c -+ x2`` (to first order
        the centre's estimate is then independent of width, depth and baseline), and one
        point in five at the bottom of the dip (depth) or beyond all lines (baseline), which
        the flank points alone cannot tell from the width."""
        c = self.centre_quantiles((0.5,))[0]
        w = self.mean()["width"]
        kind, sign = self.FLANK_CYCLE[k % len(self.FLANK_CYCLE)]
        if kind == "far":
            x = self.splitting + 10 * w
        elif kind == "dip":
            x = self.splitting if self.splitting > 4 * w else 0.0
            x = 0.0 if sign < 0 else x
        else:
            x = self.flank_offsets(w)[0 if kind == "x1" else 1]
        return float(np.clip(c + sign * x, *self.range))

    def _local_fit(self):
        """The least-squares fit of all points once the flank design runs and has measured
        ``min_flank_points``, if it agrees with the posterior (centre within three combined
        spreads of the posterior median) and has the width to :attr:`WIDTH_KNOWN`; else
        None."""
        if not self.locked or len(self.measured) - self._flank_start < self.min_flank_points:
            return None
        key = len(self.measured)
        if getattr(self, "_fit_cache", (None,))[0] != key:
            med, spread = self._robust_spread()
            fit = self.fit()
            ok = fit is not None and np.isfinite(fit.errors["centre"]) and \
                abs(fit["centre"] - med) <= 3 * np.hypot(spread, fit.errors["centre"]) and \
                fit.errors["width"] <= self.WIDTH_KNOWN * fit["width"]
            self._fit_cache = (key, fit if ok else None)
        return self._fit_cache[1]

    def estimate(self) -> tuple[float, float]:
        """(centre, standard uncertainty), Hz.

        Once the flank design has measured ``min_flank_points`` and the least-squares fit
        of all points agrees with the posterior: the fit's centre and standard error
        (the particle cloud's finite size and its moves broaden the posterior); else the
        posterior mean and standard deviation.
        """
        fit = self._local_fit()
        if fit is not None:
            return float(fit["centre"]), float(fit.errors["centre"])
        return self.mean()["centre"], self.std()["centre"]

    def centre_uncertainty(self) -> float:
        """Standard uncertainty of the centre, Hz (:meth:`estimate`)."""
        return self.estimate()[1]

    def fit(self):
        """Least-squares fit (:func:`fit_odmr`) of the measured points from the posterior mean;
        None if it fails."""
        from mracq.recon.calibration.fits import fit_odmr

        f, y, s = (np.array(c) for c in zip(*self.measured, strict=True))
        try:
            return fit_odmr(f, y, s, shape=self.shape, triplet=self.splitting != 0.0,
                            splitting=self.splitting, centre_guess=self.mean()["centre"])
        except (RuntimeError, ValueError):
            return None

    @property
    def done(self) -> bool:
        """Target uncertainty of the centre reached, or ``max_points`` measured."""
        return self.should_stop()[0]

    def ingest(self, points) -> None:
        """Update the posterior with measured points.

        ``points``: outcome dicts ``{"_id", "value", "sigma"}`` answering a suggestion (or
        naming their ``frequency``), or ``(frequency_Hz, population, error)`` triples.
        """
        for p in points:
            if isinstance(p, dict):
                q = {**self._suggested.pop(p.get(ID_KEY), {}), **p}
                if "frequency" not in q:
                    raise ValueError(f"outcome {p.get(ID_KEY)!r} names no frequency and "
                                     "matches no open suggestion")
                f, y, s = (float(q.get(k, np.nan)) for k in ("frequency", "value", "sigma"))
            else:
                f, y, s = (float(v) for v in p)
            if not (np.isfinite(f) and np.isfinite(y) and np.isfinite(s) and s > 0):
                raise ValueError(f"ingest: bad point (f={f!r}, y={y!r}, sigma={s!r})")
            self.measured.append((f, y, s))
            self.noise_guess = s
            pred = self._predict(f)
            logw = np.log(np.maximum(self.weights, 1e-300)) - 0.5 * ((y - pred) / s) ** 2
            logw -= logw.max()
            w = np.exp(logw)
            self.weights = w / w.sum()
            if 1.0 / np.sum(self.weights**2) < 0.5 * len(self.weights):
                self._resample()
            if self.criterion == "auto":
                if self._flank_start is None and self._lock_ready():
                    self._flank_start, self._flank_count = len(self.measured), 0
                elif self._flank_start is not None and self.alias_weight() > 0.05:
                    self._flank_start = None  # a second mode came back: search again

    def _loglike(self, particles) -> np.ndarray:
        """Log-likelihood of every measured point for each particle (Gaussian errors)."""
        f, y, sig = (np.array(c) for c in zip(*self.measured, strict=True))
        pred = self._predict(f, particles)  # (n_measured, n_particles)
        return -0.5 * np.sum(((y[:, None] - pred) / sig[:, None]) ** 2, axis=0)

    def _resample(self, steps=((0.5, 2), (0.1, 2), (0.02, 2))) -> None:
        """Draw particles by weight, then Metropolis moves on the full likelihood.

        Moves propose Gaussian steps with ``scale`` times the posterior covariance; a
        move is accepted with the Metropolis ratio of the likelihood of all measured
        points (the prior taken flat within its bounds; the width's log-uniform and the
        baseline's normal prior are ignored there, the data dominate them), so the
        particles stay a sample of the posterior whatever the step size (resample-move;
        Liu-West jitter alone widens a posterior with several modes by their spread).
        """
        n = len(self.weights)
        cov = np.cov(self.particles.T, aweights=self.weights)
        idx = self.rng.choice(n, size=n, p=self.weights)
        parts = self.particles[idx]
        ll = self._loglike(parts)
        for scale, repeat in steps:
            for _ in range(repeat):
                prop = parts + self.rng.multivariate_normal(np.zeros(4), scale * cov, size=n,
                                                            method="eigh")
                inside = np.all((prop > self._lower) & (prop < self._upper), axis=1)
                ll_prop = np.full(n, -np.inf)
                if inside.any():
                    ll_prop[inside] = self._loglike(prop[inside])
                accept = np.log(self.rng.uniform(size=n)) < ll_prop - ll
                parts[accept], ll[accept] = prop[accept], ll_prop[accept]
        self.particles = parts
        self.weights = np.full(n, 1.0 / n)

    # ------------------------------------------------------------------ design
    def utility(self, sigma: float | None = None) -> np.ndarray:
        """Score of each candidate frequency (larger: measure there).

        ``"information"`` (and ``"auto"`` until the flank design starts): expected
        information gain ``0.5 ln(1 + Var[y] / sigma^2)`` (nats) about all four
        parameters; ``"centre"``: the expected reduction of the centre's posterior variance
        in the linear-Gaussian approximation, ``Cov[centre, y]^2 / (Var[y] + sigma^2)``
        (Hz^2).
        """
        s = sigma if sigma is not None else (self.noise_guess or 0.03)
        pred = self._predict(self.candidates)  # (n_candidates, n_particles)
        m = pred @ self.weights
        dev = pred - m[:, None]
        var = (dev**2) @ self.weights
        if self.criterion in ("information", "auto"):
            return 0.5 * np.log1p(var / s**2)
        c = self.particles[:, 0] - self.weights @ self.particles[:, 0]
        cov = dev @ (self.weights * c)
        return cov**2 / (var + s**2)

    def suggest(self, n: int | None = 1) -> list[dict]:
        """The next ``n`` points ``{"_id", "frequency"}`` (Hz); empty when :attr:`done`.

        Several at once: the best candidates at least two candidate steps apart.
        """
        n = 1 if n is None else int(n)
        if self.done:
            return []
        if self.locked:
            out = []
            for _ in range(n):
                self._next_id += 1
                sug = {ID_KEY: f"odmr-{self._next_id}",
                       "frequency": self._flank_point(self._flank_count)}
                self._flank_count += 1
                self._suggested[sug[ID_KEY]] = sug
                out.append(sug)
            return out
        u = self.utility()
        order = np.argsort(u)[::-1]
        step = self.candidates[1] - self.candidates[0] if len(self.candidates) > 1 else 0.0
        chosen: list[float] = []
        for i in order:
            f = float(self.candidates[i])
            if all(abs(f - c) >= 2 * step for c in chosen):
                chosen.append(f)
            if len(chosen) == n:
                break
        out = []
        for f in chosen:
            self._next_id += 1
            sug = {ID_KEY: f"odmr-{self._next_id}", "frequency": f}
            self._suggested[sug[ID_KEY]] = sug
            out.append(sug)
        return out

    def should_stop(self) -> tuple[bool, str | None]:
        """(stop, reason): target uncertainty of the centre reached, or ``max_points``."""
        n = len(self.measured)
        if n >= self.max_points:
            return True, f"max_points: {n} measured"
        if n and (self.criterion != "auto" or self._local_fit() is not None) \
                and self.centre_uncertainty() <= self.target:
            return True, (f"converged: centre uncertainty {self.centre_uncertainty():.3g} Hz "
                          f"<= target {self.target:g} Hz")
        return False, None

    def get_best_points(self) -> list[tuple]:
        """``[("centre", {"frequency"}, {"centre_error"})]``: the line centre (Hz) and its
        uncertainty; [] before any measurement."""
        if not self.measured:
            return []
        c, e = self.estimate()
        return [("centre", {"frequency": c}, {"centre_error": e})]

    def result(self) -> dict:
        """Posterior means and standard deviations, and the number of points measured."""
        m, s = self.mean(), self.std()
        out = {**m, **{f"{k}_error": v for k, v in s.items()}, "points": len(self.measured)}
        out["centre"], out["centre_error"] = self.estimate()
        return out
