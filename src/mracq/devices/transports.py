"""Transports behind the NV devices: the in-process simulator, or SCPI through pyvisa.

A device never knows which one it talks to (style.md, Qudi's interface/hardware split).
Each transport implements the small protocol its device needs:

- microwave: ``get/set_frequency`` (Hz), ``get/set_power_dbm`` (dBm), ``get/set_output``;
- laser: ``get/set_power`` (W), ``get/set_output``;
- sequencer: ``run(program, shots) -> Counts`` (signal, bright, dark counts).

The VISA transports speak a generic SCPI dialect (below); concrete vendor drivers
(R&S SMB100A, Swabian Pulse Streamer, ...) subclass them and override the commands.
After every setting they read the instrument's error queue (``SYST:ERR?`` until it answers
code 0) and read the value back: a refused or altered setting raises
:class:`InstrumentError` at the write that caused it, naming the instrument, the command
and the instrument's message (an unread error would otherwise shift every later answer).
"""

from __future__ import annotations

import json
import logging
from importlib import resources

from mracq.sim.nv import Counts, SimulatedNV

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- simulated
class SimMicrowave:
    """State of a simulated microwave source (frequency Hz, power dBm, output)."""

    def __init__(self, frequency: float = 1.469e9, power_dbm: float = 0.0, output: bool = False):
        self.frequency, self.power_dbm, self.output = float(frequency), float(power_dbm), output

    def get_frequency(self):
        return self.frequency

    def set_frequency(self, f):
        self.frequency = float(f)

    def get_power_dbm(self):
        return self.power_dbm

    def set_power_dbm(self, p):
        self.power_dbm = float(p)

    def get_output(self):
        return self.output

    def set_output(self, on):
        self.output = bool(on)


class SimLaser:
    """State of a simulated laser (power W, output)."""

    def __init__(self, power: float = 0.02, output: bool = False):
        self.power, self.output = float(power), output

    def get_power(self):
        return self.power

    def set_power(self, p):
        self.power = float(p)

    def get_output(self):
        return self.output

    def set_output(self, on):
        self.output = bool(on)


class SimSequencer:
    """Pulse sequencer + photon counter in front of a :class:`SimulatedNV`.

    The NV sees the microwave source's frequency, power and output (any microwave
    transport: a real source can drive a simulated NV in a dry run); with the laser off
    nothing is initialised or read out and the counter sees only dark counts.
    """

    def __init__(self, nv: SimulatedNV, microwave, laser,
                 dark_count_rate: float = 1e-5):
        self.nv, self.microwave, self.laser = nv, microwave, laser
        self.dark_count_rate = float(dark_count_rate)

    @property
    def clock(self):
        return self.nv.clock

    def time_per_shot(self, program) -> float:
        """Hardware time of one shot of ``program`` with its two reference shots, s."""
        return program.duration + 2 * self.nv.readout.reference_duration

    def run(self, program, shots: int) -> Counts:
        mw = self.microwave
        drive = self.nv.drive(mw.get_frequency(), mw.get_power_dbm(), mw.get_output())
        if not self.laser.get_output():
            shots = int(shots)
            dur = shots * (program.duration + 2 * self.nv.readout.reference_duration)
            self.nv.clock.advance(dur)
            lam = shots * self.dark_count_rate
            r = self.nv.rng
            return Counts(int(r.poisson(lam)), int(r.poisson(lam)), int(r.poisson(lam)), shots,
                          float("nan"), dur)
        return self.nv.run(program, shots, drive)


# --------------------------------------------------------------------------- VISA
def sim_yaml_path() -> str:
    """Path of the packaged pyvisa-sim instrument file (``mracq/data/visa_sim.yaml``)."""
    return str(resources.files("mracq") / "data" / "visa_sim.yaml")


