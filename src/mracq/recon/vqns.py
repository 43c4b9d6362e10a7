"""VQNS: variational quantum noise spectroscopy (seed 001, Sec. II and App. B-D).

The noise spectrum is a sum of K symmetrized Lorentzians (3K positive parameters A, g,
w0; physics.md section 1). Each restart draws random parameters and minimizes the sum
over sequences of the mean squared coherence error with Adam until the loss falls below
a threshold; a restart that hits the iteration cap is drawn again. The mean and the
pointwise standard deviation of the successful spectra are the estimate and its band.

Unlike the seed (one restart at a time, minutes each), all restarts run as one batch: an
(R, K, 3) parameter tensor whose chi is evaluated for every restart, sequence and time in
one fused closed-form pass (:mod:`mracq.recon.vqns_torch`, exact gradients without an
autograd graph). Converged restarts are frozen and leave the batch; failed ones are
re-drawn in place with fresh Adam state.

Parameterization: ``A = A_s exp(u)``, ``g = g_min + w_s exp(v)``, ``w0 = w_s exp(w)``, so
Adam's steps are relative. Weight decay (the regularization knob of App. D) is decoupled
as in AdamW but acts on the physical parameters: each step multiplies A, g and w0 by
``1 - lr * weight_decay``, shrinking amplitudes and pulling peaks down in frequency, the
behaviour the seed reports (red shift of the 1H peak at large weight decay).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from mracq.recon.vqns_data import COHERENCE_RANGE, Measurement, canonical_name, pulse_number
from mracq.recon.vqns_torch import PointSet, chi_and_grad

__all__ = [
    "Measurement",
    "VQNSResult",
    "reconstruct",
    "suggest_next_sequence",
    "noise_level",
    "lorentzian_spectrum",
    "pulse_number",
    "COHERENCE_RANGE",
]

log = logging.getLogger(__name__)


def lorentzian_spectrum(params, omega) -> np.ndarray:
    """Sum of symmetrized Lorentzians at ``omega``.

    Parameters
    ----------
    params : array_like, shape (..., K, 3)
        Rows (A, g, w0): variance in (rad/s)^2, half width and centre in rad/s.
    omega : array_like
        Angular frequencies in rad/s.

    Returns
    -------
    ndarray, shape (..., len(omega))
        S(omega) in rad^2/s (two-sided convention of physics.md).
    """
    p = np.asarray(params, float)
    w = np.asarray(omega, float)
    a, g, w0 = (p[..., i, None] for i in range(3))
    s = a * (g / ((w - w0) ** 2 + g**2) + g / ((w + w0) ** 2 + g**2))
    return s.sum(-2)


@dataclass(frozen=True)
class VQNSResult:
    """Reconstructed spectrum with its confidence band.

    Attributes
    ----------
    omega : ndarray
        Frequency grid in rad/s.
    mean, std : ndarray
        Mean and pointwise standard deviation of the successful spectra on ``omega``,
        rad^2/s (two-sided).
    samples : ndarray, shape (S, K, 3)
        Parameters (A, g, w0) of each successful restart.
    losses : ndarray, shape (S,)
        Final loss of each successful restart.
    iterations : ndarray, shape (S,)
        Adam iterations each successful restart took.
    n_failed : int
        Restarts that hit ``max_iter`` and were drawn again.
    n_steps : int
        Batched Adam steps taken (the wall-clock-relevant iteration count).
    loss_threshold : float
        Threshold that success was judged against (after any App. B adjustment).
    threshold_history : tuple
        (step, threshold) pairs: the initial value and every adjustment.
    runtime_s : float
        Wall-clock time of the reconstruction in s.
    band : tuple
        (omega_lo, omega_hi) in rad/s: the range the measurements are sensitive to.
    """

    omega: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    samples: np.ndarray
    losses: np.ndarray
    iterations: np.ndarray
    n_failed: int
    n_steps: int
    loss_threshold: float
    threshold_history: tuple
    runtime_s: float
    band: tuple
    settings: dict = field(default_factory=dict)

    @property
    def n_success(self) -> int:
        """Number of successful restarts."""
        return len(self.samples)

    def sample_spectra(self, omega) -> np.ndarray:
        """Every successful spectrum at ``omega`` (rad/s), shape (S, len(omega))."""
        return lorentzian_spectrum(self.samples, omega)

    def spectrum(self, omega) -> np.ndarray:
        """Mean reconstructed S(omega) in rad^2/s at any ``omega`` (rad/s)."""
        w = np.asarray(omega, float)
        return self.sample_spectra(w.ravel()).mean(0).reshape(w.shape)

    def spectrum_std(self, omega) -> np.ndarray:
        """Pointwise standard deviation of the spectra at any ``omega`` (rad/s)."""
        w = np.asarray(omega, float)
        return self.sample_spectra(w.ravel()).std(0).reshape(w.shape)

    def coherence(self, sequence: str, t) -> np.ndarray:
        """Coherence predicted by the mean spectrum for ``sequence`` at ``t`` (s)."""
        t = np.atleast_1d(np.asarray(t, float))
        n = pulse_number(sequence)
        pts = PointSet(t, np.full(t.shape, n))
        p = torch.as_tensor(self.samples.reshape(1, -1, 3)).clone()
        p[..., 0] /= len(self.samples)
        chi, _ = chi_and_grad(p[..., 0], p[..., 1], p[..., 2], pts)
        out = np.empty(t.shape)
        out[pts.order] = np.exp(-chi[0].numpy())
        return out


# --------------------------------------------------------------------------- helpers

def noise_level(m: Measurement) -> np.ndarray | None:
    """Per-point noise standard deviation of a measurement: its ``sigma``, else None.

    Without error bars the noise is not estimated from the curve (a local-fit residual
    mistakes under-resolved oscillations for noise); :func:`reconstruct` then starts from
    a tight threshold and lets the App. B plateau rule find the noise floor.
    """
    return m.sigma


def sensitive_band(measurements) -> tuple[float, float]:
    """Frequencies (rad/s) the measurements constrain: ``pi max(n,1) / t`` over decaying points.

    A point counts when its coherence lies in (0.03, 0.97); falls back to all points.
    """
    w = []
    for m in measurements:
        sel = (m.coherence > 0.03) & (m.coherence < 0.97)
        t = m.t[sel] if np.any(sel) else m.t
        w.append(np.pi * max(m.n, 1) / t)
    w = np.concatenate(w)
    return float(w.min()), float(w.max())


def _check_measurements(measurements) -> list[Measurement]:
    ms = list(measurements)
    if not ms:
        raise ValueError("no measurements given")
    for i, m in enumerate(ms):
        if not isinstance(m, Measurement):
            raise ValueError(f"measurement {i} is a {type(m).__name__}, not a Measurement")
    return ms


class _Problem:
    """Points, targets and weights of one reconstruction, in the PointSet's order."""

    def __init__(self, ms: list[Measurement], use_sigma: bool, backend: str = "torch"):
        self.backend = backend
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

    def loss_and_grad(self, amp, g, w0):
        """Per-restart loss (R,) and d loss / d(A, g, w0) (R, K, 3)."""
        if self.backend == "numba":
            from mracq.recon import vqns_numba
            from mracq.recon.vqns_torch import SERIES_SWITCH

            loss, grad = vqns_numba.loss_and_grad(
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
        unit, _ = chi_and_grad(torch.ones(r * k, 1, dtype=torch.float64), g.reshape(-1, 1),
                               w0.reshape(-1, 1), self.prob.pts)
        a_fit = _nnls_batch(unit.reshape(r, k, -1), self.prob.chi_data, self.prob.fit_w)
        a_fit = a_fit.clamp_min(1e-6 * a_fit.amax(1, keepdim=True).clamp_min(1e-300))
        la = torch.log(a_fit) + self._loguniform((r, k), 0.7, 1.4)
        th = torch.stack([la, torch.log((g - self.g_min).clamp_min(1e-300) / self.w_scale),
                          lw - np.log(self.w_scale)], 2)
        return th

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


def reconstruct(measurements, *, n_lorentzians: int | None = None, restarts: int = 100,
                loss_threshold: float | None = None, seed=None, lr: float = 0.1,
                betas: tuple = (0.9, 0.99), eps: float = 1e-12, max_iter: int = 1000,
                weight_decay: float = 0.0, use_sigma: bool = True,
                threshold_factor: float = 1.1, threshold_floor: float = 1.5e-6,
                adapt_threshold: bool = True, max_failures: int | None = None,
                oversubscribe: float = 0.3, patience: int = 100, backend: str = "auto",
                init_candidates: int = 4,
                omega=None, progress: bool | None = False) -> VQNSResult:
    """Reconstruct the noise spectrum from coherence decays (VQNS).

    Parameters
    ----------
    measurements : sequence of Measurement
        Coherence decays under FID, SE, CPMG-n or XY8-N.
    n_lorentzians : int, optional
        K, the number of Lorentzians per restart. Default: 3 for up to 4 sequences, else
        ``min(8, number of sequences)``.
    restarts : int
        Successful restarts wanted (the batch size).
    loss_threshold : float, optional
        A restart succeeds when its loss (sum over sequences of the mean squared coherence
        error, dimensionless) falls below this. Default: automatic from the noise
        (:func:`_auto_threshold`), adjusted to the plateau the first generation reaches
        when fewer than a quarter of it succeeds (seed App. B).
    seed : int or numpy Generator, optional
        Seeds the random initial parameters.
    lr, betas, eps : float
        Adam settings (the learning rate acts on log parameters: relative steps).
    max_iter : int
        Iteration cap per restart; a restart that reaches it is drawn again.
    weight_decay : float
        Decoupled shrinkage of (A, g, w0) per step, in units of lr (App. D regularization).
    use_sigma : bool
        Weight points by ``1 / sigma^2`` when every measurement has error bars.
    threshold_factor, threshold_floor : float
        Automatic threshold: ``max(factor * noise floor, floor * number of sequences)``.
    adapt_threshold : bool
        Raise an automatic threshold to the plateau when too few restarts succeed.
    max_failures : int, optional
        Stop drawing new restarts after this many failures (default ``5 * restarts``).
    oversubscribe : float
        Run ``(1 + oversubscribe) * restarts`` slots and stop at ``restarts`` successes,
        so that a few slow draws do not keep the whole batch waiting.
    patience : int
        Every ``patience`` iterations a restart whose loss improved by less than 3% and is
        still above three times the threshold counts as failed (stuck in a local minimum)
        and is drawn again; 0 disables this and leaves only ``max_iter``.
    init_candidates : int
        Each (re)start is the lowest-loss of this many random draws (1: the seed's plain
        random start; more raises the success rate at the cost of sample diversity).
    backend : str
        Loss and gradient evaluation: "torch" (vectorized closed form,
        :mod:`mracq.recon.vqns_torch`), "numba" (the same formulas fused in one compiled
        loop, ~5x faster; :mod:`mracq.recon.vqns_numba`) or "auto" (numba if installed).
        The optimizer state and the Adam updates are torch tensors either way.
    omega : array_like, optional
        Frequency grid for ``mean`` and ``std`` in rad/s (default: 0 to twice the band).
    progress : bool or None
        tqdm progress bar over successful restarts; None: only when stderr is a TTY.

    Returns
    -------
    VQNSResult
    """
    t0 = time.perf_counter()
    ms = _check_measurements(measurements)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    k = n_lorentzians or (3 if len(ms) <= 4 else min(8, len(ms)))
    if k < 1:
        raise ValueError(f"n_lorentzians must be >= 1, got {k}")
    if backend == "auto":
        from mracq.recon import vqns_numba

        backend = "numba" if vqns_numba.available() else "torch"
    if backend not in ("torch", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
    prob = _Problem(ms, use_sigma, backend)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    init = _Init(prob, k, gen, init_candidates)
    auto = loss_threshold is None
    thr = _auto_threshold(prob, threshold_factor, threshold_floor) if auto else float(
        loss_threshold)
    if not np.isfinite(thr) or thr <= 0:
        raise ValueError(f"loss_threshold must be > 0, got {thr}")
    history = [(0, thr)]
    max_failures = 5 * restarts if max_failures is None else max_failures
    nthreads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add contention
    try:
        res = _optimize(prob, init, restarts, thr, history, auto and adapt_threshold, lr,
                        betas, eps, max_iter, weight_decay, max_failures, progress,
                        oversubscribe, patience)
    finally:
        torch.set_num_threads(nthreads)
    samples, losses, iters, n_failed, steps, thr = res
    if len(samples) == 0:
        raise RuntimeError(f"VQNS: no restart reached the loss threshold {thr:.3g} in "
                           f"{max_iter} iterations ({n_failed} failures); raise the "
                           "threshold, max_iter or n_lorentzians")
    if omega is None:
        omega = np.linspace(0.0, 2 * prob.band[1], 1001)
    omega = np.asarray(omega, float)
    spec = lorentzian_spectrum(samples, omega)
    runtime = time.perf_counter() - t0
    log.info("VQNS: %d successes, %d failures, %d batched steps, threshold %.3g, %.2f s",
             len(samples), n_failed, steps, thr, runtime)
    return VQNSResult(omega=omega, mean=spec.mean(0), std=spec.std(0), samples=samples,
                      losses=losses, iterations=iters, n_failed=n_failed, n_steps=steps,
                      loss_threshold=thr, threshold_history=tuple(history),
                      runtime_s=runtime, band=prob.band,
                      settings=dict(n_lorentzians=k, restarts=restarts, lr=lr, backend=backend,
                                    max_iter=max_iter, weight_decay=weight_decay,
                                    sequences=[m.sequence for m in ms]))


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


def _coherence_fn(result: VQNSResult):
    def fn(n, t):
        return result.coherence(canonical_name(n), t)
    return fn


def candidate_scores(result: VQNSResult, measurements, candidates, *, omega=None,
                     rel_floor: float = 0.05) -> dict:
    """Eq. 7 score of each candidate sequence: how well it covers the widest band.

    ``u(w) = std / (mean + rel_floor * max(mean))`` is the relative width of the band;
    the score of candidate p is ``Int u(w) s_p(w) dln w`` with ``s_p`` its sensitivity
    (:func:`mracq.recon.sensitivity.sensitivity`) normalized to a peak of 1, divided by
    ``1 + Sens_measured(w) / Sens_p(w)`` so that frequencies the data already cover
    count less. Sequences already measured score 0.

    Returns
    -------
    dict
        name -> score (dimensionless, larger is better).
    """
    from mracq.recon.sensitivity import coverage, sensitivity

    lo, hi = result.band
    w = np.geomspace(lo / 4, hi * 4, 300) if omega is None else np.asarray(omega, float)
    mean = result.spectrum(w)
    u = result.spectrum_std(w) / (mean + rel_floor * mean.max())
    fn = _coherence_fn(result)
    measured = {m.sequence for m in measurements}
    have = coverage(w, sorted(measured), fn) if measured else np.zeros_like(w)
    scores = {}
    dlw = np.gradient(np.log(w))
    for c in candidates:
        name = canonical_name(pulse_number(c)) if not str(c).lower().startswith("xy8") else c
        if name in measured:
            scores[c] = 0.0
            continue
        s = sensitivity(w, name, fn)
        peak = s.max()
        if not np.isfinite(peak) or peak <= 0:
            scores[c] = 0.0
            continue
        gain = (s / peak) / (1 + have / np.maximum(s, 1e-300))
        scores[c] = float(np.sum(u * gain * dlw))
    return scores


def suggest_next_sequence(result: VQNSResult, measurements, candidates) -> str:
    """The candidate sequence whose Eq. 7 sensitivity best covers the widest band.

    Parameters
    ----------
    result : VQNSResult
        Current reconstruction (its mean spectrum predicts the coherences in Eq. 7).
    measurements : sequence of Measurement
        What has been measured (those sequences are not suggested again).
    candidates : sequence of str
        Sequence names to choose from, e.g. ``["cpmg-2", "cpmg-4", ..., "cpmg-64"]``.

    Returns
    -------
    str
        The best candidate (as given in ``candidates``).
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("no candidate sequences")
    scores = candidate_scores(result, list(measurements), candidates)
    best = max(candidates, key=lambda c: scores[c])
    if scores[best] <= 0:
        raise ValueError("every candidate has been measured already")
    log.info("VQNS next sequence: %s (scores %s)", best,
             {k: round(v, 4) for k, v in scores.items()})
    return best
