"""Families of NV-13C clusters and their COSY maps: what DLNet is trained and judged on.

Every family gives noiseless maps on the experiment's grid (`T_GRID`, 50 x 50, 4-886 us in
18 us steps; tau = 2045 ns and N = 40 at 158 mT), each normalized to [0, 1]. Maps whose
raw peak-to-peak P(ms=0) is below ``min_ptp`` (clusters the experiment would not see) are
redrawn. The field along the NV axis is drawn per map uniformly in ``b_range`` (default
153-163 mT, the experiment's 158 mT +- 5 mT) and the pulse spacing follows it,
``tau = TAU * B_FIELD / B``, so the decoupling block stays on the same (7th) harmonic of
the 13C Larmor frequency, as a user who retunes to the field would set it; the Larmor
frequency moves by +-54 kHz, so the aliased peaks land anywhere on the grid.

Families (`FAMILIES`):

- ``"bonded_pair"``: a 13C-13C pair (C-C 0.154 nm, uniform orientation) with its centre
  0.7-1.2 nm above the NV, within 0.8 nm laterally (the original training family,
  `mracq.sim.cosy.couplings.random_clusters`).
- ``"lattice2"``, ``"lattice3"``, ``"lattice5"``: 2, 3 or 5 13C on diamond lattice sites
  near the NV (vacancy at the origin, nitrogen site excluded, NV axis [111] -> z). The
  sites are drawn uniformly without replacement among the *eligible* sites (`lattice_sites`)
  within ``radius`` (1.8 nm): sites whose hyperfine has ``|A| <= a_max`` (100 kHz: closer
  nuclei shift their frequency by more than ~0.4 of the decoupling filter's order spacing
  1/(2 tau) = 245 kHz, and the point-dipole model fails near the vacancy) and
  ``A_perp >= a_perp_min`` (5 kHz: weaker nuclei are not flipped by the 82 us correlation
  block and leave no signal). This is the natural-abundance (1.1 %) distribution
  conditioned on exactly k visible 13C: every site is 13C independently with the same
  probability. A cluster is rejected when two of its nuclei have ms=-1 frequencies closer
  than 1 / (50 x 18 us) = 1.11 kHz at 158 mT (``min_split``, not resolvable on the grid).
- ``"peptide"``: the seed's five-spin system of Fig. 11, the five 13C of two labelled
  amino acids (Ala: C-alpha, C-beta, C'; Gly: C-alpha, C'; alpha-helical backbone, as the
  helix of avian pancreatic polypeptide) as a rigid molecule at a uniformly random
  orientation, its centroid 0.7-1.0 nm above the NV (the seed: 0.8 nm) within 1.0 nm
  laterally, every nucleus at least 0.5 nm from the NV (`peptide_template`).
- ``"couplings"``: an independent description by couplings, not positions: 2 or 3 spins
  (equally likely), per nucleus ``A_zz`` uniform in +-60 kHz, ``A_perp`` uniform in
  8-50 kHz at a uniform azimuth; per pair a dipolar tensor ``d (1 - 3 n n^T)`` with ``d``
  uniform in 0.3-3 kHz and ``n`` a uniform random direction.

`add_noise` adds Gaussian or photon-shot noise to normalized maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mracq.sim.cosy.couplings import (
    GAMMA_13C,
    dipolar_tensors,
    hyperfine_from_positions,
    random_clusters,
)
from mracq.sim.cosy.model import B_FIELD, T_GRID, TAU, simulate_map

FAMILIES = ("bonded_pair", "lattice2", "lattice3", "lattice5", "peptide", "couplings")
"""Names accepted by `family_maps` and `family_couplings`."""

B_RANGE = (0.153, 0.163)
"""Default range (T) of the field along the NV axis, drawn uniformly per map."""
DIAMOND_A = 0.3567e-9
"""Diamond lattice constant in m."""
KHZ = 2 * np.pi * 1e3
"""1 kHz in rad/s."""
MIN_SPLIT = 1.0 / (T_GRID.size * (T_GRID[1] - T_GRID[0]))
"""Frequency resolution of the grid in Hz (1.11 kHz): lattice nuclei closer are rejected."""

_LATTICE_M = {"lattice2": 2, "lattice3": 3, "lattice5": 5}


@dataclass(frozen=True)
class Clusters:
    """Couplings of ``n`` clusters of ``m`` nuclei and the settings of their maps.

    Attributes
    ----------
    hyperfine : array (n, m, 3)
        (Azx, Azy, Azz) in rad/s (convention of `mracq.sim.cosy.couplings`).
    dipolar : array (n, m, m, 3, 3)
        Pair tensors in rad/s (i < j filled).
    b_field : array (n,)
        Field along the NV axis in T.
    tau : array (n,)
        Decoupling pi-pulse spacing in s.
    positions : array (n, m, 3) or None
        Nuclear positions in m (None for the ``"couplings"`` family).
    """

    hyperfine: np.ndarray
    dipolar: np.ndarray
    b_field: np.ndarray
    tau: np.ndarray
    positions: np.ndarray | None = None

    def maps(self) -> np.ndarray:
        """Raw noiseless P(ms=0) maps (n, 50, 50) on the experiment's grid."""
        batch = max(8, 4096 // 4 ** self.hyperfine.shape[1])
        return simulate_map(hyperfine=self.hyperfine, dipolar=self.dipolar,
                            b_field=self.b_field, tau=self.tau, batch=batch)

    def __getitem__(self, idx) -> Clusters:
        pos = None if self.positions is None else self.positions[idx]
        return Clusters(self.hyperfine[idx], self.dipolar[idx], self.b_field[idx],
                        self.tau[idx], pos)


def _fields(n: int, rng: np.random.Generator, b_range) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = (float(b) for b in b_range)
    if not 0 < lo <= hi:
        raise ValueError(f"b_range must be 0 < lo <= hi (T), got {b_range}")
    b = rng.uniform(lo, hi, size=n)
    return b, TAU * B_FIELD / b


def _nv_frame() -> np.ndarray:
    """Rotation taking the NV axis [111] to z (rows: new x, y, z in crystal axes)."""
    z = np.ones(3) / np.sqrt(3)
    x = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    return np.stack([x, np.cross(z, x), z])


@lru_cache(maxsize=8)
def lattice_sites(
    radius: float = 1.8e-9, a_max: float = 100e3, a_perp_min: float = 5e3
) -> np.ndarray:
    """Eligible diamond lattice sites near an NV, positions (k, 3) in m (NV axis z).

    Sites within ``radius`` (m) of the vacancy (origin), excluding the vacancy and the
    nitrogen at a/4 (1, 1, 1), with hyperfine ``|A| <= a_max`` and ``A_perp >= a_perp_min``
    (both in Hz).
    """
    k = int(np.ceil(4 * radius / DIAMOND_A)) + 1
    g = np.arange(-k, k + 1)
    x, y, z = (c.ravel() for c in np.meshgrid(g, g, g, indexing="ij"))
    even = (x % 2 == 0) & (y % 2 == 0) & (z % 2 == 0) & ((x + y + z) % 4 == 0)
    odd = (x % 2 == 1) & (y % 2 == 1) & (z % 2 == 1) & ((x + y + z) % 4 == 3)
    pts = np.stack([x, y, z], -1)[even | odd] * (DIAMOND_A / 4)
    pts = pts @ _nv_frame().T
    r = np.linalg.norm(pts, axis=-1)
    nitrogen = np.ones(3) / np.sqrt(3) * (DIAMOND_A * np.sqrt(3) / 4)
    keep = (r > 1e-12) & (r <= radius) & (np.linalg.norm(pts - nitrogen, axis=-1) > 1e-12)
    pts = pts[keep]
    a = hyperfine_from_positions(pts[:, None, :])[:, 0] / (2 * np.pi)
    ok = (np.linalg.norm(a, axis=-1) <= a_max) & (np.hypot(a[:, 0], a[:, 1]) >= a_perp_min)
    return pts[ok]


def _ms1_freqs(hyperfine: np.ndarray, b_field: np.ndarray, gamma_n: float) -> np.ndarray:
    wl = np.zeros(hyperfine.shape)
    wl[..., 2] = (gamma_n * b_field)[:, None]
    return np.linalg.norm(wl - hyperfine, axis=-1) / (2 * np.pi)


def _lattice(n, rng, m, radius=1.8e-9, a_max=100e3, a_perp_min=5e3, min_split=MIN_SPLIT):
    sites = lattice_sites(radius, a_max, a_perp_min)
    if len(sites) < m:
        raise ValueError(f"only {len(sites)} eligible lattice sites for {m} spins")
    out = []
    have = 0
    while have < n:
        k = 2 * (n - have) + 8
        idx = np.argsort(rng.random((k, len(sites))), axis=1)[:, :m]
        pos = sites[idx]
        f = _ms1_freqs(hyperfine_from_positions(pos), np.full(k, B_FIELD), GAMMA_13C)
        split = np.abs(f[:, :, None] - f[:, None, :]) + np.eye(m)[None] * 1e12
        good = pos[split.min(axis=(1, 2)) >= min_split]
        out.append(good)
        have += len(good)
    return np.concatenate(out)[:n]


def peptide_template() -> np.ndarray:
    """Positions (5, 3) in m of the 13C of an alpha-helical Ala-Gly, centred on their mean.

    Backbone built from ideal internal coordinates (N-CA 1.458, CA-C 1.525, C-N 1.329 A;
    angles 111.2, 116.2, 121.7 deg; phi -57, psi -47, omega 180 deg), C-beta placed at the
    ideal tetrahedral position. Order: Ala CA, CB, C'; Gly CA, C'.
    """

    def place(a, b, c, bond, angle, torsion):
        bc = c - b
        bc /= np.linalg.norm(bc)
        nrm = np.cross(b - a, bc)
        nrm /= np.linalg.norm(nrm)
        ang, tor = np.deg2rad(angle), np.deg2rad(torsion)
        d2 = bond * np.array([-np.cos(ang), np.sin(ang) * np.cos(tor), np.sin(ang) * np.sin(tor)])
        mat = np.stack([bc, np.cross(nrm, bc), nrm], axis=1)
        return c + mat @ d2

    bonds = {"N-CA": 1.458, "CA-C": 1.525, "C-N": 1.329}
    ang = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7}
    phi, psi, omega = -57.0, -47.0, 180.0
    n1 = np.array([0.0, 0.0, 0.0])
    ca1 = np.array([bonds["N-CA"], 0.0, 0.0])
    th = np.deg2rad(180 - ang["N-CA-C"])
    c1 = ca1 + bonds["CA-C"] * np.array([np.cos(th), np.sin(th), 0.0])
    n2 = place(n1, ca1, c1, bonds["C-N"], ang["CA-C-N"], psi)
    ca2 = place(ca1, c1, n2, bonds["N-CA"], ang["C-N-CA"], omega)
    c2 = place(c1, n2, ca2, bonds["CA-C"], ang["N-CA-C"], phi)
    b, c = ca1 - n1, c1 - ca1
    cb1 = -0.58273431 * np.cross(b, c) + 0.56802827 * b - 0.54067466 * c + ca1
    pos = np.stack([ca1, cb1, c1, ca2, c2]) * 1e-10
    return pos - pos.mean(axis=0)


