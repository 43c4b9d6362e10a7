"""Batched torch chi of mracq.recon.vqns.chi against the numpy closed form and series."""

import numpy as np
import pytest
import torch

from mracq.recon.vqns.chi import PointSet, chi_and_grad, chi_batch
from mracq.sim.filter_function import chi_lorentzian, chi_quadrature, coherence
from mracq.sim.spectra import Lorentzians

NS = [0, 1, 2, 3, 8, 16, 32, 256]
PARAMS = np.array([[1e10, 1e4, 0.0], [4e9, 3e5, 2e6], [1e8, 1e2, 1e3], [1e6, 1.0, 0.5]])


def _points(n_t=25):
    t = np.concatenate([np.geomspace(1e-8, 1e-3, n_t) for _ in NS])
    n = np.repeat(NS, n_t)
    return t, n, PointSet(t, n)


def _ref(t, n):
    return np.concatenate([chi_lorentzian(t[n == k], k, PARAMS) for k in NS])


def _torch_params(p, grad=False):
    return [torch.tensor(p[None, :, i], dtype=torch.float64, requires_grad=grad)
            for i in range(3)]


def test_chi_matches_numpy_closed_form_and_series():
    t, n, pts = _points()
    a, g, w0 = _torch_params(PARAMS)
    chi, _ = chi_and_grad(a, g, w0, pts)
    ref = pts.reorder(_ref(t, n))
    # includes |lam t| from 1e-8 (series) to 1e6 (closed form) for every n; the 1e-6
    # allows for chi_lorentzian, whose closed form cancels at n = 256, |lam t| ~ 1 (chi ~ 1e-11)
    assert np.allclose(chi[0].numpy(), ref, rtol=1e-6, atol=0)
    chi2 = chi_batch(a, torch.complex(g, w0), pts)
    assert np.allclose(chi2[0].numpy(), ref, rtol=1e-6, atol=0)


def test_small_lambda_t_corner_against_quadrature():
    """A nearly static component (|lam| t ~ 1e-4) where the closed form alone cancels."""
    spec = Lorentzians([1e8], [10.0], [5.0])
    t = np.array([1e-6, 1e-5])
    for n in (0, 1, 4):
        pts = PointSet(t, [n, n])
        a, g, w0 = _torch_params(spec.params)
        chi, _ = chi_and_grad(a, g, w0, pts)
        quad = chi_quadrature(spec, t, n=n)
        assert np.allclose(chi[0].numpy(), pts.reorder(quad), rtol=1e-6)
    # FID of quasi-static noise: chi = A t^2 / 2
    pts = PointSet(t, [0, 0])
    chi, _ = chi_and_grad(*_torch_params(spec.params), pts)
    lt = (10.0 + 5.0j) * t
    series = np.real(1e8 * t**2 * (0.5 - lt / 6 + lt**2 / 24))
    assert np.allclose(chi[0].numpy(), series, rtol=1e-10)
    assert np.allclose(chi[0].numpy(), 1e8 * t**2 / 2, rtol=1e-4)


def test_gradient_matches_autograd():
    t, n, pts = _points(10)
    a, g, w0 = _torch_params(PARAMS, grad=True)
    chi_auto = chi_batch(a, torch.complex(g, w0), pts)[0]
    _, grad = chi_and_grad(a.detach(), g.detach(), w0.detach(), pts)
    for p in range(0, pts.size, 7):
        ga = torch.stack([x[0] for x in torch.autograd.grad(chi_auto[p], [a, g, w0],
                                                            retain_graph=True)], 1)
        assert np.allclose(grad[0, :, :, p].numpy(), ga.numpy(), rtol=1e-5,
                           atol=1e-12 * float(ga.abs().max()))


