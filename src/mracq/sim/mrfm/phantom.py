"""Sample phantoms for MRFM simulations (spin densities in spins per m^3)."""

from __future__ import annotations

import numpy as np

#: Seed Table 1: mean 1H density (m^-3), its standard deviation (m^-3), correlation length (m),
#: sample diameter (m).
SEED_MEAN_DENSITY = 60e27
SEED_STD_DENSITY = 18.9e27
SEED_CORRELATION_LENGTH = 5e-9
SEED_DIAMETER = 40e-9


def sphere_phantom(
    shape: tuple[int, int, int],
    voxel_size: float,
    rng: np.random.Generator,
    diameter: float = SEED_DIAMETER,
    mean: float = SEED_MEAN_DENSITY,
    std: float = SEED_STD_DENSITY,
    correlation_length: float = SEED_CORRELATION_LENGTH,
    center: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Sphere with a correlated random 1H density (seed Fig. 2, Table 1).

    White Gaussian noise is filtered with a Gaussian kernel whose correlation function is
    exp(-r^2 / (2 l^2)) (kernel standard deviation l / sqrt(2)), rescaled to mean ``mean`` and
    standard deviation ``std`` inside the sphere, clipped at 0, and set to 0 outside.

    Parameters
    ----------
    shape : (nx, ny, nz)
        Grid; the lateral grid is periodic with its centre at index (0, 0) unless ``center``
        is given.
    voxel_size : float
        Voxel edge, m.
    rng : numpy.random.Generator
        Random source.
    diameter : float
        Sphere diameter, m.
    mean, std : float
        Density mean and standard deviation inside the sphere, m^-3.
    correlation_length : float
        Correlation length l of the density fluctuations, m.
    center : (cx, cy, cz), optional
        Sphere centre in voxel index units (default: lateral index 0, middle layer).
    """
    if voxel_size <= 0 or not np.isfinite(voxel_size):
        raise ValueError(f"voxel_size must be positive, got {voxel_size!r}")
    if diameter <= 0 or std < 0 or mean < 0:
        raise ValueError(f"bad phantom parameters diameter={diameter!r} mean={mean!r} std={std!r}")
    nx, ny, nz = shape
    if center is None:
        center = (0.0, 0.0, (nz - 1) / 2)
    ix = np.fft.fftfreq(nx, 1.0 / nx) if center[0] == 0 else np.arange(nx)
    iy = np.fft.fftfreq(ny, 1.0 / ny) if center[1] == 0 else np.arange(ny)
    iz = np.arange(nz)
    X, Y, Z = np.meshgrid(ix - center[0], iy - center[1], iz - center[2], indexing="ij")
    r = np.sqrt(X**2 + Y**2 + Z**2) * voxel_size
    inside = r <= diameter / 2
    noise = rng.standard_normal(shape)
    sig = correlation_length / np.sqrt(2) / voxel_size
    k = [np.fft.fftfreq(n) for n in shape]
    KX, KY, KZ = np.meshgrid(*k, indexing="ij")
    filt = np.exp(-2 * np.pi**2 * sig**2 * (KX**2 + KY**2 + KZ**2))
    field = np.fft.ifftn(np.fft.fftn(noise) * filt).real
    vals = field[inside]
    field = (field - vals.mean()) / (vals.std() + 1e-300) * std + mean
    return np.where(inside, np.maximum(field, 0.0), 0.0)


def from_array(density, shape) -> np.ndarray:
    """Validate any 3D density (m^-3) for a setup of ``shape``; returns a float64 copy."""
    arr = np.asarray(density, dtype=float)
    if arr.shape != tuple(shape):
        raise ValueError(f"density shape {arr.shape} does not match sample_shape {tuple(shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("density contains NaN or inf")
    if np.any(arr < 0):
        raise ValueError(f"density must be >= 0, min is {arr.min()!r}")
    return arr.copy()
