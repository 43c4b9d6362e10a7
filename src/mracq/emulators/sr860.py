"""SRS SR860 lock-in amplifier emulator: its SCPI-like commands over raw TCP.

Protocol (SR860 user manual rev. 1.8, "Remote Programming"; the vendor's MIT client
``srsinst.sr860`` talks to it unchanged): one command per LF line, arguments separated by
commas, case-insensitive; the telnet port (23 on the instrument, any free port here) sends
a greeting line on connect, which ``srsinst`` reads first.

=======================  ===================================================================
command                  meaning
=======================  ===================================================================
``*IDN?``                ``Stanford_Research_Systems,SR860,...``
``*CLS``, ``*ESR?``      clear / read the standard event status (bit 4 execution error,
                         bit 5 command error)
``SCAL i``, ``SCAL?``    sensitivity index 0 (1 V) .. 27 (1 nV), 1-0.5-0.2 steps
``OFLT i``, ``OFLT?``    time constant index 0 (1 us) .. 21 (30 ks), 1-3 steps
``FREQ f``, ``FREQ?``    reference frequency, Hz
``OUTP? j``              one output: 0 X, 1 Y, 2 R, 3 theta (V, V, V, deg)
``SNAP? j,k[,l]``        2 or 3 outputs at one instant, comma separated
``CAPTURECFG n``         capture X (0), XY (1), R theta (2), XYR theta (3)
``CAPTURELEN n``         buffer length, kB (1 .. 4096)
``CAPTURERATEMAX?``      highest capture rate, Hz: 1.25 MHz / 2^n, n set by the time
                         constant (here n = ceil(log2(1.25 MHz x tau / 4)), an approximation)
``CAPTURERATE n``        rate = max / 2^n (n 0 .. 20); ``CAPTURERATE?`` answers the rate, Hz
``CAPTURESTART m,t``     start (m 0 one shot, 1 continuous; t 0 immediate)
``CAPTURESTOP``          stop
``CAPTURESTAT?``         bit 0 capturing, bit 1 triggered, bit 2 wrapped
``CAPTUREBYTES?``        bytes captured; ``CAPTUREPROG?`` in kB
``CAPTUREGET? i,j``      IEEE 488.2 block ``#<n><len><bytes>`` of kB i .. i+j-1 (j <= 64),
                         little-endian float32 samples, no terminator after the block
``CAPTUREVAL? i``        sample i as text
=======================  ===================================================================

The X/Y values are those of :class:`~mracq.emulators.mrfm_model.Capture`: the resonator's
force demodulated, in V (the model's ``volts_per_newton``). Faults: ``error`` sets the
execution-error bit of the next command, ``delay`` / ``garble`` the next reply.
"""

from __future__ import annotations

import math

import numpy as np

from mracq.emulators.lineserver import LineServer
from mracq.emulators.mrfm_model import Capture, EmulatedMRFM

IDN = "Stanford_Research_Systems,SR860,003000,v1.51-emulated"
SENSITIVITIES = [m * 10.0 ** -k for k in range(10) for m in (1.0, 0.5, 0.2)][:28]
TIME_CONSTANTS = [m * 10.0 ** (k - 6) for k in range(11) for m in (1.0, 3.0)]
MAX_RATE = 1.25e6


class CommandError(Exception):
    pass


