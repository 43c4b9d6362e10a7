"""``method="auto"``: pick the COSY reconstruction by K-fold cross-validation on the data.

A network trained on one family of clusters can fail on a map from another (issue 12:
DLMC at 10% lost to SVT at 40% on independent clusters) and nothing in its output says
so. `reconstruct_auto` therefore lets the measured points judge: they are split into
``folds`` parts; each candidate reconstructs the map from all parts but one and is scored
on the held-out part; the candidate with the lowest mean squared held-out error is refit
on all points. Candidates (all on the map normalized to [0, 1] over its measured entries):

- ``dl``, ``dlmc``: the trained network, alone and with its SVT post-processing;
- ``svt:<p>%``: SVT with the threshold at p % of the default (`mracq.recon.cosy.dlmc.SVT_TAU`;
  no "." in the names: they are metadata keys in stored runs);
- ``spectral:<k>``: the off-grid plane-wave fit with k components
  (`mracq.recon.cosy.spectral`; every k up to ``k_max`` is scored: the fit is greedy, so
  one path per fold gives all of them), the harmonic prior that holds for any cluster;
- ``spectral~:<k>``: the same with its amplitudes shrunk by the noise
  (`mracq.recon.cosy.spectral.PlaneWaves.shrunk`);
- ``dl+spectral:<k>``: the mean of the DL and spectral reconstructions (their errors are
  partly independent: the network misses what its family lacked, the fit misses weak
  components);
- ``shared:<k>``: the shared-frequency fit with k terms (`mracq.recon.cosy.shared`: one
  frequency set for t1 and t2, as the physics gives), ``dl+shared:<k>`` its mean with DL;
- ``stack``: the weighted mean of the best network, SVT and spectral (or shared)
  candidates, convex weights in steps of 0.1 that minimize the held-out error (`_stack`);
- ``aggregate``: exponential weights over every single candidate from its held-out error
  (`_aggregate`), where many candidates are nearly as good and one would win by chance.

The greedy fits (spectral, shared and their blends) are bagged in the returned map: the
k-term model is the mean of the refit on all points and the K fold fits, which steadies
components a few points can tip in or out (on 10 % maps of noise 0.1 it lowers their
error by a few %); the others are refit on all points.

With the field and the pulse spacing given (``field``, ``tau``: after `mracq calibrate`),
two more candidates compete: ``physics:2`` and ``physics:3``, the cluster's couplings
fitted through the simulator (`mracq.recon.cosy.physics`). Their held-out error is honest:
the whole coupling search is rerun on each fold's training points (auto's folds merged to
at most `PHYSICS_FOLDS`, so they train on fewer points than the others: a conservative
comparison on the same held-out points). They take minutes (``physics_budget_s``) and do
not enter the stack or the aggregate.

What the user gets (`AutoReport`): the chosen candidate, the held-out RMS error of every
candidate (it includes the noise of the held-out points), and the estimated RMS error of
the map against the noiseless one: the held-out error less the noise (given, or
estimated from the residual of the fullest spectral fit, `_noise_variance`), times
``sqrt((K-1)/K)`` for the refit on K/(K-1) times more points (variance-limited error
falls as 1/sqrt(N)). On the map's scale and as a fraction of the reconstruction's
peak-to-peak (the seed's [0, 1] scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from mracq.recon.cosy.dlnet import DLNet, default_net, predict
from mracq.recon.cosy.physics import (
    PHYSICS_BUDGET_S,
    physics_cv_mse,
    physics_refit,
    physics_sequence,
    resonant_harmonic,
)
from mracq.recon.cosy.shared import fit_shared_path
from mracq.recon.cosy.spectral import fit_path
from mracq.recon.svt import svt
from mracq.sim.cosy.model import N_PULSES

log = logging.getLogger(__name__)

__all__ = ["AutoReport", "ValidatedMap", "reconstruct_auto"]

FOLDS = 5
"""Cross-validation folds (the default from `FEW_POINTS` measured points on)."""
FOLDS_FEW = 10
FEW_POINTS = 500
"""Below this many measured points the default is `FOLDS_FEW` folds: each fit sees 90 %
of the few points, the held-out errors are less noisy, and the bagged greedy fits have
11 members (on 10 % maps of noise 0.1 this lowered auto's error by 1-4 %)."""
SVT_FACTORS = (0.5, 1.0, 2.0)
"""SVT thresholds tried, in units of the default (`mracq.recon.cosy.dlmc.SVT_TAU`)."""
POINTS_PER_COMPONENT = 12
"""The spectral path goes up to N / POINTS_PER_COMPONENT plane waves (N measured points,
4 parameters each) and at most `K_MAX`."""
K_MAX = 20
POINTS_PER_TERM = 8
"""The shared-frequency path goes up to N / POINTS_PER_TERM terms (2 amplitudes each plus
the frequencies they add) and at most `K_SHARED_MAX`."""
K_SHARED_MAX = 30
PHYSICS_FOLDS = 5
"""Most folds of the physics candidates' honest cross-validation (each reruns the search)."""


@dataclass(frozen=True)
class AutoReport:
    """How `reconstruct_auto` chose, and how far to trust the map.

    Attributes
    ----------
    method : str
        Chosen candidate (module docstring), e.g. ``"spectral:7"``.
    cv_rmse : dict
        Held-out RMS error of every candidate, on the map's scale (includes the noise of
        the held-out measurements).
    validation_rmse : float
        ``cv_rmse`` of the chosen candidate.
    noise : float
        Estimated noise per measured point (RMS), map's scale.
    error : float
        Estimated RMS error of the map against the noiseless map, map's scale.
    error_fraction : float
        ``error`` over the reconstruction's peak-to-peak (the seed's [0, 1] scale).
    folds : int
        Cross-validation folds; ``n_points``: measured points.
    couplings : dict, optional
        For a ``physics:<m>`` choice: the fitted field (T), A_zz, A_perp and dipolar
        couplings d (Hz) (`mracq.recon.cosy.physics_fit.CouplingFit.couplings`).
    """

    method: str
    cv_rmse: dict = field(repr=False)
    validation_rmse: float
    noise: float
    error: float
    error_fraction: float
    folds: int
    n_points: int
    couplings: dict | None = None

    def summary(self) -> str:
        """One line for a log or the CLI."""
        return (f"auto chose {self.method} by {self.folds}-fold cross-validation on "
                f"{self.n_points} points: held-out RMS error {self.validation_rmse:.3g}, "
                f"noise {self.noise:.3g}, estimated map error {self.error:.3g} "
                f"({self.error_fraction:.1%} of the map's range)"
                + ("" if self.couplings is None else
                   "; couplings A_zz " + ", ".join(f"{a / 1e3:.1f}" for a in
                                                   self.couplings["a_zz"])
                   + " kHz at B = " + f"{self.couplings['b_field'] * 1e3:.3f} mT"))

    def to_dict(self) -> dict:
        """Plain JSON-able dict (stored with a run)."""
        return {"method": self.method, "validation_rmse": self.validation_rmse,
                "noise": self.noise, "error": self.error,
                "error_fraction": self.error_fraction, "folds": self.folds,
                "n_points": self.n_points,
                "cv_rmse": {k: float(v) for k, v in self.cv_rmse.items()},
                **({"couplings": self.couplings} if self.couplings is not None else {})}


class ValidatedMap(np.ndarray):
    """A reconstructed map (plain ndarray behaviour) with its `AutoReport` as ``.report``
    and, where a ``physics:<m>`` candidate was chosen, its
    `~mracq.recon.cosy.physics_fit.CouplingFit` as ``.physics`` (on the [0, 1] scale of
    the measured points' range; None otherwise)."""

    report: AutoReport | None = None
    physics = None

    def __new__(cls, arr, report):
        obj = np.asarray(arr, dtype=float).view(cls)
        obj.report = report
        return obj

    def __array_finalize__(self, obj):
        self.report = getattr(obj, "report", None)

    def __reduce__(self):  # pickles/copies as a plain array
        return np.asarray(self).__reduce__()


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def _svt_map(x, mk, factor):
    from mracq.recon.cosy.dlmc import SVT_EPS, _svt_tau

    return svt(x, mk, tau=factor * _svt_tau(x, mk), eps=SVT_EPS).x


def _candidates_fold(x, mk, ij_train, ij_test, dl_map, k_max):
    """Predictions at ``ij_test`` of every candidate fit on the training points ``mk``, and
    the fold's greedy paths ``{"spectral": ..., "shared": ...}`` (for bagging)."""
    from mracq.recon.cosy.dlmc import dlmc_post

    ti, tj = ij_test[:, 0], ij_test[:, 1]
    out = {}
    spec_at = {}
    if dl_map is not None:
        out["dl"] = dl_map[ti, tj]
        out["dlmc"] = dlmc_post(x, mk, dl_map)[ti, tj]
    for f in SVT_FACTORS:
        out[f"svt:{round(100 * f)}%"] = _svt_map(x, mk, f)[ti, tj]
    path = fit_path(x[mk], ij_train, x.shape, k_max)
    for k, pw in enumerate(path):
        spec_at[k] = pw.at(ij_test)
        out[f"spectral:{k}"] = spec_at[k]
        if k:
            out[f"spectral~:{k}"] = pw.shrunk(_noise_variance(path, x.size, k)).at(ij_test)
        if dl_map is not None:
            out[f"dl+spectral:{k}"] = 0.5 * (spec_at[k] + dl_map[ti, tj])
    shared = fit_shared_path(x[mk], ij_train, x.shape, _k_shared(len(ij_train)))
    for k, sw in enumerate(shared):
        out[f"shared:{k}"] = sw.at(ij_test)
        if dl_map is not None:
            out[f"dl+shared:{k}"] = 0.5 * (out[f"shared:{k}"] + dl_map[ti, tj])
    return out, {"spectral": path, "shared": shared}


def _k_shared(n: int) -> int:
    return min(K_SHARED_MAX, n // POINTS_PER_TERM)


def reconstruct_auto(measured: np.ndarray, mask: np.ndarray, *, net: DLNet | None = None,
                     folds: int | None = None, k_max: int | None = None,
                     use_dl: bool = True,
                     only: str | None = None, noise: float | None = None,
                     seed: int = 0, field: float | None = None, tau: float | None = None,
                     t1: np.ndarray | None = None, t2: np.ndarray | None = None,
                     n_pulses: int = N_PULSES,
                     physics_budget_s: float = PHYSICS_BUDGET_S,
                     physics_search: dict | None = None) -> ValidatedMap:
    """Reconstruct with the candidate that predicts held-out measured points best.

    Parameters
    ----------
    measured : array (n1, n2)
        Map; entries where ``mask`` is False are ignored.
    mask : bool array (n1, n2)
        Measured entries (at least ``2 folds`` of them).
    net : DLNet, optional
        Network of the DL candidates (default: the shipped weights).
    folds : int, optional
        Cross-validation folds K (>= 2); default `FOLDS_FEW` below `FEW_POINTS` measured
        points, else `FOLDS`.
    k_max : int, optional
        Most plane waves of the spectral candidates (default ``min(K_MAX, N / 12)``).
    use_dl : bool
        False: no network candidates (SVT and spectral only).
    only : str, optional
        Choose only among candidates of this kind (e.g. ``"spectral"``: its number of
        components); the others still serve the error estimate.
    noise : float, optional
        Known RMS noise per measured point on the map's scale (e.g. from photon counts);
        default: estimated from the data (module docstring).
    seed : int
        Seed of the fold assignment (the result is a deterministic function of the data).
    field, tau : float, optional
        Both given: the calibrated field along the NV axis (T) and the sequence's
        decoupling pulse spacing (s); adds the ``physics:2`` and ``physics:3`` candidates
        (module docstring). Checked before any work (`physics_sequence`). Where ``tau``
        puts no odd harmonic of the block near the 13C band at that field
        (`resonant_harmonic`), the map holds no signal the coupling search could fit:
        no physics candidates (a warning says so).
    t1, t2 : arrays, optional
        The map's evolution times (s, equal steps); default the experiment's grid
        (4 us + 18 us steps, `mracq.sim.cosy.model.T_GRID`) cut to the map's shape.
    n_pulses : int
        pi pulses per decoupling block of the sequence.
    physics_budget_s : float
        Wall time (s) of the physics candidates' held-out searches; past it they are
        dropped (logged) and auto chooses among the others.
    physics_search : dict, optional
        Settings of the coupling search (`mracq.recon.cosy.physics.fit_clusters`; default
        those measured as a candidate, ``benchmarks/cosy_search_cv.py``).

    Returns
    -------
    ValidatedMap
        The map on the input's scale, with ``.report`` (`AutoReport`).
    """
    from mracq.recon.cosy.dlmc import _validate, dlmc_post

    m, mk = _validate(measured, mask)
    seq = physics_sequence(field, tau, t1, t2, n_pulses, m.shape, physics_budget_s,
                           physics_search)
    if seq is not None and seq["budget_s"] > 0 and resonant_harmonic(
            seq["b_field"], seq["tau"], seq["n_pulses"]) is None:
        log.warning("auto: no physics candidates at field %.6f T, tau %.4g s: no odd harmonic "
                    "of the decoupling block reaches the 13C band at that field, so the map "
                    "holds no 13C signal to fit", seq["b_field"], seq["tau"])
        seq = None
    n = int(mk.sum())
    if folds is None:
        folds = FOLDS_FEW if 2 * FOLDS_FEW <= n < FEW_POINTS else FOLDS
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"auto needs folds >= 2 and >= {2 * max(folds, 2)} measured points, "
                         f"got folds={folds}, {n} points")
    lo = m[mk].min()
    span = m[mk].max() - lo
    if span <= 0:
        rep = AutoReport("constant", {}, 0.0, 0.0, 0.0, 0.0, folds, n)
        return ValidatedMap(np.full(m.shape, lo), rep)
    x = np.where(mk, (m - lo) / span, 0.0)
    ij = np.argwhere(mk)
    y = x[mk]
    if k_max is None:
        k_max = min(K_MAX, n // POINTS_PER_COMPONENT)
    fid = _fold_ids(n, folds, seed)
    net = (net or default_net()) if use_dl else None
    train_masks = []
    for f in range(folds):
        tm = np.zeros_like(mk)
        tm[tuple(ij[fid != f].T)] = True
        train_masks.append(tm)
    dl_maps = [None] * folds
    if net is not None:
        xs = np.stack([np.where(tm, x, 0.0) for tm in train_masks])
        dl_maps = list(predict(net, xs, np.stack(train_masks)))
    held: dict[str, np.ndarray] = {}  # held-out predictions of every candidate
    fold_paths = []
    for f in range(folds):
        test = fid == f
        pred, paths = _candidates_fold(x, train_masks[f], ij[~test], ij[test], dl_maps[f],
                                       k_max)
        fold_paths.append(paths)
        for name, p in pred.items():
            held.setdefault(name, np.full(n, np.nan))[test] = p
    mse = {k: float(np.mean((v - y) ** 2)) for k, v in held.items() if np.all(np.isfinite(v))}
    weights = _stack(held, mse, y) if only is None else {}
    if weights:
        mse["stack"] = float(np.mean((sum(w * held[b] for b, w in weights.items()) - y) ** 2))
    path = fit_path(y, ij, x.shape, k_max)
    if noise is not None:
        noise_var = (float(noise) / span) ** 2
    else:
        noise_var = _noise_variance(path, x.size, _k_cv(mse))
    agg = _aggregate(mse, n, min(mse.values())) if only is None else {}
    if len(agg) > 1:
        mse["aggregate"] = float(np.mean((sum(w * held[b] for b, w in agg.items()) - y) ** 2))
    if seq is not None and only is None:
        log.info("auto: physics candidates at field %.6f T, tau %.4g s, %d pulses, budget "
                 "%.0f s", seq["b_field"], seq["tau"], seq["n_pulses"], seq["budget_s"])
        mse.update(physics_cv_mse(y, ij, fid % min(folds, PHYSICS_FOLDS), seq))
    pool = [k for k in mse if only is None or k.split(":")[0] == only]
    if not pool:
        raise ValueError(f"no candidate of kind {only!r}")
    best = min(pool, key=mse.get)
    physics_fit = None
    if best.startswith("physics:"):
        physics_fit = physics_refit(y, ij, int(best.split(":")[1]), seq)
        if physics_fit is None:  # no start on all points (it had one on every fold)
            log.warning("auto: %s found no start on all points; choosing among the others",
                        best)
            pool = [k for k in pool if not k.startswith("physics:")]
            best = min(pool, key=mse.get)
    cv_mse = mse[best]
    err2 = max(cv_mse - noise_var, 0.0)
    cache: dict = {}

    def bagged(kind, k):
        """Mean over the refit on all points and the fold fits of a greedy path's k-term
        model (``kind`` "spectral", "spectral~" or "shared"): bagging steadies a greedy
        choice of components that a few points can tip (module docstring)."""
        if (kind, k) in cache:  # "shared:k" and "dl+shared:k" of one aggregate share it
            return cache[kind, k]
        if "shared" not in cache:
            cache["shared"] = fit_shared_path(y, ij, x.shape, _k_shared(n))
        key = "shared" if kind == "shared" else "spectral"
        runs = [path if key == "spectral" else cache["shared"]] + [p[key] for p in fold_paths]
        maps = []
        for run in runs:
            kk = min(k, len(run) - 1)
            m_ = run[kk].shrunk(_noise_variance(run, x.size, kk)) if kind == "spectral~" \
                else run[kk]
            maps.append(m_.grid(x.shape))
        cache[kind, k] = np.mean(maps, axis=0)
        return cache[kind, k]

    def refit(name):
        kind, _, setting = name.partition(":")
        if kind in ("dl", "dlmc", "dl+spectral", "dl+shared") and "dl" not in cache:
            cache["dl"] = predict(net, x[None], mk[None])[0]
        if kind == "dl":
            return cache["dl"]
        if kind == "dlmc":
            return dlmc_post(x, mk, cache["dl"])
        if kind == "svt":
            return _svt_map(x, mk, float(setting.rstrip("%")) / 100)
        if kind in ("spectral", "spectral~", "shared"):
            return bagged(kind, int(setting))
        return 0.5 * (bagged(kind.removeprefix("dl+"), int(setting)) + cache["dl"])

    if physics_fit is not None and best.startswith("physics:"):
        out = physics_fit.grid()
    elif best == "stack":
        out = sum(w * refit(b) for b, w in weights.items())
        best = "stack(" + " + ".join(f"{w:.1f} {b}" for b, w in weights.items()) + ")"
    elif best == "aggregate":
        out = sum(w * refit(b) for b, w in agg.items())
        top = sorted(agg.items(), key=lambda kv: -kv[1])[:3]
        best = ("aggregate(" + " + ".join(f"{w:.2f} {b}" for b, w in top)
                + (f" + {len(agg) - 3} more" if len(agg) > 3 else "") + ")")
    else:
        out = refit(best)
    err = np.sqrt(err2 * (folds - 1) / folds)
    ptp = float(np.ptp(out)) or 1.0
    rep = AutoReport(best, {k: float(np.sqrt(v)) * span for k, v in mse.items()},
                     float(np.sqrt(cv_mse)) * span, float(np.sqrt(noise_var)) * span,
                     float(err) * span, float(err / ptp), folds, n,
                     physics_fit.couplings() if best.startswith("physics:") else None)
    log.info("%s", rep.summary())
    res = ValidatedMap(out * span + lo, rep)
    if best.startswith("physics:"):
        res.physics = physics_fit
    return res


def _stack(held: dict, mse: dict, y: np.ndarray, step: float = 0.1) -> dict:
    """Convex weights (multiples of ``step``) of the best network, SVT and spectral
    candidates that minimize the held-out error of their weighted mean; {} if fewer than
    two kinds. Two free weights fitted to N held-out points: little optimism."""
    best = {}
    for k in mse:
        kind = k.split(":")[0]
        kind = {"dlmc": "dl", "dl+spectral": None, "dl+shared": None, "spectral~": "spectral",
                "shared": "spectral"}.get(kind, kind)
        if kind and (kind not in best or mse[k] < mse[best[kind]]):
            best[kind] = k
    names = list(best.values())
    if len(names) < 2:
        return {}
    h = np.column_stack([held[b] for b in names])
    grid = np.arange(0, 1 + step / 2, step)
    combos = [w for w in np.array(np.meshgrid(*[grid] * len(names))).reshape(len(names), -1).T
              if abs(w.sum() - 1) < 1e-9]
    errs = [np.mean((h @ w - y) ** 2) for w in combos]
    w = combos[int(np.argmin(errs))]
    return {b: float(v) for b, v in zip(names, w, strict=True) if v > 0}


def _aggregate(mse: dict, n: int, noise_var: float, floor: float = 1e-3) -> dict:
    """Exponential weights of the single candidates (Leung and Barron, IEEE TIT 2006):
    ``w_c ~ exp(-n (mse_c - min mse) / (4 noise_var))``, held-out mean squared errors
    ``mse_c`` of ``n`` points; weights below ``floor`` dropped, the rest renormalized.
    The caller passes the smallest held-out error as ``noise_var``: it includes the noise,
    so it bounds the noise variance from above (the weights need ``4 sigma^2`` or more)
    without relying on the noise estimate, which under-reads where the map error is
    below the noise.
    Candidates whose held-out errors differ by less than the noise can resolve share the
    weight instead of one of them winning by chance (the CV choice is noisy where many
    candidates are nearly as good)."""
    names = [k for k in mse if k not in ("stack", "aggregate")]
    if not names or noise_var <= 0:
        return {}
    e = np.array([mse[k] for k in names])
    w = np.exp(-n * (e - e.min()) / (4 * noise_var))
    w /= w.sum()
    keep = w >= floor
    w = w[keep] / w[keep].sum()
    return {k: float(v) for k, v in zip(np.array(names)[keep], w, strict=True)}


def _k_cv(mse: dict) -> int:
    """Components of the best spectral candidate."""
    ks = [int(k.split(":")[1]) for k in mse if k.startswith("spectral:")]
    return min(ks, key=lambda k: mse[f"spectral:{k}"]) if ks else 0


def _noise_variance(path: list, grid_points: int, k_cv: int = 0) -> float:
    """Noise variance per point from the residual of the fullest greedy spectral fit.

    A plane wave added greedily where there is only noise takes the largest of about
    ``grid_points`` periodogram values, each ``sigma^2`` times an Exp(1) variable, and
    removes ``sigma^2 (ln(grid_points) + 0.58)`` from the residual sum of squares, plus
    about 2 ``sigma^2`` more when its frequency and amplitudes are refined; so each
    component beyond the ``k_cv`` that cross-validated best counts ``2.6 + ln(grid_points)``
    degrees of freedom, those up to ``k_cv`` (signal: they predict held-out points) count 4.
    """
    per = 2.6 + np.log(grid_points)

    def dof(pw):
        k = len(pw.freqs)
        return 4 * min(k, k_cv) + per * max(k - k_cv, 0) + 1

    best = path[-1]
    for pw in path[::-1]:  # fullest fit that leaves a quarter of the points free
        if pw.n - dof(pw) >= pw.n / 4:
            best = pw
            break
    return best.rss / max(best.n - dof(best), 1.0)
