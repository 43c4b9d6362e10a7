"""Simulated NV centre: reacts to the pulse program it is given.

A physics model answers ``model.population(program)``, the probability of ms = 0 at
readout after one shot. :class:`DephasingModel` covers every program whose microwave
pulses are a pi/2 ... pi/2 frame with pi pulses between (FID, Hahn, CPMG, XY8, UDD, any
timing) and Rabi programs. :class:`SimulatedNV` runs a program for N shots, with reference
shots in ms = 0 (bright) and ms = -1 (dark), Poisson photon counts (physics.md section 2)
and a :class:`~mracq.sim.clock.VirtualClock` advanced by what the shots take.

Spin dynamics: the Bloch vector (ms = 0 is +z) is rotated by each microwave pulse
(rotation axis in the xy plane at the pulse phase, tilted by the detuning) and precesses
at the detuning between pulses; Gaussian pure dephasing multiplies the transverse part by
``C = exp(-chi)`` before the final pi/2 pulse, with chi from the switching function of the
pi-pulse times (:mod:`mracq.sim.filter_function`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

# GAMMA_E and ZERO_FIELD_SPLITTING (Hz/T, Hz) live in pulses (below sim); imported here too
from mracq.pulses.calibration import (
    GAMMA_E,  # noqa: F401
    ZERO_FIELD_SPLITTING,  # noqa: F401
    line_frequency,
)
from mracq.sim.clock import VirtualClock
from mracq.sim.filter_function import chi as chi_of
from mracq.sim.spectra import Spectrum, default_nv_spectrum

log = logging.getLogger(__name__)

HYPERFINE_14N = -2.16e6  # Hz, A_parallel of the 14N nuclear spin (I = 1)
COHERENCE_SEQUENCES = ("fid", "hahn", "cpmg", "xy8", "udd", "custom")


@dataclass(frozen=True)
class Drive:
    """Microwave drive seen by the NV.

    Parameters
    ----------
    on : bool
        Microwave output enabled.
    detuning : float
        Microwave frequency minus the NV transition frequency, Hz.
    rabi_scale : float
        Actual over nominal Rabi frequency (1 at the calibrated power; amplitude, so
        ``10 ** ((P - P_cal) / 20)`` for powers in dBm).
    rabi_frequency : float
        Rabi frequency at the calibrated power, Hz; sets the rotation of pulses that carry
        no nominal ``rotation`` (Rabi programs), and of every pulse when ``nominal`` is
        false. 12.5 MHz: a 40 ns pi pulse.
    nominal : bool
        True: a pulse with a nominal ``rotation`` rotates by ``rabi_scale * rotation``
        whatever its duration (a rig whose pulses are calibrated at the reference power).
        False: every pulse rotates by ``2 pi rabi_scale rabi_frequency duration``, as on a
        real rig, so wrong pulse durations give wrong rotations.
    """

    on: bool = True
    detuning: float = 0.0
    rabi_scale: float = 1.0
    rabi_frequency: float = 12.5e6
    nominal: bool = True


def _rotate(v, ax: float, ay: float, az: float, angle: float):
    """Rotate the 3-vector ``v`` by ``angle`` (rad) about the unit axis (ax, ay, az)."""
    c, s = math.cos(angle), math.sin(angle)
    vx, vy, vz = v
    dot = ax * vx + ay * vy + az * vz
    cx, cy, cz = ay * vz - az * vy, az * vx - ax * vz, ax * vy - ay * vx
    return (vx * c + cx * s + ax * dot * (1 - c), vy * c + cy * s + ay * dot * (1 - c),
            vz * c + cz * s + az * dot * (1 - c))


def bloch_population(mw_pulses, drive: Drive, coherence: float = 1.0) -> float:
    """P(ms = 0) after a train of microwave pulses.

    Parameters
    ----------
    mw_pulses : sequence of TimedPulse
        Microwave pulses (start, duration in s; phase, rotation in rad), in time order.
        ``rotation`` is the nominal angle at ``rabi_scale = 1``.
    drive : Drive
        Detuning and power of the microwave.
    coherence : float
        Dephasing factor applied to the transverse Bloch components before the last pulse.
    """
    if not drive.on or not mw_pulses:
        return 1.0
    return _bloch(tuple((p.start, p.duration, p.phase, p.rotation) for p in mw_pulses),
                  drive, float(coherence))


@functools.lru_cache(maxsize=8192)
def _bloch(pulses, drive, coherence) -> float:
    v = (0.0, 0.0, 1.0)
    d_omega = 2 * math.pi * drive.detuning
    t_prev = None
    last = len(pulses) - 1
    for i, (start, duration, phase, rotation) in enumerate(pulses):
        if t_prev is not None and d_omega != 0.0:
            v = _rotate(v, 0.0, 0.0, 1.0, d_omega * (start - t_prev))
        if i == last and last > 0:
            v = (v[0] * coherence, v[1] * coherence, v[2])
        if rotation is not None and drive.nominal:
            omega_r = drive.rabi_scale * rotation / duration
        else:
            omega_r = drive.rabi_scale * 2 * math.pi * drive.rabi_frequency
        ax, ay, az = omega_r * math.cos(phase), omega_r * math.sin(phase), d_omega
        norm = math.sqrt(ax * ax + ay * ay + az * az)
        if norm > 0:
            v = _rotate(v, ax / norm, ay / norm, az / norm, norm * duration)
        t_prev = start + duration
    return min(max(0.5 * (1 + v[2]), 0.0), 1.0)


@functools.lru_cache(maxsize=4096)
def ideal_population(program) -> float:
    """P(ms = 0) of ``program`` on resonance without dephasing (C = 1).

    The coherence of a measured population ``p`` is ``(2 p - 1) / (2 p_ideal - 1)``.
    """
    return bloch_population(program.pulses_on("mw"), Drive(), 1.0)


@dataclass
class DephasingModel:
    """NV under Gaussian pure dephasing with noise spectrum ``spectrum``.

    Parameters
    ----------
    spectrum : Spectrum
        Two-sided noise spectrum S(omega) in rad^2/s (omega in rad/s).
    rabi_decay : float
        1/e decay time of Rabi oscillations in s.
    pumping_rate : float
        Optical pumping rate into ms = 0 under the CW ODMR laser, 1/s.
    cw_dephasing_time : float
        Inhomogeneous dephasing time T2* that sets the low-power CW ODMR linewidth, s.
    """

    spectrum: Spectrum = field(default_factory=default_nv_spectrum)
    rabi_decay: float = 2e-6
    pumping_rate: float = 1e6
    cw_dephasing_time: float = 1.5e-6
    uses_drive = True

    def handles(self, program) -> bool:
        seq = program.metadata.get("sequence")
        return seq in ("rabi", "odmr_cw") or seq in COHERENCE_SEQUENCES

    def cw_population(self, drive: Drive) -> float:
        """Steady-state P(ms = 0) under CW laser and microwave (Bloch equations).

        Relaxation towards ms = 0 at ``pumping_rate`` (Gamma_1), transverse decay at
        ``Gamma_2 = Gamma_1 / 2 + 1 / cw_dephasing_time``: ``P(ms=-1) = (1/2) W /
        (Delta^2 + Gamma_2^2 + W)`` with ``W = Omega^2 Gamma_2 / Gamma_1`` (rad/s): a
        Lorentzian dip of half width ``sqrt(Gamma_2^2 + W)``, power broadened.
        """
        if not drive.on:
            return 1.0
        g1 = self.pumping_rate
        g2 = 0.5 * g1 + 1.0 / self.cw_dephasing_time
        omega = 2 * math.pi * drive.rabi_scale * drive.rabi_frequency
        w = omega**2 * g2 / g1
        delta = 2 * math.pi * drive.detuning
        return 1.0 - 0.5 * w / (delta**2 + g2**2 + w)

    def coherence(self, program) -> float:
        """C = exp(-chi) for the program's pi-pulse timing (dimensionless)."""
        cache = self.__dict__.setdefault("_coherence_cache", {})
        if program not in cache:
            from mracq.pulses import evolution_timing

            t, centres = evolution_timing(program)
            if len(cache) > 4096:
                cache.clear()
            cache[program] = float(np.exp(-chi_of(self.spectrum, np.array([t]),
                                                   np.asarray(centres))[0]))
        return cache[program]

    def population(self, program, drive: Drive | None = None) -> float:
        drive = drive or Drive()
        seq = program.metadata.get("sequence")
        if seq == "odmr_cw":
            return self.cw_population(drive)
        mw = program.pulses_on("mw")
        if seq == "rabi":
            dur = sum(q.duration for q in mw)
            decay = math.exp(-dur / self.rabi_decay)
            if len(mw) == 1 and drive.on:
                # one pulse from ms = 0: only the oscillating part decays (towards the
                # time average 1 - A/2, A = Omega^2 / Omega'^2); 1 far off resonance
                omega = 2 * math.pi * drive.rabi_scale * drive.rabi_frequency
                if mw[0].rotation is not None and drive.nominal:
                    omega = drive.rabi_scale * mw[0].rotation / mw[0].duration
                delta = 2 * math.pi * drive.detuning
                gen2 = omega**2 + delta**2
                a = omega**2 / gen2 if gen2 > 0 else 0.0
                return float(1 - a / 2 + a / 2 * math.cos(math.sqrt(gen2) * dur) * decay)
            p = bloch_population(mw, drive)
            return float(0.5 + (p - 0.5) * decay)
        return bloch_population(mw, drive, self.coherence(program))


