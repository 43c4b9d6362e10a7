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
from mracq.recon.vqns.model import lorentzian_spectrum

__all__ = ["levenberg_marquardt", "ensemble", "select_k"]
PATIENCE = 30


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
        self.rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=init.gen)))
        self.peak_w, self.peak_p = _ddns_density(prob.measurements)
        self.bank_start = 0.1
        self.candidates = 1
        self.alive = 0.3
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
        """Random starts (r, 3K + M): each the lowest-loss of ``candidates`` draws."""
        m = self.candidates
        th = self._draw(r * m)
        if m == 1:
            return th
        res, _ = self.eval(th, np.broadcast_to(self.prob.y_np, (len(th), self.prob.y_np.size)))
        loss = np.nan_to_num(np.einsum("rp,rp->r", res, res), nan=np.inf)
        best = loss.reshape(r, m).argmin(1)
        return th.reshape(r, m, -1)[np.arange(r), best]

    def _draw(self, r: int, from_data: float = 0.5) -> np.ndarray:
        """Random starts (r, 3K + M) with amplitudes from a chi-space fit.

        Each Lorentzian's centre is drawn log-uniformly over the frequencies the data see
        or, with probability ``from_data``, where the DDNS estimate of the data puts
        spectral weight (density ``w S_DDNS(w)`` per log frequency, jittered by a factor
        ~1.4), so that peaks are found from the first iterations on; widths are
        log-uniform.
        """
        init, prob = self.init, self.prob
        lg = init._loguniform((r, self.k), init.w_lo, init.w_hi)
        lw = init._loguniform((r, self.k), init.w_lo, init.w_hi)
        if self.peak_w.size:
            pick = self.rng.random((r, self.k)) < from_data
            n = int(pick.sum())
            c = self.rng.choice(self.peak_w, size=n, p=self.peak_p)
            lw[torch.as_tensor(pick)] = torch.as_tensor(
                np.log(c) + 0.35 * self.rng.standard_normal(n))
            width = np.exp(self.rng.uniform(np.log(0.02), np.log(0.5), n)) * c
            lg[torch.as_tensor(pick)] = torch.as_tensor(np.log(np.maximum(width, init.g_min)))
        g, w0 = torch.exp(lg), torch.exp(lw)
        basis = prob.chi_basis(g, w0)
        if self.m:
            basis = torch.cat([basis, torch.as_tensor(self.x)[None].expand(r, -1, -1)], 1)
        from mracq.recon.vqns.optim import _nnls_batch

        a_fit = _nnls_batch(basis, prob.chi_data, prob.fit_w)
        # every Lorentzian keeps a share of the variance: one the fit zeroes would
        # otherwise have no gradient in (g, w0) and stay dead where it was drawn
        total = a_fit.sum(1, keepdim=True).clamp_min(1e-300)
        a_fit[:, :self.k] = a_fit[:, :self.k].clamp_min(self.alive * total / self.k)
        a_fit = a_fit.clamp_min(1e-6 * total)
        if self.m and self.bank_start < 1:
            a_fit[:, self.k:] *= self.bank_start
        la = torch.log(a_fit) + init._loguniform(a_fit.shape, 0.5, 2.0)
        th = torch.stack([la[:, :self.k],
                          torch.log((g - init.g_min).clamp_min(1e-300) / init.w_scale),
                          lw - np.log(init.w_scale)], 2).reshape(r, -1)
        lo, hi = self.bounds()
        return np.clip(torch.cat([th, la[:, self.k:]], 1).numpy(), lo, hi)

    def warm(self, rows, k_prev: int) -> np.ndarray:
        """Free parameters (R, 3K + M) that start from earlier fits ``rows`` (R, K' + 2M', 3).

        ``rows`` are the Lorentzian rows of another reconstruction's samples (its first
        ``k_prev`` rows free Lorentzians, the rest its background bank as pairs), possibly
        of other data and another K or bank. The K largest Lorentzians are kept (missing
        ones are fresh draws carrying a twentieth of the sample's variance); the earlier
        bank's spectrum is projected onto this bank (non-negative least squares on a
        logarithmic grid).
        """
        rows = np.asarray(rows, float)
        r = len(rows)
        lor = rows[:, :k_prev]
        order = np.argsort(-lor[..., 0], axis=1)[:, :self.k]
        lor = np.take_along_axis(lor, order[..., None], 1)
        fresh = self._draw(r)
        total = np.maximum(rows[:, :k_prev, 0].sum(1), 1e-300)
        init = self.init
        th = fresh[:, :3 * self.k].reshape(r, self.k, 3).copy()
        kk = lor.shape[1]
        th[:, :kk, 0] = np.log(np.maximum(lor[..., 0], 1e-300))
        th[:, :kk, 1] = np.log(np.maximum(lor[..., 1] - init.g_min, 1e-300) / init.w_scale)
        th[:, :kk, 2] = np.log(np.maximum(lor[..., 2], 1e-300) / init.w_scale)
        if kk < self.k:
            th[:, kk:, 0] = np.log(total / 20 / (self.k - kk))[:, None]
        out = [th.reshape(r, -1)]
        if self.m:
            grid = np.geomspace(self.a[0] / 3, self.a[-1] * self.ratio * 3, 120)
            bank_old = lorentzian_spectrum(rows[:, k_prev:], grid)  # (R, G)
            # one unit bump per column: 2 (a + b) w^2 / ((w^2 + a^2)(w^2 + b^2)), b = ratio a
            unit = self._bank_rows(np.eye(self.m))[:, None]  # (M, 1, 2M, 3)
            basis = lorentzian_spectrum(unit, grid)[:, 0].T  # (G, M)
            col = np.linalg.norm(basis, axis=0)
            v = np.array([_nnls_or_clip(basis / col, np.maximum(s, 0.0)) for s in bank_old])
            v = v / col
            floor = 1e-6 * np.maximum(v.max(1, keepdims=True), total[:, None] * 1e-3)
            out.append(np.log(np.maximum(v, floor)))
        lo, hi = self.bounds()
        return np.clip(np.concatenate(out, 1), lo, hi)

    def eval(self, th, y):
        """Residuals (R, P) and Jacobian (R, P, 3K + M) with respect to the free parameters."""
        amp, g, w0, v = self.split(th)
        d = np.stack([amp, g - self.init.g_min, w0], 2).reshape(len(th), -1)
        prob = self.prob
        if prob.backend == "numba":
            from mracq.recon.vqns import kernel

            return kernel.residual_and_jacobian(amp, g, w0, prob.pts, y, prob.sw_np,
                                                SERIES_SWITCH, self.x, v, d)
        chi0 = v @ self.x if self.m else None
        res, jac = _torch_residual_and_jacobian(prob, amp, g, w0, y, chi0)
        jac = jac * d[:, None, :]
        if self.m:
            c = res / prob.sw_np + y  # the model coherence
            jb = -(prob.sw_np * c)[:, :, None] * self.x.T[None] * v[:, None, :]
            jac = np.concatenate([jac, jb], 2)
        return res, jac

    def samples(self, th) -> np.ndarray:
        """Every restart as Lorentzian rows (R, K + 2M, 3): (A, g, w0), bumps as pairs."""
        amp, g, w0, v = self.split(th)
        r = len(th)
        rows = [np.stack([amp, g, w0], 2)]
        if self.m:
            rows.append(self._bank_rows(v))
        return np.concatenate(rows, 1).reshape(r, -1, 3)

    def _bank_rows(self, v) -> np.ndarray:
        """The background bank's bumps of weights ``v`` (R, M) as Lorentzian rows
        (R, 2M, 3): each bump a pair at zero frequency, half widths ``ratio a`` and ``a``."""
        k = self.ratio / (self.ratio - 1.0)
        b = np.stack([k * v, np.broadcast_to(self.ratio * self.a, v.shape),
                      np.zeros_like(v)], 2)
        a = np.stack([-v / (self.ratio - 1.0), np.broadcast_to(self.a, v.shape),
                      np.zeros_like(v)], 2)
        return np.concatenate([b, a], 1)


