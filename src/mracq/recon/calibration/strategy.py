"""Adaptive ODMR: sequential Bayesian choice of the next microwave frequency.

:class:`AdaptiveODMR` keeps a particle posterior over the line (centre, width, depth,
baseline; :func:`mracq.recon.calibration.fits.odmr_model`, optionally the 14N triplet) and
picks the frequency whose predicted population the particles disagree on most relative to
the measurement noise: the expected information gain of a Gaussian measurement,
``0.5 ln(1 + Var_posterior[y(f)] / sigma^2)`` (the utility of NIST's optbayesexpt, used on
NV ODMR). Naming follows bluesky-adaptive: ``suggest(n)`` -> frequencies, ``ingest(points)``
<- (frequency, population, error). It stops when the posterior standard deviation of the
centre reaches ``target``. No Bluesky here: :func:`mracq.plans.calibration.adaptive_odmr`
drives it with devices, ``benchmarks/calibration.py`` with a shot-noise model.

Resampling: when the effective number of particles falls below half, particles are drawn
by weight and moved by the Liu-West kernel (shrink towards the mean by ``a``, Gaussian
jitter of the remaining covariance), which keeps the first two moments.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.calibration.fits import odmr_model

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
        How :meth:`utility` ranks candidates (default information, which did best in
        ``benchmarks/calibration.py``); ``"auto"``: information until the centre is
        known to better than the line width, then the centre's variance reduction.
    centre_range : (float, float), optional
        Prior range of the centre, Hz (default ``frequency_range``): the line is known to
        lie there, while its wings reach over the whole candidate range.
    seed : int or numpy.random.Generator, optional
    """

    def __init__(self, frequency_range, *, width_range=(50e3, 5e6), depth_range=(0.01, 0.6),
                 baseline=(1.0, 0.03), shape="lorentzian", splitting=0.0, target=10e3,
                 n_particles=4000, n_candidates=201, max_points=500, criterion="information",
                 centre_range=None, seed=None):
        lo, hi = (float(x) for x in frequency_range)
        if not hi > lo:
            raise ValueError(f"frequency_range must increase, got {frequency_range!r}")
        if not (0 < width_range[0] < width_range[1]):
            raise ValueError(f"width_range must be 0 < low < high Hz, got {width_range!r}")
        if criterion not in ("auto", "centre", "information"):
            raise ValueError("criterion must be 'auto', 'centre' or 'information', got "
                             f"{criterion!r}")
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
        self._lower = np.array([lo - (hi - lo), width_range[0] / 4, 0.0, -np.inf])
        self.weights = np.full(n, 1.0 / n)
        self.candidates = np.linspace(lo, hi, int(n_candidates))
        self.measured: list[tuple[float, float, float]] = []
        self.noise_guess = None

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

    def centre_uncertainty(self) -> float:
        """Standard uncertainty of the centre, Hz.

        The posterior standard deviation; once the posterior is one narrow peak (within
        the line width), the least-squares standard error of the measured points when that
        is smaller (the particle cloud's finite size and its resampling jitter broaden the
        posterior a little), provided the two estimates agree.
        """
        s, m = self.std(), self.mean()
        if len(self.measured) < 8 or s["centre"] > 0.5 * m["width"]:
            return s["centre"]
        fit = self.fit()
        if fit is None or abs(fit["centre"] - m["centre"]) > 3 * s["centre"]:
            return s["centre"]
        return min(s["centre"], fit.errors["centre"])

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
        return (len(self.measured) >= self.max_points or
                (len(self.measured) > 0 and self.centre_uncertainty() <= self.target))

    def ingest(self, points) -> None:
        """Update the posterior with measured ``(frequency_Hz, population, error)`` triples."""
        for f, y, s in points:
            f, y, s = float(f), float(y), float(s)
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

    def _resample(self, a: float = 0.98) -> None:
        n = len(self.weights)
        idx = self.rng.choice(n, size=n, p=self.weights)
        mean = self.weights @ self.particles
        cov = np.cov(self.particles.T, aweights=self.weights)
        new = a * self.particles[idx] + (1 - a) * mean
        jitter = self.rng.multivariate_normal(np.zeros(4), (1 - a**2) * cov, size=n,
                                              method="eigh")
        self.particles = np.maximum(new + jitter, self._lower)
        self.weights = np.full(n, 1.0 / n)

    # ------------------------------------------------------------------ design
    def utility(self, sigma: float | None = None) -> np.ndarray:
        """Score of each candidate frequency (larger: measure there).

        ``"information"``: expected information gain ``0.5 ln(1 + Var[y] / sigma^2)``
        (nats) about all four parameters; ``"centre"``: the expected reduction of the
        centre's posterior variance in the linear-Gaussian approximation,
        ``Cov[centre, y]^2 / (Var[y] + sigma^2)`` (Hz^2).
        """
        s = sigma if sigma is not None else (self.noise_guess or 0.03)
        pred = self._predict(self.candidates)  # (n_candidates, n_particles)
        m = pred @ self.weights
        dev = pred - m[:, None]
        var = (dev**2) @ self.weights
        if self.criterion == "information" or (
                self.criterion == "auto" and self.std()["centre"] > self.mean()["width"]):
            return 0.5 * np.log1p(var / s**2)
        c = self.particles[:, 0] - self.weights @ self.particles[:, 0]
        cov = dev @ (self.weights * c)
        return cov**2 / (var + s**2)

    def suggest(self, n: int = 1) -> list[float]:
        """The next ``n`` frequencies (Hz); empty when :attr:`done`.

        Several at once: the best candidates at least two candidate steps apart.
        """
        if self.done:
            return []
        u = self.utility()
        order = np.argsort(u)[::-1]
        step = self.candidates[1] - self.candidates[0] if len(self.candidates) > 1 else 0.0
        chosen: list[float] = []
        for i in order:
            f = float(self.candidates[i])
            if all(abs(f - c) >= 2 * step for c in chosen):
                chosen.append(f)
            if len(chosen) == int(n):
                break
        return chosen

    def result(self) -> dict:
        """Posterior means and standard deviations, and the number of points measured."""
        m, s = self.mean(), self.std()
        out = {**m, **{f"{k}_error": v for k, v in s.items()}, "points": len(self.measured)}
        out["centre_error"] = self.centre_uncertainty()
        return out
