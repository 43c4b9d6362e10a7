"""Batched Levenberg-Marquardt over the 3K Lorentzian parameters of every restart.

The VQNS loss is a sum of squares, ``sum_p wt_p (C_p - y_p)^2``, so Gauss-Newton steps
with an adaptive damping (Levenberg-Marquardt, Marquardt's diagonal scaling) converge in
tens of iterations where Adam takes thousands. All restarts advance together: one call of
the residual/Jacobian kernel per iteration evaluates every trial point; each restart
accepts or rejects its own step and adapts its own damping.

Parameters are the free (log) ones of :class:`mracq.recon.vqns.optim._Init`:
``A = exp(u)``, ``g = g_min + w_s exp(v)``, ``w0 = w_s exp(w)``, clipped to a box so that
no Lorentzian leaves the frequencies the data can see by decades.
"""

from __future__ import annotations

import numpy as np
import torch

from mracq.recon.vqns.chi import SERIES_SWITCH, chi_and_grad

__all__ = ["residual_and_jacobian", "levenberg_marquardt"]


class _Model:
    """K free Lorentzians plus a fixed bank of smooth positive bumps.

    Free parameters per restart, a flat vector of ``3K + M``: the K Lorentzians' free
    parameters of :class:`mracq.recon.vqns.optim._Init` (row-major (K, 3)), then the log
    variances ``u_j`` of the M bumps

        B_j(w) = 2 (a_j + b_j) w^2 / ((w^2 + a_j^2)(w^2 + b_j^2)),   b_j = r a_j,

    each of unit variance (``Int B dw / 2 pi = 1``), zero at ``w = 0`` (rising as w^2),
    flat between a_j and b_j and falling as ``1 / w^2`` above: shapes such as the Ohmic
    spectrum, which no finite sum of Lorentzians (all positive at ``w = 0``) fits. A bump
    is exactly ``(b D_b - a D_a) / (b - a)`` with ``D_g`` the unit Lorentzian of width g at
    centre 0, so its chi is the same closed form, and every sample is still a list of
    Lorentzian rows (A, g, w0) (pairs with one negative A, positive in sum).
    """

    def __init__(self, prob, init, bank: bool = True, per_decade: float = 3.0,
                 ratio: float = 3.0):
        self.prob, self.init, self.k = prob, init, init.k
        self.ratio = float(ratio)
        if bank:
            lo = max(init.w_lo, 1e-3 * prob.band[1])
            c_lo, c_hi = lo / 2, prob.band[1] * 1.5  # bump centres sqrt(a b)
            m = max(2, int(np.ceil(np.log10(c_hi / c_lo) * per_decade)) + 1)
            self.a = np.geomspace(c_lo, c_hi, m) / np.sqrt(self.ratio)
        else:
            self.a = np.zeros(0)
        self.m = self.a.size
        self.n_par = 3 * self.k + self.m
        if self.m:
            g = np.concatenate([self.a, self.ratio * self.a])[None]
            unit = prob.chi_basis(torch.as_tensor(g), torch.zeros_like(torch.as_tensor(g)))
            unit = unit.numpy()[0]  # (2M, P)
            self.x = (self.ratio * unit[self.m:] - unit[:self.m]) / (self.ratio - 1.0)
        else:
            self.x = np.zeros((0, prob.y_np.size))

    def bounds(self):
        lo, hi = self.init.bounds()
        lo = np.concatenate([np.tile(lo.ravel(), self.k), np.full(self.m, -60.0)])
        hi = np.concatenate([np.tile(hi.ravel(), self.k), np.full(self.m, 80.0)])
        return lo, hi

    def split(self, th):
        """Physical (amp, g, w0) of the Lorentzians, (R, K) each, and bump variances (R, M)."""
        r = len(th)
        lor = torch.as_tensor(th[:, :3 * self.k].reshape(r, self.k, 3))
        amp, g, w0 = (x.numpy() for x in self.init.physical(lor))
        return amp, g, w0, np.exp(th[:, 3 * self.k:])

    def draw(self, r: int) -> np.ndarray:
        """Random starts (r, 3K + M): random (g, w0) with amplitudes from a chi-space fit."""
        init, prob = self.init, self.prob
        lg = init._loguniform((r, self.k), init.w_lo, init.w_hi)
        lw = init._loguniform((r, self.k), init.w_lo, init.w_hi)
        g, w0 = torch.exp(lg), torch.exp(lw)
        basis = prob.chi_basis(g, w0)
        if self.m:
            basis = torch.cat([basis, torch.as_tensor(self.x)[None].expand(r, -1, -1)], 1)
        from mracq.recon.vqns.optim import _nnls_batch

        a_fit = _nnls_batch(basis, prob.chi_data, prob.fit_w)
        a_fit = a_fit.clamp_min(1e-6 * a_fit.amax(1, keepdim=True).clamp_min(1e-300))
        la = torch.log(a_fit) + init._loguniform(a_fit.shape, 0.5, 2.0)
        th = torch.stack([la[:, :self.k],
                          torch.log((g - init.g_min).clamp_min(1e-300) / init.w_scale),
                          lw - np.log(init.w_scale)], 2).reshape(r, -1)
        lo, hi = self.bounds()
        return np.clip(torch.cat([th, la[:, self.k:]], 1).numpy(), lo, hi)

    def eval(self, th, y):
        """Residuals (R, P) and Jacobian (R, P, 3K + M) with respect to the free parameters."""
        amp, g, w0, v = self.split(th)
        chi0 = v @ self.x if self.m else None
        res, jac = residual_and_jacobian(self.prob, amp, g, w0, y, chi0)
        d = np.stack([amp, g - self.init.g_min, w0], 2).reshape(len(th), 1, -1)
        jac = jac * d
        if self.m:
            c = res / self.prob.sw_np + y  # the model coherence
            jb = -(self.prob.sw_np * c)[:, :, None] * self.x.T[None] * v[:, None, :]
            jac = np.concatenate([jac, jb], 2)
        return res, jac

    def samples(self, th) -> np.ndarray:
        """Every restart as Lorentzian rows (R, K + 2M, 3): (A, g, w0), bumps as pairs."""
        amp, g, w0, v = self.split(th)
        r = len(th)
        rows = [np.stack([amp, g, w0], 2)]
        if self.m:
            k = self.ratio / (self.ratio - 1.0)
            b = np.stack([k * v, np.broadcast_to(self.ratio * self.a, v.shape),
                          np.zeros_like(v)], 2)
            a = np.stack([-v / (self.ratio - 1.0), np.broadcast_to(self.a, v.shape),
                          np.zeros_like(v)], 2)
            rows += [b, a]
        return np.concatenate(rows, 1).reshape(r, -1, 3)


