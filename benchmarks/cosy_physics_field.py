"""COSY couplings maps: does the coupling search land when the field is KNOWN (calibrated)?

Follow-up of `benchmarks/cosy_physics_global.py` (issue 12): without the field a global
search of a 2-spin cluster's couplings lands on 2/6 maps at 30-50 s. In mracq a COSY
measurement follows `mracq calibrate`, which gives the field from the ODMR resonance to
~1 uT; here the search (`cosy_coupling_search.fit_couplings`) gets the map's true
field plus ``--field-error`` (T, random sign) and the sequence's pulse spacing.

Per map (couplings family with ``--spins`` spins, noise 0.1, one random 10 % mask, seeds
of its own): ``near`` (LM started at the true couplings: what a hit gives), ``search``,
``auto`` (`reconstruct`, no field), ``svt40`` (SVT on a 40 % mask of the same noisy map),
``f1_in_candidates`` (every true f1 within 1.5 kHz of a candidate frequency),
``--true-f1-grid``: instead of the search, `grid_refit` from the TRUE f1 pair (the other
couplings unknown): whether the rest of the fit lands once the frequencies are right;
``--true-folded-grid``: the same on every unfolding of the true FOLDED pair.
``--anchor N``: instead of the pair search, `mracq.recon.cosy.physics.anchor_search` (the
seen nucleus anchored on N doublet centres / lines, the hidden one scanned over the prior).
``start_in_basin`` (a start with every f1 within 1.5 kHz of the truth; its rank in the
start list, strongest lines first, against the number screened in the budget), ``hit`` (search <=
1.5 near), ``search_s``.

``--no-svt`` skips the 40 % mask's draw, so the noise and masks after map 0 differ from
a run with SVT (same clusters).

Run: ``PYTHONPATH=src nice -n 19 python benchmarks/cosy_physics_field.py --maps 10
--spins 2 --seed S [--budget 15] [--try-spins 2 3]``; writes
``cosy_physics_field_<spins>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from cosy_coupling_search import candidate_f1, fit_couplings, pair_starts  # noqa: E402
from cosy_physics_fit import _random_mask  # noqa: E402
from mracq.recon.cosy.auto import _svt_map  # noqa: E402
from mracq.recon.cosy.dlmc import reconstruct  # noqa: E402
from mracq.recon.cosy.physics import anchor_search  # noqa: E402
from mracq.recon.cosy.physics_fit import (  # noqa: E402
    KHZ,
    FitProblem,
    batch_lm,
    grid_refit,
    unfold,
)
from mracq.recon.metrics import rmse  # noqa: E402
from mracq.sim.cosy.couplings import GAMMA_13C  # noqa: E402
from mracq.sim.cosy.families import family_maps  # noqa: E402
from mracq.sim.cosy.model import T_GRID  # noqa: E402


def true_theta(hyp, dip, b_field) -> np.ndarray:
    """``theta`` (`cosy_coupling_search.theta_names`) of one cluster."""
    m = len(hyp)
    wl = GAMMA_13C * b_field / KHZ
    a = hyp / KHZ
    out = [wl]
    for j in range(m):
        ap = np.hypot(a[j, 0], a[j, 1])
        out += [np.hypot(ap, wl - a[j, 2]), ap, np.arctan2(a[j, 1], a[j, 0])]
    for i in range(m):
        for j in range(i + 1, m):
            ev, vec = np.linalg.eigh(dip[i, j] / KHZ)  # d (1 - 3 n n^T): -2d along n
            k = int(np.argmax(np.abs(ev - np.median(ev))))
            n = vec[:, k] * (1 if vec[2, k] >= 0 else -1)
            out += [-ev[k] / 2, np.arccos(np.clip(n[2], -1, 1)), np.arctan2(n[1], n[0])]
    return np.array(out)


def couplings_cases(n: int, spins: int, noise: float, rng):
    """The benchmark's maps: for each of ``n`` couplings-family maps of ``spins`` spins,
    ``(k, truth, cluster, noisy map, 10 % mask)``; the map's noise and mask are drawn
    from ``rng`` when it is asked for (the caller's own draws for map k come before
    map k+1's)."""
    truths, sel = family_maps("couplings", n, rng, spins=(spins,), return_clusters=True)
    for k in range(n):
        t = truths[k]
        cl = next(c[int(np.flatnonzero(o == k)[0])] for o, c in sel if k in o)
        y = t + noise * rng.normal(size=t.shape)
        yield k, t, cl, y, _random_mask(t.shape, 0.1, rng)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=10)
    ap.add_argument("--spins", type=int, default=2)
    ap.add_argument("--try-spins", type=int, nargs="+", default=None,
                    help="spin counts the search tries (default: the true one)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--field-error", type=float, default=2e-6, help="T")
    ap.add_argument("--budget", type=float, default=12.0, help="s of screening per spin count")
    ap.add_argument("--n-lines", type=int, default=16)
    ap.add_argument("--azimuth-starts", type=int, default=1)
    ap.add_argument("--grid-pairs", type=int, default=0,
                    help="2 spins: frequency pairs from the screen refit on the "
                         "(dipolar, azimuth) grid")
    ap.add_argument("--source", choices=("shared", "scan"), default="shared")
    ap.add_argument("--no-svt", action="store_true")
    ap.add_argument("--true-f1-grid", action="store_true",
                    help="2 spins, instead of the search: the grid stage started at the TRUE "
                         "f1 pair (the other couplings unknown)")
    ap.add_argument("--true-folded-grid", action="store_true",
                    help="2 spins, instead of the search: the grid stage on every unfolding "
                         "of the TRUE folded f1 pair")
    ap.add_argument("--anchor", type=int, default=0,
                    help="2 spins: instead of the pair search, `cosy_anchor_search` with this "
                         "many anchor lines")
    ap.add_argument("--keep-b", type=int, default=3, help="--anchor: pairs refit on the grid")
    ap.add_argument("--azimuths", type=int, default=2, help="--anchor: hidden azimuth starts")
    ap.add_argument("--no-centres", action="store_true",
                    help="--anchor: lines only, no doublet centres")
    ap.add_argument("--screen-iters", type=int, default=3, help="--anchor: LM steps per start")
    ap.add_argument("--rescan-azimuths", type=int, default=1,
                    help="--anchor: azimuth starts of the nucleus rescanned")
    ap.add_argument("--rescans", type=int, default=3, help="--anchor: rescan rounds")
    ap.add_argument("--anchor-offsets", type=float, nargs="+", default=[0.0],
                    help="--anchor: kHz added to each anchor unfolding")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cosy_coupling_search").setLevel(logging.INFO)
    logging.getLogger("mracq.recon.cosy.physics").setLevel(logging.DEBUG)
    out = args.out or str(Path(__file__).with_name(f"cosy_physics_field_{args.spins}.json"))
    rng = np.random.default_rng([args.seed, 1313, args.spins])
    cases = couplings_cases(args.maps, args.spins, args.noise, rng)
    up0 = os.popen("uptime").read().strip()
    print(up0, flush=True)
    rows = []
    for k, t, cl, y, m10 in cases:
        b_cal = float(cl.b_field) + args.field_error * rng.choice([-1, 1])
        tau = float(cl.tau)
        th_true = true_theta(cl.hyperfine, cl.dipolar, float(cl.b_field))
        ij = np.argwhere(m10)
        prob = FitProblem(y[m10], ij, T_GRID, T_GRID, tau)
        raw = prob.fit(th_true).grid()
        assert np.allclose((raw - raw.mean()) / raw.std(), (t - t.mean()) / t.std(),
                           atol=1e-6), "parametrisation"
        th0 = th_true.copy()
        th0[0] = GAMMA_13C * b_cal / KHZ
        thn, _ = batch_lm(prob, th0[None], np.arange(len(th0)), 20)
        r = {"near": rmse(prob.fit(thn[0]).grid(), t),
             "auto": rmse(reconstruct(np.where(m10, y, np.nan), m10), t)}
        if not args.no_svt:
            m40 = _random_mask(t.shape, 0.4, rng)
            lo, span = y[m40].min(), np.ptp(y[m40])
            r["svt40"] = rmse(_svt_map(np.where(m40, (y - lo) / span, 0), m40, 1.0) * span
                              + lo, t)
        wl_cal = GAMMA_13C * b_cal / KHZ
        f1c = candidate_f1(prob.y, np.argwhere(prob.mask), T_GRID, T_GRID, wl_cal,
                           n_lines=args.n_lines, source=args.source)
        f1 = np.sort(th_true[1:1 + 3 * args.spins:3])
        r["f1_in_candidates"] = bool(all(np.min(np.abs(f1c - f)) < 1.5 for f in f1))
        st = pair_starts(f1c, wl_cal, args.spins)
        inside = [i for i, s in enumerate(st)
                  if np.all(np.abs(np.sort(s[1:1 + 3 * args.spins:3]) - f1) < 1.5)]
        t0 = time.perf_counter()
        if args.true_f1_grid or args.true_folded_grid:
            pairs = [th0]
            if args.true_folded_grid:
                dt = float(T_GRID[1] - T_GRID[0])
                folded = [min(f % (1e-3 / dt), 1e-3 / dt - f % (1e-3 / dt))
                          for f in th0[[1, 4]]]
                fold = [unfold(2 * np.pi * dt * 1e3 * f, dt, th0[0] - 65, th0[0] + 66)
                        for f in folded]
                pairs = [np.r_[th0[0], a, th0[2:4], b, th0[5:]]
                         for a in fold[0] for b in fold[1] if abs(a - b) >= 0.5]
            top = grid_refit(prob, th0[0], pairs)
            thg, lg = batch_lm(prob, top, np.arange(10), 20)
            fit = prob.fit(thg[int(np.argmin(lg))])
        elif args.anchor:
            fit = anchor_search(y[m10], ij, t1=T_GRID, t2=T_GRID, b_field=b_cal, tau=tau,
                                n_anchors=args.anchor, keep_b=args.keep_b,
                                azimuths=args.azimuths, rescans=args.rescans,
                                centres=not args.no_centres,
                                screen_iters=args.screen_iters,
                                spins=args.spins,
                                rescan_azimuths=args.rescan_azimuths,
                                anchor_offsets=tuple(args.anchor_offsets))
            r["found_f1_minus_wL_kHz"] = None if fit is None else np.sort(
                fit.theta[1:1 + 3 * args.spins:3] - fit.theta[0]).round(2).tolist()
        else:
            fits = [fit_couplings(y[m10], ij, t1=T_GRID, t2=T_GRID, b_field=b_cal, tau=tau,
                                  spins=s, n_lines=args.n_lines, budget_s=args.budget,
                                  source=args.source, azimuth_starts=args.azimuth_starts,
                                  grid_pairs=args.grid_pairs)
                    for s in (args.try_spins or (args.spins,))]
            fit = min(fits, key=lambda f: f.rss / (f.n - len(f.theta) - 2))
        r["search_s"] = time.perf_counter() - t0
        # no fit (e.g. no line away from the Larmor line): auto's map stands in
        r["search"] = rmse(fit.grid(), t) if fit is not None else r["auto"]
        r["search_none"] = fit is None
        r["search_spins"] = fit.spins if fit is not None else 0
        r["hit"] = bool(r["search"] <= 1.5 * r["near"])
        r["start_in_basin"] = bool(inside)
        r["f1_candidates"] = len(f1c)
        r["starts"] = len(st)
        r["first_start_in_basin"] = inside[0] if inside else None
        r["true_f1_minus_wL_kHz"] = (f1 - th_true[0]).round(2).tolist()
        rows.append(r)
        print(f"map {k}: near {r['near']:.3f} auto {r['auto']:.3f} "
              f"svt40 {r.get('svt40', np.nan):.3f} search {r['search']:.3f} "
              f"({r['search_spins']} spins) hit {r['hit']} in_basin {r['start_in_basin']} "
              f"(rank {r['first_start_in_basin']} of {len(st)}; f1 in cands "
              f"{r['f1_in_candidates']} of {len(f1c)}) {r['search_s']:.1f} s "
              f"true f1-wL {r['true_f1_minus_wL_kHz']} found "
              f"{r.get('found_f1_minus_wL_kHz')}", flush=True)
    res = {"config": vars(args), "uptime_start": up0, "per_map": rows,
           "uptime_end": os.popen("uptime").read().strip()}
    keys = ["near", "auto", "search", "hit", "start_in_basin", "f1_in_candidates",
            "search_s"]
    keys += [] if args.no_svt else ["svt40"]
    res["mean"] = {a: float(np.mean([r[a] for r in rows])) for a in keys}
    res["mean"]["best_of_auto_search"] = float(np.mean([min(r["auto"], r["search"])
                                                        for r in rows]))
    print("mean:", {a: round(v, 3) for a, v in res["mean"].items()}, "|", res["uptime_end"])
    Path(out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
