"""Per-point measurement noise of MRFM force-variance scans (seed Eqs. 5, 9, App. A).

A point integrated for T_m with spin correlation time tau_m gives K = T_m / tau_m independent
samples. The spin signal s = sigma_spin^2 is estimated as sigma_in^2 - sigma_out^2; its
standard error is

- XYZ:        sqrt(2 / (K - 1)) sqrt(s^2 + 2 s th + 2 th^2)
- multislice: sqrt(2 / (K - 1)) sqrt(s^2 + 2 s th + (1 + 1/n_f) th^2)

with th = sigma_th^2 = S_th^2 f_meas (thermomechanical force variance in the measurement
bandwidth). In the multislice protocol the out-of-phase variance is averaged over the n_f
pulses at the same position (App. A).
"""

from __future__ import annotations

import numpy as np

#: Seed Table 1: S_th (N/sqrt(Hz)), f_meas (Hz), tau_m (s).
SEED_S_TH = 10e-18
SEED_F_MEAS = 40.0
SEED_TAU_M = 20e-3


def thermal_variance(s_th: float = SEED_S_TH, f_meas: float = SEED_F_MEAS) -> float:
    """Thermomechanical force variance sigma_th^2 = S_th^2 f_meas in N^2.

    Parameters
    ----------
    s_th : float
        Force noise spectral density, N/sqrt(Hz).
    f_meas : float
        Measurement bandwidth, Hz.
    """
    if not (np.isfinite(s_th) and s_th >= 0):
        raise ValueError(f"s_th must be >= 0, got {s_th!r}")
    if not (np.isfinite(f_meas) and f_meas > 0):
        raise ValueError(f"f_meas must be > 0, got {f_meas!r}")
    return s_th**2 * f_meas


def noise_std(
    signal,
    t_m: float,
    protocol: str = "multislice",
    n_f: int = 46,
    tau_m: float = SEED_TAU_M,
    s_th: float = SEED_S_TH,
    f_meas: float = SEED_F_MEAS,
) -> np.ndarray:
    """Standard error (N^2) of the spin force variance estimate of each point.

    Parameters
    ----------
    signal : array
        Noise-free spin force variance sigma_spin^2 of each point, N^2 (negative values are
        treated as 0).
    t_m : float
        Integration time per point, s; must exceed 2 tau_m.
    protocol : {"multislice", "xyz"}
        Noise variant (Eq. 9 or Eq. 5).
    n_f : int
        Number of pulses sharing one position (multislice).
    tau_m : float
        Spin correlation time, s.
    s_th : float
        Force noise density, N/sqrt(Hz).
    f_meas : float
        Measurement bandwidth, Hz.
    """
    if protocol not in ("multislice", "xyz"):
        raise ValueError(f"protocol must be 'multislice' or 'xyz', got {protocol!r}")
    if not (np.isfinite(t_m) and np.isfinite(tau_m) and tau_m > 0 and t_m > 2 * tau_m):
        raise ValueError(f"t_m must exceed 2 tau_m = {2 * tau_m!r} s, got t_m={t_m!r}")
    if protocol == "multislice" and n_f < 1:
        raise ValueError(f"n_f must be >= 1, got {n_f!r}")
    s = np.maximum(np.asarray(signal, float), 0.0)
    th = thermal_variance(s_th, f_meas)
    c = 2.0 if protocol == "xyz" else 1.0 + 1.0 / n_f
    k = t_m / tau_m
    return np.sqrt(2.0 / (k - 1.0)) * np.sqrt(s**2 + 2 * s * th + c * th**2)


def quadrature_variances(signal, t_m, rng, tau_m=SEED_TAU_M, s_th=SEED_S_TH,
                         f_meas=SEED_F_MEAS):
    """Simulated in-phase and out-of-phase force variance estimates (N^2) of one point.

    Each is the sample variance of K = T_m / tau_m independent Gaussian force samples:
    sigma_in^2 ~ (s + th) chi2(K - 1) / (K - 1), sigma_out^2 ~ th chi2(K - 1) / (K - 1),
    so their standard errors are sqrt(2 / (K - 1)) times the true variances (App. A).

    Parameters
    ----------
    signal : array
        Spin force variance, N^2.
    t_m, tau_m : float
        Integration and correlation time, s.
    rng : numpy.random.Generator
        Random source.
    s_th, f_meas : float
        Force noise density (N/sqrt(Hz)) and bandwidth (Hz).
    """
    if not (np.isfinite(t_m) and t_m > 2 * tau_m):
        raise ValueError(f"t_m must exceed 2 tau_m = {2 * tau_m!r} s, got {t_m!r}")
    s = np.maximum(np.asarray(signal, float), 0.0)
    th = thermal_variance(s_th, f_meas)
    dof = t_m / tau_m - 1.0
    var_in = (s + th) * rng.chisquare(dof, size=s.shape) / dof
    var_out = th * rng.chisquare(dof, size=s.shape) / dof
    return var_in, var_out
