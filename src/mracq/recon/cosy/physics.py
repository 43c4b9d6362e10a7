"""Fit a COSY map by its cluster's couplings, the field known (issue 12): anchor and scan.

With the field from the calibration, the map of a 2-spin cluster is a function of ~10
couplings (`mracq.recon.cosy.physics_fit`). What the maps show (noiseless 2-spin maps
fitted by plane waves at the exact transition frequencies): the ms=0 pattern around the
Larmor line (both nuclei at ``wL``, split by their dipolar coupling) plus the diagonal
doublet ``f_S +- J/2`` of ONE nucleus (the one the decoupling block sees), amplitude
~0.05-0.08; the other shows only in cross peaks of amplitude 0.003-0.026, hidden at noise
0.1 and 10 % coverage. With every other coupling right, a scan of the hidden frequency
over the prior ranks the truth first. The search (`anchor_search`):

A. anchors (`anchor_lines`): the centre of the first doublet of the shared-frequency fit's
   lines away from the folded Larmor line, then that line, ...; each unfolded over
   ``wL +- a_zz_max``; with every unfolding, the hidden nucleus at every ``scan_step`` over
   the same prior (one start each at `DIPOLAR_STARTS`): ~850 starts per anchor, batched
   LM (every parameter free), the best eighth twice as many steps more;
B. the ``keep_b`` best distinct pairs refit from the (dipolar, azimuth) grid
   (`grid_refit`, half the azimuths), ``refine_iters`` LM steps;
C. up to ``rescans`` rounds, each: `alias_shifts` (one or both nucleus frequencies moved
   by whole folding frequencies ``1 / dt``, a local grid around each, grid refit, LM),
   then `rescan` (each nucleus in turn over the prior with the other couplings as
   fitted, grid refit, LM); a step is kept when the residual drops, the rounds stop when
   neither does. The hidden nucleus is also started ``NEAR_KHZ`` beside the other one;
D. 3 spins: the 2-spin result plus a third nucleus at every ``third_step`` over the prior
   (`add_third`).

The alias stage and the near starts (bonded pairs: both nuclei often within 1-9 kHz, so
strongly coupled, and fits settled a whole fold off) cut the search's missed basins
(residual > 10 noise variances above LM started at the truth) on fresh bonded maps from
3 to 1 in 12 (6 maps x 175 and 250 random points, noise 0.1; mean RMSE 0.060 -> 0.040 at
175, 0.035 -> 0.023 at 250) for ~40 % more time (33 s against 23 s per search at load
3; ``benchmarks/cosy_search_basins.py``).

On 2-spin couplings maps (noise 0.1, 10 %, field +-2 uT; ``benchmarks/cosy_anchor_*.json``)
it reaches 0.035-0.040 mean RMSE against auto's 0.058-0.077, but is worse than auto on
2-3 maps in 10 (both nuclei within ~8 kHz of wL, a wrong anchor), so it enters
``method="auto"`` only through held-out validation (`held_out_physics`): the WHOLE search
is rerun on each fold's training points. Refitting the full-data result per fold reads
5-9 % low (the basin was chosen with the held-out points in view) and let the search
through at up to 1.35x auto's error (``benchmarks/cosy_search_cv.py``).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from mracq.recon.cosy.physics_fit import (
    DIPOLAR_STARTS,
    GRID_AZIMUTH,
    KHZ,
    CouplingFit,
    FitProblem,
    batch_lm,
    grid_refit,
    unfold,
)
from mracq.sim.cosy.couplings import GAMMA_13C
from mracq.sim.cosy.model import N_PULSES, T_GRID

log = logging.getLogger(__name__)

__all__ = ["A_ZZ_MAX", "FIELD_RANGE", "NEAR_KHZ", "PHYSICS_BUDGET_S", "SPINS", "TAU_RANGE",
           "add_third", "alias_shifts", "anchor_lines", "anchor_search", "check_sequence",
           "fit_clusters", "held_out_physics", "physics_cv_mse", "physics_refit",
           "physics_sequence", "rescan", "resonant_harmonic", "resonant_tau"]

HALF_AZIMUTH = GRID_AZIMUTH[:2]
A_ZZ_MAX = 65.0
"""Largest |A_zz| searched, kHz (the prior of every nucleus frequency: ``wL +- A_ZZ_MAX``)."""
NEAR_KHZ = 0.4
"""Offset (kHz) of the hidden-nucleus starts beside the other nucleus's frequency: bonded
pairs often have both nuclei within 1 kHz (strongly coupled by their ~2 kHz dipolar
coupling), which the scan grid's points 1 kHz or more away do not reach."""
FIELD_RANGE = (0.01, 3.0)
"""Fields (T) the search accepts: above 10 mT the 13C Larmor frequency (107 kHz/10 mT)
exceeds `A_ZZ_MAX`, so every nucleus frequency of the prior is positive."""
TAU_RANGE = (20e-9, 50e-6)
"""Pulse spacings (s) the simulator is used for: longer than two 10 ns pi pulses, shorter
than 50 us (a 40-pulse block of 2 ms, beyond the NV's coherence)."""
SPINS = (2, 3)
"""Cluster sizes of the ``physics:<m>`` candidates."""
PHYSICS_BUDGET_S = 600.0
"""Default wall time (s) of the physics candidates' held-out searches (the final fit of a
chosen one adds about one fold's time): ~90-130 s on 250 points of a 50 x 50 map at load
1, 95-364 s (mean 154 s, the whole call) with 2 cores shared at load 2-4
(``benchmarks/cosy_auto_physics_2_fresh.json``)."""


