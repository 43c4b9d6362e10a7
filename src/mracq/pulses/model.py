"""Pulse-program data model: elements, timed pulses, limits, validation, serialization.

A program is a tuple of elements played one after another:

- :class:`Pulse` occupies one channel for ``duration`` and advances time by it;
- :class:`Delay` only advances time;
- :class:`Parallel` starts several branches (each a sequence of elements) at the same
  time and lasts as long as the longest branch (laser readout plus counter gate);
- :class:`Repeat` plays its body ``count`` times and is stored once (XY8 units).

:meth:`PulseProgram.flatten` expands this into absolutely timed :class:`TimedPulse` s.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property

CHANNELS = ("laser", "mw", "rf", "gate")
FORMAT = "mracq.pulses/1"


def _num(value, name):
    """Coerce a number (int, float, numpy scalar) to float; finiteness is checked later."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _opt(value, name):
    return None if value is None else _num(value, name)


@dataclass(frozen=True)
class Pulse:
    """A pulse on one channel.

    Parameters
    ----------
    channel : str
        One of ``"laser"``, ``"mw"``, ``"rf"``, ``"gate"``.
    duration : float
        Length (s).
    phase : float
        Carrier phase (rad) for ``mw`` and ``rf``.
    rotation : float or None
        Nominal spin rotation angle (rad), e.g. ``pi`` or ``pi/2``; None if not meaningful.
    frequency : float or None
        Carrier frequency (Hz), used by ``rf`` pulses; None means the source's setting.
    """

    channel: str
    duration: float
    phase: float = 0.0
    rotation: float | None = None
    frequency: float | None = None

    def __post_init__(self):
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; expected one of {CHANNELS}")
        object.__setattr__(self, "duration", _num(self.duration, "duration"))
        object.__setattr__(self, "phase", _num(self.phase, "phase"))
        object.__setattr__(self, "rotation", _opt(self.rotation, "rotation"))
        object.__setattr__(self, "frequency", _opt(self.frequency, "frequency"))


@dataclass(frozen=True)
class Delay:
    """Wait ``duration`` (s) with every channel off."""

    duration: float

    def __post_init__(self):
        object.__setattr__(self, "duration", _num(self.duration, "duration"))


def _seq(elements, what):
    if isinstance(elements, (Pulse, Delay, Parallel, Repeat)):
        elements = (elements,)
    elements = tuple(elements)
    for e in elements:
        if not isinstance(e, (Pulse, Delay, Parallel, Repeat)):
            raise ValueError(f"{what}: {e!r} is not a Pulse, Delay, Parallel or Repeat")
    return elements


@dataclass(frozen=True)
class Parallel:
    """Branches that start together; lasts as long as the longest branch.

    Parameters
    ----------
    branches : sequence
        Each branch is an element or a sequence of elements played one after another,
        e.g. ``Parallel((Pulse("laser", 3e-6), Pulse("gate", 300e-9)))``.
    """

    branches: tuple

    def __post_init__(self):
        object.__setattr__(
            self, "branches", tuple(_seq(b, "Parallel branch") for b in self.branches)
        )


@dataclass(frozen=True)
class Repeat:
    """``body`` (element or sequence of elements) played ``count`` times back to back."""

    body: tuple
    count: int

    def __post_init__(self):
        object.__setattr__(self, "body", _seq(self.body, "Repeat body"))
        c = self.count
        if (isinstance(c, bool) or not isinstance(c, numbers.Real)
                or not math.isfinite(c) or int(c) != c or not 0 <= c <= MAX_REPEAT):
            raise ValueError(f"Repeat count must be an integer in [0, {MAX_REPEAT}], "
                             f"got {c!r}")
        object.__setattr__(self, "count", int(c))


#: most repetitions of one Repeat (a sequencer plays at most ~1e6 pulses per shot)
MAX_REPEAT = 1_000_000
#: most pulses and delays of one shot, repetitions expanded (checked before expanding)
MAX_ELEMENTS = 2_000_000


def _n_leaves(elements) -> int:
    """Pulses and delays of a shot with repetitions expanded, counted without expanding."""
    n = 0
    for e in elements:
        if isinstance(e, (Pulse, Delay)):
            n += 1
        elif isinstance(e, Parallel):
            n += sum(_n_leaves(b) for b in e.branches)
        else:
            n += e.count * _n_leaves(e.body)
    return n


Element = Pulse | Delay | Parallel | Repeat