def _couplings_family(n, rng, spins=(2, 3), a_zz=60e3, a_perp=(8e3, 50e3), dip=(0.3e3, 3e3)):
    m = int(rng.choice(spins))
    azz = rng.uniform(-a_zz, a_zz, size=(n, m))
    ap = rng.uniform(*a_perp, size=(n, m))
    az = rng.uniform(0, 2 * np.pi, size=(n, m))
    hyp = KHZ / 1e3 * np.stack([ap * np.cos(az), ap * np.sin(az), azz], -1)
    d = np.zeros((n, m, m, 3, 3))
    for i in range(m):
        for j in range(i + 1, m):
            u = rng.normal(size=(n, 3))
            u /= np.linalg.norm(u, axis=-1, keepdims=True)
            mag = KHZ / 1e3 * rng.uniform(*dip, size=n)
            d[:, i, j] = mag[:, None, None] * (np.eye(3) - 3 * u[:, :, None] * u[:, None, :])
    return hyp, d


def family_couplings(
    family: str, n: int, rng: np.random.Generator, *, b_range=B_RANGE, **options
) -> Clusters | list[Clusters]:
    """Draw ``n`` clusters of ``family`` (module docstring) with fields in ``b_range`` (T).

    ``options`` are passed to the family's generator: ``"bonded_pair"``/``"peptide"``:
    `random_clusters` keywords (``height``, ``lateral``, ``min_distance``); lattice
    families: ``radius`` (m), ``a_max``, ``a_perp_min``, ``min_split`` (Hz);
    ``"couplings"``: ``spins`` (tuple of spin counts), ``a_zz`` (Hz), ``a_perp``, ``dip``
    ((lo, hi) Hz).

    Returns `Clusters` (for ``"couplings"`` the spin count is drawn once per call; use
    `family_maps`, which mixes 2 and 3 spins per map).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    b, tau = _fields(n, rng, b_range)
    if family == "couplings":
        hyp, d = _couplings_family(n, rng, **options)
        return Clusters(hyp, d, b, tau)
    if family == "bonded_pair":
        pos = random_clusters(n, rng, m=2, **options)
    elif family == "peptide":
        kw = {"height": (0.7e-9, 1.0e-9), "lateral": 1.0e-9, "min_distance": 0.5e-9, **options}
        pos = random_clusters(n, rng, template=peptide_template(), **kw)
    else:
        pos = _lattice(n, rng, _LATTICE_M[family], **options)
    return Clusters(hyperfine_from_positions(pos), dipolar_tensors(pos), b, tau, pos)


def family_maps(
    family: str,
    n: int,
    rng: np.random.Generator,
    *,
    min_ptp: float = 0.05,
    return_clusters: bool = False,
    **options,
):
    """``n`` noiseless COSY maps (n, 50, 50) of ``family``, each normalized to [0, 1].

    Parameters
    ----------
    family : str
        One of `FAMILIES` (module docstring).
    n : int
        Number of maps.
    rng : numpy.random.Generator
        Random source (the maps are a deterministic function of its state).
    min_ptp : float
        Clusters whose raw map has peak-to-peak P(ms=0) below this are redrawn.
    return_clusters : bool
        Also return the `Clusters` of the kept maps (couplings, fields, spacings).
    **options
        ``b_range`` ((lo, hi) T, default `B_RANGE`) and the family's options
        (`family_couplings`).

    Returns
    -------
    maps : array (n, 50, 50)
        Normalized maps ``(P - min P) / ptp(P)``.
    clusters : list of Clusters
        Only with ``return_clusters``: the kept clusters, one `Clusters` per spin count
        drawn, in the order of the maps.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    maps, kept = [], []
    have = 0
    while have < n:
        k = max(2 * (n - have), 16)
        if family == "couplings":
            # mix spin counts per map: draw a block per count, interleave by a random order
            spins = options.get("spins", (2, 3))
            counts = rng.multinomial(k, [1 / len(spins)] * len(spins))
            parts = [family_couplings(family, c, rng, **{**options, "spins": (s,)})
                     for s, c in zip(spins, counts, strict=True) if c]
        else:
            parts = [family_couplings(family, k, rng, **options)]
        for cl in parts:
            raw = cl.maps()
            ok = np.ptp(raw, axis=(1, 2)) >= min_ptp
            if ok.any():
                maps.append(raw[ok])
                kept.append(cl[ok])
                have += int(ok.sum())
    raw = np.concatenate(maps)
    order = rng.permutation(len(raw))[:n]
    raw = raw[order]
    lo = raw.min(axis=(1, 2), keepdims=True)
    out = (raw - lo) / np.ptp(raw, axis=(1, 2), keepdims=True)
    if not return_clusters:
        return out
    sizes = np.cumsum([0] + [len(c.b_field) for c in kept])
    sel = []
    for i, c in enumerate(kept):
        local = order[(order >= sizes[i]) & (order < sizes[i + 1])] - sizes[i]
        if len(local):
            sel.append((np.flatnonzero((order >= sizes[i]) & (order < sizes[i + 1])), c[local]))
    return out, sel


