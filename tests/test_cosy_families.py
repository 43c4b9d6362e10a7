"""COSY training/benchmark families: shapes, ranges, couplings in their stated ranges, noise."""

import numpy as np
import pytest

from mracq.sim.cosy.couplings import CC_BOND, hyperfine_from_positions
from mracq.sim.cosy.families import (
    B_RANGE,
    DIAMOND_A,
    FAMILIES,
    MIN_SPLIT,
    add_noise,
    family_couplings,
    family_maps,
    lattice_sites,
    peptide_template,
)
from mracq.sim.cosy.model import B_FIELD, T_GRID, TAU, nuclear_hamiltonians, simulate_map

KHZ = 2e3 * np.pi


def _pair_dists(pos):
    m = pos.shape[-2]
    return np.array([np.linalg.norm(pos[..., i, :] - pos[..., j, :], axis=-1)
                     for i in range(m) for j in range(i + 1, m)])


@pytest.mark.parametrize("family", FAMILIES)
def test_family_maps_shape_range_and_reproducible(family):
    n = 6 if family in ("lattice5", "peptide") else 12
    maps, sel = family_maps(family, n, np.random.default_rng(7), return_clusters=True)
    assert maps.shape == (n, T_GRID.size, T_GRID.size)
    assert np.allclose(maps.min(axis=(1, 2)), 0) and np.allclose(maps.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(maps, family_maps(family, n, np.random.default_rng(7)))
    assert not np.allclose(maps, family_maps(family, n, np.random.default_rng(8)))
    # the returned clusters reproduce the maps (raw ptp >= min_ptp) and their fields
    for idx, cl in sel:
        raw = cl.maps()
        assert np.all(np.ptp(raw, axis=(1, 2)) >= 0.05)
        lo = raw.min(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose((raw - lo) / np.ptp(raw, axis=(1, 2), keepdims=True),
                                   maps[idx], atol=1e-12)
        assert np.all((cl.b_field >= B_RANGE[0]) & (cl.b_field <= B_RANGE[1]))
        np.testing.assert_allclose(cl.tau * cl.b_field, TAU * B_FIELD)
    assert sum(len(i) for i, _ in sel) == n


def test_couplings_family_in_stated_ranges():
    rng = np.random.default_rng(3)
    for m in (2, 3):
        cl = family_couplings("couplings", 400, rng, spins=(m,))
        a = cl.hyperfine / KHZ
        assert a.shape == (400, m, 3) and cl.positions is None
        assert np.all(np.abs(a[..., 2]) <= 60) and a[..., 2].min() < -50 and a[..., 2].max() > 50
        ap = np.hypot(a[..., 0], a[..., 1])
        assert np.all((ap >= 8) & (ap <= 50)) and ap.min() < 10 and ap.max() > 48
        az = np.arctan2(a[..., 1], a[..., 0]).ravel()
        assert np.histogram(az, 4, (-np.pi, np.pi))[0].min() > 0.15 * az.size  # all azimuths
        for i in range(m):
            for j in range(m):
                d = cl.dipolar[:, i, j] / KHZ
                if j <= i:
                    assert np.all(d == 0)
                    continue
                ev = np.linalg.eigvalsh(d)  # d (1 - 3 n n^T): eigenvalues -2d, d, d
                np.testing.assert_allclose(ev.sum(axis=1), 0, atol=1e-9)
                mag = ev[:, 2]
                assert np.all((mag >= 0.3 - 1e-9) & (mag <= 3 + 1e-9))
                np.testing.assert_allclose(ev[:, 0], -2 * mag)
    maps = family_maps("couplings", 40, rng, return_clusters=True)[1]
    assert {c.hyperfine.shape[1] for _, c in maps} == {2, 3}  # mixes spin counts


def test_lattice_sites_and_rule():
    sites = lattice_sites()
    r = np.linalg.norm(sites, axis=1)
    assert np.all(r <= 1.8e-9)
    a = hyperfine_from_positions(sites[:, None])[:, 0] / KHZ
    assert np.all(np.linalg.norm(a, axis=1) <= 100)
    assert np.all(np.hypot(a[:, 0], a[:, 1]) >= 5)
    # on the diamond lattice: every site has its 4 bonded neighbours at 0.1545 nm (if present)
    # and no two eligible sites are closer than the C-C bond
    d = np.linalg.norm(sites[:, None] - sites[None], axis=-1) + np.eye(len(sites))
    assert d.min() == pytest.approx(DIAMOND_A * np.sqrt(3) / 4, rel=1e-9)
    assert DIAMOND_A * np.sqrt(3) / 4 == pytest.approx(CC_BOND, rel=0.01)
    # the NV axis is z: the lattice has 3-fold symmetry about it
    rot = np.array([[-0.5, -np.sqrt(3) / 2, 0], [np.sqrt(3) / 2, -0.5, 0], [0, 0, 1]])
    turned = sites @ rot.T
    assert np.min(np.linalg.norm(turned[:, None] - sites[None], axis=-1), axis=1).max() < 1e-15
    for fam, m in (("lattice2", 2), ("lattice3", 3), ("lattice5", 5)):
        cl = family_couplings(fam, 50, np.random.default_rng(m))
        assert cl.positions.shape == (50, m, 3)
        # drawn among the eligible sites, no repeats
        idx = np.argmin(np.linalg.norm(cl.positions[..., None, :] - sites, axis=-1), axis=-1)
        np.testing.assert_allclose(sites[idx], cl.positions, atol=1e-20)
        assert all(len(set(row)) == m for row in idx)
        h = cl.hyperfine.copy()
        h[..., 2] -= 2 * np.pi * 10.7084e6 * B_FIELD
        f = np.linalg.norm(h, axis=-1) / (2 * np.pi)
        split = np.abs(f[:, :, None] - f[:, None, :]) + 1e9 * np.eye(m)
        assert split.min() >= MIN_SPLIT


def test_pair_and_peptide_geometry():
    cl = family_couplings("bonded_pair", 30, np.random.default_rng(0))
    np.testing.assert_allclose(_pair_dists(cl.positions), CC_BOND, rtol=1e-12)
    centre_z = cl.positions[..., 2].mean(axis=1)
    assert np.all((centre_z >= 0.7e-9) & (centre_z <= 1.2e-9))
    t = peptide_template()
    bonds = _pair_dists(t) * 1e10
    # Ala CA-CB, CA-C' and Gly CA-C' bonds (1.53, 1.525, 1.525 A); C'(Ala)-CA(Gly) via N
    assert np.sort(bonds)[:3] == pytest.approx([1.525, 1.525, 1.53], abs=0.01)
    assert 2.3 < np.linalg.norm(t[2] - t[3]) * 1e10 < 2.6
    cl = family_couplings("peptide", 40, np.random.default_rng(1))
    np.testing.assert_allclose(_pair_dists(cl.positions), _pair_dists(t)[:, None] + 0 * cl.tau,
                               rtol=1e-9)  # rigid molecule, only moved and turned
    c = cl.positions.mean(axis=1)
    assert np.all((c[:, 2] >= 0.7e-9) & (c[:, 2] <= 1.0e-9))
    assert np.all(np.hypot(c[:, 0], c[:, 1]) <= 1.0e-9)
    assert np.linalg.norm(cl.positions, axis=-1).min() >= 0.5e-9


def test_per_map_field_equals_single_maps():
    cl = family_couplings("couplings", 3, np.random.default_rng(5), spins=(2,),
                          b_range=(0.140, 0.175))
    both = simulate_map(hyperfine=cl.hyperfine, dipolar=cl.dipolar, b_field=cl.b_field,
                        tau=cl.tau, batch=2)
    for k in range(3):
        one = simulate_map(hyperfine=cl.hyperfine[k], dipolar=cl.dipolar[k],
                           b_field=float(cl.b_field[k]), tau=float(cl.tau[k]))
        np.testing.assert_allclose(both[k], one, atol=1e-12)
    h0, _ = nuclear_hamiltonians(cl.hyperfine, None, cl.b_field)
    assert h0[1, 0, 0].real == pytest.approx(2 * np.pi * 10.7084e6 * cl.b_field[1])
    with pytest.raises(ValueError, match="unknown family"):
        family_maps("dimer", 2, np.random.default_rng(0))


def test_add_noise_gaussian_and_shot_rms():
    rng = np.random.default_rng(0)
    maps = family_maps("bonded_pair", 4, rng)
    sig = np.array([0.05, 0.1, 0.2, 0.3])
    for kind in ("gaussian", "shot"):
        noisy = np.stack([add_noise(maps, sig, rng, kind) for _ in range(50)])
        rms = np.sqrt(np.mean((noisy - maps) ** 2, axis=(0, 2, 3)))
        np.testing.assert_allclose(rms, sig, rtol=0.03)
        np.testing.assert_allclose(noisy.mean(axis=0), maps, atol=5 * 0.3 / np.sqrt(50))
    # shot noise: larger where the map is bright, discrete levels
    half = np.concatenate([np.zeros((50, 50)), np.ones((50, 50))])
    two = add_noise(half, 0.1, rng, "shot")
    assert two[50:].std() > 1.1 * two[:50].std()  # variance ratio 1 / 0.7
    assert len(np.unique(np.round(add_noise(maps[:1], 0.3, rng, "shot"), 9))) < 400
    np.testing.assert_array_equal(add_noise(maps, 0.0, rng, "shot"), maps)
    with pytest.raises(ValueError, match="kind"):
        add_noise(maps, 0.1, rng, "poisson")
