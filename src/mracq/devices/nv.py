"""Ophyd devices of an NV setup: microwave source, laser, pulse sequencer + counter.

Each device talks to a transport (:mod:`mracq.devices.transports`) and checks every
value against the lab configuration's limits *before* the transport is touched: a
rejected value raises :class:`ophyd.utils.LimitError` (a ``ValueError``) naming the
signal, the value and the allowed range.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.utils import LimitError

from mracq.devices.soft import NamedStatus, SoftSignal
from mracq.pulses import PulseProgram, TimingLimits
from mracq.sim.nv import normalize

log = logging.getLogger(__name__)


ON_WORDS = ("on", "true", "1")
OFF_WORDS = ("off", "false", "0")


def to_bool(value, name: str = "value") -> bool:
    """An on/off setting: True/False (numpy bools too), the integers 1/0, or the strings
    "on"/"off", "true"/"false", "1"/"0" (any case).  Anything else raises LimitError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ON_WORDS:
            return True
        if word in OFF_WORDS:
            return False
    raise LimitError(f"{name}: {value!r} is not an on/off value (True/False, 1/0, "
                     f"{'/'.join(ON_WORDS)} or {'/'.join(OFF_WORDS)})")


class CheckedSignal(SoftSignal):
    """A Signal whose ``set`` validates, writes and returns a finished status.

    Ophyd's ``Signal.set`` would put in a thread, wrap a validation error in a
    ``FailedStatus`` and then poll until the readback equals the setpoint, with no
    timeout: an instrument that rounds (a source that stores 1.46875e9 Hz as
    1468750000.01) would hang ``bps.mv`` forever. Here ``check_value`` raises the clear
    error before anything is sent, and a set is done once the instrument took the value.
    """


class TransportSignal(CheckedSignal):
    """A Signal whose value lives in the parent's transport.

    Parameters
    ----------
    getter, setter : str
        Method names on ``parent.transport``.
    limit_keys : tuple of str, optional
        Keys of ``parent.limits`` giving (low, high) in ``units``.
    units : str
        Unit for the descriptor and error messages.
    """

    def __init__(self, *, getter: str, setter: str, limit_keys=None, units: str = "",
                 dtype=float, **kwargs):
        super().__init__(**kwargs)
        self._getter, self._setter = getter, setter
        self._limit_keys, self._units, self._dtype = limit_keys, units, dtype

    @property
    def limits(self):
        if self._limit_keys is None:
            return (0, 0)
        lim = self.parent.limits
        return tuple(lim[k] for k in self._limit_keys)

    def _convert(self, value):
        if self._dtype is bool:
            return to_bool(value, self.name)
        return self._dtype(value)

    def check_value(self, value):
        try:
            v = self._convert(value)
        except LimitError:
            raise
        except (TypeError, ValueError):
            raise LimitError(f"{self.name}: {value!r} is not a valid {self._dtype.__name__}") \
                from None
        if self._dtype is float and not math.isfinite(v):
            raise LimitError(f"{self.name}: value must be finite, got {value!r}")
        if self._limit_keys is not None:
            lo, hi = self.limits
            if not lo <= v <= hi:
                raise LimitError(f"{self.name} = {v:g} {self._units} is outside the allowed "
                                 f"range [{lo:g}, {hi:g}] {self._units}")

    def get(self, **kwargs):
        self._readback = self._dtype(getattr(self.parent.transport, self._getter)())
        return self._readback

    def put(self, value, **kwargs):
        self.check_value(value)
        getattr(self.parent.transport, self._setter)(self._convert(value))
        super().put(self._convert(value), **kwargs)

    def describe(self):
        d = super().describe()
        d[self.name]["units"] = self._units
        if self._limit_keys is not None:
            d[self.name]["lower_ctrl_limit"], d[self.name]["upper_ctrl_limit"] = self.limits
        if self._dtype is bool:  # ophyd infers "integer" for a bool
            d[self.name].update(dtype="boolean", dtype_numpy="|b1")
        return d


class _TransportDevice(Device):
    """A device whose signals talk to ``transport`` and check ``limits`` (over defaults)."""

    DEFAULT_LIMITS: dict = {}

    def __init__(self, *args, transport, limits: dict, **kwargs):
        self.transport = transport
        self.limits = {**self.DEFAULT_LIMITS, **limits}
        super().__init__(*args, **kwargs)


