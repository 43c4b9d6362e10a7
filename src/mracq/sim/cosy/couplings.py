"""Couplings of an NV centre to a cluster of 13C nuclei, from nuclear positions.

Geometry: the NV electron sits at the origin and the NV axis is +z (the static field is
along it). Positions are in m, couplings in rad/s.

Hyperfine (point dipole, secular in the NV {ms=0, ms=-1} subspace, only the ``z`` row of
the tensor matters)::

    A_zj = (mu0 hbar gamma_e gamma_n / (4 pi r^3)) (delta_zj - 3 rz rj / r^2)

The sign is chosen so that the Hamiltonian of physics.md section 3,
``H = Sz A.I + wL Iz`` with ``wL = +gamma_n B``, has the physical nuclear frequencies (the
electron moment is antiparallel to its spin): with ``Sz = -1`` the nuclear frequency is
``|wL z + A_z|``, which for a nucleus on the NV axis is ``wL + 2 a0`` (``a0`` the prefactor).

Nuclear-nuclear dipolar coupling between nuclei i and j (both 13C)::

    H_ij = sum_ab D_ab I_i^a I_j^b,  D = (mu0 hbar gamma_n^2 / (4 pi r^3)) (1 - 3 r r^T / r^2)

which equals physics.md's ``J (3 (I1.r)(I2.r) - I1.I2)`` with ``J = -mu0 hbar gamma_n^2 /
(4 pi r^3)``.
"""

from __future__ import annotations

import numpy as np

MU0_OVER_4PI = 1e-7
"""mu0 / (4 pi) in T m / A."""
HBAR = 1.054571817e-34
"""Reduced Planck constant in J s."""
GAMMA_E = 2 * np.pi * 28.024951e9
"""NV electron gyromagnetic ratio (magnitude) in rad/s/T."""
GAMMA_13C = 2 * np.pi * 10.7084e6
"""13C gyromagnetic ratio in rad/s/T."""
CC_BOND = 0.154e-9
"""C-C single bond length in m."""


def _check_positions(positions: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions, dtype=float)
    if pos.ndim < 2 or pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape (..., m, 3), got {pos.shape}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    return pos


def hyperfine_from_positions(positions: np.ndarray, gamma_n: float = GAMMA_13C) -> np.ndarray:
    """Secular hyperfine vectors (Azx, Azy, Azz) of nuclei at ``positions``.

    Parameters
    ----------
    positions : array, shape (..., m, 3)
        Nuclear positions in m relative to the NV electron, NV axis along z.
    gamma_n : float
        Nuclear gyromagnetic ratio in rad/s/T.

    Returns
    -------
    array, shape (..., m, 3)
        Hyperfine components in rad/s (sign convention in the module docstring).
    """
    pos = _check_positions(positions)
    r = np.linalg.norm(pos, axis=-1, keepdims=True)
    if np.any(r < 1e-11):
        raise ValueError(f"a nucleus sits within 0.01 nm of the NV: min r = {r.min():.3g} m")
    a0 = MU0_OVER_4PI * HBAR * GAMMA_E * gamma_n / r**3
    n = pos / r
    a = -3.0 * n[..., 2:3] * n
    a[..., 2] += 1.0
    return a0 * a


def dipolar_tensors(positions: np.ndarray, gamma_n: float = GAMMA_13C) -> np.ndarray:
    """Nuclear-nuclear dipolar tensors D_ij (rad/s) for every pair i < j.

    Parameters
    ----------
    positions : array, shape (..., m, 3)
        Nuclear positions in m.
    gamma_n : float
        Nuclear gyromagnetic ratio in rad/s/T (all nuclei of the same species).

    Returns
    -------
    array, shape (..., m, m, 3, 3)
        ``D[..., i, j]`` for i < j; zeros on and below the diagonal.
    """
    pos = _check_positions(positions)
    m = pos.shape[-2]
    out = np.zeros(pos.shape[:-2] + (m, m, 3, 3))
    for i in range(m):
        for j in range(i + 1, m):
            d = pos[..., j, :] - pos[..., i, :]
            r = np.linalg.norm(d, axis=-1)
            if np.any(r < 1e-11):
                raise ValueError(f"nuclei {i} and {j} coincide (r = {r.min():.3g} m)")
            n = d / r[..., None]
            pref = MU0_OVER_4PI * HBAR * gamma_n**2 / r**3
            out[..., i, j, :, :] = pref[..., None, None] * (
                np.eye(3) - 3.0 * n[..., :, None] * n[..., None, :]
            )
    return out


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly (Haar) via random unit quaternions."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def cluster_template(m: int, rng: np.random.Generator, bond: float = CC_BOND) -> np.ndarray:
    """A random carbon chain of ``m`` atoms (bond ``bond`` m, tetrahedral bond angles).

    Returns positions (m, 3) in m centred on their mean.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    pos = [np.zeros(3)]
    direction = np.array([0.0, 0.0, 1.0])
    cos_t = np.cos(np.deg2rad(109.5))
    for _ in range(1, m):
        # new bond at the tetrahedral angle to the previous one, random azimuth
        perp = np.cross(direction, rng.normal(size=3))
        perp /= np.linalg.norm(perp)
        new = -cos_t * direction + np.sqrt(1 - cos_t**2) * perp
        new = -new if len(pos) == 1 else new
        pos.append(pos[-1] + bond * new)
        direction = new
    p = np.array(pos)
    return p - p.mean(axis=0)


def random_clusters(
    n: int,
    rng: np.random.Generator,
    *,
    m: int = 2,
    template: np.ndarray | None = None,
    height: tuple[float, float] = (0.7e-9, 1.2e-9),
    lateral: float = 0.8e-9,
    min_distance: float = 0.4e-9,
) -> np.ndarray:
    """Random 13C clusters near an NV (the seed's Fig. 11 construction).

    A rigid cluster (``template``, or a fresh random chain of ``m`` carbons per cluster)
    is rotated uniformly at random and its centre placed at a height drawn uniformly in
    ``height`` along the NV axis and at a lateral offset drawn uniformly in a disk of
    radius ``lateral``.

    Parameters
    ----------
    n : int
        Number of clusters.
    rng : numpy.random.Generator
        Random source.
    m : int
        Nuclei per cluster when ``template`` is None.
    template : array (m, 3), optional
        Fixed relative positions in m (a molecule); centred before use.
    height : (float, float)
        Range of the cluster centre's z coordinate in m.
    lateral : float
        Radius in m of the disk of lateral offsets.
    min_distance : float
        Minimum NV-nucleus distance in m; clusters closer are redrawn.

    Returns
    -------
    array, shape (n, m, 3)
        Positions in m.
    """
    if template is not None:
        t = np.asarray(template, dtype=float)
        t = t - t.mean(axis=0)
        m = t.shape[0]
    out = np.empty((n, m, 3))
    filled = 0
    while filled < n:
        k = n - filled
        rot = random_rotations(k, rng)
        if template is None:
            base = np.stack([cluster_template(m, rng) for _ in range(k)])
        else:
            base = np.broadcast_to(t, (k, m, 3))
        body = np.einsum("kab,kmb->kma", rot, base)
        rad = lateral * np.sqrt(rng.uniform(size=k))
        phi = rng.uniform(0, 2 * np.pi, size=k)
        centre = np.stack(
            [rad * np.cos(phi), rad * np.sin(phi), rng.uniform(height[0], height[1], size=k)], -1
        )
        pos = body + centre[:, None, :]
        ok = np.linalg.norm(pos, axis=-1).min(axis=-1) >= min_distance
        good = pos[ok]
        out[filled : filled + len(good)] = good
        filled += len(good)
    return out