@dataclass(frozen=True)
class Readout:
    """Photon detection per shot (physics.md section 2).

    Parameters
    ----------
    bright_rate : float
        Mean detected photons per shot in ms = 0.
    contrast : float
        Fractional brightness drop in ms = -1 (0.3: 30% darker).
    reference_duration : float
        Duration of one reference shot (init + readout), s.
    """

    bright_rate: float = 0.03
    contrast: float = 0.3
    reference_duration: float = 4e-6

    def __post_init__(self):
        if not (0 < self.bright_rate < 10):
            raise ValueError(f"bright_rate must be in (0, 10) photons/shot, got {self.bright_rate}")
        if not (0 < self.contrast < 1):
            raise ValueError(f"contrast must be in (0, 1), got {self.contrast}")


@dataclass(frozen=True)
class Counts:
    """Photon counts of one point: signal and the bright/dark references."""

    signal: int
    bright: int
    dark: int
    shots: int
    population: float  # the true P(ms = 0), for tests and dry-run diagnostics
    duration: float  # s of hardware time


def normalize(signal, bright, dark):
    """Normalized P(ms = 0) = (S - D) / (B - D) and its standard error.

    Poisson errors propagated: ``var = [S + v^2 B + (1 - v)^2 D] / (B - D)^2``.
    """
    s, b, d = (np.asarray(x, float) for x in (signal, bright, dark))
    span = b - d
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (s - d) / span
        err = np.sqrt(s + v**2 * b + (1 - v) ** 2 * d) / np.abs(span)
    return v, err