def residual_and_jacobian(prob, amp, g, w0, y, chi0=None):
    """Weighted residuals (R, P) and Jacobian (R, P, 3K) w.r.t. the physical parameters.

    Parameters
    ----------
    prob : mracq.recon.vqns.optim._Problem
        Points and loss weights.
    amp, g, w0 : ndarray (R, K)
        Variances in (rad/s)^2, half widths and centres in rad/s.
    y : ndarray (R, P)
        Target coherences per restart, in the points' internal order.
    chi0 : ndarray (R, P), optional
        chi of further components, added before ``exp(-chi)``.
    """
    sw = prob.sw_np
    if prob.backend == "numba":
        from mracq.recon.vqns import kernel

        return kernel.residual_and_jacobian(amp, g, w0, prob.pts, y, sw, SERIES_SWITCH, chi0)
    chi, dchi = chi_and_grad(*(torch.as_tensor(np.ascontiguousarray(x)) for x in (amp, g, w0)),
                             prob.pts)
    chi = chi.numpy() if chi0 is None else chi.numpy() + chi0
    c = np.exp(-chi)
    res = sw * (c - y)
    d = dchi.numpy()  # (R, K, 3, P)
    jac = -(sw * c)[:, None, None, :] * d
    r, k = amp.shape
    return res, np.ascontiguousarray(jac.reshape(r, 3 * k, -1).transpose(0, 2, 1))


def levenberg_marquardt(model: _Model, th, y, *, max_iter: int = 60, lam0: float = 1e-2,
                        tol: float = 1e-4, max_step: float = 2.0):
    """Minimize ``sum_p wt_p (C_p(theta_r) - y_rp)^2`` for every restart r.

    Parameters
    ----------
    model : _Model
        Parameter map, bounds and residual/Jacobian evaluation.
    th : ndarray (R, 3K + M)
        Starting free parameters.
    y : ndarray (R, P)
        Targets (the data, or perturbed copies of it), internal point order.
    max_iter : int
        Iteration cap (one kernel call each).
    lam0 : float
        Initial damping (relative to the diagonal of J^T J).
    tol : float
        A restart stops when an accepted step lowers its loss by less than this fraction,
        or when its damping exceeds 1e10 (no descent left).
    max_step : float
        Largest change of any free (log) parameter in one step (a trust box).

    Returns
    -------
    th : ndarray (R, 3K + M)
        Final free parameters.
    loss : ndarray (R,)
        Final losses.
    iters : ndarray (R,)
        Iterations each restart ran.
    calls : int
        Batched kernel calls (the wall-clock-relevant count).
    """
    lo, hi = model.bounds()
    th = np.clip(np.array(th, float), lo, hi)
    r, m = th.shape
    res, jac = model.eval(th, y)
    loss = np.einsum("rp,rp->r", res, res)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    lam = np.full(r, lam0)
    active = np.isfinite(loss)
    iters = np.zeros(r, int)
    calls = 1
    eye = np.eye(m)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        jt = jac[idx]
        h = np.einsum("rpm,rpn->rmn", jt, jt)
        gr = np.einsum("rpm,rp->rm", jt, res[idx])
        dg = np.einsum("rmm->rm", h)
        # Marquardt's scaling, floored so that directions the data barely see (a
        # negligible component) do not get unbounded steps
        scale = np.maximum(dg, 1e-8 * dg.max(1, keepdims=True) + 1e-300)
        a = h + lam[idx, None, None] * (scale[:, :, None] * eye)
        try:
            step = -np.linalg.solve(a, gr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -gr / (lam[idx, None] * scale)
        step = np.clip(np.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0),
                       -max_step, max_step)
        trial = np.clip(th[idx] + step, lo, hi)
        res_t, jac_t = model.eval(trial, y[idx])
        calls += 1
        loss_t = np.einsum("rp,rp->r", res_t, res_t)
        better = np.isfinite(loss_t) & (loss_t < loss[idx])
        acc = idx[better]
        gain = (loss[acc] - loss_t[better]) / np.maximum(loss[acc], 1e-300)
        th[acc] = trial[better]
        res[acc] = res_t[better]
        jac[acc] = jac_t[better]
        loss[acc] = loss_t[better]
        lam[acc] = np.maximum(lam[acc] / 3.0, 1e-9)
        lam[idx[~better]] *= 4.0
        iters[idx] += 1
        done = np.zeros(r, bool)
        done[acc[gain < tol]] = True
        done[idx[lam[idx] > 1e10]] = True
        active &= ~done
    return th, loss, iters, calls


