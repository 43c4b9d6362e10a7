"""Anchor-and-scan search of a 2-spin cluster's couplings, field known (issue 12).

Follow-up of `cosy_coupling_search` (whose search lands on 2/10 fresh maps although, given
the true frequency pair, `grid_refit` lands on 10/10). What the maps show
(`mracq.sim.cosy.model`, noiseless 2-spin maps fitted by plane waves at the exact
transition frequencies): the map is the ms=0 pattern around the Larmor line (both nuclei
at ``wL``, split by their dipolar coupling) plus the diagonal doublet ``f_S +- J/2`` of
ONE nucleus (the one the decoupling block sees), amplitude ~0.05-0.08; the other
nucleus shows only in cross peaks (S, W) of amplitude 0.003-0.026 and its own diagonal
(0.001-0.01): its line is hidden at noise 0.1 and 10 % coverage, and a linear screen by
plane waves (frequencies fixed, ~50 amplitudes free) ranks the anchor's own doublet
neighbourhood first. With every other coupling right, a scan of the hidden frequency over
the prior (1.5 kHz steps, 4 LM steps each) ranks the truth first on 10/12 dev cases.

Tried first, no gain (dev seed 21, 6 maps): the seen nucleus fitted alone with the hidden
one at a placeholder frequency, then the scan (stage-A loss 5-7 against the true-start
fit's 2.2-2.8: the hidden nucleus's A_perp and azimuth shape the seen doublet's J and the
ms=0 pattern's amplitudes, so the anchor fit is wrong without it; 0/6).

The search (`anchor_search`):
A. anchors (`anchor_lines`): the centre of the first doublet of the shared-frequency fit's
   lines away from the folded Larmor line, then that line, ...; each unfolded over
   ``wL +- a_zz_max``; with every unfolding, the hidden nucleus at every ``scan_step`` over
   the same prior (one start each at `DIPOLAR_STARTS`): ~850 starts per anchor, batched
   LM (every parameter free), the best eighth twice as many steps more;
B. the ``keep_b`` best distinct pairs refit from the (dipolar, azimuth) grid
   (`grid_refit`, half the azimuths), ``refine_iters`` LM steps;
C. ``rescans`` rounds of `rescan`: each nucleus in turn over the prior with the other
   couplings as fitted (with those right, the hidden frequency ranks first), grid refit,
   LM; kept while the residual drops.

D. 3 spins (``spins=3``): the 2-spin result plus a third nucleus at every ``third_step``
   over the prior (`add_third`).

Result (`benchmarks/cosy_physics_field.py --anchor N --azimuths 1 --keep-b 8 --rescans 2`,
2 spins, noise 0.1, 10 %, field +-2 uT; hit = RMSE within 1.5x the fit started at the
truth; ``cosy_anchor_*_fresh*.json``):

- seed 1796030000, 1 anchor (the first line; run before doublet centres): 5/10, mean
  RMSE 0.035 (auto 0.077, SVT-40 % 0.083), below auto on 9/10, 13.9 s/map at load
  3.2-7.5;
- seed 1796040000, 2 anchors: 4/10, mean 0.040 (auto 0.073, SVT-40 % 0.089; the better of
  auto and search per map 0.035), below auto on 8/10, 17.9 s/map at load 2.0-2.7;
- seed 1796060000, 2 anchors: 3/10, mean 0.038 (auto 0.058, SVT-40 % 0.080; better of
  the two 0.037), below auto on 7/10 (one map: no fit), 16.5 s/map at load 1.8-2.8;
- 3 spins, seed 1796050000, 1 anchor: 4/10, mean 0.062 (auto 0.078, SVT-40 % 0.083), below
  auto on 7/10 (one map has no line away from wL: no fit), worst 1.12x auto, 16.9 s/map
  at load 2.6-2.8.

Tried, no gain (dev seed 21): the rescanned nucleus's azimuth on 4 values (2/6 against
3/6, 19.6 s against 15.5 s).

The seen nucleus lands on most maps, the hidden one exactly on few: most misses are fits
whose hidden nucleus sits elsewhere at 1.5-2x the true-start RMSE (the map barely depends
on it); a few (both nuclei within ~8 kHz of wL, or the anchor not a nucleus) are worse
than auto, which cross-validation would have to catch. Short of the >= 8/10 in <= 15 s
that a ``method="auto"`` candidate would need.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from cosy_coupling_search import (
    DIPOLAR_STARTS,
    GRID_AZIMUTH,
    KHZ,
    CouplingFit,
    _batch_lm,
    _Problem,
    _unfold,
    grid_refit,
)
from mracq.sim.cosy.couplings import GAMMA_13C

log = logging.getLogger(__name__)

HALF_AZIMUTH = GRID_AZIMUTH[:2]

__all__ = ["add_third", "anchor_lines", "anchor_search", "rescan"]


def anchor_lines(prob: _Problem, wl_khz: float, n: int = 2, larmor_gap_khz: float = 3.0,
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


def anchor_search(values, ij, *, t1, t2, b_field, tau, n_anchors=1, a_zz_max=65.0,
                  scan_step=1.5, azimuths=2, screen_iters=3, keep_b=3, refine_iters=20,
                  anchor_offsets=(0.0,), rescans=3, scan_iters=4, centres=True,
                  spins=2, third_step=3.0, rescan_azimuths=1
                  ) -> CouplingFit | None:
    """Two-spin coupling fit: anchor on the seen nucleus, scan the hidden one (module doc).

    Parameters
    ----------
    values, ij
        Measured values (N,) and their grid indices (N, 2).
    t1, t2 : arrays
        Evolution times in s (equal uniform steps).
    b_field, tau : float
        Calibrated field along the NV axis (T) and decoupling pulse spacing (s).
    n_anchors, centres : int, bool
        Frequencies tried as the seen nucleus (`anchor_lines`: with ``centres`` each
        line's doublet centre first).
    a_zz_max : float
        Largest |A_zz| in kHz (the prior of every nucleus frequency: ``wL +- a_zz_max``).
    scan_step, azimuths
        Step (kHz) of the hidden nucleus's frequency over the prior; its azimuth starts.
    anchor_offsets
        Offsets (kHz) added to each anchor unfolding (a line of the doublet ``f +- J/2``
        may sit up to J/2 ~ 1-3 kHz from the nucleus frequency, outside the ~1.5 kHz basin).
    rescans, scan_iters, rescan_azimuths
        Rounds of `rescan` after the fit (each nucleus in turn over the prior, the other
        couplings as fitted: with them right the hidden frequency ranks first), its LM steps.
    spins, third_step
        3: the 2-spin fit plus a third nucleus at every ``third_step`` (kHz) over the
        prior (`add_third`).
    screen_iters, keep_b, refine_iters
        LM steps of every start (the best eighth twice as many more), distinct pairs refit
        on the (dipolar, azimuth) grid (`grid_refit`), final LM steps.

    Returns
    -------
    CouplingFit or None (too few points).
    """
    values = np.asarray(values, float)
    if len(values) < 30 or not (np.isfinite(b_field) and b_field > 0 and tau > 0):
        return None
    t0 = time.perf_counter()
    prob = _Problem(values, ij, t1, t2, tau)
    wl = GAMMA_13C * float(b_field) / KHZ
    dt = float(prob.t1[1] - prob.t1[0])
    lines = anchor_lines(prob, wl, n_anchors, centres=centres)
    if not lines:
        return None
    fa = np.concatenate([_unfold(f, dt, wl - a_zz_max, wl + a_zz_max + 1) for f in lines])
    fa = np.unique(np.concatenate([fa + o for o in anchor_offsets]))
    grid = np.arange(wl - a_zz_max, wl + a_zz_max + 1e-9, scan_step)
    rows = [np.r_[wl, f, 25.0, 0.0, fb, 25.0, az, d, pol, 0.3]
            for f in fa for fb in grid if abs(fb - f) >= 1.0
            for (d, pol) in DIPOLAR_STARTS
            for az in 0.7 + np.arange(azimuths) * 2 * np.pi / azimuths]
    allp = np.arange(10)
    th, loss = _batch_lm(prob, np.array(rows), allp, screen_iters)
    best = np.argsort(loss)[:max(64, len(rows) // 8)]
    th, loss = _batch_lm(prob, th[best], allp, 2 * screen_iters)
    pairs = []
    for i in np.argsort(loss):
        key = np.sort(th[i, [1, 4]])
        if all(np.any(np.abs(key - np.sort(p[[1, 4]])) > 1.0) for p in pairs):
            pairs.append(th[i])
        if len(pairs) == keep_b:
            break
    t_a = time.perf_counter() - t0
    top = np.vstack([grid_refit(prob, wl, pairs, screen_iters, 8, HALF_AZIMUTH),
                     np.array(pairs)])
    th, loss = _batch_lm(prob, top, allp, refine_iters)
    i = int(np.argmin(loss))
    best, best_loss = th[i], float(loss[i])
    for r in range(rescans):
        cand, cl = rescan(prob, best, grid, scan_iters, refine_iters, wl=wl,
                          azimuths=rescan_azimuths)
        log.info("rescan %d: loss %.3f -> %.3f", r, best_loss, cl)
        if cl >= best_loss - 1e-3:
            break
        best, best_loss = cand, cl
    if spins == 3:
        best = add_third(prob, best, np.arange(wl - a_zz_max, wl + a_zz_max + 1e-9,
                                              third_step), screen_iters, refine_iters)
    fit = prob.fit(best)
    log.info("anchor search: %d anchor unfoldings, %d starts %.1f s, total %.1f s",
             len(fa), len(rows), t_a, time.perf_counter() - t0)
    return fit


def rescan(prob: _Problem, theta, grid, iters=4, refine_iters=20, keep=3, wl=None,
           azimuths=1):
    """Each nucleus of a 2-spin ``theta`` in turn at every frequency of ``grid`` (kHz),
    the other couplings as fitted (with ``azimuths`` > 1: the scanned nucleus's azimuth
    also on that many values, its A_perp at 25 kHz), ``iters`` LM steps; the ``keep`` best
    distinct pairs, each as scanned and (with ``wl``) refit from the half (dipolar,
    azimuth) grid (`grid_refit`), refined by ``refine_iters`` steps. Returns the best row
    and its loss."""
    rows = []
    for c in (1, 4):
        other = 4 if c == 1 else 1
        for f in grid:
            if abs(f - theta[other]) < 1.0:
                continue
            for k in range(azimuths):
                r = np.array(theta, float)
                r[c] = f
                r[c + 1] = min(r[c + 1], 0.9 * f) if azimuths == 1 else 25.0
                r[c + 2] += 2 * np.pi * k / azimuths
                rows.append(r)
    allp = np.arange(10)
    th, loss = _batch_lm(prob, np.array(rows), allp, iters)
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
    th, loss = _batch_lm(prob, cand, allp, refine_iters)
    i = int(np.argmin(loss))
    return th[i], float(loss[i])


def add_third(prob: _Problem, theta2, grid, iters=3, refine_iters=20, keep=8):
    """A 3-spin ``theta`` from a 2-spin fit ``theta2``: a third nucleus at every frequency
    of ``grid`` (kHz) more than 1 kHz from the other two, A_perp 25 kHz, its two dipolar
    couplings both at each of `DIPOLAR_STARTS`; ``iters`` LM steps (every parameter
    free), the ``keep`` best ``refine_iters`` more; the best row."""
    t = np.asarray(theta2, float)
    rows = [np.r_[t[:7], f, 25.0, 1.4, t[7:10], [d, pol, 0.3] * 2]
            for f in grid if min(abs(f - t[1]), abs(f - t[4])) > 1.0
            for (d, pol) in DIPOLAR_STARTS]
    allp = np.arange(19)
    th, loss = _batch_lm(prob, np.array(rows), allp, iters)
    th, loss = _batch_lm(prob, th[np.argsort(loss)[:keep]], allp, refine_iters)
    return th[int(np.argmin(loss))]