def check_sequence(field, tau, t1=None, t2=None, n: int = N_PULSES):
    """Validated ``(field T, tau s, t1 s, t2 s, n)`` for the physics fit; a one-line
    ValueError otherwise (``t1``, ``t2`` None: returned as None)."""
    for name, v, (lo, hi), unit in (("field", field, FIELD_RANGE, "T"),
                                    ("tau", tau, TAU_RANGE, "s")):
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in {unit}, got {v!r}") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"{name} = {v!r} {unit} is outside the physics fit's range "
                             f"[{lo:g}, {hi:g}] {unit}")
    if int(n) != n or n <= 0 or n % 2:
        raise ValueError(f"n must be a positive even number of pi pulses, got {n!r}")
    out = []
    for name, t in (("t1", t1), ("t2", t2)):
        if t is None:
            out.append(None)
            continue
        t = np.asarray(t, float)
        d = np.diff(t) if t.ndim == 1 and t.size >= 2 else np.zeros(1)
        if not (np.all(np.isfinite(t)) and np.all(t >= 0) and d[0] > 0
                and np.allclose(d, d[0], rtol=1e-6, atol=0)):
            raise ValueError(f"{name} must be >= 2 finite times (s) in equal increasing "
                             "steps for the physics fit")
        out.append(t)
    return float(field), float(tau), out[0], out[1], int(n)


def anchor_lines(prob: FitProblem, wl_khz: float, n: int = 2, larmor_gap_khz: float = 3.0,
                 n_terms: int = 12, max_j_khz: float = 6.0, centres: bool = True
                 ) -> list[float]:
    """Folded frequencies (rad per grid step) to anchor the seen nucleus on: the lines of
    the shared-frequency fit (in the order its greedy path added them) farther than
    ``larmor_gap_khz`` from the folded Larmor line; with ``centres``, each line is preceded
    by the centre of the doublet it forms with a later line within ``max_j_khz`` (the
    seen nucleus shows as ``f +- J/2``, J up to a few kHz: a line can sit outside the
    ~1.5 kHz basin of ``f``). The first ``n``."""
    from mracq.recon.cosy.shared import fit_shared_path

    dt = float(prob.t1[1] - prob.t1[0])
    ph = (2 * np.pi * wl_khz * 1e3 * dt) % (2 * np.pi)
    wlf = min(ph, 2 * np.pi - ph)
    khz = 2 * np.pi * 1e3 * dt
    freqs = fit_shared_path(prob.y, prob.ij, prob.mask.shape, n_terms)[-1].freqs
    away = [float(f) for f in freqs if abs(f - wlf) > larmor_gap_khz * khz]
    out: list[float] = []
    for i, f in enumerate(away):
        if centres:
            for g in away[i + 1:]:
                if 0.3 * khz < abs(g - f) < max_j_khz * khz:
                    c = 0.5 * (f + g)
                    if all(abs(c - o) > 0.5 * khz for o in out):
                        out.append(c)
                    break
        if all(abs(f - o) > 0.5 * khz for o in out):
            out.append(f)
    return out[:n]


