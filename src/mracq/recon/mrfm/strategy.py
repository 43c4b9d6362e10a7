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

from mracq.recon.protocol import ID_KEY, grid_outcome

__all__ = ["HardwareTimeStrategy", "SignalWeightedStrategy"]


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
                q, pid = grid_outcome(p, self._suggested)
                i, j = int(q["i"]), int(q["j"])
                if self.data is not None and q.get("spin_signal") is not None:
                    self.data[i, j] = np.asarray(q["spin_signal"], float)
                    got += 1
                self._ids[(i, j)] = pid
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


class HardwareTimeStrategy:
    """Where the next integration time goes: new position, revisit, which slices.

    The unit of decision is one (xy position, pulse) point of a multislice scan and the
    integration time spent on it. A pilot round spends ``pilot_time`` on every pulse at a
    ``pilot_fraction`` of the positions. After each round the plan reconstructs from the
    time-weighted data (:meth:`weights`) and predicts the noise-free scan s = A o; the
    strategy turns it into each point's predicted detectability d = r^k / (r0^k + r^k),
    r = s / sigma_ref(s), with sigma_ref the noise model's standard error at ``t_ref``. A
    point whose slice misses the sample (predicted signal far below ``r0`` times the noise)
    says little more about the reconstruction however long it is measured; every point whose
    slice sees spins keeps reducing the reconstruction's uncertainty, the weak ones
    (0.1 < r < 1) as much as the strong ones (benchmarks/mrfm_targets.py, docs/mrfm.md), so
    d saturates early (r0 = 0.1) and the footprint is measured nearly evenly; a power
    k = 2 would keep the faint speckle of noisy reconstructions (r ~ 0.01-0.05) from
    drawing time, but measured worse (docs/mrfm.md). The next
    round's ``round_time``
    seconds are water-filled: the total time of each point is raised towards lambda * d
    (lambda set by the round's budget), in steps of ``t_step``. That one rule decides
    everything: a new position is measured when its predicted d is high enough, a measured
    point is revisited (its data averaged, time-weighted) when its d per second spent is
    among the highest, and at each position only the slices with signal get time.
    :meth:`done` stops when the reconstruction's relative change between rounds falls
    below ``tol`` or the hardware time reaches ``budget``.

    Parameters
    ----------
    shape : (nx, ny, n_l)
        Positions and pulses.
    t_ref : float
        Reference integration time (s) of weight 1 (the uniform scan's T_m).
    pilot_time : float
        Time (s) per point of the pilot round.
    round_time : float
        Hardware time (s) of each later round.
    budget : float
        Total hardware time (s) at most.
    t_step : float
        Granularity (s) of the time added to a point (>= the readout's minimum).
    tol : float
        Stop when ||o_k - o_{k-1}|| / ||o_k|| between rounds falls below it.
    pilot_fraction : float
        Share of the xy positions in the pilot round (random, ``rng``).
    r0 : float
        Predicted SNR (at ``t_ref``) at which a point counts half.
    power : float
        Steepness k of the detectability.
    rng : numpy.random.Generator, optional
        For the pilot positions when ``pilot_fraction < 1``.
    """

    criterion = ("water-filling of integration time over (position, pulse) towards the "
                 "predicted detectability r^k/(r0^k+r^k), r = predicted SNR at t_ref; stop on "
                 "relative change of the reconstruction")

    def __init__(self, shape, t_ref, pilot_time, round_time, budget, t_step=5.0, tol=0.01,
                 pilot_fraction=1.0, rng=None, r0=0.1, power=1.0):
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (nx, ny, n_pulses), got {shape!r}")
        for name, v in (("t_ref", t_ref), ("pilot_time", pilot_time),
                        ("round_time", round_time), ("budget", budget), ("t_step", t_step),
                        ("tol", tol), ("r0", r0), ("power", power)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        if not 0 < pilot_fraction <= 1:
            raise ValueError(f"pilot_fraction must be in (0, 1], got {pilot_fraction!r}")
        self.shape = shape
        self.t_ref, self.pilot_time, self.round_time = t_ref, pilot_time, round_time
        self.budget, self.t_step, self.tol = budget, t_step, tol
        self.pilot_fraction, self.r0, self.power = pilot_fraction, r0, power
        self.rng = rng if rng is not None else np.random.default_rng()
        self.time = np.zeros(shape)  # s spent per point
        self.mean = np.zeros(shape)  # time-weighted mean of the data per point
        self.detectability = None
        self.rounds = 0
        self.last_change = np.inf
        self._prev = None

    @property
    def spent(self) -> float:
        """Hardware time spent so far, s (integration only)."""
        return float(self.time.sum())

    def suggest(self) -> np.ndarray:
        """Integration time (s) to add to each point in the next round (0 = skip)."""
        left = self.budget - self.spent
        if left < self.t_step:
            return np.zeros(self.shape)
        if self.rounds == 0:
            pos = np.ones(self.shape[:2], bool)
            if self.pilot_fraction < 1:
                n = self.shape[0] * self.shape[1]
                k = max(1, int(round(self.pilot_fraction * n)))
                pos = np.zeros(n, bool)
                pos[self.rng.choice(n, size=k, replace=False)] = True
                pos = pos.reshape(self.shape[:2])
            alloc = np.where(pos[:, :, None], self.pilot_time, 0.0) * np.ones(self.shape)
            if alloc.sum() > left:
                alloc *= np.floor(left / alloc.sum() * self.pilot_time / self.t_step) \
                    * self.t_step / self.pilot_time
            return alloc
        if self.detectability is None:
            raise RuntimeError("call update() with a prediction after each round")
        return self._water_fill(self.detectability, min(self.round_time, left))

    def _water_fill(self, d, budget):
        step = self.t_step

        def alloc_for(lam):
            return np.floor(np.maximum(lam * d - self.time, 0.0) / step) * step

        hi = (self.time.max() + budget) / max(float(d.max()), 1e-12) + step
        if alloc_for(hi).sum() <= budget:
            return alloc_for(hi)
        lo = 0.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if alloc_for(mid).sum() <= budget:
                lo = mid
            else:
                hi = mid
        return alloc_for(lo)

    @staticmethod
    def visits(alloc) -> list[tuple[int, int, float, list[int]]]:
        """Group an allocation into visits (i, j, t, pulse indices) with one time each."""
        out = []
        for i, j in zip(*np.nonzero(np.any(alloc > 0, axis=-1)), strict=True):
            row = alloc[i, j]
            for t in np.unique(row[row > 0]):
                out.append((int(i), int(j), float(t), np.flatnonzero(row == t).tolist()))
        return out

    def ingest(self, alloc, values) -> None:
        """Add the round's measurements: ``values`` (data shape, N^2) where ``alloc`` > 0."""
        alloc = np.asarray(alloc, float)
        if alloc.shape != self.shape or np.shape(values) != self.shape:
            raise ValueError(f"alloc and values must have shape {self.shape}")
        new = alloc > 0
        if not np.all(np.isfinite(np.asarray(values)[new])):
            raise ValueError("measured values contain NaN or inf")
        tot = self.time + alloc
        self.mean = np.where(new, (self.mean * self.time + np.where(new, values, 0.0) * alloc)
                             / np.where(new, tot, 1.0), self.mean)
        self.time = tot
        self.rounds += 1

    def weights(self) -> np.ndarray:
        """Data weights for the reconstruction: time spent / t_ref (0 = never measured)."""
        return self.time / self.t_ref

    def update(self, predicted, noise_std_ref) -> None:
        """Set the detectability from a predicted scan and its standard error at t_ref (N^2)."""
        s = np.maximum(np.asarray(predicted, float), 0.0)
        sigma = np.broadcast_to(np.asarray(noise_std_ref, float), s.shape)
        if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ValueError("noise_std_ref must be positive and finite")
        r = s / sigma
        rk = r**self.power
        self.detectability = rk / (self.r0**self.power + rk)

    def done(self, recon) -> bool:
        """True when the reconstruction changed by < tol since the last call, or no budget."""
        recon = np.asarray(recon, float)
        if self._prev is not None:
            self.last_change = float(np.linalg.norm(recon - self._prev)
                                     / max(np.linalg.norm(recon), 1e-300))
        self._prev = recon.copy()
        return self.last_change < self.tol or self.budget - self.spent < self.t_step
