"""Iteration tracker shared by the MRFM benchmarks (``mrfm.py`` and ``mrfm_bounds.py``)."""

from __future__ import annotations

import time

import numpy as np


class Tracker:
    """Callback recording (time without callback overhead, RMSE in nm^-3) per iteration."""

    def __init__(self, truth):
        self.truth = truth
        self.t0 = time.perf_counter()
        self.overhead = 0.0
        self.hist = []

    def __call__(self, k, x):
        t = time.perf_counter()
        rmse = float(np.sqrt(np.mean((x - self.truth) ** 2)) / 1e27)
        self.hist.append((t - self.t0 - self.overhead, rmse))
        self.overhead += time.perf_counter() - t

    def best(self):
        h = np.array(self.hist)
        i = int(np.argmin(h[:, 1]))
        reached = int(np.argmax(h[:, 1] <= 1.02 * h[i, 1]))
        return {"rmse": h[i, 1], "iteration": i + 1, "time_s": h[i, 0],
                "within2pct_iteration": reached + 1, "within2pct_time_s": h[reached, 0],
                "final_rmse": h[-1, 1]}
