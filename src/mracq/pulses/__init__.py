"""mracq.pulses: hardware-independent NV pulse programs.

A :class:`PulseProgram` describes one shot (laser, ``mw``, ``rf``, counter ``gate``
channels); generators build the standard sequences with the timing convention of
physics.md section 1, and :func:`evolution_timing` reads it back from any program.
"""

from .model import (
    CHANNELS,
    Delay,
    Element,
    Parallel,
    Pulse,
    PulseProgram,
    Repeat,
    TimedPulse,
    TimingLimits,
)
from .plot import plot_timing
from .sequences import (
    XY8_PHASES,
    coherence_programs,
    cpmg,
    evolution_timing,
    fid,
    hahn_echo,
    odmr_cw,
    rabi,
    xy8,
)

__all__ = [
    "CHANNELS",
    "XY8_PHASES",
    "Delay",
    "Element",
    "Parallel",
    "Pulse",
    "PulseProgram",
    "Repeat",
    "TimedPulse",
    "TimingLimits",
    "coherence_programs",
    "cpmg",
    "evolution_timing",
    "fid",
    "hahn_echo",
    "odmr_cw",
    "plot_timing",
    "rabi",
    "xy8",
]
