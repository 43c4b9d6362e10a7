"""NV-13C COSY maps (seed 000 Methods, physics.md section 3).

Model: NV in its {ms=0, ms=-1} subspace (``Sz = diag(0, -1)``) coupled to m 13C::

    H = Sz sum_j A_j . I_j + sum_{i<j} I_i . D_ij . I_j + wL sum_j Iz_j

so that the nuclei evolve under ``H0`` (NV in ms=0) or ``H1`` (ms=-1). Sequence, ideal
instantaneous NV pulses, ideal RF pi/2 (x) on all nuclei::

    pi/2_x - (tau/2 - pi - tau - pi - tau/2)^(N/2) - pi/2_y - t1 - pi/2_RF - t2
    - pi/2_y - (tau/2 - pi - tau - pi - tau/2)^(N/2) - pi/2_x - read P(ms=0)

starting from ``|0><0| x 1/2^m``. The NV coherence left after the first block dephases
within the NV T2* (microseconds) and is dropped during t1, t2 (t1, t2 >= 4 us here).
With ``V_k`` the nuclear propagator of the decoupling block for the NV starting in ms=k,
``X = i/2 (V0 V1^+ - V1 V0^+)``, ``Y = i/2 (V1^+ V0 - V0^+ V1)`` and
``T_k(X) = U_k(t2) R U_k(t1) X U_k(t1)^+ R^+ U_k(t2)^+``::

    P0(t1, t2) = 1/2 - (1 / 2^(m+2)) sum_k Tr[Y T_k(X)]

which is evaluated in the eigenbases of H0 and H1, vectorized over maps and times.
``tests/test_cosy_sim.py`` checks it against a brute-force density-matrix simulation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce

import numpy as np

from mracq.sim.cosy.couplings import (
    GAMMA_13C,
    dipolar_tensors,
    hyperfine_from_positions,
    random_clusters,
)

log = logging.getLogger(__name__)

B_FIELD = 0.158
"""Experiment field along the NV axis in T."""
TAU = 2045e-9
"""Decoupling pulse spacing in s (7th harmonic of the 13C precession)."""
N_PULSES = 40
"""pi pulses per correlation block."""
T_GRID = 4e-6 + 18e-6 * np.arange(50)
"""Experiment t1 = t2 grid in s: 4 us to 886 us in 18 us steps (50 points)."""


def spin_operators(m: int) -> np.ndarray:
    """Spin-1/2 operators of m spins, shape (m, 3, 2^m, 2^m) (x, y, z)."""
    s = 0.5 * np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
    eye = np.eye(2)
    ops = np.empty((m, 3, 2**m, 2**m), dtype=complex)
    for j in range(m):
        for a in range(3):
            ops[j, a] = reduce(np.kron, [s[a] if k == j else eye for k in range(m)])
    return ops


def nuclear_hamiltonians(
    hyperfine: np.ndarray,
    dipolar: np.ndarray | None = None,
    b_field: float = B_FIELD,
    gamma_n: float = GAMMA_13C,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclear Hamiltonians in the ms=0 and ms=-1 manifolds.

    Parameters
    ----------
    hyperfine : array (..., m, 3)
        (Azx, Azy, Azz) per nucleus in rad/s.
    dipolar : array (..., m, m, 3, 3), optional
        Pair tensors D_ij (i < j) in rad/s; None for uncoupled nuclei.
    b_field : float or array
        Field along the NV axis in T; an array is one field per system (its shape
        broadcasts against the leading shape ``...``).
    gamma_n : float
        Nuclear gyromagnetic ratio in rad/s/T.

    Returns
    -------
    H0, H1 : arrays (..., 2^m, 2^m)
        Hamiltonians in rad/s (``H1 = H0 - A.I``).
    """
    a = np.asarray(hyperfine, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError("hyperfine contains NaN or inf")
    m = a.shape[-2]
    ops = spin_operators(m)
    b = np.asarray(b_field, dtype=float)
    if not np.all(np.isfinite(b)):
        raise ValueError("b_field contains NaN or inf")
    h0 = (gamma_n * b)[..., None, None] * ops[:, 2].sum(axis=0)
    h0 = np.broadcast_to(h0, a.shape[:-2] + h0.shape[-2:]).copy()
    if dipolar is not None:
        d = np.asarray(dipolar, dtype=float)
        for i in range(m):
            for j in range(i + 1, m):
                pair = np.einsum("axy,byz->abxz", ops[i], ops[j])
                h0 = h0 + np.einsum("...ab,abxz->...xz", d[..., i, j, :, :], pair)
    h1 = h0 - np.einsum("...ja,jaxy->...xy", a, ops)
    return h0, h1


def _expm_h(evals: np.ndarray, evecs: np.ndarray, t) -> np.ndarray:
    phase = np.exp(-1j * evals * np.asarray(t, dtype=float)[..., None])
    return (evecs * phase[..., None, :]) @ np.conj(np.swapaxes(evecs, -1, -2))


@dataclass(frozen=True)
class CosyPropagators:
    """Eigen-decomposed pieces of the COSY signal for a batch of nuclear systems.

    Attributes
    ----------
    evals : array (..., 2, d)
        Eigenvalues of H0 and H1 in rad/s.
    xt, zt : arrays (..., 2, d, d)
        ``X`` and ``Y^T`` in the eigenbasis of H_k; ``rt`` the RF pulse there.
    m : int
        Number of nuclei.
    """

    evals: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    rt: np.ndarray
    m: int

    def signal(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """``sum_k Tr[Y T_k(X)]`` on the grid t1 x t2 (s); shape (..., len(t1), len(t2))."""
        t1 = np.atleast_1d(np.asarray(t1, dtype=float))
        t2 = np.atleast_1d(np.asarray(t2, dtype=float))
        e = self.evals
        w = e[..., :, None] - e[..., None, :]  # (..., 2, d, d): w_bc = e_b - e_c
        f1 = np.exp(-1j * w[..., None, :, :] * t1[:, None, None])  # (..., 2, T1, d, d)
        z = self.rt[..., None, :, :] @ (self.xt[..., None, :, :] * f1)
        z = z @ np.conj(np.swapaxes(self.rt, -1, -2))[..., None, :, :]
        # Tr[Y D(t2) Z D(t2)^+] = sum_ad Y_da Z_ad exp(-i (e_a - e_d) t2)
        g = z * np.swapaxes(self.yt, -1, -2)[..., None, :, :]
        f2 = np.exp(-1j * w[..., None, :, :] * t2[:, None, None])
        d2 = w.shape[-1] ** 2
        g = g.reshape(g.shape[:-2] + (d2,))
        f2 = f2.reshape(f2.shape[:-2] + (d2,))
        s = g @ np.swapaxes(f2, -1, -2)  # (..., 2, T1, T2)
        return s.sum(axis=-3).real

    def population(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """P(ms=0) at readout on the grid t1 x t2 (s)."""
        return 0.5 - self.signal(t1, t2) / 2 ** (self.m + 2)


def cosy_propagators(
    h0: np.ndarray, h1: np.ndarray, tau: float = TAU, n: int = N_PULSES
) -> CosyPropagators:
    """Decoupling-block propagators and their eigenbasis forms.

    Parameters
    ----------
    h0, h1 : arrays (..., d, d)
        Nuclear Hamiltonians (rad/s) in ms=0 and ms=-1.
    tau : float or array
        pi-pulse spacing in s; an array is one spacing per system (shape ``...``).
    n : int
        Number of pi pulses per block (even).
    """
    if n <= 0 or n % 2:
        raise ValueError(f"n must be a positive even number of pi pulses, got {n}")
    if not np.all(np.asarray(tau, dtype=float) > 0):
        raise ValueError(f"tau must be > 0 s, got {tau}")
    d = h0.shape[-1]
    m = int(round(np.log2(d)))
    e0, v0 = np.linalg.eigh(h0)
    e1, v1 = np.linalg.eigh(h1)
    tau = np.asarray(tau, dtype=float)
    p0h, p0 = _expm_h(e0, v0, tau / 2), _expm_h(e0, v0, tau)
    p1h, p1 = _expm_h(e1, v1, tau / 2), _expm_h(e1, v1, tau)
    big0 = np.linalg.matrix_power(p0h @ p1 @ p0h, n // 2)
    big1 = np.linalg.matrix_power(p1h @ p0 @ p1h, n // 2)
    dag = lambda u: np.conj(np.swapaxes(u, -1, -2))  # noqa: E731
    x = 0.5j * (big0 @ dag(big1) - big1 @ dag(big0))
    y = 0.5j * (dag(big1) @ big0 - dag(big0) @ big1)
    c = 1 / np.sqrt(2)
    r1 = np.array([[c, -1j * c], [-1j * c, c]])
    rf = reduce(np.kron, [r1] * m)
    vecs = np.stack([v0, v1], axis=-3)  # (..., 2, d, d)
    vd = dag(vecs)
    xt = vd @ x[..., None, :, :] @ vecs
    yt = vd @ y[..., None, :, :] @ vecs
    rt = vd @ rf @ vecs
    return CosyPropagators(np.stack([e0, e1], axis=-2), xt, yt, rt, m)


def simulate_map(
    positions: np.ndarray | None = None,
    *,
    hyperfine: np.ndarray | None = None,
    dipolar: np.ndarray | None = None,
    t1: np.ndarray | None = None,
    t2: np.ndarray | None = None,
    b_field: float = B_FIELD,
    tau: float = TAU,
    n: int = N_PULSES,
    decay_time: float | None = None,
    batch: int = 256,
) -> np.ndarray:
    """Noiseless COSY map(s) P(ms=0)(t1, t2) on the experiment's grid by default.

    Parameters
    ----------
    positions : array (..., m, 3), optional
        Nuclear positions in m (NV at the origin, axis z). Either this or ``hyperfine``.
    hyperfine : array (..., m, 3), optional
        (Azx, Azy, Azz) in rad/s, used instead of positions (then ``dipolar`` optional).
    dipolar : array (..., m, m, 3, 3), optional
        Pair tensors in rad/s (computed from ``positions`` when those are given).
    t1, t2 : arrays, optional
        Evolution times in s; default `T_GRID` (4 us to 886 us, 18 us steps, 50 points).
    b_field : float or array
        Field along the NV axis in T (default 0.158 T); an array (shape ``...``) gives
        each map its own field.
    tau : float or array
        Decoupling pi-pulse spacing in s (default 2045 ns); an array (shape ``...``) gives
        each map its own spacing.
    n : int
        pi pulses per correlation block (default 40).
    decay_time : float, optional
        Nuclear coherence time in s: the oscillating signal is multiplied by
        ``exp(-(t1 + t2) / decay_time)``. None: no decay.
    batch : int
        Maps evaluated together (memory vs speed).

    Returns
    -------
    array (..., len(t1), len(t2))
        P(ms=0), ``map[..., i, j]`` at ``(t1[i], t2[j])``.
    """
    if positions is not None:
        hyperfine = hyperfine_from_positions(positions)
        dipolar = dipolar_tensors(positions)
    elif hyperfine is None:
        raise ValueError("give positions or hyperfine")
    t1 = T_GRID if t1 is None else np.asarray(t1, dtype=float)
    t2 = T_GRID if t2 is None else np.asarray(t2, dtype=float)
    for name, t in (("t1", t1), ("t2", t2)):
        if not np.all(np.isfinite(t)) or np.any(t < 0):
            raise ValueError(f"{name} must be finite and >= 0 s")
    a = np.asarray(hyperfine, dtype=float)
    lead = a.shape[:-2]
    a = a.reshape((-1,) + a.shape[-2:])
    m = a.shape[-2]
    dp = None if dipolar is None else np.asarray(dipolar).reshape((-1, m, m, 3, 3))
    bf = np.broadcast_to(np.asarray(b_field, dtype=float), lead).reshape(-1)
    tu = np.broadcast_to(np.asarray(tau, dtype=float), lead).reshape(-1)
    out = np.empty((a.shape[0], t1.size, t2.size))
    for s in range(0, a.shape[0], batch):
        sl = slice(s, s + batch)
        h0, h1 = nuclear_hamiltonians(a[sl], None if dp is None else dp[sl], bf[sl])
        out[sl] = cosy_propagators(h0, h1, tu[sl], n).population(t1, t2)
    if decay_time is not None:
        env = np.exp(-(t1[:, None] + t2[None, :]) / decay_time)
        out = 0.5 + (out - 0.5) * env
    return out.reshape(lead + (t1.size, t2.size))


def random_maps(
    n_maps: int,
    rng: np.random.Generator,
    *,
    m: int = 2,
    t1: np.ndarray | None = None,
    t2: np.ndarray | None = None,
    **cluster_kw,
) -> tuple[np.ndarray, np.ndarray]:
    """Random clusters (`random_clusters`) and their noiseless maps on the default grid.

    Returns ``(maps, positions)`` with maps (n_maps, T1, T2) and positions (n_maps, m, 3) m.
    """
    pos = random_clusters(n_maps, rng, m=m, **cluster_kw)
    return simulate_map(pos, t1=t1, t2=t2), pos


def shot_noise(
    population: np.ndarray,
    rng: np.random.Generator,
    *,
    shots: int = 150_000,
    bright: float = 0.03,
    contrast: float = 0.3,
) -> np.ndarray:
    """Measured P(ms=0) with photon shot noise (physics.md section 2).

    Counts ``Poisson(shots (a1 + (a0 - a1) P0))`` with ``a0 = bright``, ``a1 = a0 (1 -
    contrast)``, normalized with noiseless references (ms=0 and ms=-1 levels).

    Parameters
    ----------
    population : array
        True P(ms=0) in [0, 1].
    rng : numpy.random.Generator
    shots : int
        Shots averaged per point.
    bright : float
        Mean detected photons per shot in ms=0.
    contrast : float
        Relative brightness drop in ms=-1.
    """
    p = np.asarray(population, dtype=float)
    if np.any(~np.isfinite(p)) or np.any((p < -1e-9) | (p > 1 + 1e-9)):
        raise ValueError("population must be finite and in [0, 1]")
    a0, a1 = bright, bright * (1 - contrast)
    counts = rng.poisson(shots * (a1 + (a0 - a1) * np.clip(p, 0, 1)))
    return (counts / shots - a1) / (a0 - a1)


class CosyModel:
    """NV physics model for COSY programs (``program.metadata["sequence"] == "cosy"``).

    Implements the ``handles(program)`` / ``population(program)`` interface of
    `mracq.sim.nv`. Reads ``t1``, ``t2`` (s) and, when present, ``tau`` (s) and ``n``
    from ``program.metadata``.

    Parameters
    ----------
    positions : array (m, 3), optional
        Nuclear positions in m. Default: a 13C pair near the NV whose COSY map has
        cross peaks on the experiment's grid (``default_pair``).
    b_field : float
        Field along the NV axis in T.
    decay_time : float, optional
        Nuclear coherence time in s (None: no decay).
    """

    def __init__(
        self,
        positions: np.ndarray | None = None,
        *,
        b_field: float = B_FIELD,
        decay_time: float | None = None,
    ) -> None:
        self.positions = default_pair() if positions is None else np.asarray(positions, float)
        self.b_field = float(b_field)
        self.decay_time = decay_time
        a = hyperfine_from_positions(self.positions)
        d = dipolar_tensors(self.positions)
        self._h = nuclear_hamiltonians(a, d, self.b_field)
        self._cache: dict[tuple[float, int], CosyPropagators] = {}

    def handles(self, program) -> bool:
        """True for COSY programs."""
        md = getattr(program, "metadata", None) or {}
        return md.get("sequence") == "cosy"

    def _prop(self, tau: float, n: int) -> CosyPropagators:
        key = (float(tau), int(n))
        if key not in self._cache:
            self._cache[key] = cosy_propagators(*self._h, tau=tau, n=n)
        return self._cache[key]

    def population(self, program) -> float:
        """P(ms=0) at readout for one shot of a COSY ``program``."""
        md = program.metadata
        t1, t2 = float(md["t1"]), float(md["t2"])
        if not (t1 >= 0 and t2 >= 0):
            raise ValueError(f"t1, t2 must be >= 0 s, got {t1}, {t2}")
        p = float(self._prop(md.get("tau", TAU), md.get("n", N_PULSES)).population(t1, t2)[0, 0])
        if self.decay_time is not None:
            p = 0.5 + (p - 0.5) * np.exp(-(t1 + t2) / self.decay_time)
        return p

    def map(self, t1: np.ndarray | None = None, t2: np.ndarray | None = None) -> np.ndarray:
        """Noiseless map of this cluster (see `simulate_map`)."""
        return simulate_map(
            self.positions, t1=t1, t2=t2, b_field=self.b_field, decay_time=self.decay_time
        )


def default_pair() -> np.ndarray:
    """Positions (m) of the default 13C pair used by `CosyModel` (about 1 nm above the NV)."""
    c = np.array([0.25e-9, 0.0, 0.95e-9])
    half = 0.5 * 0.154e-9 * np.array([0.6, 0.0, 0.8])
    return np.stack([c - half, c + half])


def default_cosy_model() -> CosyModel:
    """The COSY model of the default simulated NV (`mracq.devices.nv_physics_models`): the
    `default_pair` 13C dimer at B = 158 mT, independent of the device's ``field`` setting."""
    return CosyModel()
