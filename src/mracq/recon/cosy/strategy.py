"""Adaptive COSY sampling: where an ensemble of reconstructions disagrees most.

`EnsembleDisagreement` (bluesky-adaptive 1.0's optimizer protocol, `mracq.recon.protocol`):
the ensemble is K DLMC reconstructions, each from a random 80% subset of the measured
points (bootstrap-like subsampling: a point the data pin down comes out the same in
all, a poorly constrained one varies); the score of an unmeasured point is its ensemble
standard deviation plus ``gap_weight`` (default 10) times a row/column sparsity term (each
normalized to its maximum)
(rows and columns with few data, where all low-rank completions guess alike); the next
batch is the highest-scoring points, at most one per 3 x 3 neighbourhood. Points to reach
the random 10% DLMC error on 5 held-out maps (benchmarks/cosy.py; random: 250): ensemble
alone 390, gap_weight 1: 325, 3: 265, 10: 210. So most of the gain comes from balancing
rows and columns (what a low-rank completion needs); the ensemble orders points within
equally sparse rows and columns.

Suggestions are ``{"_id", "i", "j"}`` (map indices); outcomes ``{"_id", "value"}``. After
each ingested batch the strategy reconstructs the map and records its change (RMS change
over the peak-to-peak); ``should_stop`` reports convergence (change below ``tol``), the
point budget or a full map. Pure code (no Bluesky): `mracq.plans.cosy.cosy_adaptive` and
bluesky-adaptive's ``optimize`` (`mracq.plans.adaptive`) drive it.
"""

from __future__ import annotations

import numpy as np

from mracq.recon.cosy.dlmc import reconstruct
from mracq.recon.protocol import ID_KEY, grid_outcome

__all__ = ["EnsembleDisagreement"]


