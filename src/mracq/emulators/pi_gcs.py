"""PI E-727 (GCS 2.0) closed-loop piezo controller emulator: ASCII over TCP.

Protocol (PI GCS 2.0 commands manual MS163E; error codes as in PI's ``PI_GCS2``
headers): port 50000 on the real controller (any free port here), one command per LF line;
a query answers ``<axis>=<value>`` lines, every line but the last ending in ``" \\n"``
(space + LF). Positions are in um; axes "1", "2", "3".

=================  ======================================  ================================
command            answer                                  meaning
=================  ======================================  ================================
``*IDN?``          ``Physik Instrumente,E-727,...``         identification
``CSV?``           ``2``                                   GCS syntax version
``SAI?``           ``1 \\n2 \\n3``                          axis identifiers
``SVO 1 1``        (none)                                  servo (closed loop) on/off
``SVO? 1``         ``1=1``                                 servo state
``MOV 1 12.5``     (none)                                  absolute closed-loop move, um
``MOV? 1``         ``1=12.500000``                          target
``POS? 1``         ``1=12.499980``                          current position (sensor)
``ONT? 1``         ``1=1``                                 on target (settled)
``ERR?``           ``0``                                   last error code, then cleared
=================  ======================================  ================================

Error codes: 0 no error, 1 parameter syntax error, 2 unknown command, 5 move with servo
off, 7 position out of limits, 15 invalid axis identifier, 10 controller stopped (the
``error`` fault).
"""

from __future__ import annotations

from mracq.emulators.lineserver import LineServer
from mracq.emulators.mrfm_model import EmulatedMRFM

AXES = ("1", "2", "3")
LIMITS_UM = (-100.0, 100.0)


class PIGCS(LineServer):
    """One emulated E-727 on ``host:port``."""

    name = "scanner (PI E-727)"

    def __init__(self, model: EmulatedMRFM, host="127.0.0.1", port=0, command_log=None):
        super().__init__(host, port, command_log)
        self.model = model
        self.power_on_reset()

    def power_on_reset(self) -> None:
        self.servo = {a: False for a in AXES}
        self.error = 0

    def _err(self, code: int) -> None:
        if self.error == 0:
            self.error = code

    def reply(self, line: str) -> bytes | None:
        parts = line.split()
        cmd, args = parts[0], parts[1:]
        if self.faults.take("error") is not None and cmd != "ERR?":
            self._err(10)
        m = self.model
        if cmd == "*IDN?":
            return b"(c)2026 Physik Instrumente (PI) GmbH & Co. KG, E-727, 0000000000, " \
                   b"emulated\n"
        if cmd == "CSV?":
            return b"2\n"
        if cmd == "SAI?":
            return (" \n".join(AXES) + "\n").encode()
        if cmd == "ERR?":
            code, self.error = self.error, 0
            return f"{code}\n".encode()
        if cmd in ("SVO", "MOV"):
            if len(args) % 2 or not args:
                self._err(1)
                return None
            pairs = list(zip(args[::2], args[1::2], strict=True))
            for a, _ in pairs:
                if a not in AXES:
                    self._err(15)
                    return None
            try:
                vals = [float(v) for _, v in pairs]
            except ValueError:
                self._err(1)
                return None
            for (a, _), v in zip(pairs, vals, strict=True):
                if cmd == "SVO":
                    self.servo[a] = bool(v)
                    if not v:
                        m.halt(AXES.index(a))
                    continue
                if not self.servo[a]:
                    self._err(5)
                    return None
                if not LIMITS_UM[0] <= v <= LIMITS_UM[1]:
                    self._err(7)
                    return None
            if cmd == "MOV":
                for (a, _), v in zip(pairs, vals, strict=True):
                    if self.faults.take("nosettle") is not None:
                        m.stall_next = True
                    m.move(AXES.index(a), v * 1e-6)
            return None
        if cmd in ("SVO?", "MOV?", "POS?", "ONT?"):
            axes = args or list(AXES)
            if any(a not in AXES for a in axes):
                self._err(15)
                return None
            lines = []
            for a in axes:
                i = AXES.index(a)
                if cmd == "SVO?":
                    v = str(int(self.servo[a]))
                elif cmd == "MOV?":
                    v = f"{m.axes[i].target * 1e6:.6f}"
                elif cmd == "POS?":
                    v = f"{m.position(i) * 1e6:.6f}"
                else:
                    v = str(int(not m.moving(i)))
                lines.append(f"{a}={v}")
            return (" \n".join(lines) + "\n").encode()
        self._err(2)
        return None
