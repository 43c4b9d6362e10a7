"""Filter functions and chi: closed forms against quadrature and known limits."""

import numpy as np
import pytest

from mracq.sim import filter_function as ff
from mracq.sim.spectra import Lorentzians, Ohmic, PowerLaw, larmor_peak


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 8, 16])
def test_closed_form_filter_matches_switching_integral(n):
    z = np.linspace(1e-3, 400.0, 20001)
    # include the removable singularities cos(z / 2n) = 0 exactly
    if n:
        z = np.concatenate([z, np.pi * n * np.arange(1, 20, 2)])
    direct = ff.filter_function(z, 1.0, ff.equally_spaced(1.0, n))
    assert np.max(np.abs(ff.filter_cpmg(z, n) - direct)) < 1e-9 * max(1, n)


def test_fid_filter_is_two_sin_squared():
    z = np.linspace(0, 50, 101)
    np.testing.assert_allclose(ff.filter_function(z, 1.0, []), 2 * np.sin(z / 2) ** 2,
                               atol=1e-12)


THREE = Lorentzians(amplitude=[4e10, 1e10, 2.5e9], width=[3e5, 1e5, 5e4],
                    centre=[0.0, 2e6, 8e6])


@pytest.mark.parametrize("n", [0, 1, 2, 3, 8, 32])
def test_lorentzian_closed_form_matches_quadrature(n):
    t = np.geomspace(2e-7, 2e-4, 7)
    closed = ff.chi_lorentzian(t, n, THREE.params)
    quad = ff.chi_quadrature(THREE, t, n=n)
    np.testing.assert_allclose(closed, quad, rtol=1e-5)
    # the general switching-function path gives the same
    quad_times = ff.chi_quadrature(THREE, t[2:4], lambda tt: ff.equally_spaced(tt, n))
    np.testing.assert_allclose(closed[2:4], quad_times, rtol=1e-5)


def test_quasi_static_limit_uses_exact_series():
    sigma = 2 * np.pi * 50e3  # rad/s
    t = np.array([1e-7, 1e-6, 5e-6])
    chi = ff.chi_lorentzian(t, 0, [[sigma**2, 1e-3, 0.0]])  # g t ~ 1e-9: closed form cancels
    np.testing.assert_allclose(chi, sigma**2 * t**2 / 2, rtol=1e-8)  # finite g: -g t / 3
    # echo refocuses static noise: chi ~ 0
    assert np.all(ff.chi_lorentzian(t, 1, [[sigma**2, 1e-3, 0.0]]) < 1e-6 * sigma**2 * t**2)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_series_and_closed_form_continuous_at_switch(n):
    lam = ff.SERIES_SWITCH
    p = [[1.0, 0.6 * lam, 0.8 * lam]]
    lo = ff.chi_lorentzian(np.array([1.0 - 1e-9]), n, p)
    hi = ff.chi_lorentzian(np.array([1.0 + 1e-9]), n, p)
    np.testing.assert_allclose(lo, hi, rtol=1e-8)


@pytest.mark.parametrize("times", [None, "udd3"])
def test_white_noise_gives_half_s0_t_for_any_sequence(times):
    s0 = 1e3  # rad^2/s
    t = np.array([1e-6, 1e-5])
    white = PowerLaw(amplitude=s0, alpha=0.0, omega_ref=1.0)
    if times == "udd3":
        def pulse_times(tt):
            return tt * np.sin(np.pi * np.arange(1, 4) / 8) ** 2
    else:
        pulse_times = None
    chi = ff.chi_quadrature(white, t, pulse_times)
    np.testing.assert_allclose(chi, s0 * t / 2, rtol=1e-4)


def test_fid_under_one_over_f_is_an_error():
    with pytest.raises(ValueError, match="diverges"):
        ff.chi_quadrature(PowerLaw(1e3, 1.0, 1e6), np.array([1e-5]))
    # echoes are fine and positive
    assert ff.chi_quadrature(PowerLaw(1e3, 1.0, 1e6), np.array([1e-5]), n=1)[0] > 0


def test_ohmic_and_larmor_sum_quadrature_is_additive():
    oh = Ohmic(strength=1e3, omega_c=2e6)
    peak = larmor_peak(0.05, "1H", amplitude=1e9, width=3e5)
    t = np.array([3e-6, 3e-5])
    total = ff.chi_quadrature(oh + peak, t, n=4)
    parts = ff.chi_quadrature(oh, t, n=4) + ff.chi_lorentzian(t, 4, peak.params)
    np.testing.assert_allclose(total, parts, rtol=1e-5)


def test_bad_times_rejected():
    with pytest.raises(ValueError, match="finite"):
        ff.chi_lorentzian(np.array([np.nan]), 1, THREE.params)
    with pytest.raises(ValueError, match="inside"):
        ff.filter_function([1.0], 1.0, [0.5, 0.2])