class MicrowaveSource(_TransportDevice):
    """Microwave source: frequency (Hz), power (dBm), output on/off."""

    frequency = Cpt(TransportSignal, getter="get_frequency", setter="set_frequency",
                    limit_keys=("min_frequency", "max_frequency"), units="Hz", kind="config")
    power = Cpt(TransportSignal, getter="get_power_dbm", setter="set_power_dbm",
                limit_keys=("min_power_dbm", "max_power_dbm"), units="dBm", kind="config")
    output = Cpt(TransportSignal, getter="get_output", setter="set_output", dtype=bool,
                 kind="config")

    DEFAULT_LIMITS = {"min_power_dbm": -140.0}


class Laser(_TransportDevice):
    """Excitation laser: power (W), output on/off."""

    power = Cpt(TransportSignal, getter="get_power", setter="set_power",
                limit_keys=("min_power", "max_power"), units="W", kind="config")
    output = Cpt(TransportSignal, getter="get_output", setter="set_output", dtype=bool,
                 kind="config")

    DEFAULT_LIMITS = {"min_power": 0.0}


class ProgramSignal(CheckedSignal):
    """Holds the :class:`~mracq.pulses.PulseProgram` to play; validated on set/put."""

    def check_value(self, value):
        if isinstance(value, dict):
            value = PulseProgram.from_dict(value)
        if not isinstance(value, PulseProgram):
            raise TypeError(f"{self.name} takes a PulseProgram, got {type(value).__name__}")
        if value is not getattr(self, "_last_valid", None):  # programs are immutable
            value.validate(self.parent.timing_limits)
            self._last_valid = value

    def put(self, value, **kwargs):
        if isinstance(value, dict):
            value = PulseProgram.from_dict(value)
        self.check_value(value)
        super().put(value, **kwargs)


class ShotsSignal(CheckedSignal):
    """Number of repetitions per point, checked against ``max_shots``."""

    def check_value(self, value):
        if int(value) != value or not 1 <= value <= self.parent.max_shots:
            raise LimitError(f"{self.name} = {value!r} must be an integer in "
                             f"[1, {self.parent.max_shots:g}]")

    def put(self, value, **kwargs):
        self.check_value(value)
        super().put(int(value), **kwargs)


class PulseSequencer(Device):
    """Pulse sequencer with a gated photon counter: a triggerable detector.

    Configure with ``program`` (a PulseProgram, validated against the timing limits) and
    ``shots``; ``trigger()`` plays the program ``shots`` times with bright (ms = 0) and
    dark (ms = -1) reference shots. Reads: ``value`` (normalized P(ms = 0)), ``error``
    (its standard error) and ``counts`` (signal, bright, dark photon counts: one array,
    so each event carries the raw data at the cost of one key); ``duration`` (s of
    hardware time of the last point) is available with ``get`` but not read into events.
    """

    program = Cpt(ProgramSignal, value=None, kind="omitted")
    shots = Cpt(ShotsSignal, value=100_000, kind="config")
    value = Cpt(Signal, value=float("nan"), kind="hinted")
    error = Cpt(Signal, value=float("nan"), kind="hinted")
    counts = Cpt(Signal, value=np.zeros(3, dtype=np.int64), kind="normal")
    duration = Cpt(Signal, value=0.0, kind="omitted")

    #: :class:`~mracq.pulses.calibration.PulseCalibration` the programs take their pulse
    #: durations from (None: uncalibrated, the generators' defaults)
    calibration = None

    def __init__(self, *args, transport, limits: dict, **kwargs):
        self.transport = transport
        self.timing_limits = TimingLimits(
            min_pulse=limits.get("min_pulse", 2e-9), min_delay=limits.get("min_delay", 2e-9),
            max_duration=limits.get("max_program_duration", 10e-3),
            resolution=limits.get("resolution", 1e-9))
        self.max_shots = float(limits.get("max_shots", 1e8))
        super().__init__(*args, **kwargs)

    def estimate_time(self, programs, shots: int) -> float:
        """Hardware time in s to play each program ``shots`` times (no side effects)."""
        return float(shots) * sum(self.transport.time_per_shot(p) for p in programs)

    def trigger(self):
        program = self.program.get()
        if program is None:
            raise RuntimeError(f"{self.name}: no pulse program loaded (set {self.program.name})")
        counts = self.transport.run(program, self.shots.get())
        v, err = normalize(counts.signal, counts.bright, counts.dark)
        if not np.isfinite(v) or counts.bright - counts.dark < 3 * np.sqrt(counts.bright + 1):
            log.warning("%s: no significant bright/dark contrast (bright %d, dark %d): "
                        "is the laser on and the microwave on resonance?", self.name,
                        counts.bright, counts.dark)
        self.counts.put(np.array([counts.signal, counts.bright, counts.dark], dtype=np.int64))
        self.duration.put(float(counts.duration))
        self.value.put(float(v))
        self.error.put(float(err))
        st = NamedStatus(f"trigger {self.name}")  # Status(obj=self) reads every signal
        st.set_finished()
        return st


