"""SRS SR860/SR865 lock-in amplifier: force variances from the captured X/Y stream.

The lock-in demodulates the resonator's deflection at its frequency; the in-phase (X) and
quadrature (Y) outputs, in V, are the resonator force times ``volts_per_newton`` (the
lab's calibration of the detection chain). One measurement of ``t_m`` s captures
``n = round(t_m x rate)`` X/Y samples into the instrument's buffer and reads them back in
binary; the force variances are ``<X^2> / g^2`` (spin + thermal, in-phase) and
``<Y^2> / g^2`` (thermal, out-of-phase) in N^2 (seed App. A): the demodulated force has
zero mean, so output offsets (``COFA``) must stay off. Capture faster than 1 / tau_m (the
spin correlation time): then the stream carries the T_m / tau_m independent samples the
noise model counts (at 38 Hz with tau_m = 20 ms it carries 25 % fewer).

Commands (SR860 manual, "Remote Programming"; raw TCP on the telnet port, LF lines):
``*IDN?``, ``*CLS``, ``*ESR?`` (bit 2 query, 4 execution, 5 command error; read after
every setting), ``SCAL i`` (sensitivity 1 V .. 1 nV, 1-0.5-0.2 steps), ``OFLT i`` (time
constant 1 us .. 30 ks, 1-3 steps), ``CAPTURECFG 1`` (XY), ``CAPTURERATEMAX?``,
``CAPTURERATE n`` (max / 2^n), ``CAPTURELEN kB``, ``CAPTURESTART 0,0`` (one shot,
immediate), ``CAPTUREBYTES?``, ``CAPTURESTOP``, ``CAPTUREGET? i,j`` (kB i .. i+j-1, j <= 64,
IEEE 488.2 block ``#<n><len>`` of little-endian float32, no terminator).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from mracq.devices.drivers.base import InstrumentError, Reconnecting
from mracq.devices.drivers.socketline import GarbledReply, LineSocket

log = logging.getLogger(__name__)

SENSITIVITIES = [m * 10.0 ** -k for k in range(10) for m in (1.0, 0.5, 0.2)][:28]  # V
TIME_CONSTANTS = [m * 10.0 ** (k - 6) for k in range(11) for m in (1.0, 3.0)]      # s


def table_index(table, value: float, what: str, unit: str) -> int:
    """Index of ``value`` in an instrument's table (relative match 1e-6), else ValueError."""
    for i, v in enumerate(table):
        if abs(v - value) <= 1e-6 * v:
            return i
    raise ValueError(f"{what} = {value:g} {unit} is not a setting of the SR860; allowed: "
                     f"{', '.join(f'{v:g}' for v in table)} {unit}")