def anchor_search(values, ij, *, t1, t2, b_field, tau, n_pulses=N_PULSES, n_anchors=1,
                  a_zz_max=A_ZZ_MAX, scan_step=1.5, azimuths=2, screen_iters=3, keep_b=3,
                  refine_iters=20, anchor_offsets=(0.0,), rescans=3, scan_iters=4,
                  centres=True, spins=2, third_step=3.0, rescan_azimuths=1
                  ) -> CouplingFit | None:
    """Coupling fit of a 2- or 3-spin cluster: anchor the seen nucleus, scan the hidden one.

    Parameters
    ----------
    values, ij
        Measured values (N,) (any offset and scale) and their grid indices (N, 2).
    t1, t2 : arrays
        Evolution times in s (equal uniform steps; the folding period is ``1 / dt``).
    b_field, tau : float
        Calibrated field along the NV axis (T; its error should be << 100 uT) and the
        decoupling pulse spacing (s).
    n_pulses : int
        pi pulses per decoupling block.
    n_anchors, centres : int, bool
        Frequencies tried as the seen nucleus (`anchor_lines`: with ``centres`` each
        line's doublet centre first).
    a_zz_max : float
        Largest |A_zz| in kHz (the prior of every nucleus frequency: ``wL +- a_zz_max``).
    scan_step, azimuths
        Step (kHz) of the hidden nucleus's frequency over the prior; its azimuth starts.
    anchor_offsets
        Offsets (kHz) added to each anchor unfolding.
    rescans, scan_iters, rescan_azimuths
        Rounds of `rescan` after the fit, its LM steps, azimuth starts.
    spins, third_step
        3: the 2-spin fit plus a third nucleus at every ``third_step`` (kHz) over the
        prior (`add_third`).
    screen_iters, keep_b, refine_iters
        LM steps of every start (the best eighth twice as many more), distinct pairs refit
        on the (dipolar, azimuth) grid (`grid_refit`), final LM steps.

    Returns
    -------
    CouplingFit or None (fewer than 30 points, or no line away from the Larmor line).
    """
    fits = fit_clusters(values, ij, t1=t1, t2=t2, b_field=b_field, tau=tau,
                        n_pulses=n_pulses, spins=(spins,), n_anchors=n_anchors,
                        a_zz_max=a_zz_max, scan_step=scan_step, azimuths=azimuths,
                        screen_iters=screen_iters, keep_b=keep_b, refine_iters=refine_iters,
                        anchor_offsets=anchor_offsets, rescans=rescans,
                        scan_iters=scan_iters, centres=centres, third_step=third_step,
                        rescan_azimuths=rescan_azimuths)
    return fits.get(spins)


