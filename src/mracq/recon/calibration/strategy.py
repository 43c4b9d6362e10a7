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

from mracq.recon.calibration.fits import odmr_jacobian, odmr_model, pooled_sigma
from mracq.recon.calibration.grid import expected_centre_variance, grid_posterior
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
        than the line width, then the centre's variance reduction; once the line is found
        and fitted (:meth:`_design_fit`), every second point from a fixed cycle of the
        lines' maximum-slope flanks, the baseline and the dip (:meth:`_cycle_frequency`),
        the others minimising the stated centre error after one more point: the grid
        posterior's expected centre variance (:meth:`_grid_design`) while the fit is not
        trusted, the least-squares fit's honest error once it is.
    centre_range : (float, float), optional
        Prior range of the centre, Hz (default ``frequency_range``): the line is known to
        lie there, while its wings reach over the whole candidate range.
    seed : int or numpy.random.Generator, optional
    """

    def __init__(self, frequency_range, *, width_range=(50e3, 5e6), depth_range=(0.01, 0.6),
                 baseline=(1.0, 0.03), shape="lorentzian", splitting=0.0, target=10e3,
                 n_particles=4000, n_candidates=201, max_points=500, criterion="auto",
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
        c_lo, c_hi = centre_range or (lo, hi)
        # prior support (Metropolis moves stay inside): flat in centre and depth
        self._lower = np.array([c_lo, width_range[0], depth_range[0], -np.inf])
        self._upper = np.array([c_hi, width_range[1], depth_range[1], np.inf])
        self.weights = np.full(n, 1.0 / n)
        self.baseline_prior = (float(baseline[0]), float(baseline[1]))
        self.width_range = (float(width_range[0]), float(width_range[1]))
        self.depth_range = (float(depth_range[0]), float(depth_range[1]))
        self.candidates = np.linspace(lo, hi, int(n_candidates))
        self.measured: list[tuple[float, float, float]] = []  # sigma pooled (POOL_SIGMA)
        self._sigma_given: list[float] = []
        self.noise_guess = None
        self._suggested: dict = {}
        self._next_id = 0

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

    # the line counts as found once the centre's robust spread is within this fraction of
    # the particles' mean width (the fit, the grid, the search refresh and the floor after
    # the find all ask this)
    FOUND_SPREAD = 0.5

    def _line_found(self, spread: float | None = None) -> bool:
        """Whether the line is found: the centre's robust spread (``spread``, Hz, if the
        caller has it) within :attr:`FOUND_SPREAD` of the mean width."""
        if spread is None:
            spread = self._robust_spread()[1]
        return spread <= self.FOUND_SPREAD * self.mean()["width"]

    # the least-squares error counts only with the width known to this fraction: a design
    # whose points pile on one offset (the outer flank of the outer 14N line) cannot tell
    # width from depth, and the linearised centre error then understates the posterior's
    # (benchmarks/calibration.py: without it, pulls up to 9.6 sigma)
    WIDTH_KNOWN = 0.5
    # ... and only where the posterior's standard deviation is at most this multiple of it
    # (a least-squares error 5x below the posterior's stated pulls of 7 sigma)
    POSTERIOR_AGREEMENT = 2.5
    # no convergence before this many points: a particle posterior of 20-30 points can
    # collapse on a too narrow width and state a too small error; at 40 points a fit on
    # a narrow, deep line (a third of the true width) still stopped runs at 6-21 sigma
    # (benchmarks/calibration.py rigs 1103, 1205); 60 with the dip in the cycle: pulls
    # spread 1.03-1.25 where 40 without it gave 1.84-3.91 (rigs 1100-1211)
    MIN_POINTS = 60
    # ... and not before this many points after the line was first found (the particles'
    # robust spread within half the width): search points say nothing of the line's
    # shape, and runs that found the line late stopped on 40 points on it on a posterior
    # of a too deep or narrow line with errors 2-7x too small (benchmarks/calibration.py
    # rigs 1902 draw 1 at z -7.5, 1904 draw 1 at z +3.9); 0: off
    MIN_AFTER_FOUND = 45

    def _local_fit(self):
        """The least-squares fit once the posterior is one narrow peak, else None.

        Needs :attr:`MIN_POINTS` points (with fewer, a fit of points chosen on a few flanks
        can trade width for centre and state too small an error: benchmarks/calibration.py),
        90 % of the centre's posterior weight within about half a line width, the fit within
        two spreads of the posterior median, its width known to :attr:`WIDTH_KNOWN` and the
        posterior's robust spread (its standard deviation with ``HONESTY_K = 0``; a
        leftover alias mode of a few % weight made that 3-5x the spread and held the
        local fit back for 100 points on low-contrast rigs) within
        :attr:`POSTERIOR_AGREEMENT` of its error, and a line :attr:`WIDER_LINE` times as
        wide fitting the points worse by :attr:`WIDER_CHI2` (:meth:`_wider_line_excluded`).
        """
        if len(self.measured) < self.MIN_POINTS:
            return None
        med, spread = self._robust_spread()
        if not self._line_found(spread):
            return None
        key = len(self.measured)
        if getattr(self, "_fit_cache", (None,))[0] != key:
            fit = self.fit()
            ok = fit is not None and np.isfinite(fit.errors["centre"]) and \
                abs(fit["centre"] - med) <= 2 * spread + 2 * fit.errors["centre"] and \
                fit.errors["width"] <= self.WIDTH_KNOWN * fit["width"] and \
                (spread if self.HONESTY_K else self.std()["centre"]) <= \
                self.POSTERIOR_AGREEMENT * fit.errors["centre"] and \
                self._wider_line_excluded(fit)
            self._fit_cache = (key, fit if ok else None)
        return self._fit_cache[1]

    # the fit counts only where a line WIDER_LINE times as wide (centre, depth and
    # baseline refitted) fits the points worse by at least WIDER_CHI2: the
    # delta-method width error misses the narrow, deep end of the width-depth valley,
    # where runs stopped at 60 points on a fit 0.25-0.6x the true width with errors 2-5x
    # too small (benchmarks/calibration.py rigs 1301, 1303, 1305, 1407); 0: no check
    WIDER_LINE = 1.6
    WIDER_CHI2 = 4.0

    def _profile_chi2(self, centre, width) -> float:
        """chi^2 of the points (and the baseline's prior) for a line at ``centre`` with
        ``width``, depth and baseline at their least-squares values (linear)."""
        f, y, sig = (np.array(c) for c in zip(*self.measured, strict=True))
        shape = odmr_model(f, centre, width, -1.0, 0.0, shape=self.shape,
                           splitting=self.splitting)  # y = b - d * shape
        b0, sb = self.baseline_prior
        a = np.vstack([np.column_stack([np.ones_like(f), -shape]) / sig[:, None],
                       [1.0 / sb, 0.0]])
        rhs = np.r_[y / sig, b0 / sb]
        coef, *_ = np.linalg.lstsq(a, rhs, rcond=None)
        return float(np.sum((a @ coef - rhs) ** 2))

    # where the least-squares fit is not trusted (the width check refuses it) but the line
    # is found, the stated error is the centre's standard deviation of a posterior on a
    # (centre, ln width) grid with depth and baseline integrated out (:meth:`_grid_state`),
    # recomputed every GRID_EVERY points: the particle cloud's spread is biased wide (the
    # points give 0.5-0.7x of it at the true line; benchmarks/calibration.py rigs 1508,
    # 1605, 1608, 1610), and runs stopping on it took 0.5-0.6 of the sweep's time. The
    # stated error is at least the particles' spread / GRID_AGREE; GRID_EVERY = 0: off
    GRID_EVERY = 5
    GRID_AGREE = np.inf
    # ... times exp(HONESTY_K s), s the grid posterior's standard deviation of ln width:
    # with the errors pooled, runs stopping on the trusted fit's inflated error were honest
    # (pulls spread 0.92, none beyond 3 in 88 runs on rigs 2300-2611) and runs stopping on
    # the bare grid spread were not (1.35; 3 of 56 beyond 3, each on a line 0.4-0.8x or
    # 1.2x the true width); 0: the bare spread
    GRID_HONESTY = 1
    GRID_CENTRES = 121
    GRID_WIDTHS = 41

    def _grid_state(self):
        """(centre, stated error) of the grid posterior, Hz, or None (before
        :attr:`MIN_POINTS`, before the line is found, with the grid off, or with more than
        1e-3 of the posterior on the grid's edge). Cached; recomputed every
        :attr:`GRID_EVERY` points (between, the last one: fewer points, a larger error).
        The stated error is the centre's standard deviation times :attr:`GRID_HONESTY`'s factor."""
        n = len(self.measured)
        if not self.GRID_EVERY or n < self.MIN_POINTS:
            return None
        if not self._line_found():
            return None
        cache = getattr(self, "_grid_cache", None)
        if cache is not None and n - cache[0] < self.GRID_EVERY:
            return cache[1]
        out = None
        axes = self._grid_axes()
        if axes is not None:
            cs, edges, lw = axes
            logp = self._grid_posterior(cs, np.exp(lw))
            p = np.exp(logp - logp.max())
            p /= p.sum()
            pc = p.sum(0)
            m = float(pc @ cs)
            # the grid must hold the posterior: little mass on its windows' edges
            if pc[edges].sum() < 1e-3:
                sd = float(np.sqrt(pc @ (cs - m) ** 2))
                if self.GRID_HONESTY:
                    # the centre's error scales with the width: times exp(k s), s the
                    # standard deviation of ln width, as the fit's (:meth:`_honesty`)
                    pw = p.sum(1)
                    s = float(np.sqrt(pw @ (lw - pw @ lw) ** 2))
                    sd *= float(np.exp(self.HONESTY_K * s))
                out = (m, sd)
        self._grid_cache = (n, out)
        return out

    def _grid_axes(self):
        """(centres, edge mask, ln widths) of the grid posterior, or None where the
        particles' line is too close to the prior's edge for three centres."""
        med, spread = self._robust_spread()
        # windows of +- 6 robust spreads at the line and, for a triplet, one splitting to
        # either side (a 14N alias mode of a few % weight: the robust spread ignores it)
        win = np.linspace(-6, 6, self.GRID_CENTRES) * spread
        shifts = (-self.splitting, 0.0, self.splitting) if self.splitting else (0.0,)
        cs = np.concatenate([med + k + win for k in shifts])
        inside = (cs > self._lower[0]) & (cs < self._upper[0])
        edges = np.zeros(len(cs), bool)
        edges[::self.GRID_CENTRES] = edges[self.GRID_CENTRES - 1::self.GRID_CENTRES] = True
        cs, edges = cs[inside], edges[inside]
        lw = np.log(self.particles[:, 1])
        order = np.argsort(lw)
        cw = np.cumsum(self.weights[order])
        q = lw[order][np.minimum(np.searchsorted(cw, (0.005, 0.995)), len(cw) - 1)]
        lw = np.linspace(q[0] - 0.7, q[1] + 0.7, self.GRID_WIDTHS)
        lw = lw[(lw > np.log(self.width_range[0])) & (lw < np.log(self.width_range[1]))]
        if inside[len(win) * (len(shifts) // 2):][:len(win)].sum() < 3 or len(lw) < 3:
            return None
        return cs, edges, lw

    def _grid_posterior(self, cs, ws, linear=False):
        """:func:`~mracq.recon.calibration.grid.grid_posterior` of the measured points on
        the grid ``ws`` x ``cs`` (widths x centres, Hz)."""
        f, y, sig = (np.array(c) for c in zip(*self.measured, strict=True))
        return grid_posterior(f, y, sig, cs, ws, baseline_prior=self.baseline_prior,
                              depth_range=self.depth_range, shape=self.shape,
                              splitting=self.splitting, linear=linear)

    # while the line is not found, every SEARCH_REFRESH points from SEARCH_FROM on the
    # particles are drawn afresh from the posterior on a (centre, ln width) grid over the
    # whole prior, depth and baseline integrated out (:meth:`_search_refresh`): at low
    # contrast the particle cloud settles on a wide, shallow line and its moves do not find
    # the narrow true one (benchmarks/calibration.py rigs 1009, 1011, 1803: the line found
    # after 70-200 points); 0: off
    SEARCH_REFRESH = 5
    SEARCH_FROM = 15
    SEARCH_CENTRES = 801
    SEARCH_WIDTHS = 25

    def _search_refresh(self) -> None:
        """Particles drawn from the grid posterior over the centre's and width's whole prior
        (centre and ln width jittered within their cell; depth and baseline the cell's
        least-squares values, clipped to the prior), then Metropolis moves."""
        cs = np.linspace(self._lower[0], self._upper[0], self.SEARCH_CENTRES)
        ws = np.exp(np.linspace(*np.log(self.width_range), self.SEARCH_WIDTHS))
        logp, mb, md, *_ = self._grid_posterior(cs, ws, linear=True)
        p = np.exp(logp - logp.max()).ravel()
        p /= p.sum()
        n = len(self.weights)
        k = self.rng.choice(p.size, size=n, p=p)
        iw, ic = np.unravel_index(k, logp.shape)
        dc, dlw = cs[1] - cs[0], np.log(ws[1] / ws[0])
        parts = np.column_stack([
            cs[ic] + self.rng.uniform(-0.5, 0.5, n) * dc,
            ws[iw] * np.exp(self.rng.uniform(-0.5, 0.5, n) * dlw),
            md[iw, ic], mb[iw, ic]])
        span = self._upper[:3] - self._lower[:3]
        parts[:, :3] = np.clip(parts[:, :3], self._lower[:3] + 1e-9 * span,
                               self._upper[:3] - 1e-9 * span)
        self.particles = parts
        self.weights = np.full(n, 1.0 / n)
        self._resample(((0.1, 2), (0.02, 2)))

    def _search_refresh_due(self) -> bool:
        n = len(self.measured)
        if not self.SEARCH_REFRESH or n < self.SEARCH_FROM or n % self.SEARCH_REFRESH:
            return False
        return not self._line_found()

    def _wider_line_excluded(self, fit) -> bool:
        if not self.WIDER_LINE:
            return True
        c, w = fit["centre"], fit["width"]
        # the wider line's centre profiled over +- one fitted width
        wide = min(self._profile_chi2(c + dc, self.WIDER_LINE * w)
                   for dc in np.linspace(-w, w, 41))
        return wide - self._profile_chi2(c, w) >= self.WIDER_CHI2

    def centre_uncertainty(self) -> float:
        """Standard uncertainty of the centre, Hz.

        The posterior standard deviation, or once the posterior is one narrow peak
        (:meth:`_local_fit`), the least-squares standard error sigma_c of the measured
        points times ``exp(HONESTY_K * s)``, s the standard deviation of ln sigma_c over
        the fit's own uncertainty (:meth:`_honesty`): sigma_c assumes width, depth and
        baseline known, and a run that stops on it stops when the noise has made the line
        look narrow or deep (pulls spread 1.3 over 36 benchmark runs; 0.9 with the factor).
        (The particle cloud's finite size and its moves broaden the posterior, and a
        leftover alias mode of a few % weight inflates its standard deviation.)
        With ``HONESTY_K = 0``: the smaller of the posterior's and the bare least-squares
        error, and the design of :meth:`_centre_gain_local` (the behaviour before).
        """
        sc = self.std()["centre"]
        fit = self._local_fit()
        if fit is None:
            g = self._grid_state()
            return sc if g is None else max(g[1], sc / self.GRID_AGREE)
        if self.HONESTY_K == 0:
            return min(sc, fit.errors["centre"])
        err = self._honest_error(fit)
        return err if np.isfinite(err) else sc

    # the stated least-squares error is sigma_c exp(k s), s the standard deviation of
    # ln sigma_c over the fit's own uncertainty (delta method): stopping on sigma_c alone
    # stops when the noise has made the line look narrow or deep and states too small an
    # error (pulls spread 1.3); the factor makes the stop wait until the error is known
    # (k = 1: pulls spread 0.73-0.92 on rigs 0-11, over-cautious; 0.4: 0.93)
    HONESTY_K = 0.4
    # the design minimises ln sigma_c + DESIGN_K s after one more point
    DESIGN_K = 0.4
    # the least-squares fit and its Fisher matrix take the baseline's prior (as one more
    # point far off resonance): flank points alone trade baseline for depth and width
    BASELINE_PRIOR = True

    def _jac(self, p, f):
        """d model / d (centre, width, depth, baseline) at ``p`` for frequencies ``f``
        (:func:`~mracq.recon.calibration.fits.odmr_jacobian`), shape ``(len(f), 4)``."""
        return odmr_jacobian(f, p, shape=self.shape, splitting=self.splitting)

    def _design_sd(self, p, cand=None, sigma=None):
        """Centre standard error at parameters ``p`` of the measured design (Fisher
        matrix), and with each of ``cand`` added: (sd, cov, sd_cand, cov_cand)."""
        f, _, sig = (np.array(c) for c in zip(*self.measured, strict=True))
        j = self._jac(p, f) / sig[:, None]
        ridge = 1e-12 / np.maximum(np.abs(p) * 1e-6, [1.0, 1.0, 1e-6, 1e-6]) ** 2
        fisher = j.T @ j + np.diag(ridge)
        if self.BASELINE_PRIOR:
            fisher[3, 3] += 1.0 / self.baseline_prior[1] ** 2
        # inverted in correlation form: a design that does not constrain a parameter has
        # an infinite error there, not pinv's zero
        d = np.sqrt(np.maximum(np.diag(fisher), 1e-300))
        try:
            cov = np.linalg.inv(fisher / np.outer(d, d)) / np.outer(d, d)
        except np.linalg.LinAlgError:
            cov = np.full((4, 4), np.inf)
        if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) <= 0):
            cov = np.diag(np.full(4, np.inf))
        sd = float(np.sqrt(cov[0, 0]))
        if cand is None:
            return sd, cov, None, None
        jc = self._jac(p, cand)
        u = jc @ cov
        q = np.sum(u * jc, axis=1)
        cov_c = cov[None] - u[:, :, None] * u[:, None, :] / (sigma**2 + q)[:, None, None]
        return sd, cov, np.sqrt(np.maximum(cov_c[:, 0, 0], 1e-300)), cov_c

    def _honesty(self, fit, cand=None, sigma=None):
        """(sigma_c, s) of the measured design, or arrays of them with each candidate
        added: sigma_c the least-squares centre error at the fit, s the standard
        deviation of ln sigma_c propagated from the fit's covariance (secant steps of one
        standard error, at most half the width or depth)."""
        p = np.array([fit[k] for k in PARAMS])
        sd, cov, sd_c, cov_c = self._design_sd(p, cand, sigma)
        err = np.sqrt(np.maximum(np.diag(cov), 0.0))
        cap = np.array([0.5 * p[1], 0.5 * p[1], 0.5 * p[2], 0.1])
        h = np.maximum(np.minimum(err, cap), 1e-9 * np.maximum(np.abs(p), 1.0))
        grads, grads_c = [], []
        for i in range(4):
            up, dn = p.copy(), p.copy()
            up[i] += h[i]
            dn[i] -= h[i]
            a = self._design_sd(up, cand, sigma)
            b = self._design_sd(dn, cand, sigma)
            grads.append((np.log(max(a[0], 1e-300)) - np.log(max(b[0], 1e-300))) / (2 * h[i]))
            if cand is not None:
                grads_c.append((np.log(a[2]) - np.log(b[2])) / (2 * h[i]))
        g = np.array(grads)
        s = float(np.sqrt(max(g @ cov @ g, 0.0)))
        if cand is None:
            return sd, s
        gc = np.array(grads_c).T  # (n_cand, 4)
        s_c = np.sqrt(np.maximum(np.einsum("ni,nij,nj->n", gc, cov_c, gc), 0.0))
        return sd_c, s_c

    def _honest_error(self, fit) -> float:
        key = len(self.measured)
        if getattr(self, "_honest_cache", (None,))[0] != key:
            with np.errstate(all="ignore"):
                sd, s = self._honesty(fit)
            err = sd * float(np.exp(self.HONESTY_K * s))
            self._honest_cache = (key, err if np.isfinite(err) and err > 0 else np.inf)
        return self._honest_cache[1]

    def fit(self):
        """Least-squares fit (:func:`fit_odmr`) of the measured points from the posterior mean;
        None if it fails."""
        from mracq.recon.calibration.fits import fit_odmr

        f, y, s = (np.array(c) for c in zip(*self.measured, strict=True))
        if self.BASELINE_PRIOR:
            # the baseline's prior as one more point far off resonance (the line's wing
            # there is < 1e-4 of its depth): flank points alone trade baseline for depth
            # and width
            lo, hi = self.range
            f = np.r_[f, lo - 10 * (hi - lo)]
            y, s = np.r_[y, self.baseline_prior[0]], np.r_[s, self.baseline_prior[1]]
        try:
            return fit_odmr(f, y, s, shape=self.shape, triplet=self.splitting != 0.0,
                            splitting=self.splitting, centre_guess=self.mean()["centre"])
        except (RuntimeError, ValueError):
            return None

    @property
    def done(self) -> bool:
        """Target uncertainty of the centre reached, or ``max_points`` measured."""
        return self.should_stop()[0]

    # the points' errors are pooled over points of like error (:func:`pooled_sigma`, this
    # window in ln sigma): an error computed from the point's own counts is smaller where
    # the noise made it low, and fits leaning on the low points stopped runs on a too deep,
    # narrow, shifted line (benchmarks/calibration.py rigs 2207, 2404, 2407: 3.5-6.4 sigma
    # off; within 2 with the errors of the true populations); 0: the errors as given
    POOL_SIGMA = 0.3

    def ingest(self, points) -> None:
        """Update the posterior with measured points.

        ``points``: outcome dicts ``{"_id", "value", "sigma"}`` answering a suggestion (or
        naming their ``frequency``), or ``(frequency_Hz, population, error)`` triples.
        The errors are used pooled over points of like error (:attr:`POOL_SIGMA`).
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
            self._sigma_given.append(s)
            if self.POOL_SIGMA:
                pooled = pooled_sigma(self._sigma_given, self.POOL_SIGMA)
                self.measured = [(a, b, float(c)) for (a, b, _), c in
                                 zip(self.measured, pooled, strict=True)]
                s = self.measured[-1][2]
            self.noise_guess = s
            pred = self._predict(f)
            logw = np.log(np.maximum(self.weights, 1e-300)) - 0.5 * ((y - pred) / s) ** 2
            logw -= logw.max()
            w = np.exp(logw)
            self.weights = w / w.sum()
            if self._search_refresh_due():
                self._search_refresh()
            elif 1.0 / np.sum(self.weights**2) < 0.5 * len(self.weights):
                self._resample()

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
                self.criterion == "auto" and self._robust_spread()[1] > self.mean()["width"]):
            return 0.5 * np.log1p(var / s**2)
        fit = self._design_fit() if self.criterion == "auto" else None
        if fit is not None and self.GRID_DESIGN and self._local_fit() is None:
            v = self._grid_design(s)
            if v is not None:
                return -v
        if fit is not None:
            if self.HONESTY_K == 0:
                return self._centre_gain_local(fit, s)
            with np.errstate(all="ignore"):
                sd_c, s_c = self._honesty(fit, self.candidates, s)
                u = -(np.log(sd_c) + self.DESIGN_K * s_c)
            if np.any(np.isfinite(u)):
                return np.where(np.isfinite(u), u, -np.inf)
            return self._centre_gain_local(fit, s)
        c = self.particles[:, 0] - self.weights @ self.particles[:, 0]
        cov = dev @ (self.weights * c)
        return cov**2 / (var + s**2)

    def _centre_gain_local(self, fit, sigma) -> np.ndarray:
        """Reduction of the least-squares variance of the centre by one more point at each
        candidate (Sherman-Morrison on the Fisher matrix at the fit), Hz^2; every third
        point the D-optimal gain ``ln(1 + j^T F^-1 j / sigma^2)`` instead."""
        p = np.array([fit[k] for k in PARAMS])
        steps = np.maximum(np.abs(p) * 1e-6, [1.0, 1.0, 1e-6, 1e-6])
        f, _, sig = (np.array(c) for c in zip(*self.measured, strict=True))
        j = self._jac(p, f) / sig[:, None]
        fisher = j.T @ j + np.diag(1e-12 / steps**2)
        cov = np.linalg.pinv(fisher)
        jc = self._jac(p, self.candidates)  # (n_candidates, 4)
        u = jc @ cov  # rows: cov j
        quad = np.sum(u * jc, axis=1)
        if len(self.measured) % 3 == 0:
            # every third point D-optimal (all four parameters): a design of only the
            # centre-optimal frequencies leaves width and depth undetermined, and their
            # drift then moves those frequencies
            return np.log1p(quad / sigma**2)
        return u[:, 0] ** 2 / (sigma**2 + quad)

    def suggest(self, n: int | None = 1) -> list[dict]:
        """The next ``n`` points ``{"_id", "frequency"}`` (Hz); empty when :attr:`done`.

        Several at once: the best candidates at least two candidate steps apart.
        """
        n = 1 if n is None else int(n)
        if self.done:
            return []
        chosen: list[float] = []
        cyc = self._cycle_frequency()
        if cyc is not None:
            chosen.append(cyc)
            if n == 1:
                return self._issue(chosen)
        u = self.utility()
        order = np.argsort(u)[::-1]
        step = self.candidates[1] - self.candidates[0] if len(self.candidates) > 1 else 0.0
        for i in order:
            f = float(self.candidates[i])
            if all(abs(f - c) >= 2 * step for c in chosen):
                chosen.append(f)
            if len(chosen) == n:
                break
        return self._issue(chosen)

    # every CYCLE_EVERY-th point, once the line is found, is the next of the maximum-slope
    # flanks of the lines (centre +- width / sqrt(3), of all three 14N lines in turn): a
    # greedy design at a wrong width piles its points on the outer flanks of the outer
    # lines, where a too wide line looks steepest, and never sees that it is wrong
    # (benchmarks/calibration.py rig 8 draw 1: 250 points at width 2x the truth); without
    # the cycle, pulls spread 1.20 on rigs 0-11, with it 0.93
    CYCLE_EVERY = 2
    # ... and the centre line's dip closes the cycle: flank points alone leave depth and
    # width trading along a valley, whose narrow, deep end states too small an error
    CYCLE_DIP = 1
    # (line, side); side 0: the baseline, at the end of the range farther from the line
    # (flank points alone trade baseline against depth and width)
    _CYCLE = ((0, -1), (0, 1), (-1, -1), (1, 1), (0, 0), (-1, 1), (1, -1))

    # before the fit is trusted (the width check refuses it), the design still minimises
    # the stated error of the least-squares fit (its centre error and the spread of it over
    # the fit's own width and depth) from DESIGN_FROM points on, where the line is found
    # and the fit lies within the posterior: the particle cloud's centre gain ignores
    # the width, and runs whose fit the width check refused kept a width 25-30 % off
    # for 200 points (benchmarks/calibration.py rigs 1800, 1803); from 30 points on, the
    # design held a too narrow line it had found early (rig 1902 draw 1: stopped at 60
    # points at z -7.5); 0: off
    DESIGN_FROM = 60

    def _design_fit(self):
        """The fit the design works at: the trusted one (:meth:`_local_fit`), else,
        from :attr:`DESIGN_FROM` points on, the least-squares fit where the line is found
        and the fit is within two spreads of the posterior's median; else None."""
        fit = self._local_fit()
        n = len(self.measured)
        if fit is not None or not self.DESIGN_FROM or n < self.DESIGN_FROM:
            return fit
        med, spread = self._robust_spread()
        if not self._line_found(spread):
            return None
        if getattr(self, "_design_cache", (None,))[0] != n:
            f = self.fit()
            ok = f is not None and np.isfinite(f.errors["centre"]) and \
                np.isfinite(f.errors["width"]) and \
                abs(f["centre"] - med) <= 2 * spread + 2 * f.errors["centre"]
            self._design_cache = (n, f if ok else None)
        return self._design_cache[1]

    # until the fit is trusted, the design's points (not the cycle's) minimise the expected
    # centre variance of the grid posterior (the stated error there) after one more point
    # (:meth:`_grid_design`): the design at the fit put its points on the fitted line's
    # flanks, where a wide, shallow line fits as well, and the grid posterior kept it open
    # for 300 points (benchmarks/calibration.py rig 1009 draw 2: fit width 260 +- 65 kHz,
    # true 246, grid spread 60-100 kHz against the fit's 25); 0: off
    GRID_DESIGN = 1
    GRID_DESIGN_OUTCOMES = 12
    GRID_DESIGN_CELLS = 800
    GRID_DESIGN_CANDIDATES = 48

    def _grid_design(self, sigma):
        """Expected centre variance of the grid posterior (Hz^2) after one more point at
        each candidate (:func:`~mracq.recon.calibration.grid.expected_centre_variance`),
        or None where there is no grid. The draws are seeded by the number of points."""
        axes = self._grid_axes()
        if axes is None:
            return None
        cs, _, lw = axes
        ws = np.exp(lw)
        post = self._grid_posterior(cs, ws, linear=True)
        return expected_centre_variance(
            self.candidates, cs, ws, post, sigma, cells=self.GRID_DESIGN_CELLS,
            outcomes=self.GRID_DESIGN_OUTCOMES, n_candidates=self.GRID_DESIGN_CANDIDATES,
            rng=np.random.default_rng(len(self.measured)), shape=self.shape,
            splitting=self.splitting)

    def _cycle_frequency(self):
        if not self.CYCLE_EVERY or self.HONESTY_K == 0 or \
                len(self.measured) % self.CYCLE_EVERY:
            return None
        fit = self._design_fit()
        if fit is not None:
            c, w = fit["centre"], fit["width"]
        else:
            med, spread = self._robust_spread()
            w = self.mean()["width"]
            if spread > 0.5 * w:
                return None
            c = med
        k = getattr(self, "_cycle_index", 0)
        self._cycle_index = k + 1
        lines = self._CYCLE if self.splitting else ((0, -1), (0, 1), (0, 0))
        if self.CYCLE_DIP:
            lines = (*lines, (0, 2))
        m, side = lines[k % len(lines)]
        if side == 0:
            lo, hi = self.range
            return float(lo if c - lo > hi - c else hi)
        if side == 2:
            return float(np.clip(c, *self.range))
        f = c + m * self.splitting + side * w / np.sqrt(3.0)
        return float(np.clip(f, *self.range))

    def _issue(self, chosen) -> list[dict]:
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
        if self.converged(self.target):
            return True, (f"converged: centre uncertainty {self.centre_uncertainty():.3g} Hz "
                          f"<= target {self.target:g} Hz")
        return False, None

    def converged(self, target) -> bool:
        """Whether a run with ``target`` (Hz) would stop now: at least :attr:`MIN_POINTS`
        points, :attr:`MIN_AFTER_FOUND` of them after the line was found, and the centre's
        stated uncertainty at most ``target``."""
        n = len(self.measured)
        found = self._found_at() if n else 1 << 30
        return n >= self.MIN_POINTS and n >= found + self.MIN_AFTER_FOUND and \
            self.centre_uncertainty() <= target

    def _found_at(self) -> int:
        """Points measured when the line was first found (robust spread of the centre
        within half the mean width; checked at each stop test), else a large number."""
        if getattr(self, "_found", None) is None:
            if not self._line_found():
                return 1 << 30
            self._found = len(self.measured)
        return self._found

    def centre(self) -> float:
        """The centre estimate, Hz: the grid posterior's mean where :meth:`centre_uncertainty`
        states its spread, else the particles' mean."""
        if self._local_fit() is None:
            g = self._grid_state()
            if g is not None:
                return g[0]
        return self.mean()["centre"]

    def get_best_points(self) -> list[tuple]:
        """``[("centre", {"frequency"}, {"centre_error"})]``: the line centre (Hz) and its
        uncertainty; [] before any measurement."""
        if not self.measured:
            return []
        return [("centre", {"frequency": self.centre()},
                 {"centre_error": self.centre_uncertainty()})]

    def result(self) -> dict:
        """Posterior means and standard deviations, and the number of points measured."""
        m, s = self.mean(), self.std()
        out = {**m, **{f"{k}_error": v for k, v in s.items()}, "points": len(self.measured)}
        out["centre"], out["centre_error"] = self.centre(), self.centre_uncertainty()
        return out
