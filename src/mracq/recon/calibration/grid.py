"""The ODMR line's posterior on a (width, centre) grid, depth and baseline integrated out.

For a fixed centre and width the model ``baseline - depth * shape`` is linear in
(baseline, depth), so with the baseline's normal prior and a flat depth prior on its range
their integral is Gaussian (the depth's bounds through the normal CDF):
:func:`grid_posterior`. :func:`expected_centre_variance` is the preposterior design on that
grid: the centre's posterior variance expected after one more point at each candidate.
:class:`~mracq.recon.calibration.strategy.AdaptiveODMR` states its error from the one and
chooses points with the other while its least-squares fit is not trusted.
"""

from __future__ import annotations

import numpy as np

from mracq.recon.calibration.fits import odmr_model

__all__ = ["expected_centre_variance", "grid_posterior", "log_interval_mass", "systematic"]


def log_interval_mass(mu, sd, lo, hi):
    """ln P(lo < X < hi), X ~ N(mu, sd^2), elementwise, stable in the tails."""
    from scipy.special import log_ndtr

    a, b = (lo - mu) / sd, (hi - mu) / sd
    # ln(Phi(b) - Phi(a)), mirrored where both are far in the upper tail
    lb, la = log_ndtr(b), log_ndtr(a)
    ub, ua = log_ndtr(-a), log_ndtr(-b)
    with np.errstate(divide="ignore"):  # the branch np.where drops may reach ln 0
        lower = lb + np.log1p(-np.exp(np.minimum(la - lb, -1e-300)))
        upper = ub + np.log1p(-np.exp(np.minimum(ua - ub, -1e-300)))
    return np.where(a > 0, upper, lower)


def systematic(p, n, rng) -> np.ndarray:
    """``n`` indices drawn from the weights ``p`` by systematic resampling (one uniform
    offset from ``rng``)."""
    return np.minimum(np.searchsorted(np.cumsum(p), (np.arange(n) + rng.uniform()) / n),
                      len(p) - 1)


def grid_posterior(f, y, sigma, centres, widths, *, baseline_prior, depth_range,
                   shape="lorentzian", splitting=0.0, linear=False):
    """ln posterior (up to a constant) of a line on the grid ``widths`` x ``centres``.

    Centre flat; width log-uniform (``widths`` evenly spaced in ln width); baseline
    normal; depth flat on ``depth_range``; both integrated out in closed form.

    Parameters
    ----------
    f, y, sigma : array_like
        The points: frequencies (Hz), populations and their standard errors.
    centres, widths : array_like
        Line centres (the m_I = 0 line of a triplet) and half widths, Hz.
    baseline_prior : (float, float)
        Mean and standard deviation of the off-resonant population.
    depth_range : (float, float)
        Bounds of the depth's flat prior (population units).
    shape, splitting
        As in :func:`~mracq.recon.calibration.fits.odmr_model`.
    linear : bool
        Also return each cell's least-squares baseline and depth and their covariance
        (var b, cov bd, var d), without the depth's bounds.

    Returns
    -------
    ndarray or tuple of ndarray
        ``logp``, or ``(logp, b, d, vbb, vbd, vdd)``; each of shape
        ``(len(widths), len(centres))``.
    """
    f, y, sig = (np.asarray(a, float) for a in (f, y, sigma))
    cs, ws = np.asarray(centres, float), np.asarray(widths, float)
    wt = 1.0 / sig**2
    b0, sb = baseline_prior
    d_lo, d_hi = depth_range
    logp = np.empty((len(ws), len(cs)))
    mb, md = np.empty_like(logp), np.empty_like(logp)
    cbb, cbd, cdd = np.empty_like(logp), np.empty_like(logp), np.empty_like(logp)
    x = f[None, :] - cs[:, None]  # (n_c, n)
    h_bb = wt.sum() + 1.0 / sb**2
    g_b = (wt * y).sum() + b0 / sb**2
    for i, w in enumerate(ws):
        s = odmr_model(x, 0.0, w, -1.0, 0.0, shape=shape, splitting=splitting)  # y = b - d s
        h_bd = -(s @ wt)
        h_dd = (s**2) @ wt
        g_d = -(s @ (wt * y))
        det = np.maximum(h_bb * h_dd - h_bd**2, 1e-300)
        b_hat = (h_dd * g_b - h_bd * g_d) / det
        d_hat = (h_bb * g_d - h_bd * g_b) / det
        chi2_min = (wt * y**2).sum() + b0**2 / sb**2 - (b_hat * g_b + d_hat * g_d)
        sd_d = np.sqrt(h_bb / det)  # the depth's marginal, baseline integrated out
        logp[i] = -0.5 * chi2_min - 0.5 * np.log(det) + np.log(sd_d) + \
            log_interval_mass(d_hat, sd_d, d_lo, d_hi)
        mb[i], md[i] = b_hat, d_hat
        cbb[i], cbd[i], cdd[i] = h_dd / det, -h_bd / det, h_bb / det
    return (logp, mb, md, cbb, cbd, cdd) if linear else logp