def _duration(elements) -> float:
    total = 0.0
    for e in elements:
        if isinstance(e, (Pulse, Delay)):
            total += e.duration
        elif isinstance(e, Parallel):
            total += max((_duration(b) for b in e.branches), default=0.0)
        else:
            total += e.count * _duration(e.body)
    return total


def _walk(elements, t0):
    """Yield ``(start, leaf)`` for every Pulse and Delay, repetitions expanded."""
    t = t0
    for e in elements:
        if isinstance(e, (Pulse, Delay)):
            yield t, e
            t += e.duration
        elif isinstance(e, Parallel):
            for b in e.branches:
                yield from _walk(b, t)
            t += max((_duration(b) for b in e.branches), default=0.0)
        else:
            d = _duration(e.body)
            for k in range(e.count):
                yield from _walk(e.body, t + k * d)
            t += e.count * d


@dataclass(frozen=True)
class TimedPulse:
    """A pulse at an absolute time within the shot (s, s, rad, rad, Hz)."""

    channel: str
    start: float
    duration: float
    phase: float = 0.0
    rotation: float | None = None
    frequency: float | None = None

    @property
    def end(self) -> float:
        """End time (s)."""
        return self.start + self.duration

    @property
    def centre(self) -> float:
        """Centre time (s)."""
        return self.start + 0.5 * self.duration


@dataclass(frozen=True)
class TimingLimits:
    """Hardware timing limits (all in s).

    Parameters
    ----------
    min_pulse : float
        Shortest pulse.
    min_delay : float
        Shortest non-zero delay (a zero delay is no delay: pulses back to back).
    max_duration : float
        Longest shot.
    resolution : float
        Timing grid of the sequencer. Programs are not required to lie on it (the
        sequencer backend rounds); pulses must be at least one grid step long.
    """

    min_pulse: float = 2e-9
    min_delay: float = 2e-9
    max_duration: float = 10e-3
    resolution: float = 1e-9


def _elem_to_dict(e) -> dict:
    if isinstance(e, Pulse):
        d = {"type": "pulse", "channel": e.channel, "duration": e.duration}
        if e.phase != 0.0:
            d["phase"] = e.phase
        for key in ("rotation", "frequency"):
            if getattr(e, key) is not None:
                d[key] = getattr(e, key)
        return d
    if isinstance(e, Delay):
        return {"type": "delay", "duration": e.duration}
    if isinstance(e, Parallel):
        return {"type": "parallel", "branches": [[_elem_to_dict(x) for x in b] for b in e.branches]}
    return {"type": "repeat", "count": e.count, "body": [_elem_to_dict(x) for x in e.body]}


def _elem_from_dict(d: dict):
    kind = d.get("type")
    if kind == "pulse":
        return Pulse(d["channel"], d["duration"], d.get("phase", 0.0), d.get("rotation"),
                     d.get("frequency"))
    if kind == "delay":
        return Delay(d["duration"])
    if kind == "parallel":
        return Parallel(tuple(tuple(_elem_from_dict(x) for x in b) for b in d["branches"]))
    if kind == "repeat":
        return Repeat(tuple(_elem_from_dict(x) for x in d["body"]), d["count"])
    raise ValueError(f"unknown element type {kind!r} in {d!r}")


def _json_default(obj):
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"metadata value {obj!r} is not JSON-serializable")