def visa_library(resource: str, library: str | None = None) -> tuple[str, str]:
    """(resource, pyvisa ResourceManager argument) for a resource and a configured library.

    ``library`` (the lab config's ``visa_library``) wins over a suffix of ``resource``
    (``...::INSTR@sim``, ``...::INSTR@py``). ``"@sim"`` means the packaged instrument file
    (:func:`sim_yaml_path`); a path of a pyvisa-sim YAML file (with or without pyvisa's own
    ``@sim`` suffix) selects pyvisa-sim with that file; ``"@py"``, ``"@ivi"`` pass through;
    nothing: pyvisa's default.
    """
    suffix = ""
    if "@" in resource.rsplit("::", 1)[-1]:
        resource, suffix = resource.rsplit("@", 1)
        suffix = "@" + suffix
    lib = library or suffix
    if lib == "@sim":
        return resource, f"{sim_yaml_path()}@sim"
    if lib.removesuffix("@sim").lower().endswith((".yaml", ".yml")):
        path = lib.removesuffix("@sim")
        return resource, (path[1:] if path.startswith("@") else path) + "@sim"
    if lib.startswith("@") or not lib:
        return resource, lib
    # a suffix without "@" in the resource string, e.g. "...::INSTR@/path/file.yaml"
    raise ValueError(f"{resource}: {lib!r} is not a VISA library (@py, @ivi, @sim or a "
                     "pyvisa-sim YAML file)")


def open_visa(resource: str, timeout: float = 5.0, *, library: str | None = None,
              options: dict | None = None):
    """Open a VISA resource.

    Parameters
    ----------
    resource : str
        VISA resource string; a suffix ``@sim``, ``@py`` or ``@<file>.yaml`` selects the
        library when ``library`` does not (:func:`visa_library`).
    timeout : float
        I/O timeout in s (unless ``options`` gives pyvisa's ``timeout`` in ms).
    library : str, optional
        The lab config's ``visa_library``.
    options : dict, optional
        The lab config's ``visa_options``: keyword arguments of pyvisa's
        ``open_resource`` (resource attributes such as ``query_delay`` in s,
        ``read_termination``, ``timeout`` in ms). Terminations default to ``"\\n"``.
    """
    import pyvisa

    resource, lib = visa_library(resource, library)
    rm = pyvisa.ResourceManager(lib) if lib else pyvisa.ResourceManager()
    kw = {"read_termination": "\n", "write_termination": "\n",
          "timeout": int(timeout * 1000), **(options or {})}
    return rm.open_resource(resource, **kw)


class InstrumentError(RuntimeError):
    """An instrument refused a command (its error queue) or did not take a value."""


class VisaTransport:
    """Base class: an open pyvisa resource with ``write`` / ``query`` / ``setting``.

    Parameters
    ----------
    resource : str
        VISA resource string (see :func:`open_visa`).
    timeout : float
        I/O timeout, s.
    library, options
        As for :func:`open_visa`.
    error_query : str or None
        SCPI error-queue query read after each setting (None: the instrument has none).
    """

    def __init__(self, resource: str, timeout: float = 5.0, *, library: str | None = None,
                 options: dict | None = None, error_query: str | None = "SYST:ERR?"):
        self.resource_name = resource
        self.error_query = error_query
        self.res = open_visa(resource, timeout, library=library, options=options)
        self.instrument = self.idn()
        log.info("opened %s: %s", resource, self.instrument)
        if self.error_query and not self._has_error_queue():
            log.warning("%s (%s) does not answer %s with an error code: settings are "
                        "checked by their readback only", resource, self.instrument,
                        self.error_query)
            self.error_query = None
        if self.error_query:
            self.read_errors()  # start from an empty queue

    def _has_error_queue(self) -> bool:
        """True if the error query answers ``<code>,<message>`` (code an integer)."""
        import pyvisa

        try:
            ans = self.res.query(self.error_query).strip()
        except pyvisa.errors.VisaIOError:
            return False
        try:
            code = int(float(ans.split(",", 1)[0]))
        except ValueError:
            return False
        if code != 0:  # an error left from before: report it once, then start empty
            log.warning("%s: error queue held %r at open", self.resource_name, ans)
        return True

    def idn(self) -> str:
        return self.res.query("*IDN?").strip()

    def read_errors(self) -> list[str]:
        """Read the error queue until it answers code 0; the messages read."""
        errors = []
        for _ in range(32):
            ans = self.res.query(self.error_query).strip()
            try:
                code = int(float(ans.split(",", 1)[0]))
            except ValueError:
                code = None  # not an error-queue answer: report it
            if code == 0:
                break
            errors.append(ans)
            if code is None:
                break
        return errors

    def setting(self, cmd: str, readback: str | None = None, expected=None,
                tolerance: float = 0.0, parse=float) -> None:
        """Send a setting, check the error queue, compare the readback.

        Parameters
        ----------
        cmd : str
            The setting command.
        readback : str, optional
            Query answering the value now in force.
        expected : optional
            What ``parse(answer)`` must equal (within ``tolerance`` for numbers).
        tolerance : float
            Absolute tolerance of the readback (the command's resolution).
        parse : callable
            Converts the readback answer.

        Raises
        ------
        InstrumentError
            The instrument put an error in its queue, or the readback differs.
        """
        self.write(cmd)
        if self.error_query:
            errors = self.read_errors()
            if errors:
                raise InstrumentError(f"{self.resource_name} ({self.instrument}) refused "
                                      f"{cmd!r}: {'; '.join(errors)}")
        if readback is not None:
            ans = self.query(readback)
            try:
                got = parse(ans)
            except ValueError:
                got = ans
            same = (abs(got - expected) <= tolerance
                    if isinstance(got, float) and isinstance(expected, (int, float))
                    else got == expected)
            if not same:
                raise InstrumentError(f"{self.resource_name} ({self.instrument}): after "
                                      f"{cmd!r}, {readback} answered {ans!r}, expected "
                                      f"{expected!r}")

    def write(self, cmd: str) -> None:
        log.debug("%s <- %s", self.resource_name, cmd)
        self.res.write(cmd)

    def query(self, cmd: str) -> str:
        ans = self.res.query(cmd).strip()
        log.debug("%s %s -> %s", self.resource_name, cmd, ans)
        return ans

    def close(self) -> None:
        self.res.close()


