"""MRFM scan simulator: setups for the XYZ and multislice protocols (seed 002).

Geometry (seed coordinates, see :mod:`mracq.sim.mrfm.field`): the sample volume is a periodic
``n_xy x n_xy`` lateral grid times ``n_z`` layers of cubic voxels of edge ``voxel_size``; at
the scanner's base height the bottom of the volume sits ``z0`` (the minimum standoff, 15 nm)
above the nominal magnet surface. Scan positions are the lateral grid points (scan step =
voxel size, seed Table 1).

The nominal surface is the seed's reference for Table 2, not the model magnet's top face:
the calibrated cylinder's top sits ``SURFACE_OFFSET`` = 6.589 nm above it
(:mod:`mracq.sim.mrfm.field`), so with z0 = 15 nm the sample's bottom is 15 - 6.589 = 8.41 nm
above the model magnet's top face (8.31 nm for the rounded-rim magnet, offset 6.686 nm).

- multislice: one plane, ``n_f`` pulses per position (centre frequencies ``f0``, default the
  seed's 46 of Table 2); data shape (n_xy, n_xy, n_f).
- xyz: one pulse (133.9 MHz); ``n_heights`` planes raised by one voxel each; data shape
  (n_xy, n_xy, n_heights). The z part of the 3D convolution is exact (no wrap in z).

Both are ``data = irfft2(G @ rfft2(density))`` with one real ``n_l x n_z`` block per lateral
frequency (:func:`mracq.sim.mrfm.psf.psf_blocks`).

Default grid (the seed's problem size): 1 nm voxels, n_z = 46 layers (15-61 nm, the 40 nm
sphere with 3 nm margins, and square 46 x 46 multislice blocks), n_xy = 168: the widest
resonant slice reaches rho = 60 nm at these heights, the sample radius is 20 nm, so the data
are non-zero within rho < 80 nm and a periodic grid needs 41 + 121 - 1 = 161 points to make
the circular convolution linear; 168 = 2^3 3 7 is the next FFT-friendly size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from mracq.sim.mrfm.field import SEED_F0, SEED_F0_XYZ, SEED_F_BW, CylinderMagnet
from mracq.sim.mrfm.noise import SEED_F_MEAS, SEED_S_TH, SEED_TAU_M, noise_std
from mracq.sim.mrfm.phantom import from_array, sphere_phantom
from mracq.sim.mrfm.psf import apply_blocks, psf_blocks

logger = logging.getLogger(__name__)

PROTOCOLS = ("multislice", "xyz")


@dataclass(frozen=True, eq=False)
class MRFMSetup:
    """A simulated MRFM scan: geometry, pulses, noise parameters and the scan operator.

    Attributes
    ----------
    geometry : str
        "membrane" (force along z) or "cantilever" (along x).
    protocol : str
        "multislice" or "xyz".
    f0 : ndarray
        Centre frequency of each channel's pulse, Hz.
    shifts : ndarray
        Height added to the base position for each channel, m (XYZ scan heights).
    f_bw : float
        Inversion half-bandwidth, Hz.
    n_xy, n_z : int
        Lateral grid size and number of sample layers.
    voxel_size : float
        Voxel edge and scan step, m.
    z0 : float
        Height of the volume bottom above the nominal surface at base position, m.
    b0 : float
        External field, T.
    tau_m, s_th, f_meas : float
        Spin correlation time (s), force noise density (N/sqrt(Hz)), bandwidth (Hz).
    magnet : CylinderMagnet
        Gradient source.
    blocks : ndarray
        Real Fourier blocks (n_xy, n_xy//2+1, n_l, n_z), N^2 per (spin/m^3).
    """

    geometry: str
    protocol: str
    f0: np.ndarray
    shifts: np.ndarray
    f_bw: float
    n_xy: int
    n_z: int
    voxel_size: float
    z0: float
    b0: float
    tau_m: float
    s_th: float
    f_meas: float
    magnet: CylinderMagnet
    blocks: np.ndarray = field(repr=False)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of a density array (n_xy, n_xy, n_z)."""
        return (self.n_xy, self.n_xy, self.n_z)

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """Shape of the scan data (n_xy, n_xy, n_l)."""
        return (self.n_xy, self.n_xy, len(self.f0))

    @property
    def n_channels(self) -> int:
        """Number of pulses (multislice) or heights (XYZ) per lateral position."""
        return len(self.f0)

    @property
    def z_layers(self) -> np.ndarray:
        """Heights of the layer centres above the nominal surface at base position, m."""
        return self.z0 + (np.arange(self.n_z) + 0.5) * self.voxel_size

    def forward(self, density) -> np.ndarray:
        """Noise-free spin force variance (N^2) of every scan point for ``density`` (m^-3)."""
        rho = from_array(density, self.sample_shape)
        return apply_blocks(self.blocks, rho)

    def noise_std(self, signal, t_m: float) -> np.ndarray:
        """Standard error (N^2) of each point for integration time ``t_m`` (s)."""
        return noise_std(signal, t_m, self.protocol, self.n_channels, self.tau_m,
                         self.s_th, self.f_meas)

    def measure(self, density, t_m: float, rng: np.random.Generator) -> np.ndarray:
        """Noisy scan data (N^2): forward + Gaussian error of the physics.md noise model.

        Parameters
        ----------
        density : array
            Spin density, m^-3, shape ``sample_shape``.
        t_m : float
            Integration time per point, s.
        rng : numpy.random.Generator
            Random source.
        """
        clean = self.forward(density)
        return clean + self.noise_std(clean, t_m) * rng.standard_normal(clean.shape)

    def phantom(self, rng: np.random.Generator, **kwargs) -> np.ndarray:
        """The seed's sphere phantom (Table 1) centred on this grid, m^-3."""
        return sphere_phantom(self.sample_shape, self.voxel_size, rng, **kwargs)

    def scan_positions(self) -> np.ndarray:
        """Scanner positions (n_xy, n_xy, n_heights, 3) in m: x, y and the sample height.

        The lateral position of index i is i * voxel_size (periodic grid origin at 0); the
        height is ``z0 + shift``, the gap between the volume bottom and the nominal surface.
        """
        idx = np.fft.fftfreq(self.n_xy, 1.0 / self.n_xy) * self.voxel_size
        heights = self.z0 + np.unique(self.shifts)
        X, Y, Z = np.meshgrid(idx, idx, heights, indexing="ij")
        return np.stack([X, Y, Z], axis=-1)

    def pulses(self) -> list[dict]:
        """Inversion pulses, one per channel: centre frequency and half-bandwidth in Hz."""
        return [{"f0": float(f), "f_bw": float(self.f_bw)} for f in self.f0]

    def describe(self) -> dict:
        """JSON-safe geometry and pulse description for storage."""
        return {
            "geometry": self.geometry,
            "protocol": self.protocol,
            "f0": [float(f) for f in self.f0],
            "shifts": [float(s) for s in self.shifts],
            "f_bw": float(self.f_bw),
            "n_xy": int(self.n_xy),
            "n_z": int(self.n_z),
            "voxel_size": float(self.voxel_size),
            "z0": float(self.z0),
            "b0": float(self.b0),
            "tau_m": float(self.tau_m),
            "s_th": float(self.s_th),
            "f_meas": float(self.f_meas),
            "magnet": {
                "radius": self.magnet.radius,
                "polarization": self.magnet.polarization,
                "height": self.magnet.height,
                "surface_offset": self.magnet.surface_offset,
                "edge_radius": self.magnet.edge_radius,
            },
        }


def make_setup(
    geometry: str = "membrane",
    protocol: str = "multislice",
    *,
    f0=None,
    f_bw: float = SEED_F_BW,
    n_xy: int = 168,
    n_z: int = 46,
    voxel_size: float = 1e-9,
    z0: float = 15e-9,
    n_heights: int | None = None,
    b0: float = 3.0,
    tau_m: float = SEED_TAU_M,
    s_th: float = SEED_S_TH,
    f_meas: float = SEED_F_MEAS,
    magnet: CylinderMagnet | None = None,
    n_sub: int = 4,
) -> MRFMSetup:
    """Build a setup; see :func:`default_setup` for the parameters (all SI)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    for name, v in (("voxel_size", voxel_size), ("z0", z0), ("f_bw", f_bw), ("b0", b0)):
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be positive and finite, got {v!r}")
    if n_xy < 4 or n_z < 1:
        raise ValueError(f"bad grid n_xy={n_xy!r} n_z={n_z!r}")
    magnet = magnet or CylinderMagnet()
    if protocol == "multislice":
        f0 = np.asarray(SEED_F0 if f0 is None else f0, float)
        shifts = np.zeros_like(f0)
    else:
        f = SEED_F0_XYZ if f0 is None else float(np.atleast_1d(f0)[0])
        n_h = n_z if n_heights is None else int(n_heights)
        shifts = np.arange(n_h) * voxel_size
        f0 = np.full(n_h, f)
    z_layers = z0 + (np.arange(n_z) + 0.5) * voxel_size
    blocks = psf_blocks(magnet, f0, shifts, z_layers, n_xy, voxel_size, geometry, f_bw, b0,
                        n_sub=n_sub)
    return MRFMSetup(geometry, protocol, f0, shifts, float(f_bw), int(n_xy), int(n_z),
                     float(voxel_size), float(z0), float(b0), float(tau_m), float(s_th),
                     float(f_meas), magnet, blocks)


def default_setup(geometry: str = "membrane", protocol: str = "multislice", **overrides):
    """The seed's simulated experiment (Table 1, Table 2) as an :class:`MRFMSetup`.

    Parameters
    ----------
    geometry : {"membrane", "cantilever"}
        Resonator oscillating along z (PSF ~ (dBz/dz)^2) or along x (~ (dBz/dx)^2).
    protocol : {"multislice", "xyz"}
        46 pulses in one plane, or one 133.9 MHz pulse on 46 planes.
    **overrides
        Any of ``f0`` (Hz), ``f_bw`` (Hz), ``n_xy``, ``n_z``, ``voxel_size`` (m), ``z0`` (m),
        ``n_heights``, ``b0`` (T), ``tau_m`` (s), ``s_th`` (N/sqrt(Hz)), ``f_meas`` (Hz),
        ``magnet``, ``n_sub``. Defaults: 1 nm voxels, 168 x 168 x 46 grid, z0 = 15 nm,
        f_BW = 500 kHz, B0 = 3 T, tau_m = 20 ms, S_th = 10 aN/sqrt(Hz), f_meas = 40 Hz.
    """
    return make_setup(geometry, protocol, **overrides)
