"""Adaptive COSY sampling from the harmonic model: measure where the map is least known.

Criterion (sequential V-optimal design, e.g. Fedorov 1972; for sums of sinusoids: the
frequencies are what sparse data pin down worst): after each batch the map is
reconstructed (``method="auto"``, `mracq.recon.cosy.auto`) and a plane-wave model is fit
to the measured points (`mracq.recon.cosy.spectral`, with the number of components that
cross-validated best, plus ``extra`` more from the greedy path: weak components the data
hint at, so the design also asks for the points that would confirm them). Linearized
around the fit, the map is ``J theta`` with the Jacobian ``J`` (grid points x
parameters: offset, amplitudes, frequencies); with measured rows ``J_S`` the parameters'
posterior covariance is ``C = s^2 (J_S^T J_S + r I)^-1`` and the map's integrated
posterior variance is ``tr(J C J^T)``. Measuring point g lowers it by

    score(g) = j_g C (J^T J) C j_g^T / (s^2 + j_g C j_g^T)

(rank-one update). The batch is chosen greedily by this score, updating ``C`` after
each pick (so one batch does not ask for the same information twice). Why it beats a
random mask: the amplitude rows of ``J`` are flat over the grid, but the frequency rows
grow with ``|t - t_centre|``: a frequency error grows along t, the points far from the
grid centre fix it, and a random mask spends most points where they tell little about
the frequencies. Points the model already predicts well (low ``j C j^T``) are skipped.
Before the first fit (fewer than ``min_fit`` points) the points are random.

Measured limits (``benchmarks/cosy_families.py --parts adaptive oracle``): the gain is
bounded by the model itself. A plane wave's amplitude rows have the same norm at every
grid point (``cos^2 + sin^2 = 1``, and the maps do not decay), so no design fixes the
amplitudes better than a random mask; only the frequency part of the variance drops.
For one plane wave with the model known exactly (noise 0.1, 40 random + 80 designed
points, fit with one component), the map's RMSE is 0.87 of a random mask's (mean of 40
draws; 0.77-0.99 over sets of 30), i.e. ~0.75 in squared error: about 0.75 of the
points for the same error in the best case. On the benchmark families, designing on the
plane-wave model fitted to the *noiseless* map (all frequencies known) lowers the
linearised variance to 0.69-0.79 of a random mask's, yet auto's error on such 7 % masks
stays 1.02-1.15 x its error on random 10 % masks on every family (seed 4242, 5 maps
each): 12-15 % below random 7 % on lattice2/lattice5, level with it or above elsewhere.
Auto's members (the network trained on random masks, SVT, the greedy periodogram, the
cross-validation) all assume an incoherent random mask. Ensemble-disagreement picks
(bootstrap auto refits, or the spread of DL/DLMC/SVT/spectral) did worse than random.
End to end this design needs 0.95 and 1.00 of random 10 %'s points (fresh seeds 4242 and
31337, 5 maps per family), random batches run the same way 0.93 and 0.97: no gain.
Hence the random part of each batch (``explore``) and the random pool.

With the field known the map is a function of its cluster's couplings (auto's
``physics:<m>`` candidates, `mracq.recon.cosy.physics`). `CouplingDesign` designs under
the couplings auto fitted, whenever auto chose them (each batch is then reconstructed
with the field: the coupling search takes minutes, against ~30 min of hardware time for a
batch of 25 points), and under the plane-wave model otherwise. There every point informs
the few couplings that set the whole map, but the gain is bounded too. Linearised at the
TRUE couplings, a greedy V-optimal design grown from 100 random points reaches random
10 %'s integrated variance with 0.65-0.71 of the points (mean 0.68 over the six
families; ``benchmarks/cosy_design_bound_physics.py``; Fedorov exchange on its picks
lowers the variance by < 0.7 %, ``cosy_design_exchange.py``). Designing from a fit in
its basin, in batches of 25, needs 0.74 (0.79 in whole batches; 0.70 from 50 random
points; ``benchmarks/cosy_design_protocol.py``). Hence no
random part and no pool under the couplings by default (``physics_explore=0``,
``pool=False``): with them it needed 0.79, and 0.86 with the former ridge of
`design_scores`. That is the design's gain once the fit is in its basin. Before, a design
under a wrong basin kept the search from landing: on bonded pairs, random batches landed
at 125 points where designed ones landed at 200, or not by 225. Hence ``confirm``: the design
starts only once two successive fits agree, and until then every batch is random.
``keep_basin`` starts each batch's final fit also at the last batch's fit (after designed
batches the search had left the basin it had found).

`PlaneWaveDesign` is a pure suggest/ingest strategy (bluesky-adaptive 1.0's optimizer
protocol, `mracq.recon.protocol`), with the same outcome format, ``should_stop`` (tol,
budget, complete) and ``get_best_points`` as `EnsembleDisagreement`.
"""

