"""MRFM reconstruction: ``reconstruct(data, setup, mask=None, method="admm")``.

Units: the solver works on y = density * voxel_volume (spins per voxel) and on data divided
by ||A|| (largest block singular value), so that the penalties are dimensionless; the TV
weight is ``gamma = gamma_rel * sigma`` with sigma the (estimated) noise of the normalized
data. The result is returned in spins per m^3.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.recon.mrfm.admm import admm_tv, admm_tv_masked, block_inverses
from mracq.recon.mrfm.cs import cs_recover_fista, cs_recover_spgl1, estimate_noise_std
from mracq.recon.mrfm.landweber import landweber_bb
from mracq.recon.mrfm.operators import operator_norm

logger = logging.getLogger(__name__)

#: Default ADMM parameters (tuned on the seed-size membrane multislice problem, T_m = 30 s).
ADMM_DEFAULTS = {"gamma_rel": 0.003, "nu1": 1e-4, "nu2": 1e-4, "n_iter": 40}


def normalized_problem(data, setup):
    """Blocks and data scaled so that ||A|| = 1 and the unknown is spins per voxel.

    Returns ``(blocks, data, unit, norm)``: density (m^-3) = y * unit, data = y_data * norm.
    """
    dv = setup.voxel_size**3
    unit = 1.0 / dv
    g = setup.blocks * unit
    # the PSF is non-negative, so |G(k)| <= G(0) entrywise and the DC block has the largest norm
    norm = operator_norm(g[:1, :1])
    return g / norm, np.asarray(data, float) / norm, unit, norm


def reconstruct(data, setup, mask=None, method: str = "admm", **params) -> np.ndarray:
    """Reconstruct the spin density (m^-3) from MRFM scan data.

    Parameters
    ----------
    data : ndarray, shape ``setup.data_shape``
        Scan data in N^2 (unsampled points may hold anything when ``mask`` is given).
    setup : MRFMSetup
        The simulated or real experiment (blocks, grid).
    mask : ndarray of bool or float, optional
        Sampled xy points (n_xy, n_xy) or sampled data points. Float weights (0 = not
        sampled, k = averaged over k reference integration times; joint route only) weight
        the data term; give ``noise_std`` at the reference time with them. With ``cs="joint"``
        (default for ADMM) the masked data term enters the ADMM directly
        (:func:`mracq.recon.mrfm.admm.admm_tv_masked`); with ``cs="bpdn"`` (and always for
        Landweber) the unsampled points are first recovered by basis pursuit denoising in
        the Fourier domain (:mod:`mracq.recon.mrfm.cs`, the seed's route).
    method : {"admm", "landweber"}
        ADMM with isotropic TV and non-negativity, or projected Landweber-BB.
    **params
        ``gamma_rel``, ``nu1``, ``nu2``, ``n_iter`` (the most iterations), ``tol`` (stop when
        the estimate's relative change per iteration falls to it; default None runs all
        ``n_iter``), ``callback(k, density)`` (density in m^-3), ``noise_std`` (N^2, per
        point or scalar; default estimated from the data), ``cs_solver`` ("fista" or "spgl1").
    """
    if method not in ("admm", "landweber"):
        raise ValueError(f"method must be 'admm' or 'landweber', got {method!r}")
    data = np.asarray(data, float)
    if data.shape != setup.data_shape:
        raise ValueError(f"data shape {data.shape} does not match {setup.data_shape}")
    unknown = set(params) - {"gamma_rel", "gamma", "nu1", "nu2", "n_iter", "callback",
                             "noise_std", "cs_solver", "cs", "nu3", "tol"}
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    noise = params.get("noise_std")
    cs = params.get("cs", "joint")
    if cs not in ("joint", "bpdn"):
        raise ValueError(f"cs must be 'joint' or 'bpdn', got {cs!r}")
    joint = mask is not None and method == "admm" and cs == "joint"
    weights = None
    if joint:
        weights = np.asarray(mask)
        if weights.dtype != bool:
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError("mask weights must be finite and >= 0")
        mask = weights > 0 if weights.dtype != bool else weights
        if not mask.any():
            raise ValueError("mask samples no point")
    elif mask is not None:
        mask = np.asarray(mask, bool)
        solver = params.get("cs_solver", "fista")
        if solver not in ("fista", "spgl1"):
            raise ValueError(f"cs_solver must be 'fista' or 'spgl1', got {solver!r}")
        if not mask.any():
            raise ValueError("mask samples no point")
        recover = cs_recover_fista if solver == "fista" else cs_recover_spgl1
        data = recover(data, mask, noise_std=noise)
    elif not np.all(np.isfinite(data)):
        raise ValueError("data contain NaN or inf")
    if joint:
        data = np.where(np.broadcast_to(mask[:, :, None], data.shape) if mask.ndim == 2
                        else mask, data, 0.0)
        if not np.all(np.isfinite(data)):
            raise ValueError("sampled data contain NaN or inf")
    g, y, unit, norm = normalized_problem(data, setup)
    user_cb = params.get("callback")
    cb = None if user_cb is None else (lambda k, x: user_cb(k, x * unit))
    n_iter = int(params.get("n_iter", ADMM_DEFAULTS["n_iter"] if method == "admm" else 500))
    if method == "landweber":
        return landweber_bb(g, y, n_iter=n_iter, callback=cb) * unit
    if noise is None:
        sigma = estimate_noise_std(y, mask if joint else None)
    else:
        sigma = float(np.median(noise)) / norm
    gamma = params.get("gamma", params.get("gamma_rel", ADMM_DEFAULTS["gamma_rel"]) * sigma)
    nu1 = params.get("nu1", ADMM_DEFAULTS["nu1"])
    nu2 = params.get("nu2", ADMM_DEFAULTS["nu2"])
    if joint:
        res = admm_tv_masked(g, y, weights, gamma, nu1, nu2, params.get("nu3", 1.0), n_iter,
                             callback=cb, tol=params.get("tol"))
    else:
        res = admm_tv(g, y, gamma, nu1, nu2, n_iter, callback=cb,
                      inverses=block_inverses(g, nu1, nu2), tol=params.get("tol"))
    return res.x * unit
