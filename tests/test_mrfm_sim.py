"""MRFM physics: field calibration (Table 2), PSF, noise model, phantom."""

import numpy as np
import pytest

from mracq.sim.mrfm.field import (
    GAMMA_1H_HZ_PER_T,
    SEED_F0,
    TABLE2,
    TABLE2_VALID,
    CylinderMagnet,
    calibrate_surface_offset,
    on_axis_frequency,
    slice_extension,
    table2_relative_errors,
)
from mracq.sim.mrfm.noise import noise_std, quadrature_variances, thermal_variance
from mracq.sim.mrfm.phantom import sphere_phantom
from mracq.sim.mrfm.psf import MU_1H, psf_blocks
from mracq.sim.mrfm.setup import default_setup


def test_on_axis_field_matches_closed_form():
    m = CylinderMagnet()
    z = np.array([20e-9, 45e-9, 80e-9])
    d = z - m.surface_offset
    r, h, j = m.radius, m.height, m.polarization
    bz = j / 2 * ((d + h) / np.sqrt((d + h) ** 2 + r**2) - d / np.sqrt(d**2 + r**2))
    f = on_axis_frequency(m, z, b0=3.0)
    np.testing.assert_allclose(f, GAMMA_1H_HZ_PER_T * (3.0 + bz), rtol=1e-10)


def test_rounded_edge_magnet_matches_quadrature_on_axis():
    """Disc-stack rim vs the exact rounded profile: Bz on axis = J/2 int r^2/(r^2+d^2)^1.5."""
    from scipy.integrate import quad

    re = 10e-9
    m = CylinderMagnet(edge_radius=re, surface_offset=6.7e-9)
    top, r0 = m.surface_offset, m.radius

    def radius(zp):  # exact profile of the rounded solid
        rise = zp - (top - re)
        return r0 if rise <= 0 else r0 - re + np.sqrt(max(re**2 - rise**2, 0.0))

    for z in (20e-9, 45e-9):
        def integrand(zp, z=z):
            r = radius(zp)
            return r**2 / (r**2 + (z - zp) ** 2) ** 1.5

        body = quad(integrand, top - m.height, top - re, limit=200)[0]
        rim = quad(integrand, top - re, top, limit=200)[0]
        bz = m.polarization / 2 * (body + rim)
        _, bz_model = m.field_rz(np.array(0.0), np.array(z))
        assert float(bz_model) == pytest.approx(bz, rel=2e-4)
    # a disc at distance d adds r^2/(r^2+d^2)^1.5, largest at r = sqrt(2) d: near the top the
    # removed rim (r = 40-50 nm > sqrt(2) 13 nm) pulled Bz down, so the rounded magnet is
    # stronger on axis than the plain cylinder with the same top face
    plain = CylinderMagnet(surface_offset=6.7e-9)
    assert m.field_rz(0.0, 20e-9)[1] > plain.field_rz(0.0, 20e-9)[1]
    # vanishing rim -> plain cylinder
    tiny = CylinderMagnet(edge_radius=1e-12, n_edge=1, surface_offset=6.7e-9)
    pts = np.array([[0, 0, 30e-9], [40e-9, 0, 20e-9], [70e-9, 0, 10e-9]])
    np.testing.assert_allclose(tiny.field(pts), plain.field(pts), atol=1e-8)
    with pytest.raises(ValueError, match="edge_radius"):
        CylinderMagnet(edge_radius=60e-9)


def test_table2_within_two_percent():
    err = table2_relative_errors(CylinderMagnet())
    assert err.size == 46
    assert np.max(np.abs(err)) < 0.02
    # the slice extensions of the seed's first and last pulse, within 1 nm
    ext = slice_extension(CylinderMagnet(), SEED_F0[[0, -1]])
    np.testing.assert_allclose(ext, [24e-9, 70e-9], atol=1e-9)
    assert TABLE2.shape == (47, 2) and TABLE2_VALID.sum() == 46


def test_calibration_reproduces_offset():
    off, worst = calibrate_surface_offset()
    assert abs(off - 6.589e-9) < 0.02e-9
    assert worst < 0.0181


