"""Batched Adam optimization behind :func:`mracq.recon.vqns.reconstruct`.

The problem (points, targets, weights; loss and exact gradient for R parameter sets at
once), the random initial parameters, the automatic loss threshold of seed App. B, and
the batched Adam loop with frozen successes and in-place redraws of failures.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch

from mracq.recon.vqns.chi import PointSet, chi_and_grad
from mracq.recon.vqns.data import Measurement, sensitive_band

log = logging.getLogger("mracq.recon.vqns")


class _Problem:
    """Points, targets and weights of one reconstruction, in the PointSet's order."""

    def __init__(self, ms: list[Measurement], use_sigma: bool, backend: str = "torch"):
        self.backend = backend
        self.measurements = ms
        t = np.concatenate([m.t for m in ms])
        n = np.concatenate([np.full(len(m), m.n) for m in ms])
        self.pts = PointSet(t, n)
        y = np.concatenate([m.coherence for m in ms])
        sig = np.concatenate([m.sigma if m.sigma is not None else np.zeros(len(m))
                              for m in ms])
        per_seq = np.concatenate([np.full(len(m), 1.0 / len(m)) for m in ms])
        if use_sigma and all(m.sigma is not None for m in ms):
            iv = 1 / sig**2
            w = iv / np.mean(iv)
        else:
            w = np.ones_like(y)
        wt = per_seq * w  # loss = sum_p wt_p (C_p - y_p)^2 = sum_s mean_t w (..)^2
        #: loss expected at the true spectrum (the noise floor of the loss)
        self.noise_loss = float(np.sum(wt * sig**2))
        self.y_np = np.ascontiguousarray(self.pts.reorder(y))
        self.wt_np = np.ascontiguousarray(self.pts.reorder(wt))
        self.sw_np = np.sqrt(self.wt_np)
        #: per-point standard errors (internal order), None without error bars
        self.sigma_np = (np.ascontiguousarray(self.pts.reorder(sig))
                         if all(m.sigma is not None for m in ms) else None)
        self.y = torch.as_tensor(self.y_np)
        self.wt = torch.as_tensor(self.wt_np)
        self.t_min, self.t_max = float(t.min()), float(t.max())
        self.band = sensitive_band(ms)
        self.n_seq = len(ms)
        yc = np.clip(y, 0.02, 1.0)
        info = (y > 0.05) & (y < 0.95)
        if not np.any(info):
            info = np.ones_like(y, bool)
        self.info = torch.as_tensor(self.pts.reorder(info))
        self.chi_data = torch.as_tensor(self.pts.reorder(-np.log(yc)))
        # weights for the chi-space amplitude fit: dC = -C dchi, points near C ~ 0 ignored
        self.fit_w = self.wt * torch.as_tensor(self.pts.reorder(np.clip(y, 0.0, 1.0) ** 2))

    def chi_basis(self, g, w0):
        """chi of each Lorentzian at unit variance, (R, K, P)."""
        if self.backend == "numba":
            from mracq.recon.vqns import kernel
            from mracq.recon.vqns.chi import SERIES_SWITCH

            return torch.from_numpy(kernel.chi_basis(g.numpy(), w0.numpy(), self.pts,
                                                         SERIES_SWITCH))
        r, k = g.shape
        unit, _ = chi_and_grad(torch.ones(r * k, 1, dtype=torch.float64), g.reshape(-1, 1),
                               w0.reshape(-1, 1), self.pts)
        return unit.reshape(r, k, -1)

    def loss_and_grad(self, amp, g, w0):
        """Per-restart loss (R,) and d loss / d(A, g, w0) (R, K, 3)."""
        if self.backend == "numba":
            from mracq.recon.vqns import kernel
            from mracq.recon.vqns.chi import SERIES_SWITCH

            loss, grad = kernel.loss_and_grad(
                amp.numpy(), g.numpy(), w0.numpy(), self.pts, self.y_np, self.wt_np,
                SERIES_SWITCH)
            return torch.from_numpy(loss), torch.from_numpy(grad)
        chi, dchi = chi_and_grad(amp, g, w0, self.pts)
        c = torch.exp(-chi)
        r = c - self.y
        loss = (self.wt * r * r).sum(1)
        dl_dchi = -2 * self.wt * r * c  # (R, P)
        grad = torch.einsum("rkjp,rp->rkj", dchi, dl_dchi)
        return loss, grad


