"""NV calibration plans: ODMR, Rabi, Ramsey, and the calibration a session measures with.

Each scan is one stored run whose ``primary`` events hold the scanned value (microwave
frequency, pulse duration or evolution time) beside the sequencer's normalized population
(``nv_value``, ``nv_error``) and raw counts; the plan fits the data with
:mod:`mracq.recon.calibration.fits` and returns the fit. :func:`calibrate` chains them
(coarse CW ODMR, fine CW ODMR with the 14N triplet, Rabi, Ramsey), stores the result as
its own run (``plan_name = "calibration"``) and returns a
:class:`~mracq.pulses.calibration.PulseCalibration`. :func:`install_calibration` makes it
the session's: the sequencer holds it (``nv.calibration``, from which
:func:`mracq.plans.coherence.coherence_scan` takes its pulse durations) and ``RE.md``
names it, so every later start document carries it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
from bluesky import plan_stubs as bps
from bluesky.utils import Msg

from mracq.devices.soft import SoftSignal
from mracq.plans._stored import StoredEvents, point_done
from mracq.pulses import fid, odmr_cw, rabi
from mracq.pulses.calibration import DEFAULT_MAX_AGE, PulseCalibration, calibration_warnings

__all__ = ["CALIBRATION_PLANS", "adaptive_odmr", "attach_calibration", "calibrate",
           "calibrated_program_kw", "install_calibration", "odmr_scan", "rabi_scan",
           "ramsey_detuning"]

log = logging.getLogger(__name__)

CALIBRATION_PLANS = ("odmr_scan", "adaptive_odmr", "rabi_scan", "ramsey_detuning", "calibration")
MD_KEY = "calibration"


# ----------------------------------------------------------------------------- helpers
def calibrated_program_kw(nv, program_kw: dict | None = None) -> dict:
    """``program_kw`` with pi and pi/2 durations from ``nv.calibration`` where not given."""
    kw = dict(program_kw or {})
    cal = getattr(nv, "calibration", None)
    if cal is not None:
        for k, v in cal.program_kw().items():
            kw.setdefault(k, v)
    return kw


def _scan_signal(name, units):
    sig = SoftSignal(name=name, value=0.0)
    sig.describe = lambda: {name: {"source": "mracq", "dtype": "number", "shape": [],
                                   "units": units}}
    return sig


def _check_common(nv, mw, shots, power_dbm, frequencies=()):
    nv.shots.check_value(shots)
    if power_dbm is not None:
        mw.power.check_value(power_dbm)
    for f in frequencies:
        mw.frequency.check_value(f)


def _point(nv, reads, sets, stored):
    """checkpoint; set (signal, value) pairs; trigger the sequencer; one event; checkpoint.

    Returns the data of the stored event (``{key: value}``; {} in a dry run), so that a
    plan returns what was stored even when a hard pause replayed the point
    (:mod:`mracq.plans._stored`).
    """
    yield Msg("checkpoint")
    for sig, value in sets:
        yield Msg("set", sig, value, group="mracq-cal-set")
    yield Msg("wait", None, group="mracq-cal-set")
    yield Msg("trigger", nv, group="mracq-cal-trigger")
    yield Msg("wait", None, group="mracq-cal-trigger")
    yield Msg("create", None, name="primary")
    out = {}
    for obj in (nv, *reads):
        reading = yield Msg("read", obj)
        out.update(reading or {})  # None under bluesky's simulators (dry run)
    yield Msg("save")
    yield from point_done()
    return stored.take(out) if out else {}


def _run(nv, mw, md, points, *, power_dbm, shots, axis):
    """Open a run, measure ``points`` = [(program, [(signal, value)...], x)], close it."""
    yield from bps.mv(nv.shots, shots)
    if power_dbm is not None:
        yield from bps.mv(mw.power, power_dbm)
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(md=md)
    yield from point_done()
    xs, ys, es, counts, hw = [], [], [], [], 0.0
    current = None
    for program, sets, x in points:
        sets = list(sets)
        if program is not current:
            sets.append((nv.program, program))
            current = program
        r = yield from _point(nv, [axis], sets, stored)
        xs.append(x)
        ys.append(r.get(nv.value.name, np.nan))
        es.append(r.get(nv.error.name, np.nan))
        counts.append(r.get(nv.counts.name, np.full(3, np.nan)))
        hw += nv.duration.get()
    yield from bps.close_run()
    yield from point_done()
    counts = np.array(counts, float).reshape(-1, 3)
    s, b = counts[:, 0], counts[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = (b - s) / b
        contrast_err = np.sqrt(s + (s / b) ** 2 * b) / b
    return {"uid": uid, "x": np.array(xs), "value": np.array(ys), "sigma": np.array(es),
            "contrast": contrast, "contrast_error": contrast_err, "hardware_time": hw}


def _md(name, args, nv, n, extra, md):
    return {"plan_name": name, "plan_args": args, "detectors": [nv.name], "num_points": n,
            **extra, **(md or {})}


def _try_fit(name, *args, **kw):
    from mracq.recon.calibration import fits  # scipy: imported when a plan fits

    fn = getattr(fits, name)
    try:
        return fn(*args, **kw)
    except (RuntimeError, ValueError) as exc:
        log.warning("%s failed: %s", name, exc)
        return None


# ----------------------------------------------------------------------------- ODMR
def odmr_scan(nv, mw, frequencies, *, mode: str = "cw", power_dbm: float | None = None,
              shots: int = 1_000_000, cw_duration: float = 10e-6,
              pi_duration: float | None = None, shape: str = "lorentzian",
              triplet: bool | None = None, md: dict | None = None):
    """ODMR: population (and photon contrast) against microwave frequency.

    Parameters
    ----------
    nv : mracq.devices.nv.PulseSequencer
    mw : mracq.devices.nv.MicrowaveSource
    frequencies : sequence of float
        Microwave frequencies, Hz (any order; measured as given).
    mode : {"cw", "pulsed"}
        CW: laser, microwave and counter on together for ``cw_duration`` (s) per shot.
        Pulsed: a pi pulse of ``pi_duration`` (default ``nv.calibration``'s) per shot;
        narrower lines at low power, no optical broadening.
    power_dbm : float, optional
        Microwave power, dBm (None: as set).
    shots : int
        Shots per point.
    shape : {"lorentzian", "gaussian"}
        Line shape of the fit.
    triplet : bool or None
        Fit the 14N triplet; None: whichever fits clearly better.
    md : dict, optional

    Returns
    -------
    dict
        ``uid``, ``frequency`` (Hz), ``value`` (population), ``sigma``, ``contrast``
        (``(bright - signal) / bright``) and ``contrast_error``, ``hardware_time`` (s) and
        ``fit`` (:class:`~mracq.recon.calibration.fits.Fit` or None).
    """
    freqs = np.asarray(frequencies, float)
    if freqs.ndim != 1 or freqs.size < 6 or not np.all(np.isfinite(freqs)):
        raise ValueError("frequencies must be a 1D array of >= 6 finite values (Hz)")
    if mode == "cw":
        program = odmr_cw(cw_duration)
    elif mode == "pulsed":
        if pi_duration is None:
            cal = getattr(nv, "calibration", None)
            if cal is None:
                raise ValueError("pulsed ODMR needs pi_duration (no calibration held)")
            pi_duration = cal.pi_duration
        program = rabi(pi_duration)
    else:
        raise ValueError(f"mode must be 'cw' or 'pulsed', got {mode!r}")
    program.validate(nv.timing_limits)
    _check_common(nv, mw, shots, power_dbm, freqs)
    args = {"frequencies": freqs.tolist(), "mode": mode, "power_dbm": power_dbm, "shots": shots,
            "cw_duration": cw_duration, "pi_duration": pi_duration}
    extra = {"hints": {"dimensions": [([mw.frequency.name], "primary")]},
             "hardware_time_estimate": nv.estimate_time([program], shots) * len(freqs),
             "program": program.to_dict()}
    res = yield from _run(nv, mw, _md("odmr_scan", args, nv, len(freqs), extra, md),
                          [(program, [(mw.frequency, f)], f) for f in freqs],
                          power_dbm=power_dbm, shots=shots, axis=mw.frequency)
    res["frequency"] = res.pop("x")
    res["fit"] = _try_fit("fit_odmr", res["frequency"], res["value"], res["sigma"], shape=shape,
                          triplet=triplet)
    return res


def adaptive_odmr(nv, mw, strategy, *, power_dbm: float | None = None, shots: int = 250_000,
                  cw_duration: float = 10e-6, md: dict | None = None):
    """CW ODMR at the frequencies an adaptive strategy asks for, until it is done.

    Parameters
    ----------
    strategy : mracq.recon.calibration.strategy.AdaptiveODMR
        ``suggest(1)`` -> ``[{"_id", "frequency"}]``, ``ingest([{"_id", "value",
        "sigma"}])``; the run ends when it suggests nothing.
    power_dbm, shots, cw_duration, md
        As for :func:`odmr_scan`.

    Returns
    -------
    dict
        ``uid``, ``frequency``, ``value``, ``sigma``, ``hardware_time`` and ``result``
        (the strategy's posterior summary).
    """
    program = odmr_cw(cw_duration).validate(nv.timing_limits)
    lo, hi = strategy.range
    _check_common(nv, mw, shots, power_dbm, (lo, hi))
    args = {"power_dbm": power_dbm, "shots": shots, "cw_duration": cw_duration,
            "frequency_range": [lo, hi], "target": strategy.target}
    yield from bps.mv(nv.shots, shots, nv.program, program)
    if power_dbm is not None:
        yield from bps.mv(mw.power, power_dbm)
    stored = StoredEvents()
    yield from stored.subscribe()
    uid = stored.run_uid = yield from bps.open_run(md=_md("adaptive_odmr", args, nv, None,
                                                          {"program": program.to_dict()}, md))
    yield from point_done()
    out = {"frequency": [], "value": [], "sigma": []}
    hw = 0.0
    while True:
        nxt = strategy.suggest(1)
        if not nxt:
            break
        f = float(nxt[0]["frequency"])
        r = yield from _point(nv, [mw.frequency], [(mw.frequency, f)], stored)
        y = r.get(nv.value.name, np.nan)
        s = r.get(nv.error.name, np.nan)
        if not r:  # a dry run: no data to choose the next frequency from
            log.warning("adaptive_odmr: no readings (dry run); stopping after one point")
            break
        hw += nv.duration.get()
        for k, v in zip(("frequency", "value", "sigma"), (f, y, s), strict=True):
            out[k].append(v)
        if np.isfinite(y) and np.isfinite(s) and s > 0:
            strategy.ingest([{**nxt[0], "value": y, "sigma": s}])
    yield from bps.close_run()
    return {"uid": uid, **{k: np.array(v) for k, v in out.items()}, "hardware_time": hw,
            "result": strategy.result()}


# ----------------------------------------------------------------------------- Rabi
def rabi_scan(nv, mw, durations, *, frequency: float | None = None,
              power_dbm: float | None = None, shots: int = 1_000_000, detunings=(0.0,),
              md: dict | None = None):
    """Rabi oscillation: population against microwave pulse length.

    Parameters
    ----------
    durations : sequence of float
        Pulse lengths, s (0: no pulse; else at least the sequencer's shortest pulse).
    frequency : float, optional
        Microwave frequency, Hz (None: as set).
    detunings : sequence of float
        Lines driven, Hz, for the fit (``(-A, 0, A)`` for the 14N triplet driven at its
        centre).
    power_dbm, shots, md
        As for :func:`odmr_scan`.

    Returns
    -------
    dict
        ``uid``, ``duration`` (s), ``value``, ``sigma``, ``hardware_time`` and ``fit``
        (``rabi_frequency``, ``pi_duration``, ``pi2_duration`` ... with errors, or None).
    """
    durs = np.asarray(durations, float)
    if durs.ndim != 1 or durs.size < 6 or not np.all(np.isfinite(durs)) or np.any(durs < 0):
        raise ValueError("durations must be a 1D array of >= 6 finite values >= 0 (s)")
    programs = [rabi(d).validate(nv.timing_limits) for d in durs]
    _check_common(nv, mw, shots, power_dbm, () if frequency is None else (frequency,))
    axis = _scan_signal("mw_duration", "s")
    args = {"durations": durs.tolist(), "frequency": frequency, "power_dbm": power_dbm,
            "shots": shots, "detunings": [float(d) for d in detunings]}
    extra = {"hints": {"dimensions": [(["mw_duration"], "primary")]},
             "hardware_time_estimate": nv.estimate_time(programs, shots)}
    if frequency is not None:
        yield from bps.mv(mw.frequency, frequency)
    res = yield from _run(nv, mw, _md("rabi_scan", args, nv, len(durs), extra, md),
                          [(p, [(axis, d)], d) for p, d in zip(programs, durs, strict=True)],
                          power_dbm=power_dbm, shots=shots, axis=axis)
    res["duration"] = res.pop("x")
    res["fit"] = _try_fit("fit_rabi", res["duration"], res["value"], res["sigma"],
                          detunings=detunings)
    return res


# ----------------------------------------------------------------------------- Ramsey
def ramsey_detuning(nv, mw, times, *, resonance: float, detuning: float = 2e6,
                    power_dbm: float | None = None, pi2_duration: float | None = None,
                    splitting: float = 0.0, shots: int = 1_000_000, md: dict | None = None):
    """Ramsey fringes with the microwave detuned on purpose: the resonance to kHz.

    The microwave is set to ``resonance + detuning``; the fringes oscillate at the actual
    detuning ``d`` (and ``d +- A`` for a 14N triplet), so the resonance is
    ``resonance + detuning - d``.

    Parameters
    ----------
    times : sequence of float
        Free evolution times between the pi/2 centres, s.
    resonance : float
        Current estimate of the resonance (ODMR), Hz.
    detuning : float
        Deliberate detuning, Hz (> 0 and several times the uncertainty of ``resonance``).
    pi2_duration : float, optional
        pi/2 pulse, s (default ``nv.calibration``'s; else 20 ns).
    splitting : float
        14N splitting to fit (Hz), 0 for a single line.
    power_dbm, shots, md
        As for :func:`odmr_scan`.

    Returns
    -------
    dict
        ``uid``, ``t``, ``value``, ``sigma``, ``hardware_time``, ``fit`` and
        ``resonance``, ``resonance_error`` (Hz; NaN if the fit failed).
    """
    ts = np.asarray(times, float)
    if ts.ndim != 1 or ts.size < 10 or not np.all(np.isfinite(ts)):
        raise ValueError("times must be a 1D array of >= 10 finite values (s)")
    if not detuning > 0:
        raise ValueError(f"detuning must be > 0 Hz, got {detuning!r}")
    if pi2_duration is None:
        pi2_duration = calibrated_program_kw(nv).get("pi2_duration", 20e-9)
    programs = [fid(t, pi2_duration=pi2_duration).validate(nv.timing_limits) for t in ts]
    f_mw = float(resonance) + float(detuning)
    _check_common(nv, mw, shots, power_dbm, (f_mw,))
    axis = _scan_signal("t", "s")
    args = {"times": ts.tolist(), "resonance": float(resonance), "detuning": float(detuning),
            "power_dbm": power_dbm, "pi2_duration": pi2_duration, "splitting": splitting,
            "shots": shots}
    extra = {"hints": {"dimensions": [(["t"], "primary")]}, "mw_frequency": f_mw,
             "hardware_time_estimate": nv.estimate_time(programs, shots)}
    yield from bps.mv(mw.frequency, f_mw)
    res = yield from _run(nv, mw, _md("ramsey_detuning", args, nv, len(ts), extra, md),
                          [(p, [(axis, t)], t) for p, t in zip(programs, ts, strict=True)],
                          power_dbm=power_dbm, shots=shots, axis=axis)
    res["t"] = res.pop("x")
    fit = _try_fit("fit_ramsey", res["t"], res["value"], res["sigma"], detuning_guess=detuning,
                   splitting=splitting)
    res["fit"] = fit
    res["resonance"] = f_mw - fit["detuning"] if fit else float("nan")
    res["resonance_error"] = fit.errors["detuning"] if fit else float("nan")
    return res


def _rabi_from_cw_width(width: float) -> float:
    """Rabi frequency (Hz) from a power-broadened CW ODMR half width (Hz).

    CW half width ~ 1.08 f_R when power broadened (Gamma_2 / Gamma_1 ~ 1.2); never below
    0.2 MHz (a narrow line says only that the power was low).
    """
    return max(float(width) / 1.08, 0.2e6)


def _fine_power(mw, p_coarse: float, f_r_coarse: float) -> float:
    """Power (dBm) for a ~0.3 MHz Rabi frequency, given f_R (Hz) at ``p_coarse`` (dBm)."""
    return float(np.clip(p_coarse + 20 * math.log10(0.3e6 / f_r_coarse),
                         mw.power.limits[0], mw.power.limits[1]))


def _dip_significant(fit, n_sigma: float = 5.0) -> bool:
    """An ODMR fit whose dip is at least ``n_sigma`` standard errors deep and whose centre is
    known to better than its half width (else the centre may be noise, or the wrong line)."""
    d, de = fit["depth"], fit.errors["depth"]
    return bool(d > n_sigma * de and fit.errors["centre"] < fit["width"])


# ----------------------------------------------------------------------------- calibrate
def calibrate(nv, mw, laser, *, frequency_range, power_dbm: float = 0.0,
              shots: int = 1_000_000, coarse_points: int = 121, fine_points: int = 61,
              rabi_points: int = 81, ramsey_times=None, ramsey_detuning_hz: float = 2e6,
              coarse_power_dbm: float | None = None, md: dict | None = None,
              progress=None, above_crossing: bool = False):
    """Calibrate an NV: resonance (ODMR, Ramsey), pi and pi/2 durations (Rabi).

    Steps, each a stored run: (1) coarse CW ODMR over ``frequency_range`` at
    ``coarse_power_dbm`` (default ``power_dbm - 10``), power broadened so that a coarse
    grid finds the line and its width gives the Rabi frequency; (2) fine CW ODMR +-6 MHz
    at a power for ~0.3 MHz Rabi frequency, resolving the 14N triplet if there is one
    (repeated at the corrected power when the coarse line turns out to have been the blended
    triplet, or 6 dB higher when the dip is not significant);
    (3) Rabi at ``power_dbm`` on the fine centre, four periods; (4) Ramsey detuned by
    ``ramsey_detuning_hz``: the resonance to kHz. Then (5) a ``calibration`` run holding
    the result and the uids of (1)-(4). The microwave is left at the resonance and
    ``power_dbm``.

    Parameters
    ----------
    nv, mw, laser : devices
    frequency_range : (float, float)
        Where to look for the ms = 0 <-> -1 line, Hz.
    power_dbm : float
        Power of the measurements to come, dBm (pi and pi/2 hold there).
    shots : int
        Shots per point.
    ramsey_times : sequence of float, optional
        Evolution times, s (default 100 from just above the pi/2 pulse to 4 us).
    progress : callable, optional
        ``progress(step_name, result_dict)`` after each step (CLI output).
    above_crossing : bool
        The field is above the level crossing (~102.4 mT), so the line sits at
        ``gamma_e B - D``: the calibration's field is then ``(D + f) / gamma_e``
        (:class:`~mracq.pulses.calibration.PulseCalibration`).

    Returns
    -------
    PulseCalibration
        With ``uid`` of the calibration run; not yet installed (see
        :func:`install_calibration`).

    Raises
    ------
    RuntimeError
        A step found nothing to fit (no line in the range, no oscillation).
    """
    lo, hi = (float(x) for x in frequency_range)
    if not hi > lo:
        raise ValueError(f"frequency_range must increase, got {frequency_range!r}")
    if not isinstance(above_crossing, bool):
        raise ValueError(f"above_crossing must be True or False, got {above_crossing!r}")
    p_coarse = power_dbm - 10 if coarse_power_dbm is None else float(coarse_power_dbm)
    for p in (power_dbm, p_coarse):
        mw.power.check_value(p)
    for f in (lo, hi):
        mw.frequency.check_value(f)
    nv.shots.check_value(shots)
    note = progress or (lambda step, res: None)
    from mracq.plans.coherence import prepare_nv

    yield from prepare_nv(mw, laser, frequency=lo, power_dbm=p_coarse)
    # (1) coarse CW ODMR
    coarse = yield from odmr_scan(nv, mw, np.linspace(lo, hi, int(coarse_points)),
                                  power_dbm=p_coarse, shots=shots, triplet=False,
                                  md={"calibration_step": "coarse_odmr", **(md or {})})
    note("coarse_odmr", coarse)
    if coarse["fit"] is None or not lo <= coarse["fit"]["centre"] <= hi:
        raise RuntimeError(f"no ODMR line found between {lo / 1e9:.6f} and {hi / 1e9:.6f} GHz")
    fc = coarse["fit"]["centre"]
    f_r_coarse = _rabi_from_cw_width(coarse["fit"]["width"])
    # (2) fine CW ODMR at ~0.3 MHz Rabi frequency; again (at most twice) at +6 dB if the
    # dip is not significant, or at the power the triplet refit of the coarse data gives
    p_fine, refit = _fine_power(mw, p_coarse, f_r_coarse), False
    fines = []
    for _attempt in range(3):
        fine = yield from odmr_scan(nv, mw, fc + np.linspace(-6e6, 6e6, int(fine_points)),
                                    power_dbm=p_fine, shots=shots, triplet=None,
                                    md={"calibration_step": "fine_odmr", **(md or {})})
        note("fine_odmr", fine)
        fines.append(fine)
        fit = fine["fit"]
        if fit is None or not _dip_significant(fit):
            if p_fine >= mw.power.limits[1]:
                break
            log.info("fine ODMR at %.1f dBm: no significant dip; again at +6 dB", p_fine)
            p_fine = min(p_fine + 6.0, mw.power.limits[1])
            continue
        split = fit.extra.get("splitting", 0.0)
        if split and not refit and coarse["fit"].extra.get("splitting", 0.0) == 0.0:
            # the coarse width held the unresolved triplet: refit it with the triplet found
            # here, for the Rabi frequency of one line (the fine power was too low)
            refit = True
            three = _try_fit("fit_odmr", coarse["frequency"], coarse["value"], coarse["sigma"],
                             triplet=True, splitting=split, centre_guess=fit["centre"])
            if three is not None and _dip_significant(three):
                f_r_coarse = _rabi_from_cw_width(three["width"])
                p_new = _fine_power(mw, p_coarse, f_r_coarse)
                if abs(p_new - p_fine) > 3.0:
                    log.info("fine ODMR: the coarse line was the 14N triplet; again at "
                             "%.1f dBm", p_new)
                    p_fine = p_new
                    continue
        break
    if fine["fit"] is None or not _dip_significant(fine["fit"]):
        raise RuntimeError("fine ODMR: no significant line found around "
                           f"{fc / 1e9:.6f} GHz (coarse fit), up to {p_fine:.1f} dBm")
    f_fine = fine["fit"]["centre"]
    split = fine["fit"].extra.get("splitting", 0.0)
    # (3) Rabi at the measurement power
    f_r = f_r_coarse * 10 ** ((power_dbm - p_coarse) / 20)
    t_max = max(4.0 / f_r, (rabi_points - 1) * 2 * nv.timing_limits.min_pulse)
    durs = np.linspace(0.0, t_max, int(rabi_points))
    durs = durs[(durs == 0) | (durs >= nv.timing_limits.min_pulse)]
    rab = yield from rabi_scan(nv, mw, durs, frequency=f_fine, power_dbm=power_dbm,
                               shots=shots, detunings=(-split, 0.0, split) if split else (0.0,),
                               md={"calibration_step": "rabi", **(md or {})})
    note("rabi", rab)
    if rab["fit"] is None:
        raise RuntimeError("Rabi: no oscillation found")
    rf = rab["fit"]
    # (4) Ramsey, detuned on purpose
    pi2 = rf["pi2_duration"]
    if ramsey_times is None:
        t0 = pi2 + max(10e-9, nv.timing_limits.min_delay)
        ramsey_times = np.linspace(t0, 4e-6, 100)
    ram = yield from ramsey_detuning(nv, mw, ramsey_times, resonance=f_fine,
                                     detuning=ramsey_detuning_hz, power_dbm=power_dbm,
                                     pi2_duration=pi2, splitting=split, shots=shots,
                                     md={"calibration_step": "ramsey", **(md or {})})
    note("ramsey", ram)
    if ram["fit"] is not None and np.isfinite(ram["resonance_error"]):
        f_res, f_err = ram["resonance"], ram["resonance_error"]
        gap = abs(f_res - f_fine) / math.hypot(f_err, fine["fit"].errors["centre"])
        if gap > 5:
            log.warning("Ramsey resonance %.6f GHz is %.1f sigma from the ODMR centre %.6f GHz",
                        f_res / 1e9, gap, f_fine / 1e9)
        dof = max(len(ram["t"]) - len(ram["fit"].values), 1)
        if ram["fit"].chi2_red > 1 + 5 * math.sqrt(2 / dof):
            log.warning("Ramsey fringes do not fit the model (chi^2 per point %.1f): the "
                        "resonance %.6f GHz +- %.1f kHz is not to be trusted; recalibrate",
                        ram["fit"].chi2_red, f_res / 1e9, f_err / 1e3)
    else:
        f_res, f_err = f_fine, fine["fit"].errors["centre"]
    extra = {"t2_star": ram["fit"]["t2_star"] if ram["fit"] else float("nan"),
             "odmr_centre": f_fine, "odmr_centre_error": fine["fit"].errors["centre"],
             "fits": {"coarse_odmr": coarse["fit"].as_dict(), "fine_odmr": fine["fit"].as_dict(),
                      "rabi": rf.as_dict(),
                      "ramsey": ram["fit"].as_dict() if ram["fit"] else None},
             "runs": {"coarse_odmr": coarse["uid"], "fine_odmr": fine["uid"],
                      "rabi": rab["uid"], "ramsey": ram["uid"]},
             "fine_odmr_power_dbm": p_fine,
             "hardware_time": sum(r["hardware_time"] for r in (coarse, *fines, rab, ram))}
    if len(fines) > 1:
        extra["runs"]["fine_odmr_earlier"] = [r["uid"] for r in fines[:-1]]
    cal = PulseCalibration(
        resonance_frequency=f_res, resonance_frequency_error=f_err,
        pi_duration=rf["pi_duration"], pi_duration_error=rf.errors["pi_duration"],
        pi2_duration=pi2, pi2_duration_error=rf.errors["pi2_duration"], power_dbm=power_dbm,
        rabi_frequency=rf["rabi_frequency"], hyperfine_splitting=split,
        above_crossing=above_crossing, time=time.time(),
        extra=extra)
    uid = yield from store_calibration(cal, md=md)
    yield from bps.mv(mw.frequency, f_res, mw.power, power_dbm)
    return replace(cal, uid=uid)


def store_calibration(cal: PulseCalibration, *, md: dict | None = None):
    """A run holding the calibration: start document ``calibration_result`` and one event."""
    values = {"resonance_frequency": ("Hz", cal.resonance_frequency),
              "resonance_frequency_error": ("Hz", cal.resonance_frequency_error),
              "pi_duration": ("s", cal.pi_duration), "pi2_duration": ("s", cal.pi2_duration),
              "power_dbm": ("dBm", cal.power_dbm), "field": ("T", cal.field)}
    signals = []
    for name, (units, v) in values.items():
        sig = _scan_signal(name, units)
        sig.put(float(v))
        signals.append(sig)
    uid = yield from bps.open_run(md={"plan_name": "calibration",
                                      "calibration_result": cal.as_dict(), **(md or {})})
    yield from point_done()
    yield Msg("create", None, name="primary")
    for sig in signals:
        yield Msg("read", sig)
    yield Msg("save")
    yield from bps.close_run()
    yield from point_done()
    return uid


# ----------------------------------------------------------------------------- session
def install_calibration(RE, devices: dict, cal: PulseCalibration | None) -> None:
    """Make ``cal`` the session's: the sequencer holds it, ``RE.md`` names it (None: drop)."""
    nv = devices.get("nv")
    if nv is not None:
        nv.calibration = cal
    if cal is None:
        RE.md.pop(MD_KEY, None)
    else:
        RE.md[MD_KEY] = cal.as_dict()


def attach_calibration(RE, devices: dict, *, max_age: float = DEFAULT_MAX_AGE) -> list[int]:
    """Restore the calibration named in ``RE.md`` and warn at each NV run it does not fit.

    Returns the subscription tokens. The warning (logged) names the power or the age: a
    run of ``nv`` measured at another microwave power than the calibration's, or later
    than ``max_age`` s after it.
    """
    nv, mw = devices.get("nv"), devices.get("mw")
    if nv is None:
        return []
    raw = RE.md.get(MD_KEY)
    try:
        nv.calibration = PulseCalibration.from_dict(raw) if raw else None
    except (TypeError, ValueError) as exc:
        log.warning("ignoring the stored calibration: %s", exc)
        nv.calibration = None

    def check(name, doc):
        if name != "start" or doc.get("plan_name") in CALIBRATION_PLANS:
            return
        if nv.name not in doc.get("detectors", ()):
            return
        cal = getattr(nv, "calibration", None)
        try:
            power = mw.power.get() if mw is not None else None
            freq = mw.frequency.get() if mw is not None else None
        except Exception:  # a real source that does not answer: warn about age only
            power = freq = None
        for msg in calibration_warnings(cal, power_dbm=power, frequency=freq, max_age=max_age):
            log.warning("%s: %s", doc.get("plan_name", "run"), msg)

    return [RE.subscribe(check, "start")]
