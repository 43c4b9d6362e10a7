"""FTNS baseline (mracq.recon.vqns.ftns) on known spectra."""

import numpy as np
import pytest

from mracq.recon.vqns.data import simulate_measurements
from mracq.recon.vqns.ftns import ftns
from mracq.sim.spectra import Lorentzians

TP = 2 * np.pi
SPEC = Lorentzians([(TP * 50e3) ** 2], [TP * 200e3], [0.0])


@pytest.fixture(scope="module")
def fid_se():
    return simulate_measurements(SPEC, ["fid", "se"], n_points=200, chi_end=8)


def test_fid_ftns_recovers_lorentzian(fid_se):
    f = ftns(fid_se[0])
    sel = f.omega < f.omega_max / 4
    w, s = f.omega[sel], f.spectrum[sel]
    assert np.linalg.norm(s - SPEC(w)) / np.linalg.norm(SPEC(w)) < 0.03
    # S(0) = 2 A / g exactly from the linear tail: chi -> S(0) t / 2
    assert f.spectrum[0] == pytest.approx(SPEC(0.0), rel=0.01)


def test_se_ftns_intermediate_frequencies(fid_se):
    """Exact in the limit of fine sampling; time resolution limits it (seed App. E)."""
    g = TP * 200e3
    w = np.array([g / 2, g, 2 * g])
    fine = simulate_measurements(SPEC, ["se"], n_points=1000, chi_end=8)[0]
    assert np.allclose(ftns(fine, omega=w).spectrum / SPEC(w), 1.0, atol=0.05)
    coarse = ftns(fid_se[1], omega=w).spectrum / SPEC(w)
    assert np.all(np.abs(coarse - 1) > 0.15) and np.all(np.abs(coarse - 1) < 0.4)
    assert np.isnan(ftns(fid_se[1], omega=[1e9]).spectrum[0])


def test_ftns_rejects_cpmg_and_short_data(fid_se):
    m = simulate_measurements(SPEC, ["cpmg-2"], n_points=20)[0]
    with pytest.raises(ValueError, match="FID or SE"):
        ftns(m)
    with pytest.raises(ValueError, match="falls below"):
        ftns(fid_se[0], c_cut=0.999)