class _Init:
    """Random initial parameters (seed Sec. II step 1, on a log scale)."""

    def __init__(self, prob: _Problem, k: int, gen: torch.Generator, candidates: int = 1):
        self.prob, self.k, self.gen = prob, k, gen
        self.candidates = max(1, int(candidates))
        self.w_lo = np.pi / prob.t_max / 3
        self.w_hi = prob.band[1] * 2
        self.w_scale = float(np.sqrt(self.w_lo * self.w_hi))
        self.g_min = self.w_lo * 1e-3

    def _loguniform(self, shape, lo, hi):
        u = torch.rand(shape, generator=self.gen, dtype=torch.float64)
        return np.log(lo) + u * (np.log(hi) - np.log(lo))

    def draw(self, r: int) -> torch.Tensor:
        """Free parameters (r, K, 3); each the best of ``candidates`` random draws."""
        m = self.candidates
        th = self._draw(r * m)
        if m == 1:
            return th
        amp, g, w0 = self.physical(th)
        loss, _ = self.prob.loss_and_grad(amp, g, w0)
        best = torch.nan_to_num(loss, nan=float("inf")).reshape(r, m).argmin(1)
        return th.reshape(r, m, self.k, 3)[torch.arange(r), best]

    def _draw(self, r: int) -> torch.Tensor:
        """Free parameters (r, K, 3): log(A / 1), log((g - g_min)/w_s), log(w0/w_s)."""
        k = self.k
        lg = self._loguniform((r, k), self.w_lo, self.w_hi)
        lw = self._loguniform((r, k), self.w_lo, self.w_hi)
        g = torch.exp(lg)
        w0 = torch.exp(lw)
        # amplitudes: non-negative least squares in chi space for the drawn (g, w0),
        # weighted by C^2 (so that it approximates the coherence loss), then jittered
        a_fit = _nnls_batch(self.prob.chi_basis(g, w0), self.prob.chi_data, self.prob.fit_w)
        a_fit = a_fit.clamp_min(1e-6 * a_fit.amax(1, keepdim=True).clamp_min(1e-300))
        la = torch.log(a_fit) + self._loguniform((r, k), 0.7, 1.4)
        th = torch.stack([la, torch.log((g - self.g_min).clamp_min(1e-300) / self.w_scale),
                          lw - np.log(self.w_scale)], 2)
        return th

    def bounds(self):
        """Box (lo, hi) of the free parameters, each (1, 1, 3): log A, log g, log w0 terms.

        Centres stay below ``w_hi`` (twice the top of the sensitive band) and above
        ``1e-3 w_lo``; widths between ``g_min`` and ``10 w_hi``.
        """
        ws = self.w_scale
        lo = np.array([-60.0, np.log(1e-4 * self.w_lo / ws), np.log(1e-3 * self.w_lo / ws)])
        hi = np.array([80.0, np.log(10 * self.w_hi / ws), np.log(self.w_hi / ws)])
        return lo[None, None], hi[None, None]

    def physical(self, th):
        amp = torch.exp(th[..., 0])
        g = self.g_min + self.w_scale * torch.exp(th[..., 1])
        w0 = self.w_scale * torch.exp(th[..., 2])
        return amp, g, w0


def _nnls_batch(basis, target, weight, sweeps: int = 4):
    """Batched non-negative least squares ``min_A>=0 sum_p w_p (sum_k A_k B_kp - y_p)^2``.

    Parameters
    ----------
    basis : Tensor (R, K, P); target : Tensor (P,); weight : Tensor (P,)

    Returns
    -------
    Tensor (R, K)
        Amplitudes; components the fit drives negative are dropped (set to 0) over a few
        sweeps of an active-set style refit.
    """
    sw = weight.sqrt()
    b = basis * sw  # (R, K, P)
    y = target * sw
    scale = b.norm(dim=2, keepdim=True).clamp_min(1e-300)
    bn = b / scale
    r, k, _ = b.shape
    keep = torch.ones(r, k, dtype=torch.bool)
    a = torch.zeros(r, k, dtype=torch.float64)
    for _ in range(sweeps):
        bm = bn * keep[:, :, None]
        gram = bm @ bm.transpose(1, 2) + 1e-10 * torch.eye(k, dtype=torch.float64)
        rhs = bm @ y
        a = torch.linalg.solve(gram, rhs)
        neg = a < 0
        if not bool(neg.any()):
            break
        keep = keep & ~neg
    a = a.clamp_min(0) * keep
    return a / scale[:, :, 0]


def _progress(enabled, total):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="VQNS restarts", unit="ok")


