"""MRFM reconstruction: operators (dot tests), ADMM blocks, Landweber, CS, reconstruct()."""

import numpy as np
import pylops
import pytest

from mracq.recon.mrfm.admm import (
    apply_inverses,
    block_inverses,
    grad3,
    grad3_adjoint,
)
from mracq.recon.mrfm.cs import cs_recover_fista, cs_recover_spgl1, estimate_noise_std
from mracq.recon.mrfm.operators import BlockScanOperator, XYZConvolution3D, operator_norm
from mracq.recon.mrfm.pipeline import normalized_problem, reconstruct
from mracq.sim.mrfm.field import SEED_F0
from mracq.sim.mrfm.psf import psf_blocks
from mracq.sim.mrfm.setup import default_setup


@pytest.fixture(scope="module")
def small_ms():
    return default_setup("membrane", "multislice", voxel_size=2e-9, n_xy=64, n_z=23,
                         f0=SEED_F0[::2])


@pytest.fixture(scope="module")
def small_xyz():
    return default_setup("cantilever", "xyz", voxel_size=2e-9, n_xy=64, n_z=12, n_heights=10)


def test_block_operator_dot_tests(small_ms, small_xyz):
    for s in (small_ms, small_xyz):
        op = BlockScanOperator(s.blocks, scale=1e30)
        assert pylops.utils.dottest(op, op.shape[0], op.shape[1], rtol=1e-10)


def test_xyz_blocks_equal_3d_convolution(small_xyz):
    s = small_xyz
    n_h = len(s.f0)
    z_ext = s.z0 + (np.arange(s.n_z + n_h - 1) + 0.5) * s.voxel_size
    _, psf = psf_blocks(s.magnet, [s.f0[0]], [0.0], z_ext, s.n_xy, s.voxel_size, s.geometry,
                        s.f_bw, s.b0, return_psf_row=0)
    conv = XYZConvolution3D(np.moveaxis(psf, 0, -1) / s.voxel_size**3 * s.voxel_size**3,
                            s.n_z, n_h)
    assert pylops.utils.dottest(conv * 1e30, conv.shape[0], conv.shape[1], rtol=1e-10)
    rng = np.random.default_rng(0)
    o = s.phantom(rng)
    np.testing.assert_allclose(s.forward(o), (conv @ o.ravel()).reshape(s.data_shape),
                               rtol=1e-8, atol=1e-12 * s.forward(o).max())


def test_grad3_adjoint():
    rng = np.random.default_rng(0)
    o = rng.standard_normal((6, 5, 4))
    d = rng.standard_normal((3, 6, 5, 4))
    assert np.vdot(grad3(o), d) == pytest.approx(np.vdot(o, grad3_adjoint(d)), rel=1e-12)


