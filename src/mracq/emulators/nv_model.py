"""The simulated NV behind the emulators: decodes what the pulse streamer plays.

:class:`EmulatedNV` holds the state the three protocol servers share: the microwave
source's settings (:class:`MicrowaveState`, written by the SCPI server), the counter
tasks (:class:`CounterTask`, written by the gRPC server) and the wiring between the pulse
streamer's outputs and the counter card's terminals (:class:`Wiring`). When the pulse
streamer plays a sequence ``n_runs`` times, :meth:`EmulatedNV.play` decodes one run:

- digital channels (1 ns steps) become windows; the laser, microwave switch and gate lines
  are found through the wiring; the microwave phase is ``atan2(Q, I)`` of the two analog
  outputs while the switch is on (0 when the source's IQ modulation is off);
- the microwave windows before the first gate window are the signal shot: each becomes an
  ``mw`` pulse whose rotation is ``2 pi f_R duration`` (f_R the nominal Rabi frequency at
  the calibrated power; the source's power scales it), a shot with one pulse is a Rabi
  shot, more pulses a ``custom`` coherence shot (:mod:`mracq.sim.nv`), or, when they are
  not a pi/2 - pi ... - pi/2 frame, coherent rotations without dephasing;
- :meth:`mracq.sim.nv.SimulatedNV.run` draws the signal, bright and dark photon counts,
  exactly as the in-process simulator does (same seed, same counts). Like it, the
  references are ideal: the gate line opened first in a run counts the signal, the second
  the ms = 0 reference, the third the ms = -1 reference (the dark reference's pi pulse is
  not simulated);
- each running counter task whose pause trigger is a gate line's terminal and whose input
  is the photon terminal adds that line's counts. Without any laser light nothing is
  counted.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from mracq.pulses import Delay, Pulse, PulseProgram, evolution_timing
from mracq.sim.clock import VirtualClock
from mracq.sim.filter_function import chi as chi_of
from mracq.sim.filter_function import equally_spaced
from mracq.sim.nv import DephasingModel, Drive, Readout, SimulatedNV, bloch_population

log = logging.getLogger(__name__)

#: Default wiring: Pulse Streamer channel -> role, and the counter card's terminals.
DEFAULT_CHANNELS = {"laser": 0, "mw": 1, "gate": 2, "gate_bright": 3, "gate_dark": 4,
                    "rf": 5, "mw_i": "A0", "mw_q": "A1"}
DEFAULT_DEVICE = "Dev1"
GATE_ROLES = ("gate", "gate_bright", "gate_dark")


@dataclass
class Wiring:
    """Cables of the emulated rig.

    Parameters
    ----------
    channels : dict
        Role -> Pulse Streamer output: digital ``0``-``7`` for ``laser``, ``mw`` (switch),
        ``gate``, ``gate_bright``, ``gate_dark``, ``rf``; ``"A0"``/``"A1"`` for ``mw_i``,
        ``mw_q``.
    device : str
        NI device name; gate line k goes to ``/DEV/PFI(k+1)``, the photon detector to
        ``/DEV/PFI0``.
    """

    channels: dict = field(default_factory=lambda: dict(DEFAULT_CHANNELS))
    device: str = DEFAULT_DEVICE

    @property
    def photon_terminal(self) -> str:
        return f"/{self.device}/PFI0"

    def gate_terminal(self, role: str) -> str:
        return f"/{self.device}/PFI{GATE_ROLES.index(role) + 1}"

    def counter(self, role: str) -> str:
        return f"{self.device}/ctr{GATE_ROLES.index(role)}"


@dataclass
class MicrowaveState:
    """Settings of the emulated microwave source (Hz, dBm, bools)."""

    frequency: float = 1.0e9
    power_dbm: float = -30.0
    output: bool = False
    iq: bool = False
    pulse_mod: bool = False
    fm_on: bool = False        # frequency modulation (MRFM adiabatic inversion)
    fm_deviation: float = 0.0  # Hz
    fm_rate: float = 0.0       # Hz, internal modulation frequency


@dataclass
class CounterTask:
    """An emulated DAQmx counter task (count edges, pause trigger on a gate line)."""

    name: str
    counter: str = ""
    input_terminal: str = ""
    pause_source: str = ""
    pause_when_low: bool = True
    paused_by_level: bool = False
    running: bool = False
    count: int = 0


class GridDephasingModel(DephasingModel):
    """:class:`~mracq.sim.nv.DephasingModel` for timings played on a 1 ns grid.

    Rounding to the grid moves each pi pulse by at most half a step; when every pi centre
    is within that of the CPMG-n times ``(k - 1/2) t / n``, chi is the closed form of
    CPMG-n (the jitter changes the switching function over < 1 ns per pulse), otherwise
    the general timing is integrated as in-process.
    """

    grid: float = 1e-9

    def coherence(self, program) -> float:
        cache = self.__dict__.setdefault("_grid_cache", {})
        if program not in cache:
            t, centres = evolution_timing(program)
            n = len(centres)
            if n and np.all(np.abs(centres - equally_spaced(t, n)) <= 0.5 * self.grid + 1e-15):
                c = float(np.exp(-chi_of(self.spectrum, np.array([t]), None, n=n)[0]))
            else:
                c = super().coherence(program)
            if len(cache) > 4096:
                cache.clear()
            cache[program] = c
        return cache[program]


class CoherentModel:
    """Microwave pulses that are not a pi/2 - pi ... - pi/2 frame: rotations and free
    precession at the detuning, without dephasing (the emulator never refuses a sequence
    a real NV would react to)."""

    uses_drive = True

    def handles(self, program) -> bool:
        return program.metadata.get("sequence") == "coherent"

    def population(self, program, drive: Drive | None = None) -> float:
        return bloch_population(program.pulses_on("mw"), drive or Drive())


def norm_terminal(term: str) -> str:
    """``"Dev1/PFI1"``, ``"/dev1/pfi1"`` -> ``"/Dev1/PFI1"`` (case-insensitive compare)."""
    t = term.strip()
    return ("/" + t.lstrip("/")).lower()


@dataclass
class Decoded:
    """One run of a streamed sequence: windows per digital channel (ns), analog at mw."""

    duration_ns: int
    windows: dict  # channel -> list of (start_ns, end_ns)
    mw_phase: list  # phase (rad) of each window of the mw channel


def decode(steps, channels: dict, iq_on: bool) -> Decoded:
    """Windows of every digital channel in one run of ``steps``.

    Parameters
    ----------
    steps : iterable of (int, int, int, int)
        Pulse Streamer steps: duration (ns), digital mask, A0 and A1 (int16, 0x7fff = 1 V).
    channels : dict
        Role -> output (see :class:`Wiring`).
    iq_on : bool
        The source's IQ modulation: off, the analog outputs do not change the phase.
    """
    windows: dict[int, list] = {k: [] for k in range(8)}
    open_at: dict[int, int] = {}
    mw_ch = channels.get("mw")
    ai = {"A0": 0, "A1": 1}
    i_idx, q_idx = ai.get(str(channels.get("mw_i"))), ai.get(str(channels.get("mw_q")))
    phases = []
    t = 0
    prev, last_analog = 0, (0, 0)
    for dur, mask, a0, a1 in steps:
        dur, mask = int(dur), int(mask)
        if dur <= 0:
            continue
        for k in range(8):
            on, was = (mask >> k) & 1, (prev >> k) & 1
            if k == mw_ch and on and was and (a0, a1) != last_analog:  # a phase step
                windows[k].append((open_at.pop(k), t))
                was = 0
            if on and not was:
                open_at[k] = t
                if k == mw_ch:
                    analog = (a0 / 0x7FFF, a1 / 0x7FFF)
                    if iq_on and i_idx is not None and q_idx is not None:
                        phases.append(math.atan2(analog[q_idx], analog[i_idx]) % (2 * math.pi))
                    else:
                        phases.append(0.0)
            elif was and not on:
                windows[k].append((open_at.pop(k), t))
        prev, last_analog = mask, (a0, a1)
        t += dur
    for k, t0 in open_at.items():
        windows[k].append((t0, t))
    return Decoded(t, windows, phases)


class EmulatedNV:
    """The shared state of one emulated NV rig (thread-safe).

    Parameters
    ----------
    sim : dict
        The ``[sim]`` table of a lab configuration: ``seed``, ``bright_rate``,
        ``contrast``, ``field`` (T); the same values give the in-process simulator's counts.
    wiring : Wiring, optional
    rabi_frequency : float
        Nominal Rabi frequency at the calibrated power (0 dBm), Hz.
    """

    def __init__(self, sim: dict | None = None, wiring: Wiring | None = None,
                 rabi_frequency: float = Drive.rabi_frequency):
        from mracq.sim.spectra import default_nv_spectrum

        sim = dict(sim or {})
        self.sim = sim
        self.wiring = wiring or Wiring()
        self.rabi_frequency = float(rabi_frequency)
        field_t = float(sim.get("field", 0.05))
        readout = Readout(bright_rate=sim.get("bright_rate", 0.03),
                          contrast=sim.get("contrast", 0.3))
        self.nv = SimulatedNV([GridDephasingModel(default_nv_spectrum(field_t)),
                               CoherentModel()],
                              readout,
                              VirtualClock(), np.random.default_rng(sim.get("seed")),
                              field=field_t)
        self.mw = MicrowaveState()
        self.tasks: dict[str, CounterTask] = {}
        self.lock = threading.RLock()
        self.runs_played = 0

    # ---------------------------------------------------------------- physics
    def signal_program(self, dec: Decoded) -> PulseProgram | None:
        """The microwave part before the first gate window as a program (None: no light)."""
        ch = self.wiring.channels
        if not dec.windows.get(ch.get("laser"), []):
            return None
        gates = [w[0] for role in GATE_ROLES if role in ch for w in dec.windows[ch[role]][:1]]
        first_gate = min(gates) if gates else dec.duration_ns
        elements, t = [], 0
        mw = list(zip(dec.windows.get(ch.get("mw"), []), dec.mw_phase, strict=False))
        n = 0
        for (t0, t1), phase in mw:
            if t0 >= first_gate:
                break
            dur = (t1 - t0) * 1e-9
            rotation = 2 * math.pi * self.rabi_frequency * dur
            if t0 > t:
                elements.append(Delay((t0 - t) * 1e-9))
            elements.append(Pulse("mw", dur, phase, rotation))
            t, n = t1, n + 1
        if n <= 1:  # a Rabi pulse's angle follows from the drive
            elements = [e if isinstance(e, Delay) else Pulse("mw", e.duration, e.phase)
                        for e in elements]
            return PulseProgram(tuple(elements), {"sequence": "rabi"})
        program = PulseProgram(tuple(elements), {"sequence": "custom"})
        try:
            evolution_timing(program)
        except ValueError:  # not pi/2 - pi ... - pi/2: coherent rotations only
            return PulseProgram(tuple(elements), {"sequence": "coherent"})
        return program

    def play(self, steps, n_runs: int) -> dict:
        """Play ``steps`` ``n_runs`` times; count photons into the running counter tasks.

        Returns the counts per gate role (for logs and tests).
        """
        with self.lock:
            mw = self.mw
            dec = decode(steps, self.wiring.channels, mw.iq)
            program = self.signal_program(dec)
            self.runs_played += 1
            if program is None or n_runs <= 0:
                return {}
            drive = self.nv.drive(mw.frequency, mw.power_dbm, mw.output)
            c = self.nv.run(program, int(n_runs), drive)
            ch = self.wiring.channels
            order = sorted((dec.windows[ch[r]][0][0], r) for r in GATE_ROLES
                           if r in ch and dec.windows.get(ch[r]))
            by_line = {}
            for (_, role), n in zip(order, (c.signal, c.bright, c.dark), strict=False):
                by_line[role] = int(n)
            photons = norm_terminal(self.wiring.photon_terminal)
            for task in self.tasks.values():
                if not task.running or norm_terminal(task.input_terminal) != photons:
                    continue
                for role, n in by_line.items():
                    if norm_terminal(task.pause_source) == norm_terminal(
                            self.wiring.gate_terminal(role)) and task.paused_by_level \
                            and task.pause_when_low:
                        task.count += n
            log.debug("played %d runs of %d ns: %s", n_runs, dec.duration_ns, by_line)
            return by_line
