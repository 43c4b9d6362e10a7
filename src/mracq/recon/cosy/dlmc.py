"""Reconstruction of sparsely sampled 2D COSY maps: DLMC and its baselines (seed 000).

`reconstruct` is the public entry point. Methods:

- ``"orig"``: the seed's trivial baseline, each missing entry is the mean of its observed
  neighbours (8-neighbourhood, grown outwards until every entry is filled);
- ``"svt"``: singular value thresholding matrix completion (`mracq.recon.svt`);
- ``"dl"``: the trained DLNet alone (`mracq.recon.cosy.dlnet`);
- ``"dlmc"``: DLNet followed by SVT post-processing started from the network output
  (seed Fig. 3/4): the soft threshold removes the network's non-low-rank part; further
  iterations would pull the observed entries back to the (noisy) data, see `DLMC_ITER`;
- ``"auto"`` (the default): the candidate (DL, DLMC, SVT settings, an off-grid spectral
  fit, ...) that predicts held-out measured points best, by K-fold cross-validation
  (`mracq.recon.cosy.auto`); the result carries the validation error (``.report``).

Scaling as the seed: the map is min-max normalized to [0, 1] over its observed entries
before reconstruction and mapped back after, so the output is on the input's scale.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.cosy.dlnet import SIZE, DLNet, default_net, predict
from mracq.recon.svt import svt

log = logging.getLogger(__name__)

METHODS = ("auto", "dlmc", "dl", "svt", "spectral", "orig")

SVT_EPS = 0.6
"""SVT stop: relative residual on the observed (centred, normalized) entries; near the
relative noise of shot-noise-limited maps (benchmarks/cosy.py), where fitting further fits noise."""
SVT_TAU = 1.0
"""Plain SVT threshold in units of sqrt(n1 n2) x RMS of the centred observed entries."""
DLMC_TAU = 0.1
"""DLMC threshold as a fraction of the largest singular value of the centred DL output."""
DLMC_ITER = 1
"""DLMC post-processing iterations (at most). One: the soft-thresholded (low-rank) DL output.
On shot-noise-limited maps each further SVT step (``Y += delta P_Omega(M - X)``) puts the
measurement noise back and raised the RMSE (e.g. 0.114 -> 0.213 at 40% coverage, tuning on
held-out maps, seed 999); set ``max_iter`` of `dlmc_post` higher for cleaner data."""


def neighbour_fill(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The seed's "orig" baseline: fill missing entries with the mean of observed neighbours.

    Entries with no known neighbour are filled in later sweeps from entries filled before
    (the fill grows outwards from the data).
    """
    x = np.asarray(x, dtype=float)
    known = np.asarray(mask, dtype=bool).copy()
    out = np.where(known, x, 0.0)
    while not known.all():
        kp = np.pad(known.astype(float), 1)
        vp = np.pad(out * known, 1)
        cnt = np.zeros_like(out)
        tot = np.zeros_like(out)
        n1, n2 = out.shape
        for di in (0, 1, 2):
            for dj in (0, 1, 2):
                if di == 1 and dj == 1:
                    continue
                cnt += kp[di : di + n1, dj : dj + n2]
                tot += vp[di : di + n1, dj : dj + n2]
        new = ~known & (cnt > 0)
        out[new] = tot[new] / cnt[new]
        known |= new
    return out


def _validate(measured, mask) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(measured, dtype=float)
    mk = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"measured must be a 2D map, got shape {m.shape}")
    if mk.shape != m.shape:
        raise ValueError(f"mask shape {mk.shape} differs from measured shape {m.shape}")
    if mk.dtype != bool:
        if not np.all(np.isin(mk, (0, 1))):
            raise ValueError("mask must be boolean (or 0/1)")
        mk = mk.astype(bool)
    if m.shape[0] > SIZE or m.shape[1] > SIZE:
        raise ValueError(f"map {m.shape} is larger than {SIZE} x {SIZE}")
    if m.shape[0] < 2 or m.shape[1] < 2:
        raise ValueError(f"map {m.shape} is too small (at least 2 x 2)")
    if not mk.any():
        raise ValueError("mask is empty: no observed entries")
    bad = ~np.isfinite(m) & mk
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"observed entry ({i}, {j}) is {m[i, j]} (NaN/inf where mask is True)")
    return m, mk


