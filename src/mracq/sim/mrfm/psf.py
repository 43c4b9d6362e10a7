"""Point-spread functions of MRFM inversion slices and their 2D-Fourier blocks.

PSF (seed Eq. 3, physics.md section 4): spins whose Larmor frequency lies within f0 +- f_BW
are inverted; each contributes a force variance (dBz/dp)^2 mu^2 with p = x (cantilever) or
z (membrane) and mu = hbar gamma / 2. A voxel of volume dV and density rho (spins/m^3)
contributes H rho dV.

The field is axisymmetric, so the PSF of one layer is a radial profile P(rho) (membrane) or
P(rho) cos^2(phi) (cantilever, dBz/dx = dBz/drho x / rho). Profiles are computed on a fine
radial grid (0.05 nm), averaged over ``n_sub`` heights inside each voxel layer and over one
voxel width in rho (thin near-surface slices are ~1 nm thick), then interpolated onto the
lateral grid. The lateral grid is periodic (FFT convolution), with the PSF centred at index 0.

Blocks: one row per measured "channel" l (a pulse in the multislice protocol, a scan height
in the XYZ protocol) and one column per sample layer k:
``G[kx, ky, l, k] = rfft2(H_l(x, y, z_k + shift_l))``. The PSF is even in x and y, so its
transform is real; the real part is kept (equivalent to symmetrising the Nyquist lines).
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.sim.mrfm.field import GAMMA_1H_HZ_PER_T, HBAR, CylinderMagnet

logger = logging.getLogger(__name__)

#: Magnetic moment of one proton along z, mu = hbar gamma / 2, J/T.
MU_1H = HBAR * 2 * np.pi * GAMMA_1H_HZ_PER_T / 2
GEOMETRIES = ("membrane", "cantilever")


def _radial_profiles(magnet, b0, heights, rho, step=0.01e-9):
    """|B| (T), dBz/drho and dBz/dz (T/m) on the grid heights x rho (central differences)."""
    z = np.asarray(heights)[:, None]
    r = np.asarray(rho)[None, :]
    b_rho, b_z = magnet.field_rz(r, z)
    btot = np.hypot(b_rho, b0 + b_z)
    _, bz_rp = magnet.field_rz(r + step, z)
    _, bz_rm = magnet.field_rz(np.abs(r - step), z)
    _, bz_zp = magnet.field_rz(r, z + step)
    _, bz_zm = magnet.field_rz(r, z - step)
    return btot, (bz_rp - bz_rm) / (2 * step), (bz_zp - bz_zm) / (2 * step)


def lateral_coordinates(n_xy: int, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic lateral coordinates (m) of an n_xy x n_xy grid, PSF centre at index 0."""
    idx = np.fft.fftfreq(n_xy, d=1.0 / n_xy)
    x, y = np.meshgrid(idx * dx, idx * dx, indexing="ij")
    return x, y


