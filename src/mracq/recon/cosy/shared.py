"""Shared-frequency fit of a sparsely sampled COSY map (the map's physics, not a generic prior).

Physics (`mracq.sim.cosy.model`): during t1 and t2 the nuclei evolve under the SAME
Hamiltonians (H0 or H1, as the NV was left), so the frequencies along both axes are
differences ``w_p = e_b - e_c`` of ONE set of eigenvalues, and the map is bilinear::

    S(t1, t2) = offset + Re sum_{p, q} C_pq exp(-i w_p t1) exp(-i w_q t2)

linear in the amplitudes C once the few frequencies are known. On the grid (index units
``u``, ``v`` from the grid centre, equal steps on both axes, as the experiment's t1 = t2
grid) each frequency is one aliased value ``f_p`` in rad per grid step, the same on both
axes, and each term with ``C_pq != 0`` is a plane wave along ``(f_p, s f_q)``, ``s = +-1``
(echo and anti-echo), with two real amplitudes. A generic 2D plane-wave fit
(`mracq.recon.cosy.spectral`) pays 4 parameters per peak; here a peak whose frequencies
are already in the set pays 2, and C stays sparse (only the pairs the data ask for).

Fit (greedy, a shared-frequency NOMP): from the mean, repeat ``k_max`` times: on the
residual of the measured points compare (a) the best unused pair ``(p, q, s)`` of the
frequency set (exact periodogram at each pair) and (b) the largest peak of the
zero-filled 2D periodogram (``oversample`` x finer than the DFT grid), a new peak whose
coordinates join the set unless within ``snap`` of a member. Each is scored by its
normalized power ``Q = 2 |sum r e^{-i phi}|^2 / (N sigma^2)`` (a chi^2_2 variable on
noise alone) less ``2 ln M``, M the number of candidates of its kind (the expected
maximum of M such noise values): a pair of known frequencies is believed at a lower
power than a new peak found among the whole grid. Then every frequency and amplitude is
refined together by Levenberg-Marquardt on the measured points. `fit_shared_path` keeps
every step so that cross-validation picks the number of terms (`mracq.recon.cosy.auto`,
candidates ``shared:<k>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mracq.recon.cosy.spectral import levenberg_marquardt
from mracq.recon.svt import single_thread_blas

__all__ = ["SharedWaves", "fit_shared", "fit_shared_path"]


@dataclass(frozen=True)
class SharedWaves:
    """``offset + sum_j a_j cos(phi_j) + b_j sin(phi_j)``, ``phi_j = f[p_j] u + s_j f[q_j] v``.

    ``u``, ``v``: grid indices minus the grid centre ``centre``; ``freqs`` (P,) the shared
    frequencies in rad per grid step (>= 0, the same on both axes); ``terms`` (J, 3) int
    rows ``(p, q, s)``; ``amps`` (J, 2) = (a, b) on the data's scale; ``rss``: residual sum
    of squares on the ``n`` points fitted.
    """

    offset: float
    freqs: np.ndarray
    terms: np.ndarray
    amps: np.ndarray
    centre: tuple[float, float]
    rss: float
    n: int

    @property
    def n_params(self) -> int:
        """Fitted parameters: one per frequency, two per term, the offset."""
        return len(self.freqs) + 2 * len(self.terms) + 1

    def pair_freqs(self) -> np.ndarray:
        """(J, 2) frequencies (rad per step) of every term along (t1, t2)."""
        t = self.terms
        return np.column_stack([self.freqs[t[:, 0]], t[:, 2] * self.freqs[t[:, 1]]])

    def at(self, ij: np.ndarray) -> np.ndarray:
        """Values at integer grid points ``ij`` (M, 2)."""
        u = np.asarray(ij, float) - np.asarray(self.centre)
        phi = _phases(u, self.freqs, self.terms)
        return self.offset + np.cos(phi) @ self.amps[:, 0] + np.sin(phi) @ self.amps[:, 1]

    def grid(self, shape: tuple[int, int]) -> np.ndarray:
        """The model on the whole ``shape`` grid."""
        ij = np.indices(shape).reshape(2, -1).T
        return self.at(ij).reshape(shape)


def _phases(u, freqs, terms):
    if len(terms) == 0:
        return np.zeros((len(u), 0))
    return np.outer(u[:, 0], freqs[terms[:, 0]]) + np.outer(u[:, 1],
                                                              terms[:, 2] * freqs[terms[:, 1]])


def _linear(u, y, freqs, terms):
    phi = _phases(u, freqs, terms)
    a = np.column_stack([np.ones(len(y)), np.cos(phi), np.sin(phi)])
    ata = a.T @ a
    ata[np.diag_indices_from(ata)] *= 1 + 1e-10
    try:
        coef = np.linalg.solve(ata, a.T @ y)
    except np.linalg.LinAlgError:
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
    j = len(terms)
    return float(coef[0]), np.column_stack([coef[1:j + 1], coef[j + 1:]])


def _lm(u, y, offset, freqs, terms, amps, iters):
    """Levenberg-Marquardt on offset, shared frequencies and amplitudes.

    Parameter vector: offset, the J cosine and J sine amplitudes, the P frequencies (kept
    >= 0: a term's sign lives in ``terms``).
    """
    p_n, j_n = len(freqs), len(terms)
    onehot1 = np.zeros((j_n, p_n))
    onehot1[np.arange(j_n), terms[:, 0]] = 1
    onehot2 = np.zeros((j_n, p_n))
    onehot2[np.arange(j_n), terms[:, 1]] = terms[:, 2]

    def predict(theta):
        phi = _phases(u, theta[2 * j_n + 1:], terms)
        c, s = np.cos(phi), np.sin(phi)
        return theta[0] + c @ theta[1:j_n + 1] + s @ theta[j_n + 1:2 * j_n + 1], (c, s)

    def jacobian(theta, state):
        c, s = state
        d = theta[j_n + 1:2 * j_n + 1] * c - theta[1:j_n + 1] * s  # d pred / d phi_j, (N, J)
        jf = (d @ onehot1) * u[:, :1] + (d @ onehot2) * u[:, 1:]  # d pred / d f_p
        return np.column_stack([np.ones(len(y)), c, s, jf])

    def project(theta):
        theta[2 * j_n + 1:] = np.abs(theta[2 * j_n + 1:])
        return theta

    theta0 = np.concatenate([[offset], amps[:, 0], amps[:, 1], freqs])
    theta, rss = levenberg_marquardt(y, theta0, predict, jacobian, iters, project)
    return (float(theta[0]), theta[2 * j_n + 1:],
            np.column_stack([theta[1:j_n + 1], theta[j_n + 1:2 * j_n + 1]]), rss)


def fit_shared_path(values: np.ndarray, ij: np.ndarray, shape: tuple[int, int], k_max: int, *,
                    oversample: int = 4, refine: int = 4,
                    snap: float | None = None) -> list[SharedWaves]:
    """Greedy shared-frequency fits with 0, 1, ..., ``k_max`` terms (module docstring).

    Parameters
    ----------
    values : array (N,)
        Measured values (any scale).
    ij : int array (N, 2)
        Their grid indices (axis 0: t1, axis 1: t2, equal time steps).
    shape : (int, int)
        Grid shape.
    k_max : int
        Most terms; the path stops earlier when the parameters would reach N / 2.
    oversample : int
        Periodogram grid ``oversample`` times finer than the DFT grid in each axis.
    refine : int
        Levenberg-Marquardt iterations after each added term (twice that on the last).
    snap : float, optional
        A new peak's coordinate joins an existing frequency within this distance (rad per
        step); default half the DFT bin of the longer axis, ``pi / max(shape)``.

    Returns
    -------
    list of SharedWaves
        ``path[k]`` has k terms.
    """
    with single_thread_blas():
        return _path(np.asarray(values, float), np.asarray(ij, int), tuple(shape), int(k_max),
                     oversample, refine, np.pi / max(shape) if snap is None else float(snap))


def _snap(freqs, w, tol):
    """Index of ``w`` (>= 0) in ``freqs``, appending it unless within ``tol`` of one."""
    if len(freqs):
        i = int(np.argmin(np.abs(freqs - w)))
        if abs(freqs[i] - w) <= tol:
            return freqs, i
    return np.append(freqs, w), len(freqs)


def _path(y, ij, shape, k_max, oversample, refine, snap):
    centre = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    u = ij - np.asarray(centre)
    n = len(y)
    offset = float(y.mean())
    freqs = np.zeros(0)
    terms = np.zeros((0, 3), int)
    amps = np.zeros((0, 2))
    r = y - offset
    rss = float(r @ r)
    path = [SharedWaves(offset, freqs, terms, amps, centre, rss, n)]
    big = (oversample * shape[0], oversample * shape[1])
    ln_new = np.log(shape[0] * shape[1] / 2)  # distinct real plane waves on the grid
    for k in range(k_max):
        if len(freqs) + 2 * len(terms) + 5 >= n / 2:
            break
        sigma2 = max(rss / max(n - len(freqs) - 2 * len(terms) - 1, 1), 1e-300)
        grid = np.zeros(shape)
        grid[ij[:, 0], ij[:, 1]] = r
        power = np.abs(np.fft.fft2(grid, s=big)) ** 2
        pk = np.unravel_index(np.argmax(power), big)
        w = (2 * np.pi * np.array([pk[0] / big[0], pk[1] / big[1]]) + np.pi) % (2 * np.pi) - np.pi
        if w[0] < 0:
            w = -w
        score_new = 2 * power[pk] / (n * sigma2) - 2 * ln_new
        new = None
        f2, p = _snap(freqs, abs(w[0]), snap)
        f2, q = _snap(f2, abs(w[1]), snap)
        cand_new = (p, q, 1 if w[1] >= 0 else -1)
        if not _has(terms, cand_new):
            new = (f2, cand_new)
        best_score = score_new
        for cls in (_partners(terms), None):
            old = _best_pair(u, r, freqs, terms, cls)
            if old is not None:
                score_old = 2 * old[1] / (n * sigma2) - 2 * np.log(max(old[2], 1))
                if new is None or score_old >= best_score:
                    new, best_score = (freqs, old[0]), score_old
        if new is None:
            break
        freqs, add = new
        terms = np.vstack([terms, np.asarray(add, int)[None]])
        offset, amps = _linear(u, y, freqs, terms)
        iters = 2 * refine if k == k_max - 1 else refine
        offset, freqs, amps, rss = _lm(u, y, offset, freqs, terms, amps, iters)
        r = y - SharedWaves(offset, freqs, terms, amps, centre, rss, n).at(ij)
        rss = float(r @ r)
        path.append(SharedWaves(offset, freqs.copy(), terms.copy(), amps.copy(), centre, rss, n))
    return path


def _has(terms, t):
    return bool(len(terms)) and bool(np.any(np.all(terms == np.asarray(t), axis=1)))


def _partners(terms):
    """Terms the present ones make likely: the transpose ``(q, p, s)`` of each (a COSY
    spectrum's magnitude is nearly symmetric about the diagonal) and, for a diagonal term
    ``(p, p, s)``, its mirror ``(p, p, -s)``."""
    if not len(terms):
        return np.zeros((0, 3), int)
    diag = terms[terms[:, 0] == terms[:, 1]]
    out = np.vstack([terms[:, [1, 0, 2]], diag * np.array([1, 1, -1])])
    return np.unique(out, axis=0)


def _best_pair(u, r, freqs, terms, cand=None):
    """The unused term (p, q, s) of the frequency set (or among ``cand``) with the largest
    periodogram power: ``(term, power, candidates)``, or None."""
    p_n = len(freqs)
    if p_n == 0:
        return None
    if cand is None:
        p, q, s = (a.ravel() for a in np.meshgrid(np.arange(p_n), np.arange(p_n), (1, -1),
                                                  indexing="ij"))
        cand = np.column_stack([p, q, s])
    if len(terms):
        used = (terms[:, None, :] == cand[None]).all(axis=2).any(axis=0)
        cand = cand[~used]
    if not len(cand):
        return None
    phi = _phases(u, freqs, cand)
    pw = (r @ np.cos(phi)) ** 2 + (r @ np.sin(phi)) ** 2
    b = int(np.argmax(pw))
    return tuple(int(v) for v in cand[b]), float(pw[b]), len(cand)


def fit_shared(measured: np.ndarray, mask: np.ndarray, k: int, **kw) -> SharedWaves:
    """Shared-frequency fit with ``k`` terms of the entries of ``measured`` where ``mask``."""
    mask = np.asarray(mask, bool)
    return fit_shared_path(np.asarray(measured, float)[mask], np.argwhere(mask), mask.shape,
                           k, **kw)[-1]