def _onoff(ans: str) -> bool:
    return ans.strip().upper() in ("1", "ON")


class _VisaOutput(VisaTransport):
    """SCPI ``:OUTP:STAT`` on/off (rooted long form, as R&S and Keysight sources and
    QCoDeS' RSSGS100A model take it), shared by the sources."""

    def get_output(self):
        return _onoff(self.query(":OUTP:STAT?"))

    def set_output(self, on):
        if not isinstance(on, bool):
            raise TypeError(f"output must be True or False, got {on!r}")
        self.setting(f":OUTP:STAT {'ON' if on else 'OFF'}", ":OUTP:STAT?", on, parse=_onoff)


class VisaMicrowave(_VisaOutput):
    """SCPI microwave source: ``SOUR:FREQ`` (Hz), ``SOUR:POW`` (dBm), ``:OUTP:STAT``."""

    def get_frequency(self):
        return float(self.query("SOUR:FREQ?"))

    def set_frequency(self, f):
        self.setting(f"SOUR:FREQ {float(f):.2f}", "SOUR:FREQ?", float(f), 0.011)

    def get_power_dbm(self):
        return float(self.query("SOUR:POW?"))

    def set_power_dbm(self, p):
        self.setting(f"SOUR:POW {float(p):.2f}", "SOUR:POW?", float(p), 0.011)


class VisaLaser(_VisaOutput):
    """SCPI laser: ``SOUR:POW`` (W), ``OUTP``."""

    def get_power(self):
        return float(self.query("SOUR:POW?"))

    def set_power(self, p):
        self.setting(f"SOUR:POW {float(p):.6f}", "SOUR:POW?", float(p), 1.1e-6)


class VisaSequencer(VisaTransport):
    """Generic SCPI pulse sequencer with a gated counter.

    ``SEQ:PROG <json>`` loads a program (mracq.pulses JSON), ``SEQ:SHOTS <n>``,
    ``READ?`` plays the program and answers ``signal,bright,dark`` counts.
    """

    def __init__(self, resource: str, timeout: float = 60.0, clock=None, **kwargs):
        super().__init__(resource, timeout, **kwargs)
        self.clock = clock

    def time_per_shot(self, program) -> float:
        """Hardware time of one shot, s (references are part of the loaded program)."""
        return program.duration

    def run(self, program, shots: int) -> Counts:
        self.write("SEQ:PROG " + json.dumps(program.to_dict(), separators=(",", ":")))
        self.setting(f"SEQ:SHOTS {int(shots)}")  # one error-queue read for both writes
        ans = self.query("READ?")
        try:
            s, b, d = (int(float(x)) for x in ans.split(","))
        except ValueError:
            raise RuntimeError(f"{self.resource_name}: READ? answered {ans!r}, "
                               "expected 'signal,bright,dark' counts") from None
        dur = int(shots) * program.duration
        if self.clock is not None:
            self.clock.advance(dur)
        return Counts(s, b, d, int(shots), float("nan"), dur)
