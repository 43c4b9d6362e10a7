"""MRFM scan operators with forward and adjoint (pylops ``LinearOperator`` contract).

- :class:`BlockScanOperator`: ``irfft2(G @ rfft2(o))``, one real ``n_l x n_z`` block per
  lateral frequency (seed App. B.2.2, Eq. 34-36); covers the multislice scan and the XYZ scan
  (whose blocks hold the PSF at heights z_k + h_l, the z part of the 3D convolution).
- :class:`XYZConvolution3D`: the XYZ scan as a plain 3D FFT convolution (seed Eq. 28-31),
  periodic in x, y and zero-padded in z; an independent check of the block form.
"""

from __future__ import annotations

import numpy as np
import pylops

from mracq.sim.mrfm.psf import apply_blocks


class BlockScanOperator(pylops.LinearOperator):
    """Block-diagonal-in-(kx, ky) scan operator.

    Parameters
    ----------
    blocks : ndarray (n_xy, n_xy // 2 + 1, n_l, n_z)
        Real Fourier blocks (e.g. ``setup.blocks``).
    scale : float
        Factor applied to the output (unit conversion).
    """

    def __init__(self, blocks: np.ndarray, scale: float = 1.0):
        n_xy, _, n_l, n_z = blocks.shape
        self.blocks = blocks
        self.scale = float(scale)
        super().__init__(dtype=np.float64, dims=(n_xy, n_xy, n_z), dimsd=(n_xy, n_xy, n_l))

    def _matvec(self, x):
        return self.scale * apply_blocks(self.blocks, x.reshape(self.dims)).ravel()

    def _rmatvec(self, y):
        return self.scale * apply_blocks(self.blocks, y.reshape(self.dimsd), True).ravel()


class XYZConvolution3D(pylops.LinearOperator):
    """XYZ scan as a 3D convolution: ``I[x, y, h] = sum H(x - x', y - y', z_k + h) O[x', y', k]``.

    Parameters
    ----------
    psf : ndarray (n_xy, n_xy, n_z + n_h - 1)
        PSF at the heights ``z_0 .. z_{n_z + n_h - 2}`` of layers at unit voxel steps, lateral
        index 0 at the PSF centre (periodic).
    n_z, n_h : int
        Number of sample layers and of scan heights.
    """

    def __init__(self, psf: np.ndarray, n_z: int, n_h: int):
        n_xy = psf.shape[0]
        if psf.shape[2] != n_z + n_h - 1:
            raise ValueError(f"psf has {psf.shape[2]} layers, need n_z + n_h - 1 = {n_z + n_h - 1}")
        self.n_z, self.n_h = n_z, n_h
        self.nzp = psf.shape[2] + n_z - 1
        pad = np.zeros((n_xy, n_xy, self.nzp))
        pad[:, :, : psf.shape[2]] = psf
        self.psf_hat = np.fft.fftn(pad)
        super().__init__(dtype=np.float64, dims=(n_xy, n_xy, n_z), dimsd=(n_xy, n_xy, n_h))

    def _matvec(self, x):
        o = x.reshape(self.dims)[:, :, ::-1]
        pad = np.zeros(self.dims[:2] + (self.nzp,))
        pad[:, :, : self.n_z] = o
        full = np.fft.ifftn(self.psf_hat * np.fft.fftn(pad)).real
        return full[:, :, self.n_z - 1 : self.n_z - 1 + self.n_h].ravel()

    def _rmatvec(self, y):
        pad = np.zeros(self.dims[:2] + (self.nzp,))
        pad[:, :, self.n_z - 1 : self.n_z - 1 + self.n_h] = y.reshape(self.dimsd)
        full = np.fft.ifftn(np.conj(self.psf_hat) * np.fft.fftn(pad)).real
        return full[:, :, : self.n_z][:, :, ::-1].ravel()


def operator_norm(blocks: np.ndarray) -> float:
    """Largest singular value of the block operator (max over the lateral frequencies)."""
    return float(np.sqrt(np.max(np.linalg.eigvalsh(np.swapaxes(blocks, -1, -2) @ blocks))))
