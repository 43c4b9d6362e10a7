"""VQNS benchmark: accuracy against DDNS/FTNS, speed against a literal reference, closed loop.

Run from the worktree root::

    PYTHONPATH=src python benchmarks/vqns.py [--quick] [--parts accuracy speed loop]
        [--out benchmarks/vqns.json]

Parts (side by side in one run, ratios printed and written to JSON):

- ``accuracy``: the seed's test spectra (three Lorentzians noise-free, 1% and 3% uniform
  error, 7 sequences; Ohmic with CPMG-0..6; 1/f with CPMG-1,2,3,4,8,16,32; a 1H Larmor
  peak on a broad background with CPMG-1 ... 256). Relative L2 error of the mean spectrum
  over the band the sequences are sensitive to, for VQNS, DDNS and FTNS on the same data;
  fraction of that band where the truth lies within the VQNS band (mean +- 2 std).
- ``families``: random instances of every spectral family of issue 19 (sums of 1-4
  Lorentzians, some near-degenerate; Ohmic/Drude; 1/f^alpha without FID; a broad
  background with a Gaussian or Lorentzian peak at 0.3-3 MHz; a peak narrower than 1/T),
  7 sequences of 40-80 points at 0, 1 and 3 % Gaussian or uniform error: per family and
  level the VQNS error over the band and at DDNS's frequencies, DDNS's and FTNS's, the
  band coverage, failed restarts and time.
- ``speed``: 100 restarts batched against the literal reference (one restart at a time,
  per-restart ``torch.optim.Adam`` loop, autograd through the closed form per sequence),
  same data, threshold, initialization and iteration cap.
- ``loop``: simulated NV measurements (Poisson counts, physics.md section 2); hardware time
  (shots x (t + overhead)) for the adaptive choice to reach the final error of the fixed
  ladder FID + CPMG 1, 2, 4, 8, 16, 32 (ratio per noise seed; inf: not within 7
  measurements), and, not selective, the adaptive's error at 0.6 of the ladder's time,
  and the largest factor by which a step raised the adaptive's error over its best so far.
  Ladder and adaptive reconstruct alike (also with ``--noise-stop``, ``--no-choose-k``).
  One reconstruction's error varies by up to 2x with its own random seed alone, so read
  the ratios over >= 10 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mracq.recon.vqns.chi import PointSet, chi_batch
from mracq.recon.vqns.data import decay_time, pulse_number, simulate_measurements
from mracq.recon.vqns.ddns import ddns
from mracq.recon.vqns.ftns import ftns
from mracq.recon.vqns.model import Measurement, reconstruct, sensitive_band
from mracq.recon.vqns.strategy import NextSequenceStrategy
from mracq.sim.filter_function import coherence
from mracq.sim.spectra import Lorentzians, Ohmic, PowerLaw, Spectrum, larmor_peak

TP = 2 * np.pi
THREE = Lorentzians([(TP * 60e3) ** 2, (TP * 40e3) ** 2, (TP * 50e3) ** 2],
                    [TP * 30e3, TP * 150e3, TP * 100e3], [0.0, TP * 0.6e6, TP * 2e6])
SEVEN = ["fid", "se", "cpmg-2", "cpmg-3", "cpmg-8", "cpmg-16", "cpmg-32"]


def load():
    return os.getloadavg()[0]


def rel_err(est, true):
    return float(np.linalg.norm(est - true) / np.linalg.norm(true))


# ------------------------------------------------------------------ accuracy

def cases(quick):
    larmor = (larmor_peak(0.0454, "1H", amplitude=(TP * 25e3) ** 2, width=TP * 40e3)
              + Lorentzians([(TP * 40e3) ** 2], [TP * 300e3], [0.0]))
    ladder = ["se"] + [f"cpmg-{n}" for n in (2, 4, 8, 16, 32, 64, 96, 128, 256)]
    out = [
        ("three_lorentzians_noise_free", THREE, SEVEN, 0.0, 4),
        ("three_lorentzians_1pct", THREE, SEVEN, 0.01, 6),
        ("three_lorentzians_3pct", THREE, SEVEN, 0.03, 6),
        ("ohmic_cpmg0-6", Ohmic(2e4, TP * 1e6), ["fid", "se"] + [f"cpmg-{n}" for n in range(2, 7)],
         0.0, 8),
        ("one_over_f", PowerLaw(2e3, 1.0, TP * 1e6),
         ["se"] + [f"cpmg-{n}" for n in (2, 3, 4, 8, 16, 32)], 0.0, 8),
        ("larmor_1H_on_background", larmor, ladder, 0.0, 8),
    ]
    return out[:2] if quick else out


def accuracy(quick, restarts, only=None):
    rows = []
    for name, spec, seqs, noise, k in cases(quick):
        if only and not any(o in name for o in only):
            continue
        ms = simulate_measurements(spec, seqs, n_points=40, noise=noise,
                                   rng=np.random.default_rng(7))
        lo, hi = sensitive_band(ms)
        w = np.geomspace(lo, hi, 400)
        t0 = load()
        res = reconstruct(ms, n_lorentzians=k, restarts=restarts, seed=0)
        est, sd, true = res.spectrum(w), res.spectrum_std(w), spec(w)
        d = ddns(ms)
        sel = (d.omega >= lo) & (d.omega <= hi)
        row = {
            "case": name, "sequences": seqs, "noise": noise, "n_lorentzians": k,
            "band_rad_s": [lo, hi],
            "vqns_rel_l2": rel_err(est, true),
            "vqns_truth_in_band": float(np.mean(np.abs(est - true) <= 2 * sd)),
            "vqns_truth_in_1sd": float(np.mean(np.abs(est - true) <= sd)),
            "ddns_rel_l2_at_ddns_points": rel_err(d.spectrum[sel], spec(d.omega[sel])),
            "vqns_rel_l2_at_ddns_points": rel_err(res.spectrum(d.omega[sel]),
                                                   spec(d.omega[sel])),
            "vqns_runtime_s": res.runtime_s, "vqns_failures": res.n_failed,
            "vqns_threshold": res.loss_threshold, "load_1min": [t0, load()],
        }
        row["ddns_over_vqns"] = row["ddns_rel_l2_at_ddns_points"] / row[
            "vqns_rel_l2_at_ddns_points"]
        for m in ms:
            if m.n in (0, 1):
                f = ftns(m)
                ok = (f.omega >= lo) & (f.omega <= min(hi, f.omega_max)) & np.isfinite(
                    f.spectrum)
                if ok.sum() > 3:
                    row[f"ftns_{m.sequence}_rel_l2"] = rel_err(f.spectrum[ok], spec(f.omega[ok]))
                    row[f"vqns_rel_l2_on_ftns_{m.sequence}_grid"] = rel_err(
                        res.spectrum(f.omega[ok]), spec(f.omega[ok]))
        rows.append(row)
        print(f"{name:32s} VQNS {row['vqns_rel_l2']:.3f} (in band {row['vqns_truth_in_band']:.2f})"
              f"  DDNS {row['ddns_rel_l2_at_ddns_points']:.3f} vs VQNS@DDNS "
              f"{row['vqns_rel_l2_at_ddns_points']:.3f} (x{row['ddns_over_vqns']:.1f})  "
              + " ".join(f"{k_}={v:.3f}" for k_, v in row.items() if k_.startswith("ftns"))
              + f"  [{res.runtime_s:.1f} s, load {t0:.1f}]", flush=True)
    return rows


# ------------------------------------------------------------------ spectral families

SEQS_FID = ["fid", "se", "cpmg-2", "cpmg-4", "cpmg-8", "cpmg-16", "cpmg-32"]
SEQS_NO_FID = ["se", "cpmg-2", "cpmg-3", "cpmg-4", "cpmg-8", "cpmg-16", "cpmg-32"]
FAMILIES = ("lorentzians", "ohmic", "one_over_f", "background_peak", "narrow_peak")


class GaussianPeak(Spectrum):
    """Symmetrized Gaussian peak of variance ``amplitude`` (rad/s)^2 at ``centre``.

    ``S = A sqrt(pi/2) / s [exp(-(w - w0)^2 / 2 s^2) + exp(-(w + w0)^2 / 2 s^2)]``, so that
    ``Int S dw / 2 pi = A`` as for a Lorentzian of the same A.
    """

    def __init__(self, amplitude, centre, sd):
        self.amplitude, self.centre, self.sd = float(amplitude), float(centre), float(sd)

    def __call__(self, omega):
        w = np.abs(np.asarray(omega, float))
        a, w0, s = self.amplitude, self.centre, self.sd
        return a * np.sqrt(np.pi / 2) / s * (np.exp(-(w - w0) ** 2 / (2 * s * s))
                                              + np.exp(-(w + w0) ** 2 / (2 * s * s)))

    def features(self):
        return [(self.centre, self.sd)]

    def scale(self):
        return self.centre + 5 * self.sd


def _logu(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def family_instance(family: str, rng):
    """One random spectrum of ``family`` and its sequences: (spectrum, sequences, note).

    Frequencies are drawn in Hz and converted to rad/s; amplitudes are set so that the
    decays fall within microseconds to milliseconds, as for shallow NV centres.
    """
    if family == "lorentzians":
        k = int(rng.integers(1, 5))
        f0 = [0.0] + [_logu(rng, 0.1e6, 3e6) for _ in range(k - 1)]
        g = [_logu(rng, 10e3, 300e3) for _ in range(k)]
        if k >= 2 and rng.random() < 0.5:  # a near-degenerate pair: centres within a width
            j = int(rng.integers(1, k))
            i = (j + 1) % k if k > 2 else 0
            f0[j] = f0[i] + rng.uniform(0.3, 1.0) * g[i]
        a = [(TP * _logu(rng, 20e3, 80e3)) ** 2 for _ in range(k)]
        return (Lorentzians(a, [TP * x for x in g], [TP * x for x in f0]), SEQS_FID,
                f"{k} Lorentzians")
    if family == "ohmic":
        fc = _logu(rng, 0.3e6, 3e6)
        eta = _logu(rng, 1.5, 5.0)
        return Ohmic(eta, TP * fc), SEQS_FID, f"Ohmic fc {fc / 1e6:.2f} MHz"
    if family == "one_over_f":
        alpha = rng.uniform(0.5, 1.5)
        return (PowerLaw(_logu(rng, 1e4, 1e5), alpha, TP * 1e6), SEQS_NO_FID,
                f"1/f^{alpha:.2f}")
    bg_g = _logu(rng, 20e3, 300e3)
    bg = Lorentzians([(TP * _logu(rng, 30e3, 80e3)) ** 2], [TP * bg_g], [0.0])
    f0 = rng.uniform(0.3e6, 3e6)
    amp = (TP * _logu(rng, 10e3, 30e3)) ** 2
    if family == "background_peak":
        width = _logu(rng, 10e3, 60e3)
        if rng.random() < 0.5:
            peak, kind = GaussianPeak(amp, TP * f0, TP * width), "Gaussian"
        else:
            peak, kind = Lorentzians([amp], [TP * width], [TP * f0]), "Lorentzian"
        return bg + peak, SEQS_FID, f"{kind} peak {f0 / 1e6:.2f} MHz on Drude {bg_g / 1e3:.0f} kHz"
    if family == "narrow_peak":
        # narrower than 1/T of the longest sequence: only its area and centre are resolved
        t_long = max(decay_time(bg, pulse_number(s)) for s in SEQS_FID)
        width = rng.uniform(0.05, 0.3) / t_long
        peak = Lorentzians([amp], [width], [TP * f0])
        return (bg + peak, SEQS_FID,
                f"peak {f0 / 1e6:.2f} MHz, width {width / TP:.0f} Hz < 1/T {1 / t_long:.0f} Hz")
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def family_decays(spec, seqs, rng):
    """Noise-free decays of 40-80 points per sequence down to C ~ 0.02-0.05.

    Returns a list of (sequence, t in s, coherence).
    """
    n_points = int(rng.integers(40, 81))
    chi_end = rng.uniform(3.0, 4.0)
    out = []
    for name in seqs:
        n = pulse_number(name)
        te = decay_time(spec, n, chi_end)
        t = np.linspace(te / n_points, te, n_points)
        out.append((name, t, coherence(spec, t, n=n)))
    return out


def with_error(decays, noise, kind, rng):
    """Measurements from noise-free decays with uniform (half width ``noise``) or Gaussian
    (sd ``noise``) error, with matching error bars; none at ``noise = 0``."""
    out = []
    for name, t, c in decays:
        sigma = None
        if noise > 0:
            if kind == "uniform":
                c = c + rng.uniform(-noise, noise, c.shape)
                sigma = np.full(c.shape, noise / np.sqrt(3))
            else:
                c = c + rng.normal(0, noise, c.shape)
                sigma = np.full(c.shape, noise)
            c = np.clip(c, -0.05, 1.05)
        out.append(Measurement(name, t, c, sigma))
    return out


def _ftns_err(ms, spec, lo, hi):
    """FTNS (from the FID, else the SE decay) relative L2 error over the band, or None."""
    for m in ms:
        if m.n in (0, 1):
            try:
                f = ftns(m)
            except ValueError:
                continue
            ok = (f.omega >= lo) & (f.omega <= min(hi, f.omega_max)) & np.isfinite(f.spectrum)
            if ok.sum() > 3:
                return rel_err(f.spectrum[ok], spec(f.omega[ok]))
    return None


def family_row(family, instance, noise, ms, spec, note, restarts):
    lo, hi = sensitive_band(ms)
    w = np.geomspace(lo, hi, 400)
    l0 = load()
    res = reconstruct(ms, restarts=restarts, seed=instance)
    est, sd, true = res.spectrum(w), res.spectrum_std(w), spec(w)
    d = ddns(ms)
    sel = (d.omega >= lo) & (d.omega <= hi)
    return {
        "family": family, "instance": instance, "spectrum": note, "noise": noise,
        "points_per_sequence": len(ms[0]), "sequences": [m.sequence for m in ms],
        "band_rad_s": [lo, hi],
        "vqns_rel_l2": rel_err(est, true),
        "vqns_rel_l2_at_ddns": rel_err(res.spectrum(d.omega[sel]), spec(d.omega[sel])),
        "ddns_rel_l2_at_ddns": rel_err(d.spectrum[sel], spec(d.omega[sel])),
        "ftns_rel_l2": _ftns_err(ms, spec, lo, hi),
        "coverage_2sd": float(np.mean(np.abs(est - true) <= 2 * sd)),
        "restarts": res.n_success, "failed_restarts": res.n_failed,
        "runtime_s": res.runtime_s, "load_1min": [l0, load()],
    }


def families(instances, seed, restarts, noises=(0.0, 0.01, 0.03), only=None):
    """Every spectral family of issue 19 on ``instances`` random instances each.

    Instance i of a family is drawn from ``default_rng([seed, family, i])``; its error is
    Gaussian for even i, uniform for odd i, at every level of ``noises``.
    """
    rows, summary = [], []
    for fam in FAMILIES:
        if only and fam not in only:
            continue
        per = {nz: [] for nz in noises}
        for i in range(instances):
            rng = np.random.default_rng([seed, FAMILIES.index(fam), i])
            spec, seqs, note = family_instance(fam, rng)
            decays = family_decays(spec, seqs, rng)
            for nz in noises:
                ms = with_error(decays, nz, "gaussian" if i % 2 == 0 else "uniform", rng)
                row = family_row(fam, i, nz, ms, spec, note, restarts)
                rows.append(row)
                per[nz].append(row)
                print(f"  {fam:16s} #{i} {nz:4.0%} {note:48s} VQNS {row['vqns_rel_l2']:.3f} "
                      f"@DDNS {row['vqns_rel_l2_at_ddns']:.3f} vs DDNS "
                      f"{row['ddns_rel_l2_at_ddns']:.3f}  cover {row['coverage_2sd']:.2f}  "
                      f"failed {row['failed_restarts']:3d}  {row['runtime_s']:.1f} s "
                      f"[load {row['load_1min'][0]:.1f}]", flush=True)
        for nz, rs in per.items():
            ft = [r["ftns_rel_l2"] for r in rs if r["ftns_rel_l2"] is not None]
            agg = {"family": fam, "noise": nz, "instances": len(rs),
                   "vqns_rel_l2": float(np.mean([r["vqns_rel_l2"] for r in rs])),
                   "vqns_rel_l2_at_ddns": float(np.mean([r["vqns_rel_l2_at_ddns"]
                                                         for r in rs])),
                   "ddns_rel_l2_at_ddns": float(np.mean([r["ddns_rel_l2_at_ddns"]
                                                         for r in rs])),
                   "ftns_rel_l2": float(np.mean(ft)) if ft else None,
                   "coverage_2sd": float(np.mean([r["coverage_2sd"] for r in rs])),
                   "failed_restarts": float(np.mean([r["failed_restarts"] for r in rs])),
                   "runtime_s": float(np.mean([r["runtime_s"] for r in rs]))}
            agg["vqns_over_ddns"] = agg["vqns_rel_l2_at_ddns"] / agg["ddns_rel_l2_at_ddns"]
            summary.append(agg)
    print(f"{'family':16s} {'error':>5s} {'VQNS':>6s} {'@DDNS':>6s} {'DDNS':>6s} {'ratio':>6s} "
          f"{'FTNS':>6s} {'cover':>6s} {'failed':>6s} {'time':>6s}")
    for a in summary:
        ft = "   -  " if a["ftns_rel_l2"] is None else f"{a['ftns_rel_l2']:6.3f}"
        print(f"{a['family']:16s} {a['noise']:5.0%} {a['vqns_rel_l2']:6.3f} "
              f"{a['vqns_rel_l2_at_ddns']:6.3f} {a['ddns_rel_l2_at_ddns']:6.3f} "
              f"{a['vqns_over_ddns']:6.2f} {ft} {a['coverage_2sd']:6.2f} "
              f"{a['failed_restarts']:6.0f} {a['runtime_s']:5.1f}s", flush=True)
    return {"seed": seed, "instances": instances, "restarts": restarts, "rows": rows,
            "summary": summary}


# ------------------------------------------------------------------ speed

def literal_reference(ms, *, n_lorentzians, restarts, threshold, lr=0.05, max_iter=1000,
                      seed=0):
    """The seed's procedure literally: one restart at a time, torch.optim.Adam, autograd.

    Uses the same initialization (:class:`mracq.recon.vqns._Init`) and parameterization
    as the batched code, the closed form per sequence (one PointSet per sequence), and
    the same threshold and iteration cap; a failed restart is drawn again.
    """
    from mracq.recon.vqns.model import _Init, _Problem

    prob = _Problem(ms, True)
    init = _Init(prob, n_lorentzians, torch.Generator().manual_seed(seed))
    per_seq = [(PointSet(m.t, np.full(len(m), m.n)), torch.as_tensor(m.coherence))
               for m in ms]
    wts = [1.0 / len(m) for m in ms]
    ok, failed, iters = 0, 0, 0
    torch.set_num_threads(1)
    while ok < restarts:
        th = init.draw(1).clone().requires_grad_(True)
        opt = torch.optim.Adam([th], lr=lr, betas=(0.9, 0.99), eps=1e-12)
        for _ in range(max_iter):
            opt.zero_grad()
            amp, g, w0 = init.physical(th)
            loss = 0.0
            for (pts, y), wt in zip(per_seq, wts, strict=True):
                c = torch.exp(-chi_batch(amp, torch.complex(g, w0), pts))[0]
                loss = loss + wt * ((c - y[pts.order]) ** 2).sum()
            iters += 1
            if float(loss) < threshold:
                ok += 1
                break
            loss.backward()
            opt.step()
        else:
            failed += 1
    return {"successes": ok, "failures": failed, "iterations": iters}


def speed(quick, n_ref, n_points=61):
    """100 restarts on 7 x ``n_points`` points (1 % error) against the literal reference.

    The first call in a process loads the compiled numba kernels from the on-disk cache
    (or compiles them, once per machine); it is timed and reported apart.
    """
    ms = simulate_measurements(THREE, SEVEN, n_points=n_points, noise=0.01,
                               rng=np.random.default_rng(7))
    t0 = time.perf_counter()
    reconstruct(ms[:2], n_lorentzians=2, restarts=2, seed=0)  # JIT cache load / compile
    first_call = time.perf_counter() - t0
    l0 = load()
    c0 = time.process_time()
    res = reconstruct(ms, restarts=100, seed=0)
    cpu = time.process_time() - c0
    l1 = load()
    k = res.settings["n_lorentzians"]
    t0 = time.perf_counter()
    c0 = time.process_time()
    ref = literal_reference(ms, n_lorentzians=k, restarts=n_ref,
                            threshold=res.loss_threshold)
    t_ref = time.perf_counter() - t0
    cpu_ref = time.process_time() - c0
    per = t_ref / n_ref
    out = {"points": [len(m) for m in ms], "n_lorentzians": k,
           "first_call_s (numba cache load or compile)": first_call,
           "batched_100_restarts_s": res.runtime_s, "batched_steps": res.n_steps,
           "batched_failures": res.n_failed, "threshold": res.loss_threshold,
           "reference_restarts_measured": n_ref, "reference_time_s": t_ref,
           "reference_per_restart_s": per, "reference_100_extrapolated_s": 100 * per,
           "reference_failures": ref["failures"], "reference_iterations": ref["iterations"],
           "speedup": 100 * per / res.runtime_s, "load_1min": [l0, l1, load()],
           "batched_cpu_s": cpu, "reference_cpu_per_restart_s": cpu_ref / n_ref,
           "speedup_cpu": 100 * cpu_ref / n_ref / cpu,
           "cpu_count": os.cpu_count()}
    print(f"speed: 7 x {n_points} points, K = {k}: first call (kernel cache load) "
          f"{first_call:.1f} s; 100 restarts {res.runtime_s:.1f} s ({res.n_steps} batched "
          f"steps, {res.n_failed} failed restarts); literal reference {n_ref} restarts "
          f"{t_ref:.1f} s -> {100 * per:.0f} s per 100 -> speedup x{out['speedup']:.0f}; "
          f"CPU time {cpu:.1f} s vs {100 * cpu_ref / n_ref:.0f} s (x{out['speedup_cpu']:.0f}) "
          f"[load {l0:.1f}/{l1:.1f}/{load():.1f}]", flush=True)
    return out


# ------------------------------------------------------------------ closed loop

class ShotNoiseNV:
    """Coherence measurement with Poisson photon counts (physics.md section 2).

    Signal counts ~ Poisson(N (a1 + (a0 - a1) P0)) with ``P0 = (1 + C) / 2``; bright and
    dark references with N shots each; hardware time N (t + overhead) per point, with the
    overhead of the simulated sequencer (7.02 us of laser and pulses in the program plus
    two 4 us reference shots: ``program.duration + 2 * reference_duration``).
    """

    def __init__(self, spectrum, rng, a0=0.03, contrast=0.3, shots=2_000_000,
                 overhead=15e-6):
        self.spectrum, self.rng = spectrum, rng
        self.a0, self.a1 = a0, a0 * (1 - contrast)
        self.shots, self.overhead = shots, overhead
        self.time = 0.0

    def measure(self, sequence, t):
        t = np.asarray(t, float)
        c = coherence(self.spectrum, t, n=pulse_number(sequence))
        n = self.shots
        p0 = (1 + c) / 2
        s = self.rng.poisson(n * (self.a1 + (self.a0 - self.a1) * p0))
        b = self.rng.poisson(n * self.a0, t.shape)
        d = self.rng.poisson(n * self.a1, t.shape)
        pop = (s - d) / (b - d)
        ch = np.clip(2 * pop - 1, -0.05, 1.05)
        sig = 2 * np.sqrt(s + d * (1 - pop) ** 2 + b * pop**2) / (b - d)
        self.time += float(np.sum(n * (t + self.overhead)))
        return Measurement(sequence, t, ch, sig)


def loop(quick, restarts, n_adaptive=20, noise_seed=11, cost_aware=False,
         criterion="variance", family=None, max_measurements=None, misfit_prior=False,
         discrepancy=True, noise_stop=None, choose_k=True, warm_start=False,
         stop="budget", points=None):
    """Ladder (30 points per sequence, oracle time ranges) against the strategy.

    The strategy measures FID and SE like the ladder, then its own choices with
    ``n_adaptive`` points up to the decay its current estimate predicts (the window it
    chooses). Both see the same spectrum, the same shot noise per point and the same
    reconstruction settings; both are scored on the same grid (the ladder's noise-free
    sensitive band) and charged ``shots x (t + overhead)`` per point.

    ``family``: instead of the seed's three Lorentzians, an instance of that family
    (:func:`family_instance`, drawn from ``noise_seed + 7919``), a check on spectra the
    criterion was not developed on.

    ``stop="budget"`` (default; the line is about hardware time): the strategy is given 0.6
    of the ladder's hardware time as its ``hardware_budget`` (FID and SE included) and
    ``max_measurements`` (default 16) as a cap; it suggests nothing that would pass the
    budget and shrinks the last measurement to what is left. ``stop="count"``: the older
    protocol, ``max_measurements`` (default 7, the ladder's count) and no budget in the
    strategy; the loop measures on after reaching the target only while within 0.6 of the
    ladder's time. ``stop="count-budget"``: the count protocol, but the loop also stops
    before a measurement that would pass 0.6 of the ladder's time, reached or not (the
    earlier ``--loop-stop-at-budget``). ``points``: the strategy's ``n_points`` (default
    ``n_adaptive``; several values: the criterion chooses; the command line offers 10 and
    20, and the ensemble's gain per second, which saturates with the points of one window,
    takes 10 nearly always: more sequences, fewer points each).
    """
    if stop not in ("budget", "count", "count-budget"):
        raise ValueError(f"stop must be 'budget', 'count' or 'count-budget', got {stop!r}")
    if max_measurements is None:
        max_measurements = 16 if stop == "budget" else 7
    spec, note = THREE, "three Lorentzians"
    if family is not None:
        spec, _, note = family_instance(family, np.random.default_rng(noise_seed + 7919))
        print(f"  spectrum: {note}", flush=True)
    lo_hi = None
    kw = dict(restarts=restarts, choose_k=choose_k, noise_stop=noise_stop)
    ladder_seqs = ["fid", "se", "cpmg-2", "cpmg-4", "cpmg-8", "cpmg-16", "cpmg-32"]
    truth_t = {s: np.linspace(decay_time(spec, pulse_number(s)) / 30,
                              decay_time(spec, pulse_number(s)), 30) for s in ladder_seqs}
    # fixed ladder, oracle time ranges (favourable to the ladder)
    nv = ShotNoiseNV(spec, np.random.default_rng(noise_seed))
    ms = []
    lad = []
    for s in ladder_seqs:
        ms.append(nv.measure(s, truth_t[s]))
        if len(ms) >= 2:
            res = reconstruct(ms, seed=1, **kw)
            lo_hi = sensitive_band([simulate_measurements(spec, [x])[0]
                                    for x in ladder_seqs])
            w = np.geomspace(*lo_hi, 400)
            lad.append({"sequence": s, "hardware_time_s": nv.time,
                        "rel_l2": rel_err(res.spectrum(w), spec(w))})
            print(f"  ladder {s:8s} t_hw {nv.time:9.1f} s  err {lad[-1]['rel_l2']:.3f}",
                  flush=True)
    target = lad[-1]["rel_l2"]
    w = np.geomspace(*lo_hi, 400)
    # adaptive: FID and SE over the same times, then the strategy's choices
    nv = ShotNoiseNV(spec, np.random.default_rng(noise_seed))
    budget = 0.6 * lad[-1]["hardware_time_s"]
    strat = NextSequenceStrategy(initial=[("fid", truth_t["fid"]), ("se", truth_t["se"])],
                                 n_points=points or n_adaptive, target=0.0,
                                 hardware_budget=budget if stop == "budget" else None,
                                 shots=nv.shots,
                                 max_measurements=max_measurements,
                                 overhead=15e-6, cost_aware=cost_aware,
                                 criterion=criterion, reconstruct_kw=kw, seed=1,
                                 misfit_prior=misfit_prior, discrepancy=discrepancy,
                                 warm_start=warm_start)
    ada = []
    reached = None
    while True:
        sug = strat.suggest(1)
        if not sug:
            break
        cost = nv.shots * float(np.sum(sug[0]["t"] + nv.overhead))
        if (reached is not None or stop != "count") and nv.time + cost > budget:
            break  # measure on only while within 0.6 of the ladder's time
        strat.ingest(nv.measure(sug[0]["sequence"], sug[0]["t"]))
        if strat.result is None:
            continue
        err = rel_err(strat.result.spectrum(w), spec(w))
        t_end = float(np.max(sug[0]["t"]))
        ada.append({"sequence": sug[0]["sequence"], "hardware_time_s": nv.time,
                    "t_end_s": t_end, "points": len(sug[0]["t"]), "rel_l2": err,
                    "band_width": strat.history[-1]["band_width"]})
        print(f"  adaptive {sug[0]['sequence']:8s} {len(sug[0]['t']):2d} pts to "
              f"{t_end * 1e6:6.1f} us  t_hw "
              f"{nv.time:9.1f} s  err {err:.3f}", flush=True)
        if err <= target and reached is None:
            reached = nv.time
    out = {"noise_seed": noise_seed, "spectrum": note, "ladder": lad, "adaptive": ada,
           "target_rel_l2": target,
           "shots_per_point": nv.shots,
           "adaptive_points_per_sequence": list(points) if points else n_adaptive,
           "ladder_time_s": lad[-1]["hardware_time_s"], "adaptive_time_to_target_s": reached,
           "stop": stop, "max_measurements": max_measurements,
           "stopped": strat.should_stop()[1]}
    # stability: the largest factor by which a step raised the error over the best so far
    errs = [a["rel_l2"] for a in ada]
    out["max_rise"] = max([e / min(errs[:i]) for i, e in enumerate(errs) if i], default=1.0)
    within = [a["rel_l2"] for a in ada if a["hardware_time_s"] <= budget]
    # not selective: the error of the last step within 0.6 of the ladder's time
    out["rel_l2_at_0.6"] = within[-1] if within else None
    if reached is not None:
        out["time_ratio"] = reached / out["ladder_time_s"]
        print(f"loop: adaptive reached the ladder's error {target:.3f} in "
              f"{out['time_ratio']:.2f} of its hardware time", flush=True)
    else:
        print("loop: adaptive did not reach the ladder's error", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases and restarts")
    ap.add_argument("--parts", nargs="+", default=["accuracy", "speed", "loop"],
                    choices=["accuracy", "families", "speed", "loop"])
    ap.add_argument("--restarts", type=int, default=None)
    ap.add_argument("--cases", nargs="+", default=None,
                    help="accuracy: only the cases whose name contains one of these")
    ap.add_argument("--ref-restarts", type=int, default=None,
                    help="restarts the literal reference runs (extrapolated to 100)")
    ap.add_argument("--loop-seeds", type=int, nargs="+", default=[11, 12, 13],
                    help="noise seeds of the closed-loop comparison (one run each)")
    ap.add_argument("--cost-aware", action="store_true",
                    help="closed loop, --criterion eq7: rank by Eq. 7 score per second")
    ap.add_argument("--loop-family", default=None,
                    choices=[f for f in FAMILIES if f != "one_over_f"],
                    help="closed loop: one instance of this family per seed, not the "
                         "three Lorentzians")
    ap.add_argument("--loop-stop", default="budget",
                    choices=["budget", "count", "count-budget"],
                    help="closed loop: 'budget' (default): the strategy's hardware_budget is "
                         "0.6 of the ladder's time (it shrinks the last measurement to fit); "
                         "'count': stop on --loop-max-measurements (the older protocol); "
                         "'count-budget': the count, and the loop stops before a measurement "
                         "that would pass 0.6 of the ladder's time")
    ap.add_argument("--loop-max-measurements", type=int, default=None,
                    help="closed loop: measurements (FID and SE included) the adaptive may "
                         "take (default 16 with --loop-stop budget, else 7 = the ladder's)")
    ap.add_argument("--loop-points", type=int, nargs="+", default=[10, 20],
                    help="closed loop: points per adaptive measurement offered to the "
                         "criterion (default 10 and 20: it chooses per measurement; one "
                         "value: fixed, as the earlier protocol's 20)")
    ap.add_argument("--misfit-prior", action="store_true",
                    help="closed loop, --criterion variance: count the band's misfit term "
                         "as prior variance")
    ap.add_argument("--discrepancy", action=argparse.BooleanOptionalAction, default=True,
                    help="closed loop, --criterion variance: add a model-discrepancy field "
                         "conditioned on the data to the refits' prior (default; "
                         "--no-discrepancy: the refits' spread alone)")
    ap.add_argument("--noise-stop", type=float, default=None,
                    help="closed loop (ladder and adaptive alike): LM restarts stop at this "
                         "many times the loss the error bars explain (reconstruct's "
                         "noise_stop; default off: fit as far as LM goes)")
    ap.add_argument("--warm-start", action="store_true",
                    help="closed loop: every restart of a step starts from the previous "
                         "step's fits (K never falls); failed ones are redrawn at random")
    ap.add_argument("--choose-k", action=argparse.BooleanOptionalAction, default=True,
                    help="closed loop (ladder and adaptive alike): reconstruct's choose_k")
    ap.add_argument("--criterion", default="variance", choices=["variance", "eq7"],
                    help="closed loop: the strategy's choice of the next sequence")
    ap.add_argument("--family-instances", type=int, default=3,
                    help="families: random instances per family")
    ap.add_argument("--family-seed", type=int, default=19,
                    help="families: seed of the instances (check a fresh one too)")
    ap.add_argument("--families", nargs="+", default=None, choices=FAMILIES,
                    help="families: only these")
    ap.add_argument("--family-noise", type=float, nargs="+", default=[0.0, 0.01, 0.03],
                    help="families: error levels")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("vqns.json"))
    a = ap.parse_args()
    restarts = a.restarts or (30 if a.quick else 100)
    out = {"load_start": load(), "quick": a.quick}
    if "accuracy" in a.parts:
        out["accuracy"] = accuracy(a.quick, restarts, a.cases)
    if "families" in a.parts:
        out["families"] = families(a.family_instances, a.family_seed, restarts,
                                   a.family_noise, a.families)
    if "speed" in a.parts:
        out["speed"] = speed(a.quick, a.ref_restarts or (3 if a.quick else 5))
    if "loop" in a.parts:
        l0 = load()
        runs = [loop(a.quick, min(restarts, 40), noise_seed=s, cost_aware=a.cost_aware,
                     criterion=a.criterion, family=a.loop_family,
                     max_measurements=a.loop_max_measurements,
                     misfit_prior=a.misfit_prior, discrepancy=a.discrepancy,
                     noise_stop=a.noise_stop, warm_start=a.warm_start,
                     choose_k=a.choose_k, stop=a.loop_stop, points=a.loop_points)
                for s in a.loop_seeds]
        ratios = [r.get("time_ratio", float("inf")) for r in runs]
        fin = [x for x in ratios if np.isfinite(x)]
        out["loop"] = {"runs": runs, "seeds": a.loop_seeds, "time_ratios": ratios,
                       "family": a.loop_family, "max_measurements": a.loop_max_measurements,
                       "criterion": a.criterion, "cost_aware": a.cost_aware,
                       "misfit_prior": a.misfit_prior, "discrepancy": a.discrepancy,
                       "noise_stop": a.noise_stop, "warm_start": a.warm_start,
                       "choose_k": a.choose_k, "stop": a.loop_stop,
                       "points": a.loop_points,
                       "median_time_ratio": float(np.median(ratios)),
                       "mean_time_ratio": float(np.mean(ratios)),
                       "max_time_ratio": float(np.max(ratios)),
                       "n_not_reached": len(ratios) - len(fin), "load_1min": [l0, load()]}
        e6 = [np.nan if r["rel_l2_at_0.6"] is None else r["rel_l2_at_0.6"] for r in runs]
        tg = [r["target_rel_l2"] for r in runs]
        print(f"loop: ladder's final error {np.round(tg, 3).tolist()} (mean {np.mean(tg):.3f});"
              f" adaptive's at 0.6 of its time {np.round(e6, 3).tolist()} (mean "
              f"{np.nanmean(e6):.3f}), at or below the ladder's on "
              f"{int(np.sum(np.array(e6) <= np.array(tg)))} of {len(runs)}", flush=True)
        rise = [r["max_rise"] for r in runs]
        out["loop"]["max_rise"] = rise
        print(f"loop: largest rise of the adaptive's error over its best so far: median "
              f"{np.median(rise):.2f}, max {np.max(rise):.2f}", flush=True)
        print(f"loop ({a.criterion}): time ratios {[round(x, 2) for x in ratios]}; mean "
              f"{np.mean(ratios):.2f}, median {np.median(ratios):.2f}, max "
              f"{np.max(ratios):.2f}, not reached {len(ratios) - len(fin)} of {len(ratios)} "
              f"[load {l0:.1f}/{load():.1f}]", flush=True)
    out["load_end"] = load()
    a.out.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