def psf_blocks(
    magnet: CylinderMagnet,
    f0: np.ndarray,
    shifts: np.ndarray,
    z_layers: np.ndarray,
    n_xy: int,
    dx: float,
    geometry: str = "membrane",
    f_bw: float = 500e3,
    b0: float = 3.0,
    n_sub: int = 4,
    return_psf_row: int | None = None,
):
    """Fourier blocks of the scan operator.

    Parameters
    ----------
    magnet : CylinderMagnet
        Gradient source.
    f0 : array (n_l,)
        Centre frequency of the inversion pulse of each channel, Hz.
    shifts : array (n_l,)
        Extra height of the sample above its base position for each channel, m (0 for
        multislice; the scan height for XYZ).
    z_layers : array (n_z,)
        Heights of the sample layer centres above the nominal surface at base position, m.
    n_xy : int
        Lateral grid size (periodic).
    dx : float
        Voxel edge (lateral and vertical), m.
    geometry : {"membrane", "cantilever"}
        Force direction z (dBz/dz) or x (dBz/dx).
    f_bw : float
        Inversion half-bandwidth, Hz.
    b0 : float
        External field along z, T.
    n_sub : int
        Sub-samples per voxel layer in z.
    return_psf_row : int, optional
        Also return the real-space PSF (n_z, n_xy, n_xy) of this channel, in N^2 m^3.

    Returns
    -------
    G : ndarray (n_xy, n_xy // 2 + 1, n_l, n_z), float64
        Real 2D-Fourier blocks; data = irfft2(G @ rfft2(density)) in N^2 for density in m^-3.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    f0 = np.atleast_1d(np.asarray(f0, float))
    shifts = np.broadcast_to(np.asarray(shifts, float), f0.shape)
    z_layers = np.asarray(z_layers, float)
    if not (np.all(np.isfinite(f0)) and np.all(f0 > 0)):
        raise ValueError(f"centre frequencies must be positive and finite, got {f0!r}")
    if n_xy < 4 or dx <= 0 or not np.isfinite(dx):
        raise ValueError(f"bad grid: n_xy={n_xy!r}, dx={dx!r}")
    if np.min(z_layers) - dx / 2 <= magnet.surface_offset:
        raise ValueError(f"sample layer at {np.min(z_layers)!r} m touches the magnet")
    n_l, n_z = f0.size, z_layers.size
    x, y = lateral_coordinates(n_xy, dx)
    rho_grid = np.hypot(x, y)
    drho = 0.05e-9
    rho_fine = np.arange(0.0, rho_grid.max() + dx + 2 * drho, drho)
    sub = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    # unique heights (rounded to 1 pm) of all (channel, layer) pairs
    heights = np.round((z_layers[None, :] + shifts[:, None]) / 1e-12) * 1e-12
    uniq, inv = np.unique(heights, return_inverse=True)
    inv = inv.reshape(n_l, n_z)
    zs = (uniq[:, None] + sub[None, :] * dx).ravel()
    btot, dbr, dbz = _radial_profiles(magnet, b0, zs, rho_fine)
    freq = GAMMA_1H_HZ_PER_T * btot
    grad2 = (dbz if geometry == "membrane" else dbr) ** 2
    scale = MU_1H**2 * dx**3
    freq = freq.reshape(uniq.size, n_sub, -1)
    grad2 = grad2.reshape(uniq.size, n_sub, -1)
    # box average over one voxel width in rho
    width = max(1, int(round(dx / drho)))
    kernel = np.ones(width) / width
    # linear interpolation weights onto the lateral grid
    pos = rho_grid.ravel() / drho
    i0 = np.clip(np.floor(pos).astype(int), 0, rho_fine.size - 2)
    w1 = pos - i0
    if geometry == "cantilever":
        with np.errstate(invalid="ignore", divide="ignore"):
            ang = np.where(rho_grid > 0, (x / np.where(rho_grid > 0, rho_grid, 1.0)) ** 2, 0.0)
    else:
        ang = np.ones_like(rho_grid)
    nr = n_xy // 2 + 1
    G = np.empty((n_xy, nr, n_l, n_z))
    psf_row = None
    for ell in range(n_l):
        inside = np.abs(freq[inv[ell]] - f0[ell]) <= f_bw  # (n_z, n_sub, n_rho)
        prof = (grad2[inv[ell]] * inside).mean(axis=1) * scale
        prof = np.apply_along_axis(lambda p: np.convolve(p, kernel, mode="same"), 1, prof)
        h = (prof[:, i0] * (1 - w1) + prof[:, i0 + 1] * w1).reshape(n_z, n_xy, n_xy) * ang
        if return_psf_row is not None and ell == return_psf_row:
            psf_row = h.copy()
        G[:, :, ell, :] = np.fft.rfft2(h, axes=(1, 2)).real.transpose(1, 2, 0)
    logger.debug("PSF blocks %s built", G.shape)
    if return_psf_row is not None:
        return G, psf_row
    return G


def apply_blocks(G: np.ndarray, vol: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Apply the block operator: irfft2(G @ rfft2(vol)) over the lateral axes.

    ``vol`` has shape (n_xy, n_xy, n_z) (or (n_xy, n_xy, n_l) with ``transpose``, which
    applies the adjoint, irfft2(G^T @ rfft2(.))).
    """
    n_xy = vol.shape[0]
    spec = np.fft.rfft2(vol, axes=(0, 1))
    pair = np.stack([spec.real, spec.imag], axis=-1)  # (nx, nr, n_in, 2)
    mat = np.swapaxes(G, -1, -2) if transpose else G
    out = mat @ pair
    return np.fft.irfft2(out[..., 0] + 1j * out[..., 1], s=(n_xy, n_xy), axes=(0, 1))
