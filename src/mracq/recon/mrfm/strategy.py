"""Adaptive MRFM scan: choose the next xy positions where the reconstruction predicts signal.

Pure code (no Bluesky): `mracq.plans.mrfm.adaptive_multislice_scan` drives it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SignalWeightedStrategy"]


class SignalWeightedStrategy:
    """Choose the next xy positions where the current reconstruction predicts signal.

    Criterion: after each batch the plan reconstructs the sample from the points measured so
    far (joint CS + ADMM) and predicts the noise-free scan s = A o. The weight of an
    unmeasured position is its predicted detectability sum_l (r_l / (1 + r_l))^2 with
    r_l = s_l / sigma_l the predicted per-point SNR (sigma_l the standard error of the noise
    model at the plan's T_m): a position whose channels all lie below the noise counts ~r^2,
    one above the noise counts ~1 whatever its size, so the budget spreads over the whole
    signal footprint instead of piling up at its centre. Without a noise estimate the weight
    is the signal energy sum_l s_l^2. A uniform share ``explore`` keeps every region
    reachable. Positions are drawn without replacement with probability proportional to the
    weight (bluesky-adaptive naming: ``suggest``/``ingest``).

    Parameters
    ----------
    shape : (nx, ny)
        Grid of positions.
    rng : numpy.random.Generator
        Random source.
    explore : float
        Uniform share of the weights, in [0, 1].
    """

    criterion = ("predicted detectability sum_l (r/(1+r))^2, r = predicted SNR of the "
                 "current reconstruction, + uniform share")

    def __init__(self, shape, rng, explore: float = 0.2):
        if not 0 <= explore <= 1:
            raise ValueError(f"explore must be in [0, 1], got {explore!r}")
        self.sampled = np.zeros(shape, bool)
        self.weight = np.ones(shape)
        self.rng = rng
        self.explore = explore

    def suggest(self, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` unmeasured positions (index pairs)."""
        free = np.flatnonzero(~self.sampled)
        n = min(int(n), free.size)
        if n <= 0:
            return []
        w = self.weight.ravel()[free]
        w = (1 - self.explore) * w / max(w.sum(), 1e-300) + (self.explore + 1e-9) / free.size
        pick = self.rng.choice(free, size=n, replace=False, p=w / w.sum())
        return [tuple(int(v) for v in np.unravel_index(k, self.sampled.shape)) for k in pick]

    def ingest(self, points) -> None:
        """Mark measured positions (index pairs)."""
        for i, j in points:
            self.sampled[i, j] = True

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
