"""Closed-loop piezo positioners: attocube AMC100/300 (JSON-RPC) and PI E-727 (GCS 2.0).

The transport behind :class:`~mracq.devices.mrfm.Scanner`: ``position(axis)`` and
``move(axis, target)`` in m for the axes ``"x"``, ``"y"``, ``"z"`` (the lab's axis map
names the controller's axis of each). A move sends the target and polls the controller
until the position is within ``tolerance`` of the target and the controller reports it
settled, held for ``settle_time``; if that does not happen within ``move_timeout`` the
axis is stopped and :class:`InstrumentError` says where it stuck. The interlock and the
soft limits are the device's: nothing here decides whether a target is safe.

Protocols (written from the vendors' documents, no vendor client):

- attocube AMC: JSON-RPC 2.0 over raw TCP (port 9090), one JSON object per CRLF line;
  results ``[errNo, value...]`` in nm; ``errNo != 0`` is explained by
  ``com.attocube.system.errorNumberToString``. Methods used: ``control.setControlOutput``,
  ``control.setControlMove``, ``move.setControlTargetPosition``, ``move.getPosition``,
  ``status.getStatusMoving`` (prefix ``com.attocube.amc.``).
- PI GCS 2.0: ASCII over TCP (port 50000), ``SVO``, ``MOV`` (um), ``POS?``, ``ONT?``,
  ``ERR?`` after every command (a non-zero code raises, with PI's text for the common
  codes); multi-line answers end each line but the last in " \\n".
"""

from __future__ import annotations

import json
import logging
import time

from mracq.devices.drivers.base import InstrumentError, Reconnecting
from mracq.devices.drivers.socketline import GarbledReply, LineSocket

log = logging.getLogger(__name__)

PI_ERRORS = {1: "Parameter syntax error", 2: "Unknown command",
             5: "Unallowable move attempted on unreferenced axis, or move attempted with "
                "servo off", 7: "Position out of limits", 10: "Controller was stopped by "
             "command", 15: "Invalid axis identifier", 17: "Parameter out of range"}


class _Positioner(Reconnecting):
    unit = 1e-9  # controller unit in m
    default_axes: dict = {}

    def __init__(self, address: str, *, axes: dict | None = None, timeout: float = 5.0,
                 tolerance: float = 0.5e-9, settle_time: float = 0.0,
                 move_timeout: float = 10.0, poll: float = 0.0005, name: str = "scanner"):
        super().__init__()
        self.address, self.timeout = address, float(timeout)
        self.axes = {**self.default_axes, **(axes or {})}
        if set(self.axes) != {"x", "y", "z"}:
            raise ValueError(f"axes must map x, y, z to controller axes, got {self.axes!r}")
        self.tolerance, self.settle_time = float(tolerance), float(settle_time)
        self.move_timeout, self.poll = float(move_timeout), float(poll)
        self.label = f"{name} ({self.model} at {address})"
        _ = self.client  # connect now: a wrong address fails at session start

    def _close(self, client) -> None:
        client.close()

    # the protocol of one vendor
    def _send_target(self, c, axis, value) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, c, axis) -> tuple[float, bool]:  # pragma: no cover - abstract
        """(position in controller units, settled)."""
        raise NotImplementedError

    def _halt(self, c, axis) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # the transport protocol of the Scanner
    def position(self, axis: str) -> float:
        """Current position of ``axis`` ("x", "y", "z"), m."""
        return self.call(f"position {axis}", lambda c: self._read(c, self.axes[axis])[0],
                         idempotent=True) * self.unit

    def move(self, axis: str, target: float) -> float:
        """Closed-loop move of ``axis`` to ``target`` (m); the settled position, m."""
        ax = self.axes[axis]
        value = float(target) / self.unit
        what = f"move {axis} to {target * 1e9:.3f} nm"
        self.call(what, lambda c: self._send_target(c, ax, value), idempotent=True)
        t0 = time.monotonic()
        since = None
        delay = self.poll
        while True:
            pos, settled = self.call(what, lambda c: self._read(c, ax), idempotent=True)
            now = time.monotonic()
            if settled and abs(pos - value) * self.unit <= self.tolerance:
                since = now if since is None else since
                if now - since >= self.settle_time:
                    return pos * self.unit
            else:
                since = None
            if now - t0 > self.move_timeout:
                try:
                    self.call(f"stop {axis}", lambda c: self._halt(c, ax))
                except InstrumentError:
                    log.warning("%s: could not stop axis %s", self.label, axis)
                self._failed = True
                self.drop()  # the next plan reconnects: closed loop on again
                raise InstrumentError(
                    self.label, what, f"did not settle within {self.move_timeout:g} s: at "
                    f"{pos * self.unit * 1e9:.3f} nm ({'settled' if settled else 'moving'}), "
                    f"tolerance {self.tolerance * 1e9:g} nm; axis stopped")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class AttocubeAMC(_Positioner):
    """attocube AMC100/AMC300 (see the module docstring); positions in nm on the wire."""

    model = "attocube_amc"
    unit = 1e-9
    default_axes = {"x": 0, "y": 1, "z": 2}
    prefix = "com.attocube."

    def _open(self):
        c = LineSocket(self.address, self.timeout, b"\r\n")
        c.rid = 0
        try:
            kind = self._rpc(c, "system.getDeviceType")[0]
            if "AMC" not in str(kind):
                raise InstrumentError(self.label, "system.getDeviceType", f"answered "
                                      f"{kind!r}, not an AMC (check driver and address)")
            for ax in self.axes.values():
                self._rpc(c, "amc.control.setControlOutput", [ax, True])
                self._rpc(c, "amc.control.setControlMove", [ax, True])
        except Exception:
            c.close()
            raise
        log.info("%s: %s", self.label, kind)
        return c

    def _rpc(self, c, method: str, params=None) -> list:
        c.rid += 1
        req = {"jsonrpc": "2.0", "method": self.prefix + method, "params": params or [],
               "id": c.rid, "api": 2}
        c.write(json.dumps(req))
        line = c.readline()
        try:
            ans = json.loads(line)
        except ValueError:
            raise GarbledReply(f"garbled reply {line[:40]!r}") from None
        if not isinstance(ans, dict) or ans.get("id") != c.rid:
            raise GarbledReply(f"reply {line[:60]!r} does not answer request {c.rid}")
        if "error" in ans:
            raise InstrumentError(self.label, method, f"JSON-RPC error {ans['error']}")
        res = ans.get("result")
        if not isinstance(res, list) or not res:
            raise GarbledReply(f"result {res!r} is not [errNo, ...]")
        if res[0] != 0:
            text = "?"
            try:
                c.rid += 1
                c.write(json.dumps({"jsonrpc": "2.0", "method": self.prefix +
                                    "system.errorNumberToString", "params": [0, res[0]],
                                    "id": c.rid, "api": 2}))
                text = json.loads(c.readline())["result"][1]
            except (ValueError, KeyError, IndexError, TypeError, OSError):
                pass
            raise InstrumentError(self.label, method, f"controller error {res[0]}: {text}")
        return res[1:]

    def _send_target(self, c, axis, value):
        self._rpc(c, "amc.move.setControlTargetPosition", [axis, value])

    def _read(self, c, axis):
        pos = float(self._rpc(c, "amc.move.getPosition", [axis])[0])
        moving = int(self._rpc(c, "amc.status.getStatusMoving", [axis])[0])
        return pos, moving == 0

    def _halt(self, c, axis):
        self._rpc(c, "amc.control.setControlMove", [axis, False])