class SimulatedNV:
    """A single NV centre with readout, driven by pulse programs.

    Parameters
    ----------
    models : list
        Physics models; the first whose ``handles(program)`` is true answers.
    readout : Readout
    clock : VirtualClock
        Advanced by ``shots * (program.duration + 2 * readout.reference_duration)``.
    rng : numpy.random.Generator
    field : float
        Static field along the NV axis, T (sets the ms = 0 <-> -1 transition,
        ``|D - gamma_e B|``: above the level crossing at ``D / gamma_e`` ~ 102.4 mT the
        ms = -1 level lies below ms = 0).
    calibrated_power_dbm : float
        Microwave power at which the Rabi frequency is ``rabi_frequency``, dBm.
    rabi_frequency : float, optional
        Rabi frequency at ``calibrated_power_dbm``, Hz. None (default): pulses rotate by
        their nominal angle (scaled by the power), the rig is calibrated by construction;
        a value: pulses rotate by ``2 pi f_Rabi duration`` (:class:`Drive`), so programs
        need calibrated pulse durations.
    hyperfine : float
        14N hyperfine splitting A_parallel, Hz (0: none; ``HYPERFINE_14N``: -2.16 MHz).
        The transition splits into three lines at ``f0 + m_I A`` (m_I = -1, 0, 1), equally
        populated (no nuclear polarization); ``transition_frequency`` is the centre line.
    """

    def __init__(self, models=None, readout: Readout | None = None,
                 clock: VirtualClock | None = None, rng: np.random.Generator | None = None,
                 field: float = 0.05, calibrated_power_dbm: float = 0.0,
                 rabi_frequency: float | None = None, hyperfine: float = 0.0):
        self.models = list(models) if models is not None else [DephasingModel()]
        self.readout = readout or Readout()
        self.clock = clock or VirtualClock()
        self.rng = rng if rng is not None else np.random.default_rng()
        self.field = float(field)
        self.calibrated_power_dbm = float(calibrated_power_dbm)
        if rabi_frequency is not None and not (0 < float(rabi_frequency) < 1e9):
            raise ValueError(f"rabi_frequency must be in (0, 1e9) Hz, got {rabi_frequency!r}")
        self.rabi_frequency = None if rabi_frequency is None else float(rabi_frequency)
        self.hyperfine = float(hyperfine)

    @property
    def transition_frequency(self) -> float:
        """ms = 0 <-> ms = -1 transition frequency (the m_I = 0 line), Hz."""
        return line_frequency(self.field)

    def pi_duration(self, mw_power_dbm: float) -> float:
        """True pi-pulse duration at ``mw_power_dbm`` on resonance, s (12.5 MHz if nominal)."""
        f_r = self.rabi_frequency or Drive.rabi_frequency
        return 1 / (2 * f_r * 10 ** ((float(mw_power_dbm) - self.calibrated_power_dbm) / 20))

    def drive(self, mw_frequency: float, mw_power_dbm: float, mw_on: bool) -> Drive:
        """The drive for a microwave source state (Hz, dBm, bool)."""
        kw = {} if self.rabi_frequency is None else {"rabi_frequency": self.rabi_frequency,
                                                     "nominal": False}
        return Drive(on=bool(mw_on), detuning=float(mw_frequency) - self.transition_frequency,
                     rabi_scale=10 ** ((float(mw_power_dbm) - self.calibrated_power_dbm) / 20),
                     **kw)

    def model_for(self, program):
        for m in self.models:
            if m.handles(program):
                return m
        raise ValueError(f"no physics model handles sequence "
                         f"{program.metadata.get('sequence')!r}")

    def population(self, program, drive: Drive | None = None) -> float:
        m = self.model_for(program)
        if drive is not None and not drive.on:
            return 1.0
        if getattr(m, "uses_drive", False):
            drive = drive or Drive()
            if self.hyperfine == 0.0:
                return float(m.population(program, drive=drive))
            lines = (replace(drive, detuning=drive.detuning - m_i * self.hyperfine)
                     for m_i in (-1, 0, 1))
            return float(np.mean([m.population(program, drive=d) for d in lines]))
        return float(m.population(program))

    def run(self, program, shots: int, drive: Drive | None = None) -> Counts:
        """Play ``program`` for ``shots`` shots; returns counts with shot noise."""
        shots = int(shots)
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        p0 = self.population(program, drive)
        r = self.readout
        a0, a1 = r.bright_rate, r.bright_rate * (1 - r.contrast)
        signal = self.rng.poisson(shots * (a1 + (a0 - a1) * p0))
        bright = self.rng.poisson(shots * a0)
        dark = self.rng.poisson(shots * a1)
        duration = shots * (program.duration + 2 * r.reference_duration)
        self.clock.advance(duration)
        return Counts(int(signal), int(bright), int(dark), shots, p0, duration)