class SR860(LineServer):
    """One emulated SR860 on ``host:port``."""

    name = "readout (SRS SR860)"
    greeting = b"SR860 lock-in amplifier (emulated)\n"

    def __init__(self, model: EmulatedMRFM, host="127.0.0.1", port=0, command_log=None):
        super().__init__(host, port, command_log)
        self.model = model
        self.power_on_reset()

    def power_on_reset(self) -> None:
        self.scal, self.oflt, self.freq = 0, 9, 1e6
        self.cfg, self.len_kb, self.rate_n = 1, 256, 0
        self.esr = 0
        self.capture: Capture | None = None

    # ---------------------------------------------------------------- helpers
    def rate_max(self) -> float:
        tc = TIME_CONSTANTS[self.oflt]
        n = max(0, math.ceil(math.log2(MAX_RATE * tc / 4))) if MAX_RATE * tc > 4 else 0
        return MAX_RATE / 2**n

    def rate(self) -> float:
        return self.rate_max() / 2**self.rate_n

    def _cols(self) -> int:
        return {0: 1, 1: 2, 2: 2, 3: 4}[self.cfg]

    def _rows(self, xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        r, th = np.hypot(x, y), np.degrees(np.arctan2(y, x))
        cols = {0: [x], 1: [x, y], 2: [r, th], 3: [x, y, r, th]}[self.cfg]
        return np.stack(cols, axis=1)

    def _sample_now(self) -> np.ndarray:
        c = Capture(self.model, 1.0, 1, 1)
        x, y = c.data(1)[0]
        return np.array([x, y, math.hypot(x, y), math.degrees(math.atan2(y, x))])

    @staticmethod
    def _int(arg: str, lo: int, hi: int) -> int:
        try:
            v = int(float(arg))
        except ValueError:
            raise CommandError from None
        if not lo <= v <= hi:
            raise CommandError
        return v

    # ---------------------------------------------------------------- protocol
    def reply(self, line: str) -> bytes | None:
        if self.faults.take("error") is not None:
            self.esr |= 16
        head, _, rest = line.strip().partition(" ")
        head = head.upper()
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        try:
            out = self.execute(head, args)
        except CommandError:
            self.esr |= 32 if not head.endswith("?") else 16
            return None
        if out is None:
            return None
        return out if isinstance(out, bytes) else (out + "\n").encode()

    def execute(self, head: str, args: list[str]):
        query = head.endswith("?")
        key = head.rstrip("?")
        if head == "*IDN?":
            return IDN
        if head == "*CLS":
            self.esr = 0
            return None
        if head == "*ESR?":
            v, self.esr = self.esr, 0
            return str(v)
        if head == "*RST":
            self.power_on_reset()
            return None
        table = {"SCAL": ("scal", 27), "OFLT": ("oflt", 21), "CAPTURECFG": ("cfg", 3),
                 "CAPTURELEN": ("len_kb", 4096)}
        if key in table:
            attr, hi = table[key]
            if query:
                return str(getattr(self, attr))
            if len(args) != 1:
                raise CommandError
            setattr(self, attr, self._int(args[0], 1 if key == "CAPTURELEN" else 0, hi))
            return None
        if key == "FREQ":
            if query:
                return f"{self.freq:.6g}"
            try:
                self.freq = float(args[0])
            except (ValueError, IndexError):
                raise CommandError from None
            return None
        if head == "OUTP?":
            idx = {"X": 0, "Y": 1, "R": 2, "THETA": 3, "TH": 3}
            a = args[0].upper() if args else ""
            j = idx[a] if a in idx else self._int(a, 0, 3)
            return f"{self._sample_now()[j]:.7e}"
        if head == "SNAP?":
            if len(args) not in (2, 3):
                raise CommandError
            s = self._sample_now()
            return ",".join(f"{s[self._int(a, 0, 3)]:.7e}" for a in args)
        if head == "CAPTURERATEMAX?":
            return f"{self.rate_max():.6g}"
        if key == "CAPTURERATE":
            if query:
                return f"{self.rate():.6g}"
            self.rate_n = self._int(args[0] if args else "", 0, 20)
            return None
        if key == "CAPTURESTART":
            n_max = self.len_kb * 1024 // (4 * self._cols())
            self.capture = Capture(self.model, self.rate(), n_max, self._cols())
            return None
        if key == "CAPTURESTOP":
            if self.capture is not None:
                self.capture.stop()
            return None
        c = self.capture
        if head == "CAPTURESTAT?":
            if c is None:
                return "0"
            return str((1 if c.running() else 0) | 2)
        if head in ("CAPTUREBYTES?", "CAPTUREPROG?"):
            nbytes = 0 if c is None else c.count() * 4 * self._cols()
            return str(nbytes if head == "CAPTUREBYTES?" else nbytes // 1024)
        if head == "CAPTUREVAL?":
            i = self._int(args[0] if args else "", 0, 2**31)
            if c is None or i >= c.count():
                raise CommandError
            return ",".join(f"{v:.7e}" for v in self._rows(c.data(i + 1))[i])
        if head == "CAPTUREGET?":
            if len(args) != 2:
                raise CommandError
            i, j = self._int(args[0], 0, 4095), self._int(args[1], 1, 64)
            if c is None or i + j > self.len_kb:
                raise CommandError
            raw = np.zeros(self.len_kb * 1024 // 4, np.float32)
            n = c.count()
            flat = self._rows(c.data(n)).astype(np.float32).ravel()
            raw[: flat.size] = flat
            block = raw[i * 256:(i + j) * 256].astype("<f4").tobytes()
            size = str(len(block)).encode()
            return b"#" + str(len(size)).encode() + size + block
        raise CommandError