def reconstruct(
    measured: np.ndarray,
    mask: np.ndarray,
    method: str = "auto",
    *,
    net: DLNet | None = None,
    noise: float | None = None,
    field: float | None = None,
    tau: float | None = None,
    t1: np.ndarray | None = None,
    t2: np.ndarray | None = None,
    n_pulses: int | None = None,
    physics_budget_s: float | None = None,
    physics_search: dict | None = None,
) -> np.ndarray:
    """Reconstruct a full 2D map from its entries where ``mask`` is True.

    Parameters
    ----------
    measured : array (n1, n2), n1, n2 <= 64
        Map (e.g. P(ms=0)); entries where ``mask`` is False are ignored (may be NaN).
    mask : bool array (n1, n2)
        True where ``measured`` holds data.
    method : {"auto", "dlmc", "dl", "svt", "spectral", "orig"}
        Reconstruction method (module docstring). ``"spectral"``: the plane-wave fit with
        its number of components chosen by cross-validation (``"auto"`` with only those
        candidates).
    net : DLNet, optional
        Network for "dl"/"dlmc" (default: the shipped weights, loaded offline).
    noise : float, optional
        ``"auto"``: known RMS noise per point (input's scale) for its error estimate.
    field, tau : float, optional
        ``"auto"``, both given: the calibrated field along the NV axis (T) and the
        sequence's decoupling pulse spacing (s) add the ``physics:2`` and ``physics:3``
        candidates (the cluster's couplings fitted through the simulator, scored by honest
        held-out validation; minutes, `mracq.recon.cosy.auto`). Checked first (a one-line
        ValueError: non-finite, out of range, only one of the two); other methods ignore
        them.
    t1, t2 : arrays, optional
        With ``field``: the map's evolution times (s, equal steps); default the
        experiment's grid (4 us + 18 us steps) cut to the map's shape.
    n_pulses : int, optional
        With ``field``: pi pulses per decoupling block (default 40).
    physics_budget_s : float, optional
        With ``field``: wall time (s) of the physics candidates' held-out searches
        (default `mracq.recon.cosy.auto.PHYSICS_BUDGET_S`; 0: none).
    physics_search : dict, optional
        With ``field``: settings of the coupling search
        (`mracq.recon.cosy.physics.fit_clusters`; default those measured as a candidate).

    Returns
    -------
    ndarray (n1, n2)
        Reconstructed map on the input's scale; for ``"auto"`` and ``"spectral"`` a
        `mracq.recon.cosy.auto.ValidatedMap` whose ``.report`` holds the choice and the
        validation error (falls back to ``"dlmc"`` with fewer than 10 measured points).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    m, mk = _validate(measured, mask)
    if method in ("auto", "spectral"):
        from mracq.recon.cosy.auto import FOLDS, PHYSICS_BUDGET_S, reconstruct_auto
        from mracq.recon.cosy.physics import physics_sequence
        from mracq.sim.cosy.model import N_PULSES

        phys = {}
        if method == "auto" and (field is not None or tau is not None):
            phys = {"field": field, "tau": tau, "t1": t1, "t2": t2,
                    "n_pulses": N_PULSES if n_pulses is None else n_pulses,
                    "physics_budget_s": (PHYSICS_BUDGET_S if physics_budget_s is None
                                         else physics_budget_s)}
            physics_sequence(*(phys[k] for k in ("field", "tau", "t1", "t2", "n_pulses")),
                             m.shape, phys["physics_budget_s"])
        if mk.sum() >= 2 * FOLDS:
            if phys and physics_search is not None:
                phys["physics_search"] = physics_search
            return reconstruct_auto(m, mk, net=net, noise=noise,
                                    only="spectral" if method == "spectral" else None,
                                    **phys)
        method = "dlmc"
    lo = m[mk].min()
    span = m[mk].max() - lo
    if span <= 0:
        return np.full(m.shape, lo)
    x = np.where(mk, (m - lo) / span, 0.0)
    if method == "orig":
        out = neighbour_fill(x, mk)
    elif method == "svt":
        out = svt(x, mk, tau=_svt_tau(x, mk), eps=SVT_EPS).x
    else:
        y = predict(net or default_net(), x[None], mk[None])[0]
        out = y if method == "dl" else dlmc_post(x, mk, y)
    return out * span + lo


def _svt_tau(x: np.ndarray, mask: np.ndarray) -> float:
    c = x[mask] - x[mask].mean()
    return SVT_TAU * np.sqrt(x.size) * (np.sqrt(np.mean(c**2)) or 1.0)


def dlmc_post(
    x: np.ndarray,
    mask: np.ndarray,
    dl: np.ndarray,
    *,
    tau_rel: float = DLMC_TAU,
    max_iter: int = DLMC_ITER,
    eps: float = SVT_EPS,
) -> np.ndarray:
    """SVT post-processing of a DLNet output ``dl`` (normalized scale), seed Fig. 3.

    ``tau = tau_rel`` times the largest singular value of the centred ``dl``; ``Y_0 = dl``.
    """
    c = dl - x[mask].mean()
    tau = tau_rel * (np.linalg.norm(c, 2) or 1.0)
    return svt(x, mask, tau=tau, eps=eps, max_iter=max_iter, init=dl).x