class EnsembleDisagreement:
    """Choose the next COSY points where an ensemble of reconstructions disagrees most.

    Parameters
    ----------
    shape : (int, int)
        Map shape.
    rng : numpy.random.Generator
    members : int
        Ensemble size K.
    keep : float
        Fraction of the measured points each member sees.
    method : str
        Reconstruction method of the members.
    gap_weight : float
        Weight of the row/column sparsity term (`gap`) against the normalized ensemble
        standard deviation in the score (module docstring for the measured effect).
    budget : int, optional
        Stop once this many points are measured.
    tol : float, optional
        Stop when a batch changes the reconstruction by less than ``tol``.
    """

    def __init__(self, shape, rng, *, members: int = 4, keep: float = 0.8,
                 method: str = "dlmc", gap_weight: float = 10.0, budget: int | None = None,
                 tol: float | None = None) -> None:
        if members < 2 or not 0 < keep < 1:
            raise ValueError(f"need members >= 2 and 0 < keep < 1, got {members}, {keep}")
        if budget is not None and budget < 1 or tol is not None and not tol > 0:
            raise ValueError(f"need budget >= 1 and tol > 0, got {budget}, {tol}")
        self.budget, self.tol = budget, tol
        self.reconstruction = None  # after the last ingested batch
        self.changes: list[float] = []  # per batch after the first
        self._suggested: dict = {}
        self._last_id = None
        self._next_id = 0
        self.shape = tuple(shape)
        self.rng = rng
        self.members = members
        self.keep = keep
        self.method = method
        self.gap_weight = float(gap_weight)
        self.values = np.full(self.shape, np.nan)
        self.mask = np.zeros(self.shape, bool)
        self.reconstruct_kw: dict = {}  # more keywords of each batch's `reconstruct`

    def ingest(self, points) -> None:
        """Record a batch of measured points and update the reconstruction.

        ``points``: outcome dicts ``{"_id", "value"}`` answering suggestions, dicts with
        ``i``, ``j`` and ``value``, or ``(i, j, value)`` tuples.
        """
        n = 0
        for p in points:
            if isinstance(p, dict):
                q, self._last_id = grid_outcome(p, self._suggested)
                i, j, v = int(q["i"]), int(q["j"]), float(q["value"])
            else:
                i, j, v = p
            self.values[i, j] = v
            self.mask[i, j] = True
            n += 1
        if n:
            prev, self.reconstruction = self.reconstruction, reconstruct(
                np.where(self.mask, self.values, np.nan), self.mask, self.method,
                **self.reconstruct_kw)
            if prev is not None:
                cur = self.reconstruction
                self.changes.append(float(np.sqrt(np.mean((cur - prev) ** 2))
                                          / (np.ptp(cur) or 1.0)))

    def should_stop(self) -> tuple[bool, str | None]:
        """(stop, reason): ``"converged"``, ``"budget"`` or ``"complete"`` (every point)."""
        n = int(self.mask.sum())
        if self.tol is not None and self.changes and self.changes[-1] < self.tol:
            return True, f"converged: change {self.changes[-1]:.3g} < tol {self.tol:g}"
        if self.budget is not None and n >= self.budget:
            return True, f"budget: {n} points measured"
        if n == self.mask.size:
            return True, "complete: every point measured"
        return False, None

    @property
    def stop_reason(self) -> str | None:
        """First word of :meth:`should_stop`'s reason (None: keep going)."""
        stop, why = self.should_stop()
        return why.split(":")[0] if stop else None

    def get_best_points(self) -> list[tuple]:
        """``[(_id, {"n_points"}, {"reconstruction", "change"})]``: the current map estimate.

        A map has no single best point; the best state is the latest reconstruction
        (``_id`` of the last ingested point). [] before any data.
        """
        if self.reconstruction is None:
            return []
        change = self.changes[-1] if self.changes else float("nan")
        return [(self._last_id, {"n_points": int(self.mask.sum())},
                 {"reconstruction": self.reconstruction, "change": change})]

    def disagreement(self) -> np.ndarray:
        """Ensemble standard deviation per entry (0 where measured)."""
        idx = np.argwhere(self.mask)
        recs = []
        for _ in range(self.members):
            pick = self.rng.random(len(idx)) < self.keep
            sub = np.zeros(self.shape, bool)
            sub[tuple(idx[pick].T)] = True
            if not sub.any():
                sub = self.mask
            recs.append(reconstruct(np.where(sub, self.values, np.nan), sub, self.method))
        std = np.std(recs, axis=0)
        std[self.mask] = 0.0
        return std

    def gap(self) -> np.ndarray:
        """Row/column sparsity in [0, 1]: high where the entry's row and column hold few
        measured points (there every low-rank completion agrees on a guess, so the
        ensemble alone would not ask for data)."""
        rows = self.mask.sum(axis=1, keepdims=True)
        cols = self.mask.sum(axis=0, keepdims=True)
        return 0.5 * (1.0 / (1.0 + rows) + 1.0 / (1.0 + cols))

    def suggest(self, n: int | None = 1) -> list[dict]:
        """Up to ``n`` unmeasured points ``{"_id", "i", "j"}``, largest disagreement first,
        spread out; within the budget."""
        n = 1 if n is None else int(n)
        if self.budget is not None:
            n = min(n, self.budget - int(self.mask.sum()))
        out = self._points(n) if n > 0 else []
        sugs = []
        for i, j in out:
            self._next_id += 1
            sid = f"cosy-{self._next_id}"
            self._suggested[sid] = {"i": i, "j": j}
            sugs.append({ID_KEY: sid, "i": i, "j": j})
        return sugs

    def _points(self, n: int) -> list[tuple[int, int]]:
        free = ~self.mask
        if not free.any():
            return []
        if not self.mask.any():
            flat = self.rng.choice(np.flatnonzero(free), min(n, free.sum()), replace=False)
            return [tuple(int(v) for v in np.unravel_index(k, self.shape)) for k in flat]
        d = self.disagreement()
        g = self.gap()
        d = d / (d.max() or 1.0) + self.gap_weight * g / g.max()
        d[self.mask] = -1.0
        order = np.argsort(d, axis=None)[::-1]
        blocked = self.mask.copy()
        out = []
        for k in order:
            i, j = np.unravel_index(k, self.shape)
            if blocked[i, j]:
                continue
            out.append((int(i), int(j)))
            blocked[max(i - 1, 0): i + 2, max(j - 1, 0): j + 2] = True
            if len(out) == n:
                break
        if len(out) < n:  # neighbourhood rule exhausted: fill with the next free points
            rest = [tuple(int(v) for v in np.unravel_index(k, self.shape)) for k in order]
            out += [p for p in rest if free[p] and p not in out][: n - len(out)]
        return out