def _auto_threshold(prob: _Problem, factor: float, floor: float) -> float:
    """Initial loss threshold from the measurement noise (seed App. B).

    The loss the true spectrum would reach is the noise floor ``sum_s mean_t sigma^2``
    (from the error bars, or estimated from the data); start at ``factor`` times that,
    never below ``floor`` per sequence. :func:`reconstruct` raises it to the plateau the
    restarts actually reach if few succeed (App. B's second step).
    """
    return max(factor * prob.noise_loss, floor * prob.n_seq)


def _optimize(prob, init, r, thr, history, adapt, lr, betas, eps, max_iter, wd,
              max_failures, progress, oversubscribe, patience):
    """Batched Adam over r slots; returns samples, losses, iterations, failures, steps."""
    b1, b2 = betas
    want = r
    r = want + max(2, int(np.ceil(oversubscribe * want)))  # extra slots cut the tail
    th = init.draw(r)
    m = torch.zeros_like(th)
    v = torch.zeros_like(th)
    it = torch.zeros(r, dtype=torch.long)  # iterations of the current draw in each slot
    active = torch.ones(r, dtype=torch.bool)
    ref_loss = torch.full((r,), float("inf"), dtype=torch.float64)  # loss `patience` its ago
    done_p, done_l, done_i = [], [], []
    n_failed, steps, gen0_checked = 0, 0, not adapt
    shrink = np.log1p(-lr * wd) if wd > 0 else 0.0
    bar = _progress(progress, want)
    n_ok = 0
    while bool(active.any()) and n_ok < want:
        idx = active.nonzero(as_tuple=True)[0]
        tha = th[idx]
        amp, g, w0 = init.physical(tha)
        loss, gphys = prob.loss_and_grad(amp, g, w0)
        ok = loss < thr
        if bool(ok.any()):
            sel = idx[ok]
            done_p.append(torch.stack([amp[ok], g[ok], w0[ok]], 2))
            done_l.append(loss[ok])
            done_i.append(it[sel].clone())
            active[sel] = False
            n_ok += len(sel)
            if bar is not None:
                bar.update(min(int(ok.sum()), want - bar.n))
        # chain rule to the free parameters
        dth = gphys * torch.stack([amp, g - init.g_min, w0], 2)
        live = ~ok
        it[idx] += 1
        sl = idx[live]
        s = it[sl].to(torch.float64)[:, None, None]
        gl = dth[live]
        m[sl] = b1 * m[sl] + (1 - b1) * gl
        v[sl] = b2 * v[sl] + (1 - b2) * gl * gl
        mh = m[sl] / (1 - b1**s)
        vh = v[sl] / (1 - b2**s)
        th[sl] = th[sl] - lr * mh / (vh.sqrt() + eps) + shrink
        steps += 1
        if not gen0_checked and steps >= max_iter:
            gen0_checked = True
            if n_ok < 0.25 * want:
                # the plateau: the lowest decile of the losses still running, with margin
                cur = loss[live]
                new = float(torch.quantile(cur, 0.1)) * 2.0 if len(cur) else thr
                if new > thr:
                    log.info("VQNS: %d/%d restarts reached %.3g; loss plateaus near %.3g: "
                             "adopting it as the threshold (App. B)", n_ok, r, thr, new)
                    thr = new
                    history.append((steps, thr))
                    continue
        failed = active & (it >= max_iter)
        if patience:
            # stuck restarts (a local minimum well above the threshold) fail early
            chk = idx[live][(it[idx[live]] % patience) == 0]
            if len(chk):
                cur = torch.full((r,), float("inf"), dtype=torch.float64)
                cur[idx[live]] = loss[live]
                stuck = (cur[chk] > 0.97 * ref_loss[chk]) & (cur[chk] > 3 * thr)
                failed[chk[stuck]] = True
                ref_loss[chk] = cur[chk]
        if bool(failed.any()):
            fi = failed.nonzero(as_tuple=True)[0]
            n_failed += len(fi)
            if n_failed > max_failures:
                log.warning("VQNS: %d failed restarts; stopping with %d successes",
                            n_failed, n_ok)
                break
            th[fi] = init.draw(len(fi))
            ref_loss[fi] = float("inf")
            m[fi] = 0
            v[fi] = 0
            it[fi] = 0
    if bar is not None:
        bar.close()
    if done_p:
        samples = torch.cat(done_p).numpy()[:want]
        losses = torch.cat(done_l).numpy()[:want]
        iters = torch.cat(done_i).numpy()[:want]
    else:
        samples, losses, iters = np.zeros((0, init.k, 3)), np.zeros(0), np.zeros(0, int)
    return samples, losses, iters, n_failed, steps, thr
