"""Swabian Pulse Streamer 8/2 through the vendor's ``pulsestreamer`` client.

:func:`compile_program` turns one :class:`~mracq.pulses.PulseProgram` shot into the
Pulse Streamer's sequence: steps ``(duration_ns, [high digital channels], A0_V, A1_V)``
on its 1 ns grid, through the lab's channel map:

- ``laser``, ``mw`` (the microwave switch or the source's pulse-modulation input),
  ``gate`` (the counter gate of the signal), ``rf``: digital outputs 0-7;
- ``mw_i``, ``mw_q``: the analog outputs ``"A0"``/``"A1"`` driving the source's IQ
  inputs, ``amplitude * (cos phase, sin phase)`` V while a microwave pulse is on;
- ``gate_bright``, ``gate_dark``: gates of the two reference shots appended to every
  shot (ms = 0: initialise and read out; ms = -1: initialise, a pi pulse, read out), each
  ``reference_duration`` long.

Start times and lengths are rounded to the nearest ns (each pulse keeps its rounded
length, so its rotation angle does not depend on where it starts). A program the
instrument cannot play raises ``ValueError`` naming the pulse: a pulse shorter than
``min_pulse`` after rounding, two pulses of one channel overlapping after rounding, a
channel the map does not wire, a microwave phase without IQ outputs, a per-pulse carrier
frequency (the streamer only switches; set the source), more than 2e6 steps.

:class:`PulseStreamerSequencer` is the transport of :class:`~mracq.devices.nv.PulseSequencer`:
it compiles (cached per program), starts the gated counter, streams the sequence for
``shots`` runs (trigger ``IMMEDIATE``), waits for ``hasFinished`` and reads the counts.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from dataclasses import dataclass

from mracq.config import check_channel_map
from mracq.devices.drivers.base import InstrumentError, Reconnecting
from mracq.sim.nv import Counts

log = logging.getLogger(__name__)

NS = 1e-9
MAX_STEPS = 2_000_000
@dataclass(frozen=True)
class Compiled:
    """A compiled shot: Pulse Streamer steps and the run length (ns)."""

    steps: tuple
    run_ns: int

    @property
    def duration(self) -> float:
        """One run (shot + two references), s."""
        return self.run_ns * NS


def _ns(t: float) -> int:
    return int(round(t / NS))


def compile_program(program, channels: dict, *, min_pulse: float = 2e-9,
                    reference_duration: float = 4e-6, pi_duration: float = 40e-9,
                    amplitude: float = 1.0) -> Compiled:
    """Compile one shot of ``program`` plus the two reference shots (see module docstring).

    Parameters
    ----------
    program : PulseProgram
    channels : dict
        Role -> output (validated by :func:`check_channel_map`).
    min_pulse : float
        Shortest pulse the outputs make, s.
    reference_duration : float
        Length of each reference shot, s.
    pi_duration : float
        The dark reference's pi pulse, s.
    amplitude : float
        IQ amplitude, V (<= 1).
    """
    errs = check_channel_map(channels)
    if errs:
        raise ValueError("; ".join(errs))
    if not 0 < amplitude <= 1:
        raise ValueError(f"IQ amplitude {amplitude!r} V must be in (0, 1] V")
    min_ns = max(1, _ns(min_pulse))
    shot_ns = _ns(program.duration)
    pulses = []  # (role, start_ns, end_ns, phase, index)
    for i, p in enumerate(program.flatten()):
        what = f"pulse {i} (channel {p.channel!r}, start {p.start:.9g} s)"
        if p.channel not in channels:
            raise ValueError(f"cannot play {what}: channel {p.channel!r} is not wired "
                             f"(add channels.{p.channel} to the lab config)")
        if p.frequency is not None:
            raise ValueError(f"cannot play {what}: it sets a carrier frequency "
                             f"({p.frequency:g} Hz); the Pulse Streamer only switches, set the "
                             "source's frequency instead")
        s = _ns(p.start)
        e = s + _ns(p.duration)  # the length is kept: a pi pulse stays a pi pulse
        if e - s < min_ns:
            raise ValueError(f"cannot play {what}: {p.duration:.4g} s is {e - s} ns on the 1 ns "
                             f"grid, shorter than the minimum pulse of {min_ns} ns")
        phase = p.phase % (2 * math.pi)
        if p.channel == "mw" and "mw_i" not in channels and min(phase, 2 * math.pi - phase) > 1e-9:
            raise ValueError(f"cannot play {what}: microwave phase {p.phase:.4g} rad needs the "
                             "IQ outputs (channels.mw_i, channels.mw_q)")
        pulses.append((p.channel, s, e, p.phase, i))
    r_ns = _ns(reference_duration)
    pi_ns = _ns(pi_duration)
    init, wait = r_ns // 2, r_ns // 4
    read = r_ns - init - wait
    gate = min(300, read)
    if pi_ns < min_ns or pi_ns > wait:
        raise ValueError(f"pi_duration {pi_duration:g} s must fit the reference wait "
                         f"({wait} ns) and be >= {min_ns} ns")
    for k, role in enumerate(("gate_bright", "gate_dark")):
        t0 = shot_ns + k * r_ns
        readout = t0 + init + wait
        pulses += [("laser", t0, t0 + init, 0.0, -1), ("laser", readout, t0 + r_ns, 0.0, -1),
                   (role, readout, readout + gate, 0.0, -1)]
        if role == "gate_dark":
            c = t0 + init + (wait - pi_ns) // 2
            pulses.append(("mw", c, c + pi_ns, 0.0, -1))
    run_ns = shot_ns + 2 * r_ns
    # overlaps after rounding, per channel
    by_role: dict[str, list] = {}
    for p in pulses:
        by_role.setdefault(p[0], []).append(p)
    for role, ps in by_role.items():
        ps.sort(key=lambda q: q[1])
        for a, b in zip(ps, ps[1:], strict=False):
            if b[1] < a[2]:
                raise ValueError(f"cannot play pulse {b[4]} (channel {role!r}): it overlaps "
                                 f"pulse {a[4]} after rounding to the 1 ns grid "
                                 f"({a[1]}-{a[2]} ns and {b[1]}-{b[2]} ns)")
    edges = sorted({0, run_ns, *(p[1] for p in pulses), *(p[2] for p in pulses)})
    iq = ("mw_i" in channels)
    i_out = channels.get("mw_i")
    steps = []
    for t0, t1 in zip(edges, edges[1:], strict=False):
        high, a = set(), [0.0, 0.0]
        for role, s, e, phase, _ in pulses:
            if s <= t0 < e:
                high.add(channels[role])
                if role == "mw" and iq:
                    ci, cq = amplitude * math.cos(phase), amplitude * math.sin(phase)
                    a = [ci, cq] if i_out == "A0" else [cq, ci]
        a = [0.0 if abs(x) < 1e-12 else x for x in a]
        step = (t1 - t0, sorted(high), a[0], a[1])
        if steps and steps[-1][1:] == step[1:]:
            steps[-1] = (steps[-1][0] + step[0], *step[1:])
        else:
            steps.append(step)
    if len(steps) > MAX_STEPS:
        raise ValueError(f"the program needs {len(steps)} sequence steps; the Pulse Streamer "
                         f"holds at most {MAX_STEPS}")
    return Compiled(tuple(steps), run_ns)


class PulseStreamerSequencer(Reconnecting):
    """Pulse Streamer 8/2 + gated NI counter: ``run(program, shots) -> Counts``.

    Parameters
    ----------
    address : str
        IP address or host name of the Pulse Streamer (ports 8050 and 21328).
    channels : dict
        Channel map (see :func:`compile_program`).
    counter : GatedCounter
    clock : VirtualClock, optional
        Advanced by the hardware time of each point.
    timeout : float
        Per-request timeout, s; waiting for a point adds its expected duration.
    """

    def __init__(self, address: str, channels: dict, counter, *, clock=None,
                 timeout: float = 5.0, min_pulse: float = 2e-9,
                 reference_duration: float = 4e-6, pi_duration: float = 40e-9,
                 name: str = "nv"):
        super().__init__()
        errs = check_channel_map(channels)
        if errs:
            raise ValueError("; ".join(errs))
        self.address, self.channels, self.counter = address, dict(channels), counter
        self.clock, self.timeout = clock, float(timeout)
        self.compile_kw = dict(min_pulse=min_pulse, reference_duration=reference_duration,
                               pi_duration=pi_duration)
        self.label = f"{name} (Pulse Streamer 8/2 at {address})"
        self._compiled: dict = {}
        self.serial = self.firmware = ""
        _ = self.client

    def _open(self):
        from pulsestreamer import PulseStreamer, TriggerRearm, TriggerStart

        with contextlib.redirect_stdout(io.StringIO()) as out:  # the client prints
            ps = PulseStreamer(self.address)
        for line in out.getvalue().splitlines():
            log.debug("%s: %s", self.label, line)
        ps.proxy.client.transport.request_kwargs["timeout"] = self.timeout
        if getattr(ps, "_socket", None) is not None:
            ps._socket.settimeout(self.timeout)
        self.serial, self.firmware = ps.getSerial(), ps.getFirmwareVersion()
        ps.setTrigger(TriggerStart.IMMEDIATE, TriggerRearm.AUTO)
        log.info("%s: serial %s, firmware %s, binary upload %s", self.label, self.serial,
                 self.firmware, ps._has_binary)
        return ps

    def _close(self, ps) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            if getattr(ps, "_socket", None) is not None:
                ps._socket.close()
                ps._socket = None
            ps._has_binary = False

    def compile(self, program) -> Compiled:
        c = self._compiled.get(program)
        if c is None:
            if len(self._compiled) > 4096:
                self._compiled.clear()
            c = self._compiled[program] = compile_program(program, self.channels,
                                                          **self.compile_kw)
        return c

    def time_per_shot(self, program) -> float:
        """Hardware time of one shot with its two references, s."""
        return self.compile(program).duration

    def run(self, program, shots: int) -> Counts:
        compiled = self.compile(program)  # ValueError before anything is sent
        shots = int(shots)
        self.counter.start()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.call("stream", lambda ps: ps.stream(list(compiled.steps), shots))
            deadline = time.monotonic() + self.timeout + shots * compiled.duration
            pause = 1e-3
            while not self.call("hasFinished", lambda ps: ps.hasFinished()):
                if time.monotonic() > deadline:
                    raise InstrumentError(self.label, "hasFinished",
                                          f"not finished {self.timeout:g} s after the "
                                          "expected end of the point")
                time.sleep(pause)
                pause = min(2 * pause, 0.05)
            s, b, d = self.counter.read()
        except InstrumentError:
            self.counter.drop()  # the tasks were left running: start clean next time
            raise
        dur = shots * compiled.duration
        if self.clock is not None:
            self.clock.advance(dur)
        return Counts(s, b, d, shots, float("nan"), dur)

    def close(self) -> None:
        self.counter.close()
        super().close()