def test_block_inverses_solve_normal_equations(small_ms):
    g, *_ = normalized_problem(np.zeros(small_ms.data_shape), small_ms)
    assert operator_norm(g) == pytest.approx(1.0, rel=1e-9)
    nu1, nu2 = 0.03, 0.07
    minv = block_inverses(g, nu1, nu2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(small_ms.sample_shape)
    op = BlockScanOperator(g)
    lhs = (op.H @ (op @ x.ravel())).reshape(x.shape) + nu1 * x + nu2 * grad3_adjoint(grad3(x))
    spec = np.fft.rfft2(lhs, axes=(0, 1))
    back = np.fft.irfft2(apply_inverses(minv, spec), s=x.shape[:2], axes=(0, 1))
    np.testing.assert_allclose(back, x, atol=2e-4 * np.abs(x).max())


def _rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def test_admm_and_landweber_reconstruct(small_ms):
    s = small_ms
    rng = np.random.default_rng(4)
    o = s.phantom(rng)
    data = s.measure(o, 60.0, rng)
    x_admm = reconstruct(data, s, n_iter=30)
    x_lw = reconstruct(data, s, method="landweber", n_iter=30)
    assert x_admm.shape == s.sample_shape and x_admm.min() >= 0
    base = _rmse(0 * o, o)
    assert _rmse(x_admm, o) < 0.5 * base
    assert _rmse(x_lw, o) < base
    assert _rmse(x_admm, o) < _rmse(x_lw, o)


def test_cs_fista_matches_spgl1():
    rng = np.random.default_rng(5)
    n, nl = 24, 8
    x = np.arange(n)[:, None, None]
    y = np.arange(n)[None, :, None]
    lv = np.arange(nl)[None, None, :]
    # physical scale (N^2): the spgl1 wrapper must rescale (its tolerances are absolute)
    clean = 1e-33 * np.exp(-((x - 12) ** 2 + (y - 11) ** 2) / 30.0) * (1 + 0.1 * lv)
    sigma = 0.02e-33
    data = clean + sigma * rng.standard_normal(clean.shape)
    mask = rng.random((n, n)) < 0.5
    ours = cs_recover_fista(data, mask, noise_std=sigma, final=200)
    ref = cs_recover_spgl1(data, mask, noise_std=sigma, iter_lim=2000)
    assert _rmse(ours, ref) < 0.1 * _rmse(0 * ref, ref)
    assert _rmse(ours, clean) < 1.2 * _rmse(ref, clean)
    assert _rmse(ours, clean) < _rmse(np.where(mask[:, :, None], data, 0), clean)


def test_noise_estimate(small_ms):
    rng = np.random.default_rng(6)
    o = small_ms.phantom(rng)
    clean = small_ms.forward(o)
    data = small_ms.measure(o, 30.0, rng)
    true = np.median(small_ms.noise_std(clean, 30.0))
    assert estimate_noise_std(data) == pytest.approx(true, rel=0.3)


@pytest.mark.parametrize("per_point", [False, True])
def test_noise_estimate_with_mask_ignores_unsampled_zeros(per_point):
    """Known sigma: a smooth scan plus white noise, half the points zeroed and masked out."""
    rng = np.random.default_rng(11)
    sigma = 2.0
    ch = np.linspace(0, 1, 40)
    clean = 50 * np.sin(3 * ch)[None, None, :] * rng.random((40, 40, 1))
    data = clean + sigma * rng.standard_normal(clean.shape)
    shape = data.shape if per_point else data.shape[:2]
    mask = rng.random(shape) < 0.5
    m3 = np.broadcast_to(mask[:, :, None], data.shape) if mask.ndim == 2 else mask
    est = estimate_noise_std(np.where(m3, data, 0.0), mask)
    assert est == pytest.approx(sigma, rel=0.05)
    with pytest.raises(ValueError, match="consecutive"):
        estimate_noise_std(data, np.zeros(data.shape, bool))


def test_reconstruct_with_mask_and_errors(small_ms):
    s = small_ms
    rng = np.random.default_rng(7)
    o = s.phantom(rng)
    data = s.measure(o, 60.0, rng)
    mask = rng.random(s.sample_shape[:2]) < 0.5
    x = reconstruct(np.where(mask[:, :, None], data, 0.0), s, mask=mask, n_iter=20)
    assert _rmse(x, o) < 0.6 * _rmse(0 * o, o)
    with pytest.raises(ValueError, match="method"):
        reconstruct(data, s, method="fbp")
    with pytest.raises(ValueError, match="shape"):
        reconstruct(data[:, :, :3], s)
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(np.full(s.data_shape, np.nan), s)
    with pytest.raises(ValueError, match="unknown"):
        reconstruct(data, s, gama=1.0)


def test_admm_stopping_rule_and_weighted_data(small_ms):
    """``tol`` stops at a relative change (well before the cap, near the long run's answer);
    float weights of 0/1 are the boolean mask, and doubling every weight is halving gamma."""
    s = small_ms
    rng = np.random.default_rng(12)
    o = s.phantom(rng)
    data = s.measure(o, 60.0, rng)
    sig = float(np.median(s.noise_std(s.forward(o), 60.0)))
    kw = {"nu1": 1e-3, "nu2": 1e-3, "noise_std": sig}
    n_run = []
    x_tol = reconstruct(data, s, n_iter=2000, tol=1e-4,
                        callback=lambda k, x: n_run.append(k), **kw)
    x_long = reconstruct(data, s, n_iter=1500, **kw)
    assert 20 < len(n_run) < 1000
    assert _rmse(x_tol, o) == pytest.approx(_rmse(x_long, o), rel=0.02)
    mask = rng.random(s.data_shape) < 0.6
    sub = np.where(mask, data, 0.0)
    x_b = reconstruct(sub, s, mask=mask, n_iter=15, **kw)
    x_f = reconstruct(sub, s, mask=mask.astype(float), n_iter=15, **kw)
    np.testing.assert_allclose(x_f, x_b, rtol=1e-5, atol=1e-6 * x_b.max())
    x_1 = reconstruct(sub, s, mask=mask.astype(float), n_iter=400, tol=1e-5, gamma_rel=0.01,
                      **kw)
    x_2 = reconstruct(sub, s, mask=2.0 * mask, n_iter=400, tol=1e-5, gamma_rel=0.02, **kw)
    assert _rmse(x_1, x_2) < 0.02 * _rmse(0 * o, o)
    with pytest.raises(ValueError, match="weights"):
        reconstruct(sub, s, mask=-1.0 * mask, **kw)


def test_hardware_time_strategy_water_fills_and_averages():
    from mracq.recon.mrfm.strategy import HardwareTimeStrategy

    st = HardwareTimeStrategy((4, 4, 3), t_ref=10.0, pilot_time=2.0, round_time=50.0,
                              budget=200.0, t_step=1.0, tol=0.05)
    pilot = st.suggest()
    assert np.all(pilot == 2.0)
    st.ingest(pilot, np.full(pilot.shape, 4.0))
    pred = np.zeros(pilot.shape)
    pred[:2] = 1.0  # half the points predicted far above the noise, half at zero
    st.update(pred, 0.1)
    alloc = st.suggest()
    assert 45.0 <= alloc.sum() <= 50.0 and np.all(alloc[2:] == 0) and np.all(alloc[:2] >= 1)
    back = np.zeros(alloc.shape)
    for i, j, t, chans in st.visits(alloc):
        back[i, j, chans] = t
    np.testing.assert_array_equal(back, alloc)
    st.ingest(alloc, np.where(alloc > 0, 1.0, 0.0))
    k = alloc > 0
    np.testing.assert_allclose(st.mean[k], (4.0 * 2.0 + alloc[k]) / (2.0 + alloc[k]))
    np.testing.assert_allclose(st.weights(), st.time / 10.0)
    x = np.ones((4, 4, 2))
    assert not st.done(x) and not st.done(1.5 * x) and st.done(1.52 * x)
    with pytest.raises(ValueError, match="shape"):
        HardwareTimeStrategy((4, 4), 10.0, 2.0, 50.0, 200.0)