def test_psf_membrane_matches_gradient_on_axis():
    m = CylinderMagnet()
    dx = 1e-9
    z = np.array([40.5e-9])
    # slice centred on the on-axis frequency of this layer
    f_c = on_axis_frequency(m, z)[0]
    g, psf = psf_blocks(m, [f_c], [0.0], z, 16, dx, "membrane", 500e3, n_sub=1,
                        return_psf_row=0)
    h = 1e-12
    dbz = (on_axis_frequency(m, z + h) - on_axis_frequency(m, z - h))[0] / (2 * h)
    dbz /= GAMMA_1H_HZ_PER_T
    expected = dbz**2 * MU_1H**2 * dx**3
    assert psf[0, 0, 0] == pytest.approx(expected, rel=2e-3)
    # G is the lateral DFT of the PSF
    assert g[0, 0, 0, 0] == pytest.approx(psf[0].sum(), rel=1e-12)


def test_cantilever_psf_vanishes_on_axis_and_along_y():
    m = CylinderMagnet()
    z = np.array([30.5e-9])
    _, psf = psf_blocks(m, [140e6], [0.0], z, 64, 2e-9, "cantilever", return_psf_row=0)
    assert psf[0, 0, 0] == 0.0
    assert np.all(psf[0, 0, :] == 0.0)  # x = 0 column: dBz/dx = 0
    assert psf.max() > 0


def test_noise_model_formulas():
    th = thermal_variance(10e-18, 40.0)
    assert th == pytest.approx(4e-33)
    s = 2e-33
    k = 30.0 / 20e-3
    xyz = noise_std(s, 30.0, "xyz", tau_m=20e-3)
    ms = noise_std(s, 30.0, "multislice", n_f=46, tau_m=20e-3)
    assert xyz == pytest.approx(np.sqrt(2 / (k - 1)) * np.sqrt(s**2 + 2 * s * th + 2 * th**2))
    assert ms == pytest.approx(np.sqrt(2 / (k - 1)) * np.sqrt(s**2 + 2 * s * th
                                                              + (1 + 1 / 46) * th**2))
    with pytest.raises(ValueError, match="t_m"):
        noise_std(s, 0.01)


def test_quadrature_variances_standard_error():
    rng = np.random.default_rng(3)
    s = np.full(20000, 3e-33)
    vin, vout = quadrature_variances(s, 2.0, rng)
    k = 2.0 / 20e-3
    th = 4e-33
    assert np.mean(vin) == pytest.approx(s[0] + th, rel=0.01)
    assert np.std(vin) == pytest.approx(np.sqrt(2 / (k - 1)) * (s[0] + th), rel=0.03)
    assert np.std(vout) == pytest.approx(np.sqrt(2 / (k - 1)) * th, rel=0.03)


def test_sphere_phantom_statistics():
    rng = np.random.default_rng(0)
    o = sphere_phantom((64, 64, 46), 1e-9, rng)
    inside = o > 0
    assert inside.sum() == pytest.approx(4 / 3 * np.pi * 20**3, rel=0.03)
    assert o[inside].mean() == pytest.approx(60e27, rel=0.02)
    assert o[inside].std() == pytest.approx(18.9e27, rel=0.05)


def test_setup_forward_and_measure():
    s = default_setup("membrane", "multislice", voxel_size=2e-9, n_xy=64, n_z=23,
                      f0=SEED_F0[::3])
    assert s.sample_shape == (64, 64, 23)
    assert s.data_shape == (64, 64, 16)
    rng = np.random.default_rng(1)
    o = s.phantom(rng)
    clean = s.forward(o)
    # linearity and a point source giving the PSF
    np.testing.assert_allclose(s.forward(2 * o), 2 * clean, rtol=1e-12)
    assert clean.min() > -1e-6 * clean.max()
    noisy = s.measure(o, 30.0, rng)
    resid = (noisy - clean) / s.noise_std(clean, 30.0)
    assert abs(resid.std() - 1) < 0.02
    with pytest.raises(ValueError, match="shape"):
        s.forward(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        s.forward(np.full(s.sample_shape, np.nan))
