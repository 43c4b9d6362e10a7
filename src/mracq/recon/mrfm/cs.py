"""Compressed-sensing recovery of sub-sampled MRFM scans (seed Sec. III.4, Eq. 10).

Basis pursuit denoising in the Fourier domain: min ||F I||_1 s.t. ||W (I - I_p)||_2^2 <= zeta,
F the unitary 3D DFT over (x, y, channel), W the sampling mask (the same xy points for every
channel). :func:`cs_recover_fista` is our solver: FISTA on the Lagrangian form
1/2 ||W (I - I_p)||^2 + lam ||F I||_1 (gradient step 1 = "insert the measured points", prox =
complex soft thresholding of the real FFT, exact for real I since conjugate pairs are
thresholded alike), with lam lowered geometrically (continuation, warm starts) until the
residual reaches zeta, then refined; the BPDN solution is the Lagrangian one at that lam.
:func:`cs_recover_spgl1` is the reference (spgl1 through pylops, as in the seed).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _full_mask(mask, shape):
    m = np.asarray(mask, bool)
    if m.shape == shape[:2]:
        m = np.broadcast_to(m[:, :, None], shape)
    if m.shape != shape:
        raise ValueError(f"mask shape {np.shape(mask)} fits neither {shape[:2]} nor {shape}")
    return m


def estimate_noise_std(data: np.ndarray, mask=None) -> float:
    """Typical per-point noise (units of data) from second differences along the channel axis.

    The scan is smooth from one pulse (or height) to the next, so the second difference is
    dominated by noise: var(d2) = 6 sigma^2; a median absolute deviation makes it robust.

    Parameters
    ----------
    data : ndarray (n_xy, n_xy, n_l)
        Scan data (anything at unsampled points).
    mask : ndarray of bool, (n_xy, n_xy) or data shape, optional
        Sampled points. Only second differences whose three points are all sampled enter
        the estimate, so unsampled zeros never count as noise.
    """
    data = np.asarray(data, float)
    if data.ndim != 3 or data.shape[2] < 3:
        raise ValueError("need data (nx, ny, n_l) with at least 3 channels to estimate the noise")
    d2 = data[:, :, 2:] - 2 * data[:, :, 1:-1] + data[:, :, :-2]
    if mask is not None:
        m = _full_mask(mask, data.shape)
        d2 = d2[m[:, :, 2:] & m[:, :, 1:-1] & m[:, :, :-2]]
        if d2.size == 0:
            raise ValueError("mask has no three consecutive sampled channels to estimate noise")
    d2 = d2.ravel()
    return float(1.4826 * np.median(np.abs(d2 - np.median(d2))) / np.sqrt(6.0))


def cs_recover_fista(
    data: np.ndarray,
    mask,
    noise_std=None,
    shrink: float = 0.7,
    inner: int = 8,
    final: int = 40,
    max_stages: int = 60,
) -> np.ndarray:
    """Recover a full scan from its sampled points by BPDN in the 3D Fourier domain.

    Parameters
    ----------
    data : ndarray (n_xy, n_xy, n_l)
        Scan with arbitrary values at unsampled points.
    mask : ndarray (n_xy, n_xy) or (n_xy, n_xy, n_l) of bool
        True where sampled.
    noise_std : float or ndarray, optional
        Noise standard deviation of the sampled points (default: estimated); zeta is the sum
        of their variances.
    shrink : float
        Factor by which lam decreases per continuation stage.
    inner, final : int
        FISTA iterations per stage and after the last stage.
    max_stages : int
        Continuation stages at most.
    """
    data = np.asarray(data, float)
    m = _full_mask(mask, data.shape)
    if not np.all(np.isfinite(data[m])):
        raise ValueError("sampled data contain NaN or inf")
    if noise_std is None:
        noise_std = estimate_noise_std(data, np.asarray(mask, bool) if np.ndim(mask) == 2 else m)
    var = np.broadcast_to(np.asarray(noise_std, float) ** 2, data.shape)
    zeta = float(var[m].sum())
    y = np.where(m, data, 0.0)
    ax = (0, 1, 2)

    def fwd(v):
        return np.fft.rfftn(v, axes=ax, norm="ortho")

    def inv(c):
        return np.fft.irfftn(c, s=data.shape, axes=ax, norm="ortho")

    def soft(c, lam):
        mag = np.abs(c)
        return c * np.maximum(0.0, 1.0 - lam / np.maximum(mag, 1e-300))

    lam = float(np.abs(fwd(y)).max())
    x = np.zeros_like(y)
    z, t = x.copy(), 1.0

    def run(lam, n, x, z, t):
        for _ in range(n):
            x_new = inv(soft(fwd(np.where(m, y, z)), lam))
            t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            z = x_new + (t - 1) / t_new * (x_new - x)
            x, t = x_new, t_new
        return x, z, t

    prev = None
    n_stages = 0
    for _ in range(max_stages):
        n_stages += 1
        lam *= shrink
        x, z, t = run(lam, inner, x, z, 1.0)
        res = float(((x - y)[m] ** 2).sum())
        if res <= zeta:
            break
        prev = lam
    # refine lam between the last two stages by bisection on the residual
    lo, hi = lam, (prev if prev is not None else lam / shrink)
    for _ in range(4):
        mid = np.sqrt(lo * hi)
        x_try, z_try, _ = run(mid, inner, x, x.copy(), 1.0)
        if float(((x_try - y)[m] ** 2).sum()) <= zeta:
            lo, x = mid, x_try
        else:
            hi = mid
    x, _, _ = run(lo, final, x, x.copy(), 1.0)
    logger.debug("CS: %d stages, lam %.3g, residual %.3g, zeta %.3g", n_stages, lo,
                 float(((x - y)[m] ** 2).sum()), zeta)
    return x


def cs_recover_spgl1(data: np.ndarray, mask, noise_std=None, iter_lim: int = 300) -> np.ndarray:
    """Reference BPDN solver: spgl1 on Restriction @ FFTND.H (pylops), as in the seed."""
    import pylops
    import spgl1

    data = np.asarray(data, float)
    m = _full_mask(mask, data.shape)
    if noise_std is None:
        noise_std = estimate_noise_std(data, np.asarray(mask, bool) if np.ndim(mask) == 2 else m)
    var = np.broadcast_to(np.asarray(noise_std, float) ** 2, data.shape)
    scale = float(np.abs(data[m]).max()) or 1.0  # spgl1's tolerances are absolute
    sigma = float(np.sqrt(var[m].sum())) / scale
    idx = np.flatnonzero(m.ravel())
    fop = pylops.signalprocessing.FFTND(dims=data.shape, norm="ortho", dtype=np.complex128)
    op = pylops.Restriction(data.size, idx, dtype=np.complex128) @ fop.H
    coef, *_ = spgl1.spg_bpdn(op, data.ravel()[idx].astype(np.complex128) / scale, sigma,
                              iscomplex=True, iter_lim=iter_lim, verbosity=0)
    return np.real(fop.H @ coef).reshape(data.shape) * scale