from __future__ import annotations

import numpy as np

from mracq.recon.cosy.strategy import EnsembleDisagreement

__all__ = ["CouplingDesign", "PlaneWaveDesign", "design_scores", "greedy_v_optimal",
           "plane_wave_jacobian", "unit_columns"]


def plane_wave_jacobian(pw, ij: np.ndarray) -> np.ndarray:
    """Jacobian (M, 4K + 1) of a `PlaneWaves` model at grid points ``ij`` (M, 2)."""
    u = np.asarray(ij, float) - np.asarray(pw.centre)
    phi = u @ pw.freqs.T
    c, s = np.cos(phi), np.sin(phi)
    d = pw.amps[:, 1] * c - pw.amps[:, 0] * s
    return np.column_stack([np.ones(len(u)), c, s, d * u[:, :1], d * u[:, 1:]])


def design_scores(jac: np.ndarray, measured: np.ndarray, n: int, *, ridge: float = 1e-5,
                  noise: float = 1.0, allowed: np.ndarray | None = None) -> list[int]:
    """Greedy V-optimal batch: ``n`` row indices of ``jac`` not in ``measured`` (bool).

    ``jac``: (M, P) Jacobian over the candidate points; ``noise``: s^2 in units of the
    Jacobian's scale squared; ``allowed`` (bool, M): the rows that may be picked
    (default: every unmeasured one); ``ridge``: keeps C finite when the measured rows do
    not determine every parameter, ``ridge * diag(J^T J)``, each parameter relative to its
    own column.

    The columns are scaled to unit norm first (the integrated variance does not depend
    on the parameters' units). A couplings map's columns span up to 11 decades (the
    field's against a weak A_perp's): unscaled, the rank-one updates of C lost the small
    directions to round-off, and a ridge set by the mean diagonal read them as known; the
    design then ignored them (``benchmarks/cosy_design_protocol.py``: 0.05-0.2 more
    points for the same variance).
    """
    jac = unit_columns(jac)
    js = jac[measured]
    cov = np.linalg.inv(js.T @ js + ridge * np.eye(jac.shape[1])) * noise
    free = ~measured.copy() if allowed is None else allowed & ~measured
    return greedy_v_optimal(jac, cov, free, n, noise)


def unit_columns(jac: np.ndarray) -> np.ndarray:
    """``jac`` with every column scaled to unit norm (norms below 1e-12 of the largest
    count as that floor): the integrated variance does not change, its round-off does."""
    norm = np.linalg.norm(jac, axis=0)
    return jac / np.maximum(norm, 1e-12 * max(norm.max(), 1e-300))


def greedy_v_optimal(jac: np.ndarray, cov: np.ndarray, free: np.ndarray, n: int,
                     noise: float) -> list[int]:
    """The greedy loop of `design_scores`: ``n`` rows of ``jac`` among ``free`` (bool, M;
    changed in place), each lowering ``tr(J C J^T)`` the most, ``cov`` (C, P x P: the
    parameters' covariance before the picks) updated by rank one after each pick."""
    g = jac.T @ jac
    picks = []
    for _ in range(min(n, int(free.sum()))):
        jc = jac @ cov  # (M, P)
        var = np.einsum("mp,mp->m", jc, jac)
        gain = np.einsum("mp,pq,mq->m", jc, g, jc) / (noise + var)
        gain[~free] = -np.inf
        k = int(np.argmax(gain))
        picks.append(k)
        free[k] = False
        v = jc[k]
        cov = cov - np.outer(v, v) / (noise + var[k])
    return picks