def _nnls_or_clip(a, b):
    """Non-negative least squares ``min_x>=0 |a x - b|`` (scipy), or, where its active-set
    iteration does not finish, the least-squares solution clipped at 0."""
    from scipy.optimize import nnls

    scale = max(float(np.max(np.abs(b))), 1e-300)
    try:
        return nnls(a, b / scale, maxiter=50 * a.shape[1])[0] * scale
    except RuntimeError:
        return np.clip(np.linalg.lstsq(a, b, rcond=None)[0], 0.0, None)


def _ddns_density(measurements):
    """DDNS frequencies (rad/s) and probabilities ``prop. to w S(w)`` (weight per log w)."""
    from mracq.recon.vqns.ddns import ddns

    try:
        d = ddns(measurements)
    except ValueError:
        return np.zeros(0), np.zeros(0)
    p = np.maximum(d.omega * d.spectrum, 0.0)
    p = np.where(np.isfinite(p), p, 0.0)
    if p.sum() <= 0:
        return np.zeros(0), np.zeros(0)
    return d.omega, p / p.sum()


def _torch_residual_and_jacobian(prob, amp, g, w0, y, chi0=None):
    """Weighted residuals (R, P) and Jacobian (R, P, 3K) w.r.t. (A, g, w0), torch path.

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
    chi, dchi = chi_and_grad(*(torch.as_tensor(np.ascontiguousarray(x)) for x in (amp, g, w0)),
                             prob.pts)
    chi = chi.numpy() if chi0 is None else chi.numpy() + chi0
    c = np.exp(-chi)
    res = sw * (c - y)
    d = dchi.numpy()  # (R, K, 3, P)
    jac = -(sw * c)[:, None, None, :] * d
    r, k = amp.shape
    return res, np.ascontiguousarray(jac.reshape(r, 3 * k, -1).transpose(0, 2, 1))


def _normal(res, jac):
    """``J^T J`` (R, M, M) and ``J^T r`` (R, M) of residuals (R, P) and Jacobians (R, P, M)."""
    jtt = np.ascontiguousarray(jac.transpose(0, 2, 1))  # a strided view is 20x slower
    return jtt @ jac, (jtt @ res[:, :, None])[..., 0]


class _Batch:
    """Levenberg-Marquardt state of R restarts (slots) that advance together.

    Each slot has its parameters, residuals, normal equations (``J^T J``, ``J^T r``), loss,
    damping and iteration count; :meth:`step` takes one damped Gauss-Newton step in every
    active slot (one kernel call for all trial points), accepts it where the loss falls and
    adapts the damping; :meth:`load` puts new starting points into slots. The normal
    equations are formed once per accepted point (a rejected step keeps them), and the
    Jacobian itself is not kept.
    """

    def __init__(self, model, th, y, *, lam0=1e-2, tol=1e-4, max_step=2.0, loss_stop=0.0):
        self.model, self.lam0, self.tol, self.max_step = model, lam0, tol, max_step
        self.loss_stop = loss_stop
        self.lo, self.hi = model.bounds()
        r, m = th.shape
        self.y = np.array(np.broadcast_to(y, (r, y.shape[-1])))
        self.th = np.zeros((r, m))
        self.res = np.zeros((r, self.y.shape[1]))
        self.h = np.zeros((r, m, m))
        self.gr = np.zeros((r, m))
        self.loss = np.full(r, np.inf)
        self.lam = np.full(r, lam0)
        self.iters = np.zeros(r, int)
        self.active = np.zeros(r, bool)
        self.eye = np.eye(m)
        self.calls = 0
        self.load(np.arange(r), th)

    def load(self, idx, th, y=None):
        """Start slots ``idx`` from ``th`` (and targets ``y``), one kernel call."""
        if y is not None:
            self.y[idx] = y
        th = np.clip(th, self.lo, self.hi)
        res, jac = self.model.eval(th, self.y[idx])
        self.calls += 1
        loss = np.einsum("rp,rp->r", res, res)
        self.th[idx], self.res[idx] = th, res
        self.h[idx], self.gr[idx] = _normal(res, jac)
        self.loss[idx] = np.where(np.isfinite(loss), loss, np.inf)
        self.lam[idx] = self.lam0
        self.iters[idx] = 0
        self.active[idx] = np.isfinite(loss)

    def step(self):
        """One iteration of every active slot; returns the slots that just finished."""
        idx = np.flatnonzero(self.active)
        if idx.size == 0:
            return idx
        h, gr = self.h[idx], self.gr[idx]
        dg = np.einsum("rmm->rm", h)
        # Marquardt's scaling, floored so that directions the data barely see (a
        # negligible component) do not get unbounded steps
        scale = np.maximum(dg, 1e-8 * dg.max(1, keepdims=True) + 1e-300)
        a = h + self.lam[idx, None, None] * (scale[:, :, None] * self.eye)
        try:
            step = -np.linalg.solve(a, gr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -gr / (self.lam[idx, None] * scale)
        step = np.clip(np.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0),
                       -self.max_step, self.max_step)  # per parameter: a trust box
        trial = np.clip(self.th[idx] + step, self.lo, self.hi)
        res_t, jac_t = self.model.eval(trial, self.y[idx])
        self.calls += 1
        loss_t = np.einsum("rp,rp->r", res_t, res_t)
        better = np.isfinite(loss_t) & (loss_t < self.loss[idx])
        acc = idx[better]
        gain = (self.loss[acc] - loss_t[better]) / np.maximum(self.loss[acc], 1e-300)
        self.th[acc] = trial[better]
        self.res[acc] = res_t[better]
        self.h[acc], self.gr[acc] = _normal(res_t[better], jac_t[better])
        self.loss[acc] = loss_t[better]
        self.lam[acc] = np.maximum(self.lam[acc] / 3.0, 1e-9)
        self.lam[idx[~better]] *= 4.0
        self.iters[idx] += 1
        done = np.zeros(len(self.loss), bool)
        done[acc[gain < self.tol]] = True
        done[idx[self.lam[idx] > 1e10]] = True
        done[acc[self.loss[acc] < self.loss_stop]] = True
        self.active &= ~done
        return np.flatnonzero(done)


def levenberg_marquardt(model: _Model, th, y, *, max_iter: int = 60, lam0: float = 1e-2,
                        tol: float = 1e-4, max_step: float = 2.0, loss_stop: float = 0.0):
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
    loss_stop : float
        A restart also stops once its loss falls below this.

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
    b = _Batch(model, np.asarray(th, float), y, lam0=lam0, tol=tol, max_step=max_step,
               loss_stop=loss_stop)
    for _ in range(max_iter):
        if not b.active.any():
            break
        b.step()
    return b.th, b.loss, b.iters, b.calls


def _search(model: _Model, want: int, thr: float, *, max_iter: int, max_failures: int,
            oversubscribe: float, patience: int = 15, noise_stop: float | None = None,
            warm=None):
    """Stage 1: LM from random starts until ``want`` restarts reach the loss plateau.

    Slots whose restart has finished (converged, stalled or at ``max_iter``) are judged
    against ``accept = max(thr, 1.5 L3)``, ``L3`` the third lowest loss any restart has
    reached (seed App. B: the threshold adapts to the plateau the restarts reach; here
    the best fit, whose loss is the noise floor or the model's own misfit); successes
    leave, failures are redrawn in place, so the batch stays full. A restart still above
    ``10 accept`` after ``patience`` iterations is stuck in a poor local minimum and fails
    early. Successes are judged again against the final ``accept`` at the end. A restart
    stops at the loss :func:`_loss_stop` gives (``noise_stop``: the noise floor).
    """
    y0 = model.prob.y_np
    n = want + max(2, int(np.ceil(oversubscribe * want)))
    # a loss a tenth of the threshold is as good a fit as any (noise-free data)
    if warm is None or not len(warm):
        starts = model.draw(n)
    else:  # every slot starts from an earlier fit; failures are redrawn at random
        starts = np.asarray(warm)[np.arange(n) % len(warm)]
    b = _Batch(model, starts, y0, loss_stop=_loss_stop(model.prob, thr, noise_stop))
    found_th, found_loss, found_it = [], [], []
    n_failed = 0
    best = []  # lowest finished losses (up to 3)

    def accept():
        return max(thr, 1.5 * best[-1]) if len(best) >= 3 else np.inf

    while True:
        done = b.step()
        it = b.iters
        live = np.flatnonzero(b.active)
        hit = live[it[live] >= max_iter]
        if len(best) >= 3 and patience:
            stuck = live[(it[live] >= patience) & (b.loss[live] > 10 * accept())]
        else:
            stuck = live[:0]
        b.active[hit] = False
        b.active[stuck] = False
        fin = np.concatenate([done, hit])
        fin = fin[np.isfinite(b.loss[fin])]
        best = sorted(best + list(b.loss[fin]))[:3]
        acc = accept()
        ok = fin[b.loss[fin] <= acc]
        bad = np.setdiff1d(np.concatenate([done, hit, stuck]), ok)
        for i in ok:
            found_th.append(b.th[i].copy())
            found_loss.append(b.loss[i])
            found_it.append(b.iters[i])
        n_failed += len(bad)
        n_ok = int(np.sum(np.asarray(found_loss) <= acc)) if found_loss else 0
        if n_ok >= want or n_failed > max_failures:
            break
        refill = np.concatenate([ok, bad]).astype(int)
        running = int(b.active.sum())
        room = max(0, want + max(2, int(np.ceil(oversubscribe * (want - n_ok)))) - n_ok
                   - running)
        refill = refill[:room]
        if refill.size:
            b.load(refill, model.draw(refill.size))
        if not b.active.any():
            break
    acc = accept() if np.isfinite(accept()) else thr
    keep = np.asarray(found_loss) <= acc if found_loss else np.zeros(0, bool)
    n_failed += int((~keep).sum())
    k = model.n_par
    th = np.asarray(found_th).reshape(-1, k)[keep][:want]
    loss = np.asarray(found_loss)[keep][:want]
    iters = np.asarray(found_it, int)[keep][:want]
    return th, loss, iters, n_failed, b.calls, acc


def _loss_stop(prob, thr: float, noise_stop: float | None) -> float:
    """Loss at which a stage-1 restart stops: ``noise_stop`` times the noise floor (the
    loss the data's error bars explain) when given and the data carry errors, else a
    tenth of the threshold (a loss that low is as good a fit as any)."""
    if noise_stop is not None and prob.noise_loss > 0:
        return float(noise_stop) * prob.noise_loss
    return 0.1 * thr


def ensemble(model: _Model, want: int, thr: float, rng, *, max_iter: int = 60,
             max_failures: int | None = None, oversubscribe: float = 0.3,
             perturb: bool = True, floor: float = 3e-4, inflate: float = 2.0,
             noise_stop: float | None = None, warm=None):
    """VQNS restarts by Levenberg-Marquardt, then a randomize-then-optimize refit.

    Stage 1 (:func:`_search`) fits the data from random starts until ``want`` restarts
    reach the plateau of the best fit. Stage 2 (``perturb``) refits every success to its
    own copy of the data with fresh errors of the size the data carry: the error bars
    (scaled up to the misfit when that is larger) or, without error bars, the misfit
    itself, never below ``floor``, times ``inflate``. The spread of the refits is then the
    spread the estimate would show over repeated measurements, which stage 1's spread
    (only the directions the data leave free) is not. ``inflate`` (2 by default) covers
    what that spread misses: the bias of a model that fits a spectrum of another shape
    (a Gaussian peak's tails, an Ohmic rise) only approximately; at 1 the band covered the
    truth at 78-83 % of the frequencies on such spectra, at 2 it reaches 90 %.

    Returns
    -------
    dict
        ``th`` (S, 3K + M) free parameters of the refits (of the successes without
        ``perturb``), ``th_fit`` those of the stage-1 fits they started from (the fits to
        the data, which the estimate averages), ``loss`` (S,) of ``th_fit`` against the
        data, ``iters`` (S,), ``n_failed``, ``calls`` (batched kernel calls), ``accept``
        (the stage-1 threshold), ``sigma`` (the per-point error of stage 2).
    """
    prob = model.prob
    max_failures = 5 * want if max_failures is None else max_failures
    y0 = prob.y_np
    # a few spare successes: a refit that falls into a worse minimum is a failure too
    spare = int(np.ceil(0.2 * want)) + 1 if perturb else 0
    th, loss, iters, n_failed, calls, accept = _search(
        model, want + spare, thr, max_iter=max_iter, max_failures=max_failures,
        oversubscribe=oversubscribe, patience=PATIENCE, noise_stop=noise_stop, warm=warm)
    sigma = np.zeros_like(y0)
    if perturb and len(th):
        base = float(np.min(loss))
        if prob.sigma_np is not None:
            sigma = prob.sigma_np * np.sqrt(max(1.0, base / max(prob.noise_loss, 1e-300)))
        else:
            sigma = np.full(y0.shape, np.sqrt(base / prob.wt_np.sum()))
        sigma = inflate * np.maximum(sigma, floor)
        yr = y0 + sigma * rng.standard_normal((len(th), y0.size))
        # stop where the refit is as close to its data as the errors allow
        th2, loss2, it2, c = levenberg_marquardt(
            model, th, yr, max_iter=max(10, max_iter // 2),
            loss_stop=0.5 * float(np.sum(prob.wt_np * sigma**2)))
        calls += c
        # the loss a refit should reach: its stage-1 loss plus the added error
        expect = loss + np.sum(prob.wt_np * sigma**2)
        ok = np.isfinite(loss2) & (loss2 <= 3.0 * expect)
        n_failed += int((~ok[:want]).sum())
        th_fit, loss = th[ok][:want], loss[ok][:want]
        th, iters = th2[ok][:want], (iters[ok] + it2[ok])[:want]
    else:
        th_fit = th
    return {"th": th, "th_fit": th_fit, "loss": loss, "iters": iters, "n_failed": n_failed,
            "calls": calls, "accept": accept, "sigma": sigma}


def _split(ms, every: int = 4):
    """(training, held-out) copies of the measurements: every ``every``-th point held out.

    The held-out points start at the middle of the first stride, so that both subsets
    span each decay's whole time range.
    """
    from mracq.recon.vqns.data import Measurement

    train, held = [], []
    for m in ms:
        out = np.zeros(len(m), bool)
        out[every // 2::every] = True
        for sel, dest in ((~out, train), (out, held)):
            sig = None if m.sigma is None else np.broadcast_to(m.sigma, m.t.shape)[sel]
            dest.append(Measurement(m.sequence, m.t[sel], m.coherence[sel], sig))
    return train, held


def select_k(ms, candidates, *, use_sigma: bool, backend: str, bank: bool, gen,
             restarts: int = 8, max_iter: int = 40, factor: float = 1.1,
             floor: float = 1.5e-6, tolerance: float = 0.05, noise_stop: float | None = None):
    """The number of Lorentzians K that predicts held-out points best.

    Every fourth point of each decay is held out (:func:`_split`); for each K of
    ``candidates`` a few LM restarts (:func:`_search`, no refit) fit the rest, and the
    median held-out loss (the same weighted sum of squares) of the better half of them
    (by training loss) scores K. More components fit the training points better
    but, on noisy data, also their noise; the held-out loss stops falling where they
    start to. The smallest K whose
    score is within ``tolerance`` (relative) of the best is returned. ``noise_stop``: as
    in :func:`mracq.recon.vqns.reconstruct` (the fits stop at the noise floor).

    Returns
    -------
    k : int
        The chosen K.
    scores : dict
        K -> median held-out loss (dimensionless; inf where no restart succeeded).
    calls : int
        Batched kernel calls spent.
    """
    from mracq.recon.vqns.optim import _auto_threshold, _Init, _Problem

    train, held = _split(ms)
    prob = _Problem(train, use_sigma, backend)
    prob_h = _Problem(held, use_sigma, backend)
    thr = _auto_threshold(prob, factor, floor)
    scores, calls = {}, 0
    for k in candidates:
        model = _Model(prob, _Init(prob, k, gen), bank=bank)
        th, loss, _, _, c, _ = _search(model, restarts, thr, max_iter=max_iter,
                                       max_failures=4 * restarts, oversubscribe=0.3,
                                       patience=PATIENCE, noise_stop=noise_stop)
        calls += c
        if not len(th):
            scores[k] = np.inf
            continue
        # the better half of the fits to the training points: a restart stuck in a worse
        # minimum says little about K, but a minimum that one restart in many finds is
        # one the full reconstruction will not find either
        best_half = np.argsort(loss)[:max(1, len(loss) // 2)]
        p = torch.as_tensor(model.samples(th[best_half]))
        chi, _ = chi_and_grad(p[..., 0], p[..., 1], p[..., 2], prob_h.pts)
        res = np.exp(-chi.numpy()) - prob_h.y_np
        scores[k] = float(np.median(np.einsum("rp,p->r", res**2, prob_h.wt_np)))
    best = min(scores.values())
    k = min(k for k, s in scores.items() if s <= best * (1 + tolerance))
    return k, scores, calls
