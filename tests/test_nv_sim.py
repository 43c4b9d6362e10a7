"""Simulated NV: populations from the program, shot noise, virtual clock."""

import numpy as np
import pytest

from mracq.pulses import coherence_programs, rabi
from mracq.sim.clock import VirtualClock
from mracq.sim.filter_function import coherence
from mracq.sim.nv import DephasingModel, Drive, Readout, SimulatedNV, normalize
from mracq.sim.spectra import default_nv_spectrum


def test_rabi_pi_and_two_pi():
    nv = SimulatedNV(models=[DephasingModel(rabi_decay=1.0)])
    pi_time = 1 / (2 * 12.5e6)  # 40 ns at the nominal Rabi frequency
    assert nv.population(rabi(pi_time), Drive()) == pytest.approx(0.0, abs=1e-6)
    assert nv.population(rabi(2 * pi_time), Drive()) == pytest.approx(1.0, abs=1e-6)
    # half the amplitude (-6.02 dB) makes the pi pulse a pi/2 pulse
    half = Drive(rabi_scale=0.5)
    assert nv.population(rabi(pi_time), half) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("family,n,n_pi", [("fid", None, 0), ("hahn", None, 1), ("cpmg", 4, 4),
                                           ("xy8", 2, 16)])
def test_population_follows_filter_function_coherence(family, n, n_pi):
    spec = default_nv_spectrum()
    nv = SimulatedNV(models=[DephasingModel(spec)])
    times = np.geomspace(1.5e-6, 2e-4, 6)
    p = np.array([nv.population(prog, Drive()) for prog in coherence_programs(family, times,
                                                                                n=n)])
    c = coherence(spec, times, n=n_pi)
    np.testing.assert_allclose(p, (1 - c) / 2, atol=1e-9)


def test_detuned_ramsey_fringes_at_the_detuning():
    nv = SimulatedNV(models=[DephasingModel(default_nv_spectrum())])
    det = 2e6  # Hz
    times = np.linspace(0.2e-6, 1.2e-6, 400)
    p = np.array([nv.population(prog, Drive(detuning=det))
                  for prog in coherence_programs("fid", times)])
    spec = np.abs(np.fft.rfft(p - p.mean(), 8192))
    f = np.fft.rfftfreq(8192, times[1] - times[0])
    assert f[np.argmax(spec)] == pytest.approx(det, rel=0.05)


def test_microwave_off_leaves_ms0():
    nv = SimulatedNV()
    prog = coherence_programs("hahn", [5e-6])[0]
    assert nv.population(prog, Drive(on=False)) == 1.0


def test_counts_noise_matches_reported_error_and_clock_advances():
    clock = VirtualClock()
    nv = SimulatedNV(readout=Readout(), clock=clock, rng=np.random.default_rng(7))
    prog = coherence_programs("cpmg", [3e-5], n=8)[0]
    shots = 200_000
    runs = [nv.run(prog, shots, Drive()) for _ in range(300)]
    v, err = normalize([r.signal for r in runs], [r.bright for r in runs],
                       [r.dark for r in runs])
    p_true = runs[0].population
    assert abs(v.mean() - p_true) < 4 * err.mean() / np.sqrt(len(runs))
    assert v.std() == pytest.approx(err.mean(), rel=0.15)
    per_shot = prog.duration + 2 * Readout().reference_duration
    assert clock.now == pytest.approx(300 * shots * per_shot, rel=1e-12)


def test_bad_shots_rejected():
    with pytest.raises(ValueError, match="shots"):
        SimulatedNV().run(coherence_programs("fid", [1e-6])[0], 0)