def ensemble(model: _Model, want: int, thr: float, rng, *, max_iter: int = 60,
             max_failures: int | None = None, oversubscribe: float = 0.3,
             perturb: bool = True, floor: float = 3e-4):
    """VQNS restarts by Levenberg-Marquardt, then a randomize-then-optimize refit.

    Stage 1 fits the data from ``want (1 + oversubscribe)`` random starts (redrawing
    until ``want`` succeed). A restart succeeds when its loss is below ``max(thr,
    2 L10)``, with ``L10`` the 10th percentile of the losses reached (seed App. B: the
    plateau the restarts reach, here the model's own misfit when the spectrum is not of
    the model's form). Stage 2 (``perturb``) refits every success to its own copy of the
    data with fresh errors of the size the data carry: the error bars (scaled up to the
    misfit when that is larger) or, without error bars, the misfit itself, never below
    ``floor``. The spread of the refits is then the spread the estimate would show over
    repeated measurements, which stage 1's spread (only the directions the data leave
    free) is not.

    Returns
    -------
    dict
        ``th`` (S, 3K + M) free parameters of the successes, ``loss`` (S,) against the
        data, ``iters`` (S,), ``n_failed``, ``calls`` (batched kernel calls), ``accept``
        (the stage-1 threshold), ``sigma`` (the per-point error of stage 2).
    """
    prob = model.prob
    max_failures = 5 * want if max_failures is None else max_failures
    y0 = prob.y_np
    ths, losses, its, calls = [], [], [], 0
    n_failed, accept, n_ok = 0, None, 0
    draw = want + max(2, int(np.ceil(oversubscribe * want)))
    while True:
        th, loss, it, c = levenberg_marquardt(model, model.draw(draw),
                                              np.broadcast_to(y0, (draw, y0.size)),
                                              max_iter=max_iter)
        calls += c
        if accept is None:
            fin = loss[np.isfinite(loss)]
            base = float(np.quantile(fin, 0.1)) if fin.size else np.inf
            accept = max(thr, 2.0 * base)
        ok = np.isfinite(loss) & (loss <= accept)
        ths.append(th[ok])
        losses.append(loss[ok])
        its.append(it[ok])
        n_ok += int(ok.sum())
        n_failed += int((~ok).sum())
        if n_ok >= want or n_failed > max_failures or not np.isfinite(accept):
            break
        draw = max(4, int(np.ceil((want - n_ok) * (1 + oversubscribe))))
    th = np.concatenate(ths)[:want]
    loss = np.concatenate(losses)[:want]
    iters = np.concatenate(its)[:want]
    sigma = np.zeros_like(y0)
    if perturb and len(th):
        base = float(np.quantile(loss, 0.1))
        if prob.sigma_np is not None:
            sigma = prob.sigma_np * np.sqrt(max(1.0, base / max(prob.noise_loss, 1e-300)))
        else:
            sigma = np.full(y0.shape, np.sqrt(base / prob.wt_np.sum()))
        sigma = np.maximum(sigma, floor)
        yr = y0 + sigma * rng.standard_normal((len(th), y0.size))
        th2, loss2, it2, c = levenberg_marquardt(model, th, yr, max_iter=max(10, max_iter // 2))
        calls += c
        # the loss a refit should reach: its stage-1 loss plus the added error
        expect = loss + np.sum(prob.wt_np * sigma**2)
        ok = np.isfinite(loss2) & (loss2 <= 3.0 * expect)
        n_failed += int((~ok).sum())
        th, iters = th2[ok], iters[ok] + it2[ok]
        res, _ = model.eval(th, np.broadcast_to(y0, (len(th), y0.size)))
        loss = np.einsum("rp,rp->r", res, res)
        calls += 1
    return {"th": th, "loss": loss, "iters": iters, "n_failed": n_failed, "calls": calls,
            "accept": accept, "sigma": sigma}