class PlaneWaveDesign(EnsembleDisagreement):
    """Next COSY points by V-optimal design under the fitted plane-wave model.

    Parameters
    ----------
    shape : (int, int)
        Map shape.
    rng : numpy.random.Generator
        Random source (first points, ties).
    method : str
        Reconstruction after each batch (default ``"auto"``).
    extra : int
        Components beyond the cross-validated number put in the design model.
    min_fit : int
        Points before the first model-based batch (random before).
    explore : float
        Fraction of each batch drawn at random (the rest is designed, among a random
        quarter of the free points): keeps the mask incoherent.
    budget, tol
        As `EnsembleDisagreement` (stop on the point budget, or when a batch changes the
        reconstruction by less than ``tol`` of its peak-to-peak).
    """

    def __init__(self, shape, rng, *, method: str = "auto", extra: int = 2,
                 min_fit: int = 40, explore: float = 0.3, budget: int | None = None,
                 tol: float | None = None) -> None:
        super().__init__(shape, rng, members=2, method=method, budget=budget, tol=tol)
        if extra < 0 or min_fit < 10:
            raise ValueError(f"need extra >= 0 and min_fit >= 10, got {extra}, {min_fit}")
        if not 0 <= explore <= 1:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.explore = float(explore)
        self.extra = int(extra)
        self.min_fit = int(min_fit)

    def _model(self):
        from mracq.recon.cosy.auto import K_MAX, POINTS_PER_COMPONENT
        from mracq.recon.cosy.spectral import fit_path

        ij = np.argwhere(self.mask)
        y = self.values[self.mask]
        y = (y - y.min()) / (np.ptp(y) or 1.0)
        report = getattr(self.reconstruction, "report", None)
        ks = [int(k.split(":")[1]) for k in (report.cv_rmse if report else {})
              if k.startswith("spectral:")]
        cv = report.cv_rmse if report else {}
        k_best = min(ks, key=lambda k: cv[f"spectral:{k}"]) if ks else 2
        k_cap = min(K_MAX, len(y) // POINTS_PER_COMPONENT)
        k = max(1, min(k_best + self.extra, k_cap))
        return fit_path(y, ij, self.shape, k)[-1]

    def _points(self, n: int) -> list[tuple[int, int]]:
        if self.mask.all():
            return []
        if self.mask.sum() < self.min_fit or self.reconstruction is None:
            return self._random_cells(n)
        pw = self._model()
        ij = np.indices(self.shape).reshape(2, -1).T
        jac = plane_wave_jacobian(pw, ij)
        # incoherence: a random part of the batch, and the designed part chosen among a
        # random subset of the free points, so that the mask stays random-like (the greedy
        # periodogram and the cross-validation of auto both assume it)
        flat_free, n, rand, measured = self._random_part(n)
        allowed = self._pool(flat_free, n, rand)
        picks = list(rand) + design_scores(jac, measured, n - len(rand), allowed=allowed)
        return self._cells(picks)

    def _pool(self, flat_free, n: int, rand) -> np.ndarray:
        """The points the designed part may take (bool, flat): a random quarter of the
        free ones (at least ``4 n``), less the batch's random part ``rand``."""
        allowed = np.zeros(self.mask.size, bool)
        allowed[self.rng.choice(flat_free, min(flat_free.size, max(4 * n, flat_free.size // 4)),
                                replace=False)] = True
        allowed[rand] = False
        return allowed

    def _random_part(self, n: int, explore: float | None = None):
        """The batch's random part: (free flat indices, batch size capped by them, the
        ``explore`` fraction (default ``self.explore``) drawn at random, the measured
        mask with those added)."""
        flat_free = np.flatnonzero(~self.mask.ravel())
        n = min(n, flat_free.size)
        explore = self.explore if explore is None else explore
        rand = self.rng.choice(flat_free, int(round(explore * n)), replace=False)
        measured = self.mask.ravel().copy()
        measured[rand] = True
        return flat_free, n, rand, measured

    def _random_cells(self, n: int) -> list[tuple[int, int]]:
        """``n`` free grid cells at random (fewer if fewer are free)."""
        flat_free = np.flatnonzero(~self.mask.ravel())
        return self._cells(self.rng.choice(flat_free, min(n, flat_free.size), replace=False))

    def _cells(self, flat) -> list[tuple[int, int]]:
        """Grid cells (i, j) of flat indices."""
        return [tuple(int(v) for v in np.unravel_index(k, self.shape)) for k in flat]


class CouplingDesign(PlaneWaveDesign):
    """Next COSY points by V-optimal design under the couplings auto fitted (field known).

    Each batch is reconstructed by ``method="auto"`` with the field and the sequence, so
    that its ``physics:<m>`` candidates compete (`mracq.recon.cosy.auto`). Where auto chose
    one, the next designed points minimise the integrated posterior variance of the
    coupling model linearised at the fit (`CouplingFit.jacobian`: every coupling, offset
    and scale); otherwise the design is `PlaneWaveDesign`'s.

    Parameters
    ----------
    shape : (int, int)
        Map shape.
    rng : numpy.random.Generator
        Random source (first points, the random part of each batch).
    field : float
        Calibrated field along the NV axis in T.
    tau : float
        Decoupling pulse spacing in s.
    t1, t2 : arrays, optional
        Evolution times in s (default: the experiment's grid cut to ``shape``).
    n_pulses : int
        pi pulses per decoupling block.
    physics_budget_s : float
        Wall time (s) of the coupling search's held-out validation per batch.
    physics_search : dict, optional
        Settings of the coupling search (`mracq.recon.cosy.physics.fit_clusters`).
    min_fit, explore, extra, budget, tol
        As `PlaneWaveDesign` (``explore``: while the design is the plane-wave one).
    physics_explore : float
        Fraction of each batch drawn at random while the design is under the couplings.
        Default 0: in the fit's basin a random part only dilutes the design (linearised,
        ``benchmarks/cosy_design_protocol.py``: 0.30 random and the pool cost 0.03-0.06
        of random 10 %'s points).
    keep_basin : bool
        Start each batch's final coupling fit also at the last batch's fit (a basin once
        found stays in the running; the held-out searches do not get it).
    pool : bool
        Choose the coupling design's points among a random quarter of the free points (as
        `PlaneWaveDesign`), so that the mask stays random-like for the search's first
        stage. Default off: with ``keep_basin`` the basin is kept without it.
    confirm : float or None
        Design only under a fit the last batch confirmed: the maps of this batch's and the
        last batch's coupling fits differ by less than ``confirm`` times auto's noise
        estimate (RMS). Otherwise (no fit, a fit that moved, or auto chose another
        candidate) the whole batch is random, which helps the search land; designed points
        under a wrong basin kept it from landing (``cosy_adaptive_physics*.json``). In the
        basin two fits 25 points apart differ by about the fit's error (0.02-0.03 at noise
        0.1); two basins by more than 0.05. None: design under any fit auto chose, and
        under the plane-wave model otherwise (session 8).
    """

    def __init__(self, shape, rng, *, field: float, tau: float, t1=None, t2=None,
                 n_pulses: int | None = None, physics_budget_s: float | None = None,
                 physics_search: dict | None = None, min_fit: int = 40,
                 explore: float = 0.3, extra: int = 2, budget: int | None = None,
                 tol: float | None = None, keep_basin: bool = True,
                 pool: bool = False, physics_explore: float = 0.0,
                 confirm: float | None = 0.5) -> None:
        from mracq.recon.cosy.physics import PHYSICS_BUDGET_S, physics_sequence
        from mracq.sim.cosy.model import N_PULSES

        super().__init__(shape, rng, method="auto", extra=extra, min_fit=min_fit,
                         explore=explore, budget=budget, tol=tol)
        n_pulses = N_PULSES if n_pulses is None else n_pulses
        budget_s = PHYSICS_BUDGET_S if physics_budget_s is None else physics_budget_s
        physics_sequence(field, tau, t1, t2, n_pulses, self.shape, budget_s, physics_search)
        self.reconstruct_kw = {"field": field, "tau": tau, "t1": t1, "t2": t2,
                               "n_pulses": n_pulses, "physics_budget_s": budget_s,
                               "physics_search": physics_search}
        self._search = dict(physics_search or {})
        if not 0 <= physics_explore <= 1:
            raise ValueError(f"physics_explore must be in [0, 1], got {physics_explore}")
        self.keep_basin = bool(keep_basin)
        self.pool = bool(pool)
        self.physics_explore = float(physics_explore)
        if confirm is not None and not confirm > 0:
            raise ValueError(f"confirm must be > 0 or None, got {confirm}")
        self.confirm = confirm
        self.confirmed = False  # the last ingest's fit agreed with the one before

    def ingest(self, points) -> None:
        """As `EnsembleDisagreement.ingest`; with ``keep_basin`` the last batch's 2-spin
        coupling fit is a start of this batch's final coupling fit."""
        prev = self.reconstruction
        fit = getattr(prev, "physics", None)
        search = dict(self._search)
        if self.keep_basin and fit is not None and fit.spins == 2:
            search["starts"] = [np.asarray(fit.theta, float)]
        self.reconstruct_kw["physics_search"] = search or None
        super().ingest(points)
        rec = self.reconstruction
        self.confirmed = bool(
            self.confirm is not None and fit is not None
            and getattr(rec, "physics", None) is not None
            and np.sqrt(np.mean((np.asarray(rec) - np.asarray(prev)) ** 2))
            < self.confirm * rec.report.noise)

    def _points(self, n: int) -> list[tuple[int, int]]:
        fit = getattr(self.reconstruction, "physics", None)
        if self.confirm is not None and self.mask.sum() >= self.min_fit and not self.confirmed:
            return self._random_cells(n)
        if fit is None or self.mask.sum() < self.min_fit:
            return super()._points(n)
        flat_free, n, rand, measured = self._random_part(n, self.physics_explore)
        allowed = self._pool(flat_free, n, rand) if self.pool else None
        y = self.values[self.mask]
        noise = (self.reconstruction.report.noise / (np.ptp(y) or 1.0)) ** 2  # fit's scale
        picks = list(rand) + design_scores(fit.jacobian(), measured, n - len(rand),
                                           noise=max(noise, 1e-6), allowed=allowed)
        return self._cells(picks)
