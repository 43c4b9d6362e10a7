"""DDNS baseline (mracq.recon.vqns.ddns) on known spectra."""

import numpy as np
import pytest

from mracq.recon.vqns.data import simulate_measurements
from mracq.recon.vqns.ddns import ddns
from mracq.recon.vqns.model import Measurement
from mracq.sim.filter_function import coherence
from mracq.sim.spectra import Lorentzians, Ohmic

TP = 2 * np.pi


def test_ddns_on_lorentzian_tail_many_pulses():
    """On a 1/w^2 tail the harmonics add only S(3w)/9 ~ S/81: DDNS is within ~2%."""
    spec = Lorentzians([(TP * 200e3) ** 2], [TP * 20e3], [0.0])
    ms = simulate_measurements(spec, ["cpmg-256"], n_points=40, chi_end=3)
    d = ddns(ms)
    assert d.omega.size > 20 and np.all(d.n == 256)
    assert np.allclose(d.omega, np.pi * 256 / d.t)
    ratio = d.spectrum / spec(d.omega)
    assert np.all(np.abs(ratio - 1 - 1 / 81) < 0.01)


def test_ddns_flat_spectrum_weight_and_harmonic_correction():
    """Flat S: the odd harmonics sum to pi^2/8 of the first peak's 1 -> 1.23 S uncorrected."""
    spec = Lorentzians([1e13], [TP * 1e9], [0.0])  # flat far below 1 GHz
    t = np.linspace(2e-6, 2e-5, 20)
    c = coherence(spec, t, n=64)
    m = Measurement("cpmg-64", t, c)
    plain = ddns([m], c_min=1e-6, c_max=1.0)
    assert np.allclose(plain.spectrum / spec(plain.omega), np.pi**2 / 8, rtol=0.015)
    corr = ddns([m], c_min=1e-6, c_max=1.0, harmonics=True)
    # interior points (whose harmonics lie inside the data) are corrected to a few %
    inner = corr.omega * 7 <= corr.omega[-1]
    assert np.allclose(corr.spectrum[inner] / spec(corr.omega[inner]), 1.0, atol=0.05)


def test_ddns_skips_fid_and_checks_input():
    spec = Ohmic(1e4, TP * 1e6)
    ms = simulate_measurements(spec, ["fid", "cpmg-4"], n_points=20)
    d = ddns(ms)
    assert set(d.n.tolist()) == {4}
    with pytest.raises(ValueError, match="at least one CPMG"):
        ddns(ms[:1])
    with pytest.raises(ValueError, match="c_min"):
        ddns(ms, c_min=0.5, c_max=0.2)