class PIGCS(_Positioner):
    """PI E-727 and other GCS 2.0 controllers (see the module docstring); um on the wire."""

    model = "pi_gcs"
    unit = 1e-6
    default_axes = {"x": "1", "y": "2", "z": "3"}

    def _open(self):
        c = LineSocket(self.address, self.timeout, b"\n")
        try:
            idn = c.query("*IDN?")
            if "E-7" not in idn and "Physik Instrumente" not in idn:
                raise InstrumentError(self.label, "*IDN?", f"answered {idn!r}, not a PI "
                                      "controller (check driver and address)")
            self._check(c, "ERR?")  # start from an empty error
            for ax in self.axes.values():
                self._cmd(c, f"SVO {ax} 1")
        except Exception:
            c.close()
            raise
        log.info("%s: %s", self.label, idn)
        return c

    def _check(self, c, command: str) -> None:
        ans = c.query("ERR?").strip()
        try:
            code = int(ans)
        except ValueError:
            raise GarbledReply(f"garbled reply {ans!r} to ERR?") from None
        if code and command != "ERR?":
            raise InstrumentError(self.label, command, f"controller error {code}: "
                                  f"{PI_ERRORS.get(code, 'see the GCS error list')}")

    def _cmd(self, c, command: str) -> None:
        c.write(command)
        self._check(c, command)

    def _ask(self, c, command: str) -> dict:
        c.write(command)
        out = {}
        while True:
            line = c.readline()
            key, eq, value = line.strip().partition("=")
            if not eq:
                raise GarbledReply(f"garbled reply {line!r} to {command}")
            out[key] = value
            if not line.endswith(" "):
                return out

    def _send_target(self, c, axis, value):
        self._cmd(c, f"MOV {axis} {value:.6f}")

    def _read(self, c, axis):
        try:
            pos = float(self._ask(c, f"POS? {axis}")[axis])
            ont = self._ask(c, f"ONT? {axis}")[axis].strip() == "1"
        except (KeyError, ValueError):
            raise GarbledReply(f"no position of axis {axis}") from None
        return pos, ont

    def _halt(self, c, axis):
        self._cmd(c, f"SVO {axis} 0")
