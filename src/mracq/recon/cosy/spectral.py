"""Off-grid sparse 2D spectral fit of a sparsely sampled COSY map (harmonic prior).

Physics: the COSY signal is a sum of a few terms ``Re[c exp(-i (w1 t1 + w2 t2))]`` whose
frequencies are differences of eigenvalues of the nuclear Hamiltonians (seed 000,
`mracq.sim.cosy.model`); on the t1 x t2 grid (index units ``i``, ``j``) each is a plane
wave ``a cos(phi) + b sin(phi)``, ``phi = w1 i + w2 j``, with frequencies off the DFT grid
(aliased, the grid samples far below the 13C Larmor frequency). Such a map is sparse in 2D
frequency whatever cluster made it, which is what a network trained on one family lacks.

Fit (Newtonized orthogonal matching pursuit, Mamandipoor et al., IEEE TSP 2016, in 2D):
starting from the mean, repeat ``k_max`` times: take the largest peak of the periodogram
of the residual on the measured points (zero-filled FFT, ``oversample`` x finer than the
DFT grid), add it as a plane wave, and refine all frequencies and amplitudes together by
Levenberg-Marquardt least squares on the measured points. `fit_path` keeps every step, so
the number of components can be chosen by cross-validation (`mracq.recon.cosy.auto`).

A fit with P = 4K + 1 parameters from N measured points of noise sigma has an RMS error of
about ``sigma sqrt(P / N)`` over the map once every component is found: e.g. 0.1 sqrt(33 /
250) = 0.036 for 8 components at 10% coverage, where a rank-r SVT has r (n1 + n2) degrees
of freedom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mracq.recon.svt import single_thread_blas

__all__ = ["PlaneWaves", "fit_path", "fit_planewaves", "levenberg_marquardt"]


@dataclass(frozen=True)
class PlaneWaves:
    """``offset + sum_k a_k cos(phi_k) + b_k sin(phi_k)``, ``phi_k = w1_k u + w2_k v``.

    ``u``, ``v``: grid indices minus the grid centre ``centre``; frequencies ``freqs``
    (K, 2) in rad per grid step; amplitudes ``amps`` (K, 2) = (a, b) on the data's scale.
    ``rss``: residual sum of squares on the points fitted; ``n``: their number.
    """

    offset: float
    freqs: np.ndarray
    amps: np.ndarray
    centre: tuple[float, float]
    rss: float
    n: int

    @property
    def n_params(self) -> int:
        """Fitted parameters (4 per plane wave, one offset)."""
        return 4 * len(self.freqs) + 1

    def noise_variance(self) -> float:
        """Residual variance per point, corrected for the fitted parameters."""
        return self.rss / max(self.n - self.n_params, 1)

    def shrunk(self, noise_var: float) -> PlaneWaves:
        """Amplitudes shrunk towards 0 (positive-part James-Stein per plane wave): each
        (a, b) is estimated with variance ``2 noise_var / n`` per coefficient, so its
        squared norm is inflated by ``4 noise_var / n``; scale by ``max(0, 1 - that /
        |(a, b)|^2)``. Lowers the error of weak components near the noise."""
        p = np.sum(self.amps**2, axis=1)
        g = np.clip(1 - 4 * noise_var / max(self.n, 1) / np.maximum(p, 1e-300), 0, 1)
        return PlaneWaves(self.offset, self.freqs, self.amps * g[:, None], self.centre,
                          self.rss, self.n)

    def at(self, ij: np.ndarray) -> np.ndarray:
        """Values at integer grid points ``ij`` (M, 2)."""
        u = np.asarray(ij, float) - np.asarray(self.centre)
        phi = u @ self.freqs.T  # (M, K)
        return self.offset + np.cos(phi) @ self.amps[:, 0] + np.sin(phi) @ self.amps[:, 1]

    def grid(self, shape: tuple[int, int]) -> np.ndarray:
        """The model on the whole ``shape`` grid."""
        ij = np.indices(shape).reshape(2, -1).T
        return self.at(ij).reshape(shape)


def _design(u, freqs):
    phi = u @ freqs.T
    return np.cos(phi), np.sin(phi)


def _linear(u, y, freqs):
    """Offset and amplitudes by linear least squares for fixed frequencies."""
    c, s = _design(u, freqs)
    a = np.column_stack([np.ones(len(y)), c, s])
    ata = a.T @ a
    ata[np.diag_indices_from(ata)] *= 1 + 1e-10
    try:
        coef = np.linalg.solve(ata, a.T @ y)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
    k = len(freqs)
    return coef[0], np.column_stack([coef[1:k + 1], coef[k + 1:]])


def levenberg_marquardt(y, theta, predict, jacobian, iters, project=None):
    """Damped Gauss-Newton (Levenberg-Marquardt) on ``sum (y - predict(theta))^2``.

    ``predict(theta)`` returns ``(prediction, state)``; ``jacobian(theta, state)`` the
    (N, P) derivatives of the prediction; ``project`` (optional) maps a trial parameter
    vector back into its domain. Marquardt's diagonal scaling; a step is taken only if it
    lowers the residual sum of squares; stops when a step gains less than 1e-9 of it.
    Returns ``(theta, rss)``.
    """
    lam = 1e-3
    pred, state = predict(theta)
    r = y - pred
    rss = float(r @ r)
    for _ in range(iters):
        jac = jacobian(theta, state)
        jtj = jac.T @ jac
        g = jac.T @ r
        diag = np.diag(jtj).copy() + 1e-12
        improved = False
        for _ in range(6):
            try:
                step = np.linalg.solve(jtj + lam * np.diag(diag), g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            trial = theta + step
            if project is not None:
                trial = project(trial)
            pred2, state2 = predict(trial)
            r2 = y - pred2
            rss2 = float(r2 @ r2)
            if rss2 < rss:
                theta, state, r = trial, state2, r2
                improved = rss - rss2 > 1e-9 * rss
                rss = rss2
                lam = max(lam / 3, 1e-9)
                break
            lam *= 10
        if not improved:
            break
    return theta, rss


def _lm(u, y, offset, freqs, amps, iters):
    """Levenberg-Marquardt on all parameters; returns (offset, freqs, amps, rss).

    Parameter vector: offset, the K cosine and K sine amplitudes, the K w1 and K w2.
    """
    k = len(freqs)

    def predict(theta):
        c, s = _design(u, np.column_stack([theta[2 * k + 1:3 * k + 1], theta[3 * k + 1:]]))
        return theta[0] + c @ theta[1:k + 1] + s @ theta[k + 1:2 * k + 1], (c, s)

    def jacobian(theta, state):
        c, s = state
        d = theta[k + 1:2 * k + 1] * c - theta[1:k + 1] * s  # d pred / d phi, (N, K)
        return np.column_stack([np.ones(len(y)), c, s, d * u[:, :1], d * u[:, 1:]])

    theta0 = np.concatenate([[offset], amps[:, 0], amps[:, 1], freqs[:, 0], freqs[:, 1]])
    theta, rss = levenberg_marquardt(y, theta0, predict, jacobian, iters)
    return (theta[0], np.column_stack([theta[2 * k + 1:3 * k + 1], theta[3 * k + 1:]]),
            np.column_stack([theta[1:k + 1], theta[k + 1:2 * k + 1]]), rss)


def fit_path(values: np.ndarray, ij: np.ndarray, shape: tuple[int, int], k_max: int, *,
             oversample: int = 4, refine: int = 4) -> list[PlaneWaves]:
    """Greedy plane-wave fits with 0, 1, ..., ``k_max`` components.

    Parameters
    ----------
    values : array (N,)
        Measured values (any scale).
    ij : int array (N, 2)
        Their grid indices.
    shape : (int, int)
        Grid shape.
    k_max : int
        Most components; the path stops earlier when the parameters would reach N / 2.
    oversample : int
        Periodogram grid ``oversample`` times finer than the DFT grid in each axis.
    refine : int
        Levenberg-Marquardt iterations after each added component (twice that on the last).

    Returns
    -------
    list of PlaneWaves
        ``path[k]`` has k components.
    """
    with single_thread_blas():
        return _path(np.asarray(values, float), np.asarray(ij, int), shape, k_max, oversample,
                     refine)


def _path(y, ij, shape, k_max, oversample, refine):
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    u = ij - np.asarray(centre)
    n = len(y)
    k_max = int(max(0, min(k_max, (n // 2 - 1) // 4)))
    offset = float(y.mean())
    freqs = np.zeros((0, 2))
    amps = np.zeros((0, 2))
    r = y - offset
    path = [PlaneWaves(offset, freqs, amps, centre, float(r @ r), n)]
    big = (oversample * shape[0], oversample * shape[1])
    for k in range(k_max):
        grid = np.zeros(shape)
        grid[ij[:, 0], ij[:, 1]] = r
        power = np.abs(np.fft.fft2(grid, s=big))
        p = np.unravel_index(np.argmax(power), big)
        w = 2 * np.pi * np.array([p[0] / big[0], p[1] / big[1]])
        w = (w + np.pi) % (2 * np.pi) - np.pi
        freqs = np.vstack([freqs, w])
        offset, amps = _linear(u, y, freqs)
        iters = 2 * refine if k == k_max - 1 else refine
        offset, freqs, amps, rss = _lm(u, y, offset, freqs, amps, iters)
        r = y - PlaneWaves(offset, freqs, amps, centre, rss, n).at(ij)
        path.append(PlaneWaves(float(offset), freqs.copy(), amps.copy(), centre, rss, n))
    return path


def fit_planewaves(measured: np.ndarray, mask: np.ndarray, k: int, **kw) -> PlaneWaves:
    """Plane-wave fit with ``k`` components of the entries of ``measured`` where ``mask``."""
    mask = np.asarray(mask, bool)
    ij = np.argwhere(mask)
    return fit_path(np.asarray(measured, float)[mask], ij, mask.shape, k, **kw)[-1]