def expected_centre_variance(candidates, centres, widths, posterior, sigma, *, cells,
                             outcomes, n_candidates, rng, shape="lorentzian",
                             splitting=0.0) -> np.ndarray:
    """The grid posterior's centre variance expected after one more point at each
    candidate frequency, Hz^2 (inf where not evaluated).

    At most ``cells`` cells, drawn by weight (systematic; counts as weights); depth and
    baseline Gaussian within each; only the ``n_candidates`` candidates whose prediction
    the cells disagree on most; ``outcomes`` draws from the predictive mixture, the same
    cells and normal deviates for every candidate.

    Parameters
    ----------
    candidates : array_like
        Frequencies, Hz.
    centres, widths : array_like
        The grid, Hz.
    posterior : tuple
        :func:`grid_posterior` on that grid with ``linear=True``.
    sigma : float
        Standard error of the next point (population units).
    rng : numpy.random.Generator
        For the cells' and the outcomes' draws.
    """
    logp, mb, md, cbb, cbd, cdd = posterior
    cand = np.asarray(candidates, float)
    cs, ws = np.asarray(centres, float), np.asarray(widths, float)
    p = np.exp(logp - logp.max()).ravel()
    p /= p.sum()
    keep, p = np.unique(systematic(p, cells, rng), return_counts=True)
    p = p / p.sum()
    iw, ic = np.unravel_index(keep, logp.shape)
    c, w = cs[ic], ws[iw]
    b, d = mb.ravel()[keep], md.ravel()[keep]
    vbb, vbd, vdd = cbb.ravel()[keep], cbd.ravel()[keep], cdd.ravel()[keep]
    s = odmr_model(cand[:, None] - c[None, :], 0.0, w[None, :], -1.0, 0.0, shape=shape,
                   splitting=splitting)  # (K, M)
    mu = b - d * s
    m = mu @ p
    top = np.argsort(((mu - m[:, None]) ** 2) @ p)[-n_candidates:]
    s, mu = s[top], mu[top]
    var = sigma**2 + vbb - 2 * s * vbd + s**2 * vdd
    pick = systematic(p, outcomes, rng)
    yk = mu[:, pick] + np.sqrt(var[:, pick]) * rng.standard_normal(outcomes)  # (K, Q)
    ll = -0.5 * (yk[:, :, None] - mu[:, None, :]) ** 2 / var[:, None, :] \
        - 0.5 * np.log(var[:, None, :])  # (K, Q, M)
    ll -= ll.max(axis=2, keepdims=True)
    post = p * np.exp(ll)
    post /= post.sum(axis=2, keepdims=True)
    m1 = post @ c
    m2 = post @ c**2
    out = np.full(len(cand), np.inf)
    out[top] = np.mean(np.maximum(m2 - m1**2, 0.0), axis=1)
    return out