def test_gradient_matches_finite_difference():
    t = np.linspace(2e-6, 4e-5, 9)
    pts = PointSet(np.tile(t, 3), np.repeat([0, 1, 8], 9))
    p0 = np.array([[3e9, 5e4, 0.0], [1e9, 2e5, 3e6]])
    a, g, w0 = _torch_params(p0)
    _, grad = chi_and_grad(a, g, w0, pts)
    for k in range(2):
        for j in range(3):
            h = 1e-6 * max(p0[k, j], 1e3)
            pp, pm = p0.copy(), p0.copy()
            pp[k, j] += h
            pm[k, j] -= h
            fp, _ = chi_and_grad(*_torch_params(pp), pts)
            fm, _ = chi_and_grad(*_torch_params(pm), pts)
            fd = (fp - fm)[0].numpy() / (2 * h)
            assert np.allclose(grad[0, k, j].numpy(), fd, rtol=1e-5,
                               atol=1e-9 * np.abs(fd).max())


def test_pointset_rejects_bad_input():
    with pytest.raises(ValueError, match="> 0"):
        PointSet([0.0, 1e-6], [0, 0])
    with pytest.raises(ValueError, match="same length"):
        PointSet([1e-6], [0, 1])


def test_numba_kernel_matches_torch():
    from mracq.recon.vqns import kernel as vqns_numba
    from mracq.recon.vqns.chi import SERIES_SWITCH
    from mracq.recon.vqns.data import simulate_measurements
    from mracq.recon.vqns.model import _Init, _Problem

    if not vqns_numba.available():
        pytest.skip("numba not installed")
    spec = Lorentzians(*PARAMS[:2].T)
    ms = simulate_measurements(spec, ["fid", "se", "cpmg-8"], n_points=12, noise=0.01,
                               rng=np.random.default_rng(0))
    prob = _Problem(ms, True, "torch")
    init = _Init(prob, 3, torch.Generator().manual_seed(0))
    amp, g, w0 = init.physical(init.draw(5))
    g[0, 0] = 1e-3  # |lam t| << 1: the series branch
    w0[0, 0] = 1e-3
    l1, g1 = prob.loss_and_grad(amp, g, w0)
    l2, g2 = vqns_numba.loss_and_grad(amp.numpy(), g.numpy(), w0.numpy(), prob.pts,
                                      prob.y_np, prob.wt_np, SERIES_SWITCH)
    assert np.allclose(l1.numpy(), l2, rtol=1e-12)
    assert np.allclose(g1.numpy(), g2, rtol=1e-9, atol=1e-12 * np.abs(g2).max())


def test_numba_kernel_irregular_times():
    """Unequal spacing, long equal runs and repeated times: kernel against torch."""
    from mracq.recon.vqns import kernel as vqns_numba
    from mracq.recon.vqns.chi import SERIES_SWITCH
    from mracq.recon.vqns.data import Measurement
    from mracq.recon.vqns.model import _Init, _Problem

    if not vqns_numba.available():
        pytest.skip("numba not installed")
    spec = Lorentzians(*PARAMS[:2].T)
    t_geo = np.geomspace(2e-7, 2e-5, 15)
    t_lin = np.linspace(1e-6, 4e-5, 50)  # longer than one product chain
    t_mix = np.concatenate([np.linspace(1e-6, 5e-6, 5), np.linspace(6e-6, 3e-5, 9)])
    ms = [Measurement(name, t, coherence(spec, t, n=n)) for name, t, n in
          (("fid", t_geo, 0), ("cpmg-4", t_lin, 4), ("cpmg-7", t_mix, 7))]
    prob = _Problem(ms, True, "torch")
    init = _Init(prob, 3, torch.Generator().manual_seed(3))
    amp, g, w0 = init.physical(init.draw(6))
    l1, g1 = prob.loss_and_grad(amp, g, w0)
    l2, g2 = vqns_numba.loss_and_grad(amp.numpy(), g.numpy(), w0.numpy(), prob.pts,
                                      prob.y_np, prob.wt_np, SERIES_SWITCH)
    assert np.allclose(l1.numpy(), l2, rtol=1e-11)
    assert np.allclose(g1.numpy(), g2, rtol=1e-9, atol=1e-11 * np.abs(g2).max())
    # chi of each Lorentzian at unit variance (the initial amplitude fit)
    prob_n = _Problem(ms, True, "numba")
    b1, b2 = prob.chi_basis(g, w0).numpy(), prob_n.chi_basis(g, w0).numpy()
    assert b1.shape == (6, 3, prob.pts.size)
    assert np.allclose(b1, b2, rtol=1e-10, atol=1e-12 * np.abs(b1).max())
