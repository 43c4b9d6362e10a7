"""Adaptive MRFM scan: choose the next xy positions where the reconstruction predicts signal.

`SignalWeightedStrategy` implements bluesky-adaptive 1.0's optimizer protocol
(`mracq.recon.protocol`): suggestions ``{"_id", "i", "j"}`` (grid indices; with a setup
also ``x``, ``y`` in m), outcomes ``{"_id", "spin_signal"}`` (one value per pulse, N^2).
Given the setup it reconstructs after each ingested batch and re-weights. Pure code (no
Bluesky): `mracq.plans.mrfm.adaptive_multislice_scan` and bluesky-adaptive's ``optimize``
(`mracq.plans.adaptive`) drive it.
"""

from __future__ import annotations

import numpy as np

from mracq.recon.protocol import ID_KEY

__all__ = ["SignalWeightedStrategy"]


class SignalWeightedStrategy:
    """Choose the next xy positions where the current reconstruction predicts signal.

    Criterion: after each batch the sample is reconstructed from the points measured so
    far (joint CS + ADMM) and the noise-free scan s = A o predicted. The weight of an
    unmeasured position is its predicted detectability sum_l (r_l / (1 + r_l))^2 with
    r_l = s_l / sigma_l the predicted per-point SNR (sigma_l the standard error of the noise
    model at T_m): a position whose channels all lie below the noise counts ~r^2,
    one above the noise counts ~1 whatever its size, so the budget spreads over the whole
    signal footprint instead of piling up at its centre. Without a noise estimate the weight
    is the signal energy sum_l s_l^2. A uniform share ``explore`` keeps every region
    reachable. Positions are drawn without replacement with probability proportional to the
    weight; before any weights exist (first batch) uniformly at random.

    Parameters
    ----------
    shape : (nx, ny)
        Grid of positions.
    rng : numpy.random.Generator
        Random source.
    explore : float
        Uniform share of the weights, in [0, 1].
    setup : MRFMSetup, optional
        With a setup, :meth:`ingest` stores each outcome's ``spin_signal`` and, after each
        batch, reconstructs and re-weights itself (else call :meth:`update`).
    t_m : float, optional
        Integration time per point (s) for the noise model (None: energy weights).
    budget : int, optional
        Stop once this many positions are measured.
    target : float, optional
        Stop when a batch changes the reconstruction by less than this (relative L2).
    n_iter : int
        ADMM iterations per reconstruction.
    """

    criterion = ("predicted detectability sum_l (r/(1+r))^2, r = predicted SNR of the "
                 "current reconstruction, + uniform share")

    def __init__(self, shape, rng, explore: float = 0.2, *, setup=None, t_m=None,
                 budget: int | None = None, target: float | None = None, n_iter: int = 20):
        if not 0 <= explore <= 1:
            raise ValueError(f"explore must be in [0, 1], got {explore!r}")
        self.sampled = np.zeros(shape, bool)
        self.weight = np.ones(shape)
        self.rng = rng
        self.explore = explore
        self.setup, self.t_m, self.n_iter = setup, t_m, int(n_iter)
        self.budget, self.target = budget, target
        self.data = None if setup is None else np.zeros(setup.data_shape)
        self.reconstruction = None
        self.change = None  # relative L2 change of the last batch
        self._weighted = False
        self._suggested: dict = {}
        self._ids: dict = {}  # (i, j) -> _id of the measured point
        self._next_id = 0

    def suggest(self, n: int | None = 1) -> list[dict]:
        """Up to ``n`` unmeasured positions ``{"_id", "i", "j"}`` (+ ``x``, ``y`` in m)."""
        n = 1 if n is None else int(n)
        if self.budget is not None:
            n = min(n, self.budget - int(self.sampled.sum()))
        out = []
        for i, j in self._positions(n):
            self._next_id += 1
            s = {ID_KEY: f"mrfm-{self._next_id}", "i": i, "j": j}
            if self.setup is not None:
                s["x"], s["y"] = (float(v) for v in self.coordinates(i, j))
            self._suggested[s[ID_KEY]] = s
            out.append(s)
        return out

    def coordinates(self, i, j):
        """Lateral position (m) of grid index (i, j): ``fftfreq`` order, 0 at the origin."""
        n = self.sampled.shape[0]
        coords = np.fft.fftfreq(n, 1.0 / n) * self.setup.voxel_size
        return coords[i], coords[j]

    def _positions(self, n: int) -> list[tuple[int, int]]:
        free = np.flatnonzero(~self.sampled)
        n = min(int(n), free.size)
        if n <= 0:
            return []
        if not self._weighted:
            pick = self.rng.choice(free, size=n, replace=False)
        else:
            w = self.weight.ravel()[free]
            w = (1 - self.explore) * w / max(w.sum(), 1e-300) + (self.explore + 1e-9) / free.size
            pick = self.rng.choice(free, size=n, replace=False, p=w / w.sum())
        return [tuple(int(v) for v in np.unravel_index(k, self.sampled.shape)) for k in pick]

    def ingest(self, points) -> None:
        """Mark measured positions; with a setup, store their data and re-weight.

        ``points``: outcome dicts ``{"_id", "spin_signal"}``, dicts with ``i``, ``j``
        (and ``spin_signal``), or index pairs (positions only).
        """
        got = 0
        for p in points:
            if isinstance(p, dict):
                sid = p.get(ID_KEY)
                q = {**self._suggested.pop(sid, {}), **p}
                if "i" not in q or "j" not in q:
                    raise ValueError(f"outcome {sid!r} names no (i, j) and matches no "
                                     "open suggestion")
                i, j = int(q["i"]), int(q["j"])
                if self.data is not None and q.get("spin_signal") is not None:
                    self.data[i, j] = np.asarray(q["spin_signal"], float)
                    got += 1
                self._ids[(i, j)] = sid if sid is not None else (i, j)
            else:
                i, j = (int(v) for v in p)
            self.sampled[i, j] = True
        if got and self.setup is not None:
            self._refresh()

    def _refresh(self):
        from mracq.recon.mrfm.pipeline import reconstruct

        setup = self.setup
        recon = reconstruct(self.data, setup, mask=self.sampled.copy(), n_iter=self.n_iter)
        predicted = setup.forward(recon)
        self.update(predicted, None if self.t_m is None else setup.noise_std(predicted,
                                                                              self.t_m))
        if self.reconstruction is not None:
            self.change = float(np.linalg.norm(recon - self.reconstruction)
                                / max(np.linalg.norm(recon), 1e-300))
        self.reconstruction = recon

    def update(self, predicted: np.ndarray, noise_std=None) -> None:
        """Set the weights from a predicted noise-free scan (nx, ny, n_channels), N^2.

        ``noise_std`` (N^2, scalar or the shape of ``predicted``) is the predicted standard
        error per point; without it the weight is the signal energy.
        """
        s = np.maximum(np.asarray(predicted, float), 0.0)
        if noise_std is not None:
            sigma = np.asarray(noise_std, float)
            if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
                raise ValueError("noise_std must be positive and finite")
            r = s / sigma
            s = r / (1.0 + r)
        self.weight = np.sum(s**2, axis=-1)
        self._weighted = True

    def should_stop(self) -> tuple[bool, str | None]:
        """(stop, reason): budget reached, reconstruction converged, or every position done."""
        n = int(self.sampled.sum())
        if self.budget is not None and n >= self.budget:
            return True, f"budget: {n} positions measured"
        if self.target is not None and self.change is not None and self.change < self.target:
            return True, f"converged: change {self.change:.3g} < target {self.target:g}"
        if n == self.sampled.size:
            return True, "complete: every position measured"
        return False, None

    def get_best_points(self) -> list[tuple]:
        """``[(_id, {"i", "j"}, {"spin_signal_energy"})]``: the measured position with the
        strongest signal (sum over pulses of the squared spin signal, N^4); [] without data."""
        if self.data is None or not self.sampled.any():
            return []
        energy = np.where(self.sampled, np.sum(self.data**2, axis=-1), -np.inf)
        i, j = (int(v) for v in np.unravel_index(np.argmax(energy), energy.shape))
        return [(self._ids.get((i, j), (i, j)), {"i": i, "j": j},
                 {"spin_signal_energy": float(energy[i, j])})]
