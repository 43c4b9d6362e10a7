"""Quality metrics for 2D COSY maps (seed 000, Discussion): RMSE in time and frequency
domain, SNR in dB from the 2D spectrum, SSIM."""

from __future__ import annotations

import numpy as np


def spectrum2d(x: np.ndarray) -> np.ndarray:
    """Magnitude of the 2D FFT of ``x`` minus its mean (orthonormal scaling)."""
    x = np.asarray(x, dtype=float)
    return np.abs(np.fft.fft2(x - x.mean(), norm="ortho"))


def rmse(x: np.ndarray, truth: np.ndarray) -> float:
    """Root mean square error in the time domain."""
    x, truth = np.asarray(x, float), np.asarray(truth, float)
    if x.shape != truth.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {truth.shape}")
    return float(np.sqrt(np.mean((x - truth) ** 2)))


def rmse_freq(x: np.ndarray, truth: np.ndarray) -> float:
    """RMSE between the 2D magnitude spectra (`spectrum2d`)."""
    return rmse(spectrum2d(x), spectrum2d(truth))


def spectral_regions(
    truth: np.ndarray, peak_level: float = 0.3, blank_level: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Peak and blank regions of the spectrum from a noiseless map.

    Peaks: bins above ``peak_level`` times the maximum of the true spectrum; blank: bins
    below ``blank_level`` times it (at least 10% of the bins: the lowest ones otherwise).
    """
    s = spectrum2d(truth)
    peak = s >= peak_level * s.max()
    blank = s <= blank_level * s.max()
    if blank.mean() < 0.1:
        blank = s <= np.quantile(s, 0.1)
    return peak, blank


def snr_db(x: np.ndarray, peak: np.ndarray, blank: np.ndarray) -> float:
    """Seed's SNR: maximum spectral amplitude over ``peak`` against the mean amplitude over
    ``blank`` (a region with no peaks), in dB (20 log10 of the amplitude ratio)."""
    s = spectrum2d(x)
    if not peak.any() or not blank.any():
        raise ValueError("peak and blank regions must be non-empty")
    return float(20 * np.log10(s[peak].max() / max(s[blank].mean(), 1e-300)))


def ssim(x: np.ndarray, truth: np.ndarray) -> float:
    """Structural similarity (skimage) with the truth's range as data range."""
    from skimage.metrics import structural_similarity

    truth = np.asarray(truth, float)
    rng = float(np.ptp(truth)) or 1.0
    return float(structural_similarity(np.asarray(x, float), truth, data_range=rng))
