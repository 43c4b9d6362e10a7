"""COSY simulator: brute force, hand-checked frequencies, couplings."""

from functools import reduce

import numpy as np
import pytest
from scipy.linalg import expm

from mracq.sim.cosy.couplings import (
    GAMMA_13C,
    GAMMA_E,
    HBAR,
    MU0_OVER_4PI,
    dipolar_tensors,
    hyperfine_from_positions,
    random_clusters,
)
from mracq.sim.cosy.model import (
    B_FIELD,
    T_GRID,
    CosyModel,
    nuclear_hamiltonians,
    shot_noise,
    simulate_map,
)


def brute_force(h0, h1, t1, t2, tau, n):
    """Full NV x nuclei density matrix with explicit ideal pulses."""
    d = h0.shape[0]
    p0 = np.diag([1.0, 0.0])
    p1 = np.diag([0.0, 1.0])
    h = np.kron(p0, h0) + np.kron(p1, h1)
    sx = np.array([[0, 1], [1, 0]])
    sy = np.array([[0, -1j], [1j, 0]])
    eye = np.eye(d)

    def nv(op, angle):
        return np.kron(expm(-0.5j * angle * op), eye)

    def free(t):
        return expm(-1j * h * t)

    blk = free(tau / 2) @ nv(sx, np.pi) @ free(tau) @ nv(sx, np.pi) @ free(tau / 2)
    dd = np.linalg.matrix_power(blk, n // 2)
    c = 1 / np.sqrt(2)
    r1 = np.array([[c, -1j * c], [-1j * c, c]])
    m = int(np.log2(d))
    rf = np.kron(np.eye(2), reduce(np.kron, [r1] * m))

    rho = np.kron(p0, eye / d)
    seq_a = nv(sy, np.pi / 2) @ dd @ nv(sx, np.pi / 2)
    rho = seq_a @ rho @ seq_a.conj().T
    rho[:d, d:] = 0
    rho[d:, :d] = 0  # NV coherence dephases (T2*)
    mid = free(t2) @ rf @ free(t1)
    rho = mid @ rho @ mid.conj().T
    seq_b = nv(sx, np.pi / 2) @ dd @ nv(sy, np.pi / 2)
    rho = seq_b @ rho @ seq_b.conj().T
    return np.trace(rho[:d, :d]).real


def test_matches_brute_force_two_spins():
    pos = np.array([[0.3e-9, 0.1e-9, 0.9e-9], [0.35e-9, 0.2e-9, 1.02e-9]])
    a = hyperfine_from_positions(pos)
    dp = dipolar_tensors(pos)
    h0, h1 = nuclear_hamiltonians(a, dp)
    t1 = np.array([4e-6, 130e-6])
    t2 = np.array([22e-6, 301e-6])
    m = simulate_map(pos, t1=t1, t2=t2, tau=2045e-9, n=8)
    for i in range(2):
        for j in range(2):
            ref = brute_force(h0, h1, t1[i], t2[j], 2045e-9, 8)
            assert m[i, j] == pytest.approx(ref, abs=1e-10)


def test_hyperfine_on_axis_hand_value():
    r = 1e-9
    a = hyperfine_from_positions(np.array([[0.0, 0.0, r]]))
    a0 = MU0_OVER_4PI * HBAR * GAMMA_E * GAMMA_13C / r**3
    assert a0 / (2 * np.pi) == pytest.approx(19.9e3, rel=5e-3)  # 19.9 kHz at 1 nm
    np.testing.assert_allclose(a[0], [0.0, 0.0, -2 * a0], atol=1e-9)
    dp = dipolar_tensors(np.array([[0, 0, 0], [0.154e-9, 0, 0]]))
    j = MU0_OVER_4PI * HBAR * GAMMA_13C**2 / 0.154e-9**3
    np.testing.assert_allclose(dp[0, 1], j * np.diag([-2.0, 1.0, 1.0]))


def _manifold_freqs(a):
    wl = GAMMA_13C * B_FIELD
    w0 = wl
    w1 = np.linalg.norm(np.array([0.0, 0.0, wl]) - a)
    return w0, w1


def test_single_13c_frequencies_fine_grid():
    """t1 trace = constant + cosines/sines at the two manifold frequencies exactly."""
    pos = np.array([[0.4e-9, 0.2e-9, 0.85e-9]])
    a = hyperfine_from_positions(pos)[0]
    w0, w1 = _manifold_freqs(a)
    t = np.linspace(4e-6, 60e-6, 400)
    trace = simulate_map(pos, t1=t, t2=np.array([37e-6]))[:, 0]

    def resid(freqs):
        cols = [np.ones_like(t)]
        for w in freqs:
            cols += [np.cos(w * t), np.sin(w * t)]
        basis = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(basis, trace, rcond=None)
        return np.abs(basis @ coef - trace).max(), coef

    err, coef = resid([w0, w1])
    assert err < 1e-12
    assert np.abs(coef[1:]).max() > 1e-4  # a real signal, not a flat line
    assert resid([w0 * 1.01, w1 * 0.99])[0] > 1e-3 * np.ptp(trace)


def _alias(f, fs):
    f = np.mod(f, fs)
    return np.minimum(f, fs - f)


def test_single_13c_peaks_at_aliased_positions():
    pos = np.array([[0.2e-9, 0.0, 0.95e-9]])
    a = hyperfine_from_positions(pos)[0]
    w0, w1 = _manifold_freqs(a)
    fs = 1 / 18e-6
    m = simulate_map(pos)
    spec = np.abs(np.fft.fft2(m - m.mean()))
    f = np.fft.fftfreq(50, d=18e-6)
    # strongest diagonal peaks at (f0, f0) and (f1, f1) after aliasing, within one bin
    expected = {_alias(w0 / 2 / np.pi, fs), _alias(w1 / 2 / np.pi, fs)}
    spec_pos = spec[:26, :26]
    found = []
    for _ in range(2):
        i, j = np.unravel_index(np.argmax(spec_pos), spec_pos.shape)
        found.append((abs(f[i]), abs(f[j])))
        spec_pos[max(i - 2, 0) : i + 3, max(j - 2, 0) : j + 3] = 0
    for fi, fj in found:
        assert fi == pytest.approx(fj, abs=fs / 50)
        assert min(abs(fi - e) for e in expected) <= fs / 50


def test_default_grid_and_model():
    assert T_GRID.size == 50 and T_GRID[0] == 4e-6
    assert T_GRID[-1] == pytest.approx(0.886e-3)
    model = CosyModel()
    full = model.map()
    assert full.shape == (50, 50)
    assert np.ptp(full) > 0.02  # default pair has a visible signal

    class P:
        metadata = {"sequence": "cosy", "t1": T_GRID[3], "t2": T_GRID[7]}

    assert model.handles(P())
    assert model.population(P()) == pytest.approx(full[3, 7], abs=1e-12)


def test_batched_equals_single_and_shot_noise():
    rng = np.random.default_rng(1)
    pos = random_clusters(3, rng, m=2)
    maps = simulate_map(pos, batch=2)
    np.testing.assert_allclose(maps[2], simulate_map(pos[2]), atol=1e-12)
    assert np.all((maps >= 0) & (maps <= 1))
    noisy = shot_noise(np.full(20000, 0.5), rng, shots=150_000)
    # sigma_P = sqrt(N a) / (N (a0 - a1)) with a = 0.03 * 0.85
    expect = np.sqrt(150_000 * 0.03 * 0.85) / (150_000 * 0.009)
    assert noisy.std() == pytest.approx(expect, rel=0.05)
    with pytest.raises(ValueError):
        simulate_map(np.array([[0.0, 0.0, 0.0]]))


def test_cosy_program_and_simulated_nv():
    from mracq.pulses import PulseProgram
    from mracq.pulses.cosy import cosy_program
    from mracq.sim.nv import SimulatedNV

    p = cosy_program(T_GRID[2], T_GRID[5])
    assert PulseProgram.from_dict(p.to_dict()) == p
    mw = p.pulses_on("mw")
    assert len(mw) == 2 * (40 + 2)
    # pi pulses of a block are tau apart; the rf pulse centre sits t1 after block 1 ends
    assert mw[2].centre - mw[1].centre == pytest.approx(2045e-9)
    rf = p.pulses_on("rf")[0]
    assert rf.centre - mw[41].end == pytest.approx(T_GRID[2])
    assert mw[42].start - rf.centre == pytest.approx(T_GRID[5])
    model = CosyModel()
    nv = SimulatedNV([model], rng=np.random.default_rng(0))
    assert nv.population(p) == pytest.approx(model.map()[2, 5], abs=1e-12)
    with pytest.raises(ValueError, match="t1"):
        cosy_program(1e-6, 1e-5)


def test_couplings_path_matches_brute_force_other_field():
    """Maps from hyperfine vectors and dipolar tensors (no positions), per-map field and
    pulse spacing, three spins: the vectorized signal equals the density-matrix one."""
    from mracq.sim.cosy.families import family_couplings

    cl = family_couplings("couplings", 2, np.random.default_rng(4), spins=(3,),
                          b_range=(0.150, 0.165))
    t1 = np.array([4e-6, 211e-6])
    t2 = np.array([58e-6])
    maps = simulate_map(hyperfine=cl.hyperfine, dipolar=cl.dipolar, b_field=cl.b_field,
                        tau=cl.tau, t1=t1, t2=t2, n=6)
    for k in range(2):
        h0, h1 = nuclear_hamiltonians(cl.hyperfine[k], cl.dipolar[k], cl.b_field[k])
        for i in range(2):
            ref = brute_force(h0, h1, t1[i], t2[0], cl.tau[k], 6)
            assert maps[k, i, 0] == pytest.approx(ref, abs=1e-10)
    assert np.ptp(maps) > 1e-4