def add_noise(
    maps: np.ndarray,
    sigma,
    rng: np.random.Generator,
    kind: str = "gaussian",
    *,
    contrast: float = 0.3,
) -> np.ndarray:
    """Noisy copies of normalized maps (..., n1, n2).

    Parameters
    ----------
    maps : array (..., n1, n2)
        Noiseless maps in [0, 1].
    sigma : float or array
        Noise rms on the [0, 1] scale; an array broadcasts against the leading shape
        ``...`` (one sigma per map).
    rng : numpy.random.Generator
    kind : {"gaussian", "shot"}
        ``"gaussian"``: ``maps + sigma N(0, 1)``. ``"shot"``: photon-count noise. The map
        value x is read as the bright fraction of a readout with ``contrast`` c: the counts
        are ``Poisson(N (1 - c + c x))`` and the noisy map is ``(counts / N - (1 - c)) / c``
        (unbiased, variance ``(1 - c + c x) / (N c^2)``, larger where the map is bright).
        ``N`` is set per map so that this variance averaged over the map is ``sigma^2``:
        the rms equals ``sigma`` on average, and with sigma 0.3 about 100 photons per
        point make the noise visibly discrete and skewed.
    contrast : float
        Readout contrast c in (0, 1] for ``"shot"``.

    Returns
    -------
    array like ``maps``
    """
    x = np.asarray(maps, dtype=float)
    if x.ndim < 2:
        raise ValueError(f"maps must have shape (..., n1, n2), got {x.shape}")
    s = np.asarray(sigma, dtype=float)
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    s = np.broadcast_to(s, x.shape[:-2])[..., None, None]
    if kind == "gaussian":
        return x + s * rng.normal(size=x.shape)
    if kind != "shot":
        raise ValueError(f"unknown noise kind {kind!r}; choose 'gaussian' or 'shot'")
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    if np.any((x < -1e-9) | (x > 1 + 1e-9)):
        raise ValueError("shot noise needs maps in [0, 1]")
    c = contrast
    bright = 1 - c + c * np.clip(x, 0, 1)
    with np.errstate(divide="ignore"):
        photons = np.where(s > 0, bright.mean(axis=(-2, -1), keepdims=True) / (s * c) ** 2,
                           np.inf)
    finite = np.isfinite(photons)
    lam = np.where(finite, photons * bright, 0.0)
    counts = rng.poisson(lam)
    noisy = (counts / np.where(finite, photons, 1.0) - (1 - c)) / c
    return np.where(finite, noisy, x)


__all__ = ["B_RANGE", "FAMILIES", "Clusters", "add_noise", "family_couplings", "family_maps",
           "lattice_sites", "peptide_template"]