@dataclass(frozen=True)
class PulseProgram:
    """One shot of an experiment: a sequence of elements plus JSON-safe metadata.

    Parameters
    ----------
    elements : sequence of Pulse, Delay, Parallel, Repeat
        Played one after another from t = 0.
    metadata : dict
        JSON-safe description (generators set ``sequence``, ``n``, ``t`` in s, ...). It is
        normalized through JSON on construction (tuples become lists, numpy scalars floats).
    """

    elements: tuple
    metadata: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "elements", _seq(self.elements, "PulseProgram"))
        try:
            md = json.loads(json.dumps(dict(self.metadata), default=_json_default,
                                       allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata must be JSON-safe: {exc}") from None
        object.__setattr__(self, "metadata", md)

    @cached_property
    def duration(self) -> float:
        """Length of one shot (s), initialization and readout included."""
        return _duration(self.elements)

    @cached_property
    def _flat(self) -> tuple[TimedPulse, ...]:
        pulses = [
            TimedPulse(e.channel, t, e.duration, e.phase, e.rotation, e.frequency)
            for t, e in _walk(self.elements, 0.0)
            if isinstance(e, Pulse)
        ]
        pulses.sort(key=lambda p: (p.start, CHANNELS.index(p.channel)))
        return tuple(pulses)

    def flatten(self) -> tuple[TimedPulse, ...]:
        """All pulses with absolute start times (s), sorted by start, repetitions expanded."""
        return self._flat

    def pulses_on(self, channel: str) -> tuple[TimedPulse, ...]:
        """The flattened pulses of one channel, sorted by start."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        return tuple(p for p in self._flat if p.channel == channel)

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels that carry at least one pulse, in the order of ``CHANNELS``."""
        used = {p.channel for p in self._flat}
        return tuple(c for c in CHANNELS if c in used)

    def validate(self, limits: TimingLimits | None = None) -> PulseProgram:
        """Check the program against hardware limits; return it unchanged.

        Raises
        ------
        ValueError
            Naming the offending pulse (index in :meth:`flatten` order, channel, start) or
            delay for: non-finite or negative times, pulses shorter than
            ``max(min_pulse, resolution)``, non-zero delays shorter than ``min_delay``,
            overlapping pulses on one channel, a shot longer than ``max_duration``.
        """
        lim = limits or TimingLimits()
        if lim in self.__dict__.get("_valid_for", ()):  # immutable: each limits checked once
            return self
        # the cheap whole-shot checks first: a huge Repeat is refused before it is expanded
        # (a non-finite duration is left to the element checks, which name the element)
        if math.isfinite(self.duration) and self.duration > lim.max_duration:
            raise ValueError(f"shot duration {self.duration:.6g} s exceeds max_duration = "
                             f"{lim.max_duration:.6g} s")
        n = _n_leaves(self.elements)
        if n > MAX_ELEMENTS:
            raise ValueError(f"the shot has {n} pulses and delays with repetitions expanded; "
                             f"at most {MAX_ELEMENTS}")
        min_pulse = max(lim.min_pulse, lim.resolution)
        for t, e in _walk(self.elements, 0.0):
            if isinstance(e, Delay):
                what = f"delay at start {t:.6g} s"
                if not math.isfinite(e.duration) or e.duration < 0:
                    raise ValueError(f"{what} has invalid duration {e.duration!r} s "
                                     "(must be finite and >= 0)")
                if 0 < e.duration < lim.min_delay:
                    raise ValueError(f"{what} is {e.duration:.6g} s long, shorter than "
                                     f"min_delay = {lim.min_delay:.6g} s")
        for i, p in enumerate(self._flat):
            what = f"pulse {i} (channel {p.channel!r}, start {p.start:.6g} s)"
            values = (p.start, p.duration, p.phase, p.rotation or 0.0, p.frequency or 0.0)
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{what} has a non-finite value: {p}")
            if p.start < 0 or p.duration < 0:
                raise ValueError(f"{what} has a negative time: {p}")
            if p.duration < min_pulse:
                raise ValueError(f"{what} is {p.duration:.6g} s long, shorter than "
                                 f"min_pulse = {min_pulse:.6g} s")
        tol = 1e-3 * lim.resolution
        for ch in self.channels:
            last = None
            for i, p in enumerate(self._flat):
                if p.channel != ch:
                    continue
                if last is not None and p.start < last[1].end - tol:
                    raise ValueError(
                        f"pulse {i} (channel {ch!r}, start {p.start:.6g} s) overlaps pulse "
                        f"{last[0]} (start {last[1].start:.6g} s, end {last[1].end:.6g} s) "
                        "on the same channel")
                last = (i, p)
        if not math.isfinite(self.duration) or self.duration > lim.max_duration:
            raise ValueError(f"shot duration {self.duration:.6g} s exceeds max_duration = "
                             f"{lim.max_duration:.6g} s")
        object.__setattr__(self, "_valid_for", (*self.__dict__.get("_valid_for", ()), lim))
        return self

    def to_dict(self) -> dict:
        """JSON-safe dict; :meth:`from_dict` inverts it exactly."""
        return {"format": FORMAT, "elements": [_elem_to_dict(e) for e in self.elements],
                "metadata": json.loads(json.dumps(self.metadata))}

    @classmethod
    def from_dict(cls, d: dict) -> PulseProgram:
        """Rebuild a program from :meth:`to_dict` output (also after a JSON round trip)."""
        if d.get("format") != FORMAT:
            raise ValueError(f"not a pulse program dict (format {d.get('format')!r}, "
                             f"expected {FORMAT!r})")
        return cls(tuple(_elem_from_dict(x) for x in d["elements"]), d.get("metadata", {}))
