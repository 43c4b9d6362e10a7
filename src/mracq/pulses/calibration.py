"""The NV pulse calibration a session measures with: resonance, pi and pi/2 durations.

A :class:`PulseCalibration` is plain data (JSON-safe through :meth:`as_dict`), so that
the pulse generators stay independent of sessions and devices: plans read it from the
sequencer (``nv.calibration``) and pass ``calibration.program_kw()`` to the generators.
:func:`calibration_warnings` says when a calibration no longer fits the measurement
(another microwave power, too old).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields

__all__ = ["DEFAULT_MAX_AGE", "LEVEL_CROSSING_FIELD", "PulseCalibration", "calibration_warnings",
           "line_frequency"]

DEFAULT_MAX_AGE = 4 * 3600.0  # s: recalibrate after this (field and power drift)
ZERO_FIELD_SPLITTING = 2.870e9  # Hz (mracq.sim.nv takes it from here; pulses sits below sim)
GAMMA_E = 28.025e9  # electron gyromagnetic ratio, Hz/T
LEVEL_CROSSING_FIELD = ZERO_FIELD_SPLITTING / GAMMA_E
"""Field (T, ~102.4 mT) where the ms = -1 level crosses ms = 0: above it the ms = 0 <-> -1
line is at ``gamma_e B - D``, below at ``D - gamma_e B``."""


def line_frequency(field: float) -> float:
    """The ms = 0 <-> ms = -1 line at ``field`` (T) along the NV axis, Hz:
    ``|D - gamma_e B|``."""
    return abs(ZERO_FIELD_SPLITTING - GAMMA_E * float(field))


@dataclass(frozen=True)
class PulseCalibration:
    """Result of an NV calibration (ODMR, Rabi, Ramsey).

    Parameters
    ----------
    resonance_frequency, resonance_frequency_error : float
        ms = 0 <-> ms = -1 transition (the m_I = 0 line of a 14N triplet) and its standard
        error, Hz.
    pi_duration, pi_duration_error : float
        pi-pulse length at ``power_dbm`` and its standard error, s.
    pi2_duration, pi2_duration_error : float
        pi/2-pulse length and its standard error, s.
    power_dbm : float
        Microwave power the durations hold for, dBm.
    rabi_frequency : float
        On-resonance Rabi frequency at ``power_dbm``, Hz.
    hyperfine_splitting : float
        14N splitting found in ODMR, Hz (0: no triplet resolved).
    above_crossing : bool
        The field is above :data:`LEVEL_CROSSING_FIELD`, where the line is at
        ``gamma_e B - D`` (the resonance alone cannot tell: 1.56 GHz is 46 mT or 158 mT).
    time : float
        When it was made, Unix time (s).
    uid : str, optional
        The stored calibration run.
    extra : dict
        Anything else (T2*, fit summaries), JSON-safe.
    """

    resonance_frequency: float
    resonance_frequency_error: float
    pi_duration: float
    pi_duration_error: float
    pi2_duration: float
    pi2_duration_error: float
    power_dbm: float
    rabi_frequency: float = float("nan")
    hyperfine_splitting: float = 0.0
    above_crossing: bool = False
    time: float = field(default_factory=time.time)
    uid: str | None = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self):
        for name in ("resonance_frequency", "pi_duration", "pi2_duration"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"PulseCalibration: {name} must be finite and > 0, got {v!r}")
        if not math.isfinite(float(self.power_dbm)):
            raise ValueError(f"PulseCalibration: power_dbm must be finite, got {self.power_dbm!r}")

    @property
    def field(self) -> float:
        """Field along the NV axis from the resonance (T): ``(D - f) / gamma_e``, or
        ``(D + f) / gamma_e`` :attr:`above_crossing`."""
        sign = 1.0 if self.above_crossing else -1.0
        return (ZERO_FIELD_SPLITTING + sign * self.resonance_frequency) / GAMMA_E

    @property
    def field_error(self) -> float:
        """Standard error of :attr:`field`, T."""
        return self.resonance_frequency_error / GAMMA_E

    def program_kw(self) -> dict:
        """Pulse durations for the generators: ``{"pi_duration": s, "pi2_duration": s}``."""
        return {"pi_duration": float(self.pi_duration), "pi2_duration": float(self.pi2_duration)}

    def as_dict(self) -> dict:
        """JSON-safe dict (for start documents and ``RE.md``), with the field added."""
        d = asdict(self)
        d["field"], d["field_error"] = self.field, self.field_error
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PulseCalibration:
        """Inverse of :meth:`as_dict` (derived keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def summary(self) -> str:
        """One line for people: resonance, field, pi and pi/2 at the power."""
        return (f"resonance {self.resonance_frequency / 1e9:.6f} GHz "
                f"+- {self.resonance_frequency_error / 1e3:.2g} kHz (B = {self.field * 1e3:.3f} "
                f"mT), pi {self.pi_duration * 1e9:.2f} +- {self.pi_duration_error * 1e9:.2g} ns, "
                f"pi/2 {self.pi2_duration * 1e9:.2f} ns at {self.power_dbm:g} dBm")


def calibration_warnings(cal: PulseCalibration | None, *, power_dbm: float | None = None,
                         frequency: float | None = None, now: float | None = None,
                         max_age: float = DEFAULT_MAX_AGE,
                         power_tolerance_db: float = 0.05) -> list[str]:
    """Why ``cal`` does not fit a measurement about to start (empty list: it does).

    Parameters
    ----------
    cal : PulseCalibration or None
    power_dbm : float, optional
        Microwave power of the measurement, dBm.
    frequency : float, optional
        Microwave frequency of the measurement, Hz (warned when it is more than 5 standard
        errors and 10 kHz off the calibrated resonance).
    now : float, optional
        Unix time (default: now).
    max_age : float
        Oldest acceptable calibration, s.
    power_tolerance_db : float
        Largest acceptable power difference, dB.
    """
    if cal is None:
        return []
    out = []
    now = time.time() if now is None else float(now)
    age = now - float(cal.time)
    if age > max_age:
        out.append(f"the NV calibration is {age / 3600:.1f} h old (limit {max_age / 3600:.1f} h):"
                   " recalibrate (`mracq calibrate`)")
    if power_dbm is not None and abs(float(power_dbm) - cal.power_dbm) > power_tolerance_db:
        out.append(f"microwave power {float(power_dbm):g} dBm differs from the calibration's "
                   f"{cal.power_dbm:g} dBm: the pi pulses are wrong by a factor "
                   f"{10 ** ((float(power_dbm) - cal.power_dbm) / 20):.3g}; recalibrate")
    if frequency is not None:
        off = abs(float(frequency) - cal.resonance_frequency)
        if off > max(5 * cal.resonance_frequency_error, 10e3):
            out.append(f"microwave frequency {float(frequency) / 1e9:.6f} GHz is "
                       f"{off / 1e3:.0f} kHz off the calibrated resonance "
                       f"{cal.resonance_frequency / 1e9:.6f} GHz")
    return out
