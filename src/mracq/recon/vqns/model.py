"""VQNS: variational quantum noise spectroscopy (seed 001, Sec. II and App. B-D).

Default (``optimizer="lm"``, :mod:`mracq.recon.vqns.lm`): the model is K Lorentzians plus
a fixed bank of smooth positive bumps that vanish at w = 0 (Ohmic-like shapes, which no
sum of Lorentzians fits); all restarts run batched Levenberg-Marquardt from random starts
(centres partly drawn where DDNS puts spectral weight) until ``restarts`` of them reach the
loss plateau of the best fit; each is then refitted to its own copy of the data with fresh
errors (twice the data's, or the misfit's), and the mean and standard deviation over the
refits are the estimate and its band. ``result.band`` is the range the data constrain.

The seed's procedure (``optimizer="adam"``), kept as an option:

The noise spectrum is a sum of K symmetrized Lorentzians (3K positive parameters A, g,
w0; physics.md section 1). Each restart draws random parameters and minimizes the sum
over sequences of the mean squared coherence error with Adam until the loss falls below
a threshold; a restart that hits the iteration cap is drawn again. The mean and the
pointwise standard deviation of the successful spectra are the estimate and its band.

Unlike the seed (one restart at a time, minutes each), all restarts run as one batch: an
(R, K, 3) parameter tensor whose chi is evaluated for every restart, sequence and time in
one fused closed-form pass (:mod:`mracq.recon.vqns.chi`, exact gradients without an
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
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mracq.recon.vqns.chi import PointSet, chi_and_grad
from mracq.recon.vqns.data import (
    COHERENCE_RANGE,
    Measurement,
    canonical_name,
    pulse_number,
    sensitive_band,
)
from mracq.recon.vqns.optim import _auto_threshold, _Init, _optimize, _Problem

__all__ = [
    "Measurement",
    "VQNSResult",
    "reconstruct",
    "suggest_next_sequence",
    "noise_level",
    "lorentzian_spectrum",
    "pulse_number",
    "sensitive_band",
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
    samples : ndarray, shape (S, K', 3)
        Parameters (A, g, w0) of each successful restart as Lorentzian rows (K' = K, or
        K + 2M with the background bank, see Notes): the fits to the data, which
        :attr:`mean` averages.
    band_samples : ndarray, shape (S, K', 3), optional
        The same after the LM refit to perturbed data (``perturb``), whose spread is the
        band (:meth:`spectrum_std`); None: the spread of :attr:`samples`.
    losses : ndarray, shape (S,)
        Final loss of each successful restart.
    iterations : ndarray, shape (S,)
        Iterations (LM or Adam) each successful restart took.
    n_failed : int
        Restarts that ended above the loss threshold (a local minimum, or ``max_iter``)
        and were drawn again.
    n_steps : int
        Batched steps (kernel calls) taken: the wall-clock-relevant iteration count.
    loss_threshold : float
        Threshold that success was judged against (after any App. B adjustment).
    threshold_history : tuple
        (step, threshold) pairs: the initial value and every adjustment.
    runtime_s : float
        Wall-clock time of the reconstruction in s.
    band : tuple
        (omega_lo, omega_hi) in rad/s: the range the measurements constrain
        (:func:`mracq.recon.vqns.data.sensitive_band`: ``pi max(n, 1) / t`` over the
        points whose coherence has decayed measurably but not to nothing). Outside it the
        estimate is the model's extrapolation, not a measurement: see :attr:`constrained`
        and :meth:`is_constrained`.

    misfit : tuple of ndarray
        (omega_p, dS_p): the mean fit's misfit at every data point, mapped to spectral
        units at ``omega_p = pi max(n, 1) / t`` (rad/s, rad^2/s; :func:`_misfit_points`).
        ``settings["misfit_factor"]`` times its local RMS is added to the band in
        quadrature (:meth:`spectrum_std`); empty when off.

    Notes
    -----
    With the default background bank (``reconstruct(..., background=True)``) each bump
    of a sample is a pair of Lorentzian rows at centre 0, one with a negative A; the pair
    is positive at every frequency.
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
    misfit: tuple = (np.zeros(0), np.zeros(0))
    band_samples: np.ndarray | None = None

    @property
    def constrained(self) -> np.ndarray:
        """Boolean mask on :attr:`omega`: True where the data constrain the spectrum."""
        return self.is_constrained(self.omega)

    def is_constrained(self, omega) -> np.ndarray:
        """True at the frequencies (rad/s) inside :attr:`band`, the range the data see."""
        w = np.asarray(omega, float)
        lo, hi = self.band
        return (w >= lo) & (w <= hi)

    @property
    def n_success(self) -> int:
        """Number of successful restarts."""
        return len(self.samples)

    def sample_spectra(self, omega) -> np.ndarray:
        """Every successful spectrum at ``omega`` (rad/s), shape (S, len(omega))."""
        return lorentzian_spectrum(self.samples, omega)

    def spectrum(self, omega) -> np.ndarray:
        """Mean reconstructed S(omega) in rad^2/s at any ``omega`` (rad/s).

        With ``settings["robust"]`` (the LM default) the pointwise mean leaves out the
        highest and lowest 10 % of the restarts at each frequency, so that a few restarts
        with a narrow spike (an ill-determined component) do not make one.
        """
        w = np.asarray(omega, float)
        return _centre(self.sample_spectra(w.ravel()), self.settings.get("robust")).reshape(
            w.shape)

    def spectrum_std(self, omega) -> np.ndarray:
        """Pointwise standard deviation of the spectra at any ``omega`` (rad/s).

        With ``settings["robust"]``: half the spread between the 16th and 84th percentiles
        (the standard deviation for normally distributed spectra, blind to a few spikes).

        With ``settings["misfit_factor"]`` > 0, that factor times the local RMS of
        :attr:`misfit` is added in quadrature: the part of the error the model's shape
        cannot show (see :func:`reconstruct`, ``misfit_factor``).
        """
        w = np.asarray(omega, float).ravel()
        if self.band_samples is None:
            spectra = self.sample_spectra(w)
        else:
            spectra = lorentzian_spectrum(self.band_samples, w)
        sd = _spread(spectra, self.settings.get("robust"))
        kappa = self.settings.get("misfit_factor", 0.0)
        if kappa and len(self.misfit[0]):
            sd = np.hypot(sd, kappa * _misfit_sd(w, *self.misfit))
        return sd.reshape(np.shape(omega))

    def coherence(self, sequence: str, t) -> np.ndarray:
        """Coherence for ``sequence`` at ``t`` (s) under the mean spectrum.

        With ``settings["robust"]``: ``exp(-chi)`` of the 10 %-trimmed mean over the
        samples' chi (the same aggregate as :meth:`spectrum`, applied to chi, which is
        linear in the spectrum).
        """
        t = np.atleast_1d(np.asarray(t, float))
        n = pulse_number(sequence)
        pts = PointSet(t, np.full(t.shape, n))
        robust = self.settings.get("robust") and len(self.samples) >= 5
        if robust:  # chi of every sample (chi is linear in S), then the trimmed mean
            p = torch.as_tensor(self.samples)
        else:
            p = torch.as_tensor(self.samples.reshape(1, -1, 3)).clone()
            p[..., 0] /= len(self.samples)
        chi = _centre(_chi(p.numpy(), pts), robust)
        out = np.empty(t.shape)
        out[pts.order] = np.exp(-chi)
        return out


# --------------------------------------------------------------------------- helpers

def _centre(spectra, robust) -> np.ndarray:
    """Pointwise mean over restarts (axis 0), 10 %-trimmed at each end if ``robust``."""
    if not robust or len(spectra) < 5:
        return spectra.mean(0)
    # scipy.stats.trim_mean's rule, without importing scipy.stats (1.5 s of CPU)
    n = len(spectra)
    cut = int(0.1 * n)
    return np.partition(spectra, (cut, n - cut - 1), axis=0)[cut:n - cut].mean(0)


def _spread(spectra, robust) -> np.ndarray:
    """Pointwise standard deviation over restarts, or half the 16-84 % range if ``robust``."""
    if not robust or len(spectra) < 5:
        return spectra.std(0)
    q16, q84 = np.percentile(spectra, [16, 84], axis=0)
    return 0.5 * (q84 - q16)


def _chi(rows: np.ndarray, pts: PointSet) -> np.ndarray:
    """chi (R, P) of R sums of Lorentzian rows (R, K, 3) = (A, g, w0), internal point order.

    The numba kernel (values only) where it is available, else the torch closed form.
    """
    from mracq.recon.vqns import kernel

    if kernel.available():
        from mracq.recon.vqns.chi import SERIES_SWITCH

        g = np.ascontiguousarray(rows[..., 1])
        w0 = np.ascontiguousarray(rows[..., 2])
        with kernel.threads(1):
            basis = kernel.chi_basis(g, w0, pts, SERIES_SWITCH)
        return np.einsum("rk,rkp->rp", rows[..., 0], basis)
    p = torch.as_tensor(rows)
    nthreads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: a thread pool only spins (20x slower loaded)
    try:
        chi, _ = chi_and_grad(p[..., 0], p[..., 1], p[..., 2], pts)
    finally:
        torch.set_num_threads(nthreads)
    return chi.numpy()


MISFIT_WINDOW = 5  # points of a decay averaged before the misfit is mapped (noise / 2.2)
MISFIT_WIDTH = 0.2  # kernel width in ln(omega) that spreads it over the grid (a factor 1.22)


def _misfit_points(result: VQNSResult, ms, *, window: int = MISFIT_WINDOW,
                   c_min: float = 0.05):
    """The mean fit's residuals in spectral units, by the DDNS relation.

    For a point at time t of a sequence with n pulses, a coherence error dC means a chi
    error ``dC / C``, and DDNS (:mod:`mracq.recon.vqns.ddns`) maps chi at t to the
    spectrum at ``pi max(n, 1) / t`` by ``pi^2 / (4 t)``. Residuals are first averaged
    over ``window`` neighbouring points of the same decay, so that independent errors
    shrink and a systematic misfit (a spectral shape the model cannot take) stays; with
    error bars, the variance they explain is subtracted from the averaged residual's
    square (what is left is the misfit beyond the noise).

    Returns
    -------
    omega_p, ds_p : ndarray
        rad/s and |dS| in rad^2/s, for the points whose fitted coherence exceeds ``c_min``.
    """
    w, d = [], []
    for m in ms:
        c = result.coherence(m.sequence, m.t)
        r = m.coherence - c
        kern = np.ones(min(window, len(r))) / min(window, len(r))
        den = np.convolve(np.ones_like(r), kern, mode="same")
        r = np.convolve(r, kern, mode="same") / den
        if m.sigma is not None:  # the part of the averaged residual its errors explain
            var = np.convolve(np.broadcast_to(m.sigma, r.shape) ** 2, kern**2,
                              mode="same") / den**2
            r = np.sqrt(np.maximum(r**2 - var, 0.0))
        ok = np.isfinite(c) & (c > c_min)
        w.append(np.pi * max(m.n, 1) / m.t[ok])
        d.append(np.pi**2 / (4 * m.t[ok]) * np.abs(r[ok]) / c[ok])
    w, d = np.concatenate(w), np.concatenate(d)
    order = np.argsort(w)
    return w[order], d[order]


def _misfit_sd(omega, w_p, d_p, width: float = MISFIT_WIDTH) -> np.ndarray:
    """Local RMS of the mapped misfit ``d_p`` at ``omega`` (Gaussian kernel in ln omega).

    Zero where no data point lies within about three kernel widths.
    """
    lw = np.log(np.asarray(omega, float))[:, None]
    k = np.exp(-0.5 * ((lw - np.log(w_p)[None]) / width) ** 2)
    s = k.sum(1)
    return np.sqrt(k @ d_p**2 / np.maximum(s, 1e-300)) * (s > 1e-3)


def noise_level(m: Measurement) -> np.ndarray | None:
    """Per-point noise standard deviation of a measurement: its ``sigma``, else None.

    Without error bars the noise is not estimated from the curve (a local-fit residual
    mistakes under-resolved oscillations for noise); :func:`reconstruct` then starts from
    a tight threshold and lets the App. B plateau rule find the noise floor.
    """
    return m.sigma


def _check_measurements(measurements) -> list[Measurement]:
    ms = list(measurements)
    if not ms:
        raise ValueError("no measurements given")
    for i, m in enumerate(ms):
        if not isinstance(m, Measurement):
            raise ValueError(f"measurement {i} is a {type(m).__name__}, not a Measurement")
    return ms


def reconstruct(measurements, *, n_lorentzians: int | None = None, restarts: int = 100,
                loss_threshold: float | None = None, seed=None, lr: float = 0.1,
                betas: tuple = (0.9, 0.99), eps: float = 1e-12, max_iter: int | None = None,
                weight_decay: float = 0.0, use_sigma: bool = True,
                threshold_factor: float = 1.1, threshold_floor: float = 1.5e-6,
                adapt_threshold: bool = True, max_failures: int | None = None,
                oversubscribe: float = 0.3, patience: int = 100, backend: str = "auto",
                init_candidates: int = 4, optimizer: str = "lm", perturb: bool = True,
                background: bool = True, band_inflate: float = 2.0,
                misfit_factor: float = 2.0, choose_k: bool = True, omega=None,
                progress: bool | None = False,
                noise_stop: float | None = None, warm_start=None) -> VQNSResult:
    """Reconstruct the noise spectrum from coherence decays (VQNS).

    Parameters
    ----------
    measurements : sequence of Measurement
        Coherence decays under FID, SE, CPMG-n or XY8-N.
    n_lorentzians : int, optional
        K, the number of Lorentzians per restart. Default for "lm": chosen by validation
        (``choose_k``) among 2, 3, 5 and ``min(8, 2 + number of sequences)``; for "adam":
        3 for up to 4 sequences, else ``min(8, sequences)``.
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
        :mod:`mracq.recon.vqns.chi`), "numba" (the same formulas fused in one compiled
        loop, ~5x faster; :mod:`mracq.recon.vqns.kernel`) or "auto" (numba if installed).
        The optimizer state and the Adam updates are torch tensors either way.
    optimizer : str
        "lm" (default): batched Levenberg-Marquardt (:mod:`mracq.recon.vqns.lm`), up to
        ``max_iter`` iterations per restart (default 60), then, with ``perturb``, a refit
        of every success to data with fresh errors of the data's size (the band is then
        the spread over repeated measurements). "adam": the seed's procedure, batched
        Adam until the loss threshold (``lr``, ``betas``, ``eps``, ``weight_decay``,
        ``patience``, ``max_iter`` default 1000).
    perturb : bool
        LM only: the randomize-then-optimize refit described above.
    band_inflate : float
        LM only: the refit's errors are this many times the data's (see
        :func:`mracq.recon.vqns.lm.ensemble`); 1 is the plain randomize-then-optimize.
    choose_k : bool
        LM only, when ``n_lorentzians`` is not given and every decay has >= 8 points:
        choose K by how well short fits to three quarters of the points predict the held
        out quarter (:func:`mracq.recon.vqns.lm.select_k`); on noisy data fewer
        components fit less of the noise. Off: K = ``min(8, 2 + number of sequences)``.
    misfit_factor : float
        LM only: widen the band, in quadrature, by this many times the fit's local misfit
        mapped to spectral units (:func:`_misfit_points`). A spectrum of a shape the model
        cannot take (a Gaussian peak's tails, an Ohmic rise) leaves a systematic misfit
        that the refit's spread does not show, since every refit has the model's shape;
        the model spreads the error it cannot fit over neighbouring frequencies, so the
        misfit understates it (factor 2, calibrated on the families of
        ``benchmarks/vqns.py --parts families``, seeds 19 and 777). 0: off.
    background : bool
        LM only: add a fixed bank of smooth positive bumps that vanish at ``w = 0``
        (:class:`mracq.recon.vqns.lm._Model`) to the K Lorentzians, for spectra such as
        the Ohmic one that no sum of Lorentzians fits. ``samples`` then holds each bump
        as a pair of Lorentzian rows at centre 0 (one with negative A; the pair is
        positive at every frequency).
    omega : array_like, optional
        Frequency grid for ``mean`` and ``std`` in rad/s (default: 600 points spaced
        logarithmically from a tenth of the band's lower end to three times its upper).
    progress : bool or None
        tqdm progress bar over successful restarts; None: only when stderr is a TTY.
    noise_stop : float, optional
        LM only, for data with error bars: every restart (and every fit that chooses K)
        stops once its loss falls to this many times the noise floor (the loss the error
        bars explain, which the true spectrum has on average): Morozov's discrepancy
        principle. Left to run, LM fits the noise as well, with components the data do
        not resolve. None (default): run until the loss stops falling (or reaches a tenth
        of the threshold). Tried as the closed loop's setting and left off there: on 40
        fresh loop instances it reached the ladder's error as often as without (26/40),
        and steps that raised the error by > 20 % stayed as frequent
        (``benchmarks/vqns_loop_noise_stop_*.json``).
    warm_start : VQNSResult, optional
        LM only: start every restart from this earlier reconstruction's fits (e.g. the
        previous step of a closed loop, on fewer data; its Lorentzians mapped to this K,
        which does not fall below its K, and its background projected onto this bank);
        restarts that fail are redrawn at random. Off by default: in the closed loop it
        reached the ladder's error no more often (benchmarks/vqns_loop_warm_start_*.json).
    Returns
    -------
    VQNSResult
    """
    t0 = time.perf_counter()
    ms = _check_measurements(measurements)
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    k_scores = None
    if n_lorentzians:
        k = n_lorentzians
    elif optimizer == "lm":  # more components find the peaks more often (fewer failures)
        k = min(8, 2 + len(ms))
    else:
        k = 3 if len(ms) <= 4 else min(8, len(ms))
    if k < 1:
        raise ValueError(f"n_lorentzians must be >= 1, got {k}")
    if backend == "auto":
        from mracq.recon.vqns import kernel

        backend = "numba" if kernel.available() else "torch"
    if backend not in ("torch", "numba"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'numba', got {backend!r}")
    if optimizer not in ("lm", "adam"):
        raise ValueError(f"optimizer must be 'lm' or 'adam', got {optimizer!r}")
    if noise_stop is not None and not (np.isfinite(noise_stop) and noise_stop > 0):
        raise ValueError(f"noise_stop must be > 0 (or None), got {noise_stop!r}")
    if max_iter is None:
        max_iter = 60 if optimizer == "lm" else 1000
    prob = _Problem(ms, use_sigma, backend)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    choose = (choose_k and not n_lorentzians and optimizer == "lm"
              and min(len(m) for m in ms) >= 8)
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
    from threadpoolctl import threadpool_limits

    from mracq.recon.vqns import kernel

    try:
        # likewise for the compiled kernel and BLAS: a multi-threaded OpenBLAS spins on a
        # loaded machine (measured: 17.6 s against 3.1 s for 40 restarts at load 8)
        with kernel.threads(1), threadpool_limits(1):
            if optimizer == "lm":
                from mracq.recon.vqns.lm import _Model, ensemble, select_k

                if choose:
                    cand = [c for c in (2, 3, 5) if c < k] + [k]
                    k, k_scores, _ = select_k(ms, cand, use_sigma=use_sigma, backend=backend,
                                              bank=background, gen=gen, noise_stop=noise_stop)
                    if warm_start is not None:  # K never falls below the earlier fit's
                        k = max(k, warm_start.settings["n_lorentzians"])
                    init = _Init(prob, k, gen, init_candidates)
                model = _Model(prob, init, bank=background)
                model.candidates = 1  # LM: best-of-m starts did not raise the success rate
                warm = None
                if warm_start is not None and len(warm_start.samples):
                    warm = model.warm(warm_start.samples, warm_start.settings["n_lorentzians"])
                out = ensemble(model, restarts, thr, rng, max_iter=max_iter,
                               max_failures=max_failures, oversubscribe=oversubscribe,
                               perturb=perturb, inflate=band_inflate,
                               noise_stop=noise_stop, warm=warm)
                samples = model.samples(out["th_fit"])
                band_samples = model.samples(out["th"])
                losses, iters, n_failed = out["loss"], out["iters"], out["n_failed"]
                steps = out["calls"]
                if out["accept"] != thr:
                    history.append((steps, out["accept"]))
                    thr = out["accept"]
            else:
                res = _optimize(prob, init, restarts, thr, history, auto and adapt_threshold,
                                lr, betas, eps, max_iter, weight_decay, max_failures,
                                progress, oversubscribe, patience)
                samples, losses, iters, n_failed, steps, thr = res
                band_samples = samples
    finally:
        torch.set_num_threads(nthreads)
    if len(samples) == 0:
        raise RuntimeError(f"VQNS: no restart reached the loss threshold {thr:.3g} in "
                           f"{max_iter} iterations ({n_failed} failures); raise the "
                           "threshold, max_iter or n_lorentzians")
    if omega is None:
        omega = np.geomspace(prob.band[0] / 10, 3 * prob.band[1], 600)
    omega = np.asarray(omega, float)
    spec = lorentzian_spectrum(samples, omega)
    robust = optimizer == "lm"
    spread = spec if band_samples is samples else lorentzian_spectrum(band_samples, omega)
    runtime = time.perf_counter() - t0
    log.info("VQNS: %d successes, %d failures, %d batched steps, threshold %.3g, %.2f s",
             len(samples), n_failed, steps, thr, runtime)
    res = VQNSResult(omega=omega, mean=_centre(spec, robust), std=_spread(spread, robust),
                     samples=samples, band_samples=band_samples,
                     losses=losses, iterations=iters, n_failed=n_failed, n_steps=steps,
                     loss_threshold=thr, threshold_history=tuple(history),
                     runtime_s=runtime, band=prob.band,
                     settings=dict(n_lorentzians=k, restarts=restarts, lr=lr, backend=backend,
                                   optimizer=optimizer, robust=robust,
                                   max_iter=max_iter, weight_decay=weight_decay,
                                   misfit_factor=float(misfit_factor) if robust else 0.0,
                                   band_inflate=float(band_inflate) if robust and perturb
                                   else 1.0,
                                   k_scores=k_scores,
                                   sequences=[m.sequence for m in ms]))
    if res.settings["misfit_factor"] > 0:
        res = replace(res, misfit=_misfit_points(res, ms))
        res = replace(res, std=res.spectrum_std(omega),
                      runtime_s=time.perf_counter() - t0)
    return res


def _coherence_fn(result: VQNSResult):
    def fn(n, t):
        return result.coherence(canonical_name(n), t)
    return fn


def candidate_scores(result: VQNSResult, measurements, candidates, *, omega=None,
                     rel_floor: float = 0.05, misfit: bool = False) -> dict:
    """Eq. 7 score of each candidate sequence: how well it covers the widest band.

    ``u(w) = std / (mean + rel_floor * max(mean))`` is the relative width of the band;
    the score of candidate p is ``Int u(w) s_p(w) dln w`` with ``s_p`` its sensitivity
    (:func:`mracq.recon.vqns.sensitivity.sensitivity`) normalized to a peak of 1, divided by
    ``1 + Sens_measured(w) / Sens_p(w)`` so that frequencies the data already cover
    count less. Sequences already measured score 0. ``std`` is the refits' spread (the
    part more data narrows); with ``misfit`` it includes the model-shape term of
    :meth:`VQNSResult.spectrum_std` (which, mapped from residuals at short times, is
    largest at high frequencies and sent the loop to the costliest sequences).

    Returns
    -------
    dict
        name -> score (dimensionless, larger is better).
    """
    from mracq.recon.vqns.sensitivity import coverage, sensitivity

    lo, hi = result.band
    w = np.geomspace(lo / 4, hi * 4, 300) if omega is None else np.asarray(omega, float)
    mean = result.spectrum(w)
    if not misfit:  # the spread a new measurement narrows, not the model-shape term
        result = replace(result, settings={**result.settings, "misfit_factor": 0.0})
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
