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
from ophyd.status import Status
from ophyd.utils import LimitError

from mracq.pulses import PulseProgram, TimingLimits
from mracq.sim.nv import normalize

log = logging.getLogger(__name__)


class CheckedSignal(Signal):
    """A Signal that validates in ``set`` itself, before ophyd's set thread starts.

    Ophyd's ``Signal.set`` runs ``put`` in a thread and wraps its exception in a
    ``FailedStatus``; checking first gives the plan the clear error directly, and nothing
    is sent to the instrument.
    """

    def set(self, value, **kwargs):
        self.check_value(value)
        return super().set(value, **kwargs)


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

    def check_value(self, value):
        try:
            v = self._dtype(value)
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
        getattr(self.parent.transport, self._setter)(self._dtype(value))
        super().put(self._dtype(value), **kwargs)

    def describe(self):
        d = super().describe()
        d[self.name]["units"] = self._units
        if self._limit_keys is not None:
            d[self.name]["lower_ctrl_limit"], d[self.name]["upper_ctrl_limit"] = self.limits
        return d


class MicrowaveSource(Device):
    """Microwave source: frequency (Hz), power (dBm), output on/off."""

    frequency = Cpt(TransportSignal, getter="get_frequency", setter="set_frequency",
                    limit_keys=("min_frequency", "max_frequency"), units="Hz", kind="config")
    power = Cpt(TransportSignal, getter="get_power_dbm", setter="set_power_dbm",
                limit_keys=("min_power_dbm", "max_power_dbm"), units="dBm", kind="config")
    output = Cpt(TransportSignal, getter="get_output", setter="set_output", dtype=bool,
                 kind="config")

    def __init__(self, *args, transport, limits: dict, **kwargs):
        self.transport = transport
        self.limits = {"min_power_dbm": -140.0, **limits}
        super().__init__(*args, **kwargs)


class Laser(Device):
    """Excitation laser: power (W), output on/off."""

    power = Cpt(TransportSignal, getter="get_power", setter="set_power",
                limit_keys=("min_power", "max_power"), units="W", kind="config")
    output = Cpt(TransportSignal, getter="get_output", setter="set_output", dtype=bool,
                 kind="config")

    def __init__(self, *args, transport, limits: dict, **kwargs):
        self.transport = transport
        self.limits = {"min_power": 0.0, **limits}
        super().__init__(*args, **kwargs)


class ProgramSignal(CheckedSignal):
    """Holds the :class:`~mracq.pulses.PulseProgram` to play; validated on set/put."""

    def check_value(self, value):
        if isinstance(value, dict):
            value = PulseProgram.from_dict(value)
        if not isinstance(value, PulseProgram):
            raise TypeError(f"{self.name} takes a PulseProgram, got {type(value).__name__}")
        value.validate(self.parent.timing_limits)

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
    (its standard error), the three counts, and ``duration`` (s of hardware time).
    """

    program = Cpt(ProgramSignal, value=None, kind="omitted")
    shots = Cpt(ShotsSignal, value=100_000, kind="config")
    value = Cpt(Signal, value=float("nan"), kind="hinted")
    error = Cpt(Signal, value=float("nan"), kind="hinted")
    signal_counts = Cpt(Signal, value=0, kind="normal")
    bright_counts = Cpt(Signal, value=0, kind="normal")
    dark_counts = Cpt(Signal, value=0, kind="normal")
    duration = Cpt(Signal, value=0.0, kind="normal")

    def __init__(self, *args, transport, limits: dict, **kwargs):
        self.transport = transport
        self.timing_limits = TimingLimits(
            min_pulse=limits.get("min_pulse", 2e-9), min_delay=limits.get("min_delay", 2e-9),
            max_duration=limits.get("max_program_duration", 10e-3),
            resolution=limits.get("resolution", 1e-9))
        self.max_shots = float(limits.get("max_shots", 1e8))
        super().__init__(*args, **kwargs)

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
        self.signal_counts.put(counts.signal)
        self.bright_counts.put(counts.bright)
        self.dark_counts.put(counts.dark)
        self.duration.put(float(counts.duration))
        self.value.put(float(v))
        self.error.put(float(err))
        st = Status(obj=self)
        st.set_finished()
        return st