class _CoherenceProgram(CheckedSignal):
    """Program of a :class:`CoherenceDetector`: loaded into the sequencer on put."""

    def check_value(self, value):
        """The sequencer's checks, and that the program measures a coherence."""
        from mracq.sim.nv import ideal_population

        if isinstance(value, dict):
            value = PulseProgram.from_dict(value)
        self.parent.sequencer.program.check_value(value)
        cached = getattr(self, "_checked", (None, None))
        if cached[0] is value:  # programs are immutable; set() checks, then put()
            return cached[1]
        ideal = ideal_population(value)
        if abs(2 * ideal - 1) < 0.5:
            raise ValueError(f"{self.name}: the program does not end in a population "
                             "eigenstate without noise; it measures no coherence")
        self._checked = (value, ideal)  # only a valid program is remembered
        return ideal

    def put(self, value, **kwargs):
        if isinstance(value, dict):
            value = PulseProgram.from_dict(value)
        ideal = self.check_value(value)  # before the sequencer takes the program
        seq = self.parent.sequencer
        seq.program.put(value)
        self.parent._ideal = ideal
        super().put(seq.program.get(), **kwargs)


class CoherenceDetector(Device):
    """Coherence readout of a pulse sequencer: one triggerable detector per point.

    Set ``program`` (a coherence program: FID, Hahn, CPMG, XY8, any pi-pulse timing);
    ``trigger()`` plays it on the sequencer and derives the coherence from the
    normalized population p and the noise-free outcome p_ideal of the program:
    ``C = (2 p - 1) / (2 p_ideal - 1)``. Reads ``t`` (evolution time, s),
    ``coherence`` and ``coherence_error`` (standard error), and the raw photon counts
    ``signal_counts``, ``bright_counts``, ``dark_counts`` (scalars: an array key costs
    Tiled several times a scalar's write).

    Parameters
    ----------
    sequencer : PulseSequencer
    """

    program = Cpt(_CoherenceProgram, value=None, kind="omitted")
    t = Cpt(Signal, value=float("nan"), kind="hinted")
    coherence = Cpt(Signal, value=float("nan"), kind="hinted")
    coherence_error = Cpt(Signal, value=float("nan"), kind="hinted")
    signal_counts = Cpt(Signal, value=0, kind="normal")
    bright_counts = Cpt(Signal, value=0, kind="normal")
    dark_counts = Cpt(Signal, value=0, kind="normal")

    def __init__(self, sequencer: PulseSequencer, *, name: str = "coherence", **kwargs):
        self.sequencer = sequencer
        self._ideal = None
        super().__init__(name=name, **kwargs)
        for c in (self.t, self.coherence, self.coherence_error, self.signal_counts,
                  self.bright_counts, self.dark_counts):
            c.name = c.attr_name

    def describe(self):
        out = super().describe()
        out["t"].update(units="s", precision=9)  # microseconds visible in live tables
        out["coherence"]["precision"] = 4
        out["coherence_error"]["precision"] = 4
        return out

    def trigger(self):
        if self._ideal is None:
            raise RuntimeError(f"{self.name}: no program loaded (set {self.program.name})")
        st = self.sequencer.trigger()  # finished on return for in-process transports
        st.wait()
        p0, err = self.sequencer.value.get(), self.sequencer.error.get()
        span = 2 * self._ideal - 1
        self.t.put(float(self.program.get().metadata.get("t", float("nan"))))
        self.coherence.put((2 * p0 - 1) / span)
        self.coherence_error.put(2 * err / abs(span))
        s_, b_, d_ = (int(x) for x in self.sequencer.counts.get())
        self.signal_counts.put(s_)
        self.bright_counts.put(b_)
        self.dark_counts.put(d_)
        return st