class SR860(Reconnecting):
    """An SR860/SR865 over raw TCP.

    Parameters
    ----------
    address : str
        ``host:port`` of the telnet port (23 on the instrument).
    sensitivity : float
        Full scale, V (a setting of the instrument: 1, 0.5, 0.2, 0.1, ... 1e-9).
    time_constant : float
        Output filter time constant, s (1e-6, 3e-6, ... 3e4).
    capture_rate : float
        Highest capture rate wanted, Hz: the instrument's rate max / 2^n at or below it.
    volts_per_newton : float
        Calibration of the detection chain, V/N.
    timeout : float
        Per-command timeout, s.
    """

    def __init__(self, address: str, *, sensitivity: float = 0.1,
                 time_constant: float = 3e-3, capture_rate: float = 50.0,
                 volts_per_newton: float = 1e14, timeout: float = 5.0, name: str = "readout"):
        super().__init__()
        self.address, self.timeout = address, float(timeout)
        self.scal = table_index(SENSITIVITIES, float(sensitivity), "sensitivity", "V")
        self.oflt = table_index(TIME_CONSTANTS, float(time_constant), "time_constant", "s")
        self.sensitivity = SENSITIVITIES[self.scal]
        self.capture_rate, self.gain = float(capture_rate), float(volts_per_newton)
        self.label = f"{name} (srs_sr860 at {address})"
        self.rate = float("nan")
        _ = self.client

    def _open(self):
        c = LineSocket(self.address, self.timeout, b"\n")
        try:
            c.write("*IDN?")
            for _ in range(4):  # the telnet port may greet first
                idn = c.readline().strip()
                if idn.startswith("Stanford_Research_Systems"):
                    break
            if "SR86" not in idn:
                raise InstrumentError(self.label, "*IDN?", f"answered {idn!r}, not an "
                                      "SR860/SR865 (check driver and address)")
            c.write("*CLS")
            for cmd in (f"SCAL {self.scal}", f"OFLT {self.oflt}", "CAPTURECFG 1"):
                self._setting(c, cmd)
            rmax = self._number(c, "CAPTURERATEMAX?")
            n = 0
            while rmax / 2**n > self.capture_rate and n < 20:
                n += 1
            self._setting(c, f"CAPTURERATE {n}")
            self.rate = self._number(c, "CAPTURERATE?")
        except Exception:
            c.close()
            raise
        log.info("%s: %s, capture rate %.4g Hz", self.label, idn, self.rate)
        return c

    def _close(self, client) -> None:
        client.close()

    def _number(self, c, query: str) -> float:
        ans = c.query(query)
        try:
            return float(ans)
        except ValueError:
            raise GarbledReply(f"garbled reply {ans!r} to {query}") from None

    def _setting(self, c, cmd: str) -> None:
        c.write(cmd)
        esr = int(self._number(c, "*ESR?"))
        if esr & (4 | 16 | 32):
            kind = "command error" if esr & 32 else ("execution error" if esr & 16
                                                     else "query error")
            raise InstrumentError(self.label, cmd, f"{kind} (*ESR? {esr})")

    def capture(self, t_m: float) -> np.ndarray:
        """X and Y (V), shape (2, n), over ``t_m`` s of the capture buffer."""
        return self.call(f"capture {t_m:g} s", lambda c: self._capture(c, float(t_m)),
                         idempotent=True)

    def _capture(self, c, t_m: float) -> np.ndarray:
        n = max(3, int(round(t_m * self.rate)))
        nbytes = 8 * n
        kb = math.ceil(nbytes / 1024)
        if kb > 4096:
            raise InstrumentError(self.label, f"capture {t_m:g} s", f"{n} samples at "
                                  f"{self.rate:.4g} Hz exceed the 4 MB buffer; lower "
                                  "capture_rate")
        self._setting(c, f"CAPTURELEN {kb}")
        self._setting(c, "CAPTURESTART 0,0")
        deadline = time.monotonic() + 1.5 * t_m + self.timeout
        delay = 0.0005
        while True:
            have = int(self._number(c, "CAPTUREBYTES?"))
            if have >= nbytes:
                break
            if time.monotonic() > deadline:
                raise InstrumentError(self.label, "CAPTUREBYTES?", f"capture of {t_m:g} s "
                                      f"holds {have} of {nbytes} bytes after "
                                      f"{1.5 * t_m + self.timeout:g} s")
            time.sleep(delay)
            delay = min(2 * delay, 0.05)
        self._setting(c, "CAPTURESTOP")
        vals = []
        for start in range(0, kb, 64):
            j = min(64, kb - start)
            c.write(f"CAPTUREGET? {start},{j}")
            head = c.read_exact(2)
            if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
                raise GarbledReply(f"garbled reply {head!r}: not a binary block")
            size = int(c.read_exact(int(head[1:2])))
            vals.append(np.frombuffer(c.read_exact(size), "<f4"))
        xy = np.concatenate(vals)[: 2 * n].astype(float).reshape(n, 2).T
        if not np.all(np.isfinite(xy)):
            raise GarbledReply("non-finite samples in the capture buffer")
        return xy

    def force_variances(self, t_m: float) -> tuple[float, float]:
        """In-phase and out-of-phase force variances (N^2) over ``t_m`` s."""
        x, y = self.capture(t_m)
        if max(np.max(np.abs(x)), np.max(np.abs(y))) > self.sensitivity:
            raise InstrumentError(self.label, f"capture {t_m:g} s", "overload: X or Y "
                                  f"beyond the {self.sensitivity:g} V full scale; raise "
                                  "sensitivity")
        # mean squares, not sample variances: the demodulated force noise has zero mean, and
        # removing a sample mean from a stream correlated over tau_m (many samples per
        # tau_m) biases the variance low by ~tau_m / T_m (6 % of a point's noise here)
        return float(np.mean(x**2)) / self.gain**2, float(np.mean(y**2)) / self.gain**2