def fit_clusters(values, ij, *, t1, t2, b_field, tau, n_pulses=N_PULSES, spins=SPINS,
                 n_anchors=2, a_zz_max=A_ZZ_MAX, scan_step=1.5, azimuths=1, screen_iters=3,
                 keep_b=8, refine_iters=20, anchor_offsets=(0.0,), rescans=2, scan_iters=4,
                 centres=True, third_step=3.0, rescan_azimuths=1, aliases=True,
                 near_khz=NEAR_KHZ, starts=()) -> dict[int, CouplingFit]:
    """`anchor_search` for every cluster size in ``spins`` (2 and/or 3), sharing the 2-spin
    search: ``{m: CouplingFit}``, empty where it finds no start. The defaults are the
    settings measured as a candidate of auto (``benchmarks/cosy_search_cv.py``);
    ``aliases`` False leaves out the alias stage (`alias_shifts`) of each round;
    ``near_khz`` 0 the hidden nucleus's starts beside the other (`NEAR_KHZ`);
    ``starts``: more 2-spin ``theta`` rows (e.g. the last fit of a growing data set, so
    that a basin found before stays in the running) refined with the search's best."""
    values = np.asarray(values, float)
    if len(values) < 30 or not (np.isfinite(b_field) and b_field > 0 and tau > 0):
        return {}
    t0 = time.perf_counter()
    prob = FitProblem(values, ij, t1, t2, tau, n_pulses)
    wl = GAMMA_13C * float(b_field) / KHZ
    dt = float(prob.t1[1] - prob.t1[0])
    lines = anchor_lines(prob, wl, n_anchors, centres=centres)
    if not lines:
        return {}
    fa = np.concatenate([unfold(f, dt, wl - a_zz_max, wl + a_zz_max + 1) for f in lines])
    fa = np.unique(np.concatenate([fa + o for o in anchor_offsets]))
    grid = np.arange(wl - a_zz_max, wl + a_zz_max + 1e-9, scan_step)
    rows = [np.r_[wl, f, 25.0, 0.0, fb, 25.0, az, d, pol, 0.3]
            for f in fa for fb in _hidden(grid, f, near_khz)
            for (d, pol) in DIPOLAR_STARTS
            for az in 0.7 + np.arange(azimuths) * 2 * np.pi / azimuths]
    allp = np.arange(10)
    th, loss = batch_lm(prob, np.array(rows), allp, screen_iters)
    best = np.argsort(loss)[:max(64, len(rows) // 8)]
    th, loss = batch_lm(prob, th[best], allp, 2 * screen_iters)
    pairs = []
    for i in np.argsort(loss):
        key = np.sort(th[i, [1, 4]])
        if all(np.any(np.abs(key - np.sort(p[[1, 4]])) > 1.0) for p in pairs):
            pairs.append(th[i])
        if len(pairs) == keep_b:
            break
    t_a = time.perf_counter() - t0
    extra = [np.asarray(r, float) for r in starts if len(r) == 10]
    top = np.vstack([grid_refit(prob, wl, pairs, screen_iters, 8, HALF_AZIMUTH),
                     np.array(pairs)] + ([np.array(extra)] if extra else []))
    th, loss = batch_lm(prob, top, allp, refine_iters)
    i = int(np.argmin(loss))
    best, best_loss = th[i], float(loss[i])
    steps = [("rescan", lambda b: rescan(prob, b, grid, scan_iters, refine_iters, wl=wl,
                                          azimuths=rescan_azimuths, near_khz=near_khz))]
    if aliases:
        steps.insert(0, ("alias shifts", lambda b: alias_shifts(
            prob, b, wl, a_zz_max, dt, screen_iters, refine_iters)))
    for r in range(rescans):
        moved = False
        for name, step in steps:
            cand, cl = step(best)
            log.debug("%s %d: loss %.3f -> %.3f", name, r, best_loss, cl)
            if cl < best_loss - 1e-3:
                best, best_loss, moved = cand, cl, True
        if not moved:
            break
    out = {2: prob.fit(best)} if 2 in spins else {}
    if 3 in spins:
        out[3] = prob.fit(add_third(prob, best, np.arange(wl - a_zz_max, wl + a_zz_max + 1e-9,
                                                          third_step),
                                    screen_iters, refine_iters))
    log.debug("anchor search: %d anchor unfoldings, %d starts %.1f s, total %.1f s",
              len(fa), len(rows), t_a, time.perf_counter() - t0)
    return out


def _hidden(grid, f, near_khz=NEAR_KHZ):
    """Hidden-nucleus frequencies (kHz) for another nucleus at ``f``: the points of
    ``grid`` at least 1 kHz from it, and ``f +- near_khz`` (none if 0)."""
    grid = np.asarray(grid, float)
    near = [f - near_khz, f + near_khz] if near_khz else []
    return np.r_[grid[np.abs(grid - f) >= 1.0], near]


def rescan(prob: FitProblem, theta, grid, iters=4, refine_iters=20, keep=3, wl=None,
           azimuths=1, near_khz=NEAR_KHZ):
    """Each nucleus of a 2-spin ``theta`` in turn at every frequency of ``grid`` (kHz)
    1 kHz or more from the other, and ``near_khz`` beside it, the other couplings as
    fitted (with ``azimuths`` > 1: the scanned nucleus's azimuth also on that many values,
    its A_perp at 25 kHz), ``iters`` LM steps; the ``keep`` best
    distinct pairs, each as scanned and (with ``wl``) refit from the half (dipolar,
    azimuth) grid (`grid_refit`), refined by ``refine_iters`` steps. Returns the best row
    and its loss."""
    rows = []
    for c in (1, 4):
        other = 4 if c == 1 else 1
        for f in _hidden(grid, theta[other], near_khz):
            for k in range(azimuths):
                r = np.array(theta, float)
                r[c] = f
                r[c + 1] = min(r[c + 1], 0.9 * f) if azimuths == 1 else 25.0
                r[c + 2] += 2 * np.pi * k / azimuths
                rows.append(r)
    allp = np.arange(10)
    th, loss = batch_lm(prob, np.array(rows), allp, iters)
    pick = []
    for i in np.argsort(loss):
        key = np.sort(th[i, [1, 4]])
        if all(np.any(np.abs(key - np.sort(th[j, [1, 4]])) > 1.0) for j in pick):
            pick.append(i)
        if len(pick) == keep:
            break
    cand = th[pick]
    if wl is not None:
        cand = np.vstack([cand, grid_refit(prob, wl, cand, 3, 8, HALF_AZIMUTH)])
    th, loss = batch_lm(prob, cand, allp, refine_iters)
    i = int(np.argmin(loss))
    return th[i], float(loss[i])


def alias_shifts(prob: FitProblem, theta, wl, a_zz_max, dt, iters=3, refine_iters=20,
                 local_khz=6.0, local_step=1.5, keep=6):
    """A 2-spin ``theta`` with one or both nucleus frequencies moved by whole multiples of
    the grid's folding frequency ``1 / dt`` (within ``wl +- a_zz_max`` kHz): each moved
    pair on a local grid (both frequencies ``+- local_khz`` in ``local_step``), ``iters``
    LM steps (A_perp from 25 kHz); for each of the ``keep`` best moves its best start and
    its exact alias refit from the half (dipolar, azimuth) grid (`grid_refit`), then
    ``refine_iters`` LM steps.

    The map sees each frequency folded, so these aliases differ only through the
    decoupling block's filter (the nucleus's mean precession against the harmonic) and
    the cross peaks: a fit can settle on the wrong one, with its frequencies pulled a few
    kHz off the alias of the truth (seen on bonded pairs, both nuclei 2-9 kHz apart and
    strongly coupled). Returns the best row and its loss."""
    alias = 1e-3 / dt
    t = np.asarray(theta, float)
    lo, hi = wl - a_zz_max, wl + a_zz_max
    ks = np.arange(-int(2 * a_zz_max // alias) - 1, int(2 * a_zz_max // alias) + 2)
    local = np.arange(-local_khz, local_khz + 1e-9, local_step)
    rows, group, centres = [], [], []
    for move in ((1,), (4,), (1, 4)):
        for k in ks[ks != 0]:
            r0 = t.copy()
            r0[list(move)] += k * alias
            r0[[2, 5]] = 25.0
            g = len(centres)
            centres.append(r0)
            for d0 in local:
                for d1 in local:
                    r = r0.copy()
                    r[1] += d0
                    r[4] += d1
                    inside = np.all((r[[1, 4]] >= lo) & (r[[1, 4]] <= hi))
                    if inside and abs(r[1] - r[4]) >= NEAR_KHZ:
                        rows.append(r)
                        group.append(g)
    if not rows:
        return t, float(np.sum(prob.resid(t[None])[0] ** 2))
    allp = np.arange(10)
    th, loss = batch_lm(prob, np.array(rows), allp, iters)
    group = np.array(group)
    best = [np.flatnonzero(group == g)[np.argmin(loss[group == g])] for g in np.unique(group)]
    order = sorted(best, key=lambda i: loss[i])[:keep]
    pairs = [th[i] for i in order] + [centres[group[i]] for i in order]
    cand = np.vstack([np.array(pairs), grid_refit(prob, wl, pairs, iters, 8, HALF_AZIMUTH)])
    th, loss = batch_lm(prob, cand, allp, refine_iters)
    i = int(np.argmin(loss))
    return th[i], float(loss[i])


def add_third(prob: FitProblem, theta2, grid, iters=3, refine_iters=20, keep=8):
    """A 3-spin ``theta`` from a 2-spin fit ``theta2``: a third nucleus at every frequency
    of ``grid`` (kHz) more than 1 kHz from the other two, A_perp 25 kHz, its two dipolar
    couplings both at each of `DIPOLAR_STARTS`; ``iters`` LM steps (every parameter
    free), the ``keep`` best ``refine_iters`` more; the best row."""
    t = np.asarray(theta2, float)
    rows = [np.r_[t[:7], f, 25.0, 1.4, t[7:10], [d, pol, 0.3] * 2]
            for f in grid if min(abs(f - t[1]), abs(f - t[4])) > 1.0
            for (d, pol) in DIPOLAR_STARTS]
    allp = np.arange(19)
    th, loss = batch_lm(prob, np.array(rows), allp, iters)
    th, loss = batch_lm(prob, th[np.argsort(loss)[:keep]], allp, refine_iters)
    return th[int(np.argmin(loss))]


def held_out_physics(values, ij, fold_ids, *, t1, t2, b_field, tau, n_pulses=N_PULSES,
                     spins=SPINS, budget_s=PHYSICS_BUDGET_S, **search_kw) -> dict[str, np.ndarray]:
    """Honest held-out predictions of the ``physics:<m>`` fits: for each fold, the whole
    search (`fit_clusters`) rerun on the other folds' points predicts the fold's points.

    Parameters
    ----------
    values : array (N,)
        Measured values (any offset and scale).
    ij : int array (N, 2)
        Their grid indices, in the order of ``values``.
    fold_ids : int array (N,)
        Fold of each point.
    t1, t2, b_field, tau, n_pulses
        The sequence (s), the calibrated field (T), pulse spacing (s) and pi pulses per
        block (`check_sequence`).
    spins : tuple of int
        Cluster sizes (2, 3).
    budget_s : float
        Wall time (s): a fold is not started when the time spent plus the slowest fold so
        far would pass it; then nothing is returned (a candidate scored on part of the
        points would not compare with the others).
    **search_kw
        More settings of `fit_clusters`.

    Returns
    -------
    dict
        ``{"physics:<m>": predictions (N,)}`` (NaN where a fold found no start); empty
        when the budget ran out.
    """
    values, ij, fold_ids = np.asarray(values, float), np.asarray(ij), np.asarray(fold_ids)
    folds = np.unique(fold_ids)
    pred = {m: np.full(len(values), np.nan) for m in spins}
    t0 = time.perf_counter()
    slowest = 0.0
    for k, f in enumerate(folds):
        spent = time.perf_counter() - t0
        if spent + slowest > budget_s:
            log.warning("physics candidates dropped: %d of %d folds in %.0f s, the next would "
                        "pass the %.0f s budget (physics_budget_s)", k, len(folds), spent,
                        budget_s)
            return {}
        tf = time.perf_counter()
        te = fold_ids == f
        fits = fit_clusters(values[~te], ij[~te], t1=t1, t2=t2, b_field=b_field, tau=tau,
                            n_pulses=n_pulses, spins=spins, **search_kw)
        for m, fit in fits.items():
            pred[m][te] = fit.at(ij[te])
        slowest = max(slowest, time.perf_counter() - tf)
        log.info("physics candidates: fold %d/%d searched in %.1f s (%.0f s of %.0f s budget)",
                 k + 1, len(folds), time.perf_counter() - tf, time.perf_counter() - t0,
                 budget_s)
    return {f"physics:{m}": p for m, p in pred.items()}


def resonant_harmonic(field: float, tau: float, n_pulses: int = N_PULSES,
                      a_zz_max: float = A_ZZ_MAX) -> int | None:
    """The odd harmonic of the decoupling block that a 13C nucleus of the search's prior
    can meet, or None when there is none.

    A CPMG/XY block of ``n_pulses`` pi pulses ``tau`` apart passes a nucleus whose mean
    precession frequency ``(f0 + f1) / 2 ~ f_L - A_zz / 2`` lies within about
    ``1 / (n_pulses tau)`` of an odd multiple ``h / (2 tau)``; nuclei elsewhere leave the
    NV alone, and the COSY map holds none of their signal. With ``|A_zz| <= a_zz_max`` the
    prior's band is ``f_L +- (a_zz_max / 2 + 1 / (n_pulses tau))``. Off every harmonic
    (``tau`` detuned by 10-20 %, 120 simulated clusters of three families) the maps'
    peak-to-peak P(ms=0) has medians of 1e-5 to 1e-3 (largest 0.011), against medians
    of 4e-3 to 4e-2 on it, so there is little or nothing for the coupling search to fit.

    Parameters
    ----------
    field : float
        Field along the NV axis in T (13C Larmor frequency ``f_L = gamma_13C B / 2 pi``).
    tau : float
        Pulse spacing in s.
    n_pulses : int
        pi pulses per decoupling block.
    a_zz_max : float
        Largest |A_zz| of the prior in kHz.

    Returns
    -------
    int or None
        The odd ``h`` with ``h / (2 tau)`` in the band nearest ``f_L``; None if none.
    """
    f_l = GAMMA_13C * float(field) / KHZ  # kHz
    half = 1e-3 / (2.0 * float(tau))  # kHz
    reach = a_zz_max / 2.0 + 1e-3 / (int(n_pulses) * float(tau))
    h = 2 * np.floor(f_l / half / 2.0) + np.array([-1.0, 1.0, 3.0])  # odd neighbours
    h = h[(h >= 1) & (np.abs(h * half - f_l) <= reach)]
    return int(h[np.argmin(np.abs(h * half - f_l))]) if h.size else None


def resonant_tau(field: float, harmonic: int = 7) -> float:
    """Pulse spacing (s) that puts the bare 13C Larmor frequency at ``field`` (T) on the
    odd ``harmonic`` of the decoupling block: ``harmonic / (2 f_L)``."""
    return harmonic / (2.0 * GAMMA_13C * float(field) / (2 * np.pi))


def physics_sequence(field, tau, t1, t2, n_pulses, shape, budget_s, search=None
                     ) -> dict | None:
    """The checked settings of the physics candidates of ``method="auto"``.

    Parameters
    ----------
    field, tau : float or None
        Calibrated field along the NV axis (T) and decoupling pulse spacing (s); both
        None: no physics candidates (returns None).
    t1, t2 : arrays or None
        Evolution times (s, equal steps); None: the experiment's grid (4 us + 18 us steps,
        `mracq.sim.cosy.model.T_GRID`) cut to ``shape``.
    n_pulses : int
        pi pulses per decoupling block.
    shape : (int, int)
        The map's shape.
    budget_s : float
        Wall time (s) of the held-out searches (>= 0; 0: none).
    search : dict, optional
        Settings of `fit_clusters` (default: those measured as a candidate).

    Raises
    ------
    ValueError
        One line: a bad value, only one of field and tau, or a grid that does not match.
    """
    if field is None and tau is None:
        return None
    if field is None or tau is None:
        raise ValueError("the physics candidates need both field (T) and tau (s); got only "
                         + ("field" if tau is None else "tau"))
    grid = [T_GRID[0] + (T_GRID[1] - T_GRID[0]) * np.arange(k) if t is None else t
            for t, k in ((t1, shape[0]), (t2, shape[1]))]
    field, tau, t1, t2, n_pulses = check_sequence(field, tau, *grid, n_pulses)
    if (t1.size, t2.size) != tuple(shape):
        raise ValueError(f"t1, t2 have {t1.size} x {t2.size} times; the map is "
                         f"{shape[0]} x {shape[1]}")
    try:
        budget_s = float(budget_s)
    except (TypeError, ValueError):
        raise ValueError(f"physics_budget_s must be a number of s, got {budget_s!r}") from None
    if not (math.isfinite(budget_s) and budget_s >= 0):
        raise ValueError(f"physics_budget_s must be >= 0 s, got {budget_s!r}")
    return {"t1": t1, "t2": t2, "b_field": field, "tau": tau, "n_pulses": n_pulses,
            "budget_s": budget_s, "search": dict(search or {})}


def physics_cv_mse(y, ij, fold_ids, seq) -> dict:
    """Held-out mean squared errors ``{"physics:<m>": mse}`` of the physics candidates
    (honest: the search rerun per fold, `held_out_physics`) on the points ``y`` at ``ij``
    with folds ``fold_ids``, settings ``seq`` (`physics_sequence`); a candidate without a
    start on some fold drops out; {} past the budget."""
    if seq["budget_s"] <= 0:
        return {}
    held = held_out_physics(y, ij, fold_ids, budget_s=seq["budget_s"], **_search_kw(seq))
    out = {}
    for name, p in held.items():
        if np.all(np.isfinite(p)):
            out[name] = float(np.mean((p - y) ** 2))
        else:
            log.info("auto: %s dropped (no start on %d of %d folds)", name,
                     len(np.unique(fold_ids[~np.isfinite(p)])), len(np.unique(fold_ids)))
    return out


def physics_refit(y, ij, spins, seq) -> CouplingFit | None:
    """The ``physics:<spins>`` fit on all points (None: no start); the only search
    that gets the settings' ``starts`` (a start fitted to earlier points, held-out ones
    among them, would leak them into the held-out searches)."""
    kw = _search_kw(seq, final=True)
    kw["spins"] = (spins,)
    return fit_clusters(y, ij, **kw).get(spins)


def _search_kw(seq: dict, final: bool = False) -> dict:
    kw = {k: v for k, v in seq.items() if k not in ("budget_s", "search")}
    search = {k: v for k, v in seq["search"].items() if final or k != "starts"}
    return {**kw, **search}
