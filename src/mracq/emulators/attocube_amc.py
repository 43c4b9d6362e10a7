"""attocube AMC100/AMC300 closed-loop positioner emulator: JSON-RPC 2.0 over raw TCP.

Protocol (attocube AMC100 programming manual; the vendor's MIT Python client ``AMC.py``,
``ACSDevice.sendRequest``): one JSON object per CRLF-terminated line each way, port 9090
on the real controller (any free port here). A request is ``{"jsonrpc": "2.0", "method":
M, "params": [...], "id": N, "api": 2}``; the answer ``{"jsonrpc": "2.0", "result":
[errNo, value...], "id": N}``, errNo 0 meaning success; an unknown method gets a JSON-RPC
error object (code -32601). Positions are in nm; axes are 0, 1, 2.

==============================================  =========================  =============
method                                          params                     result
==============================================  =========================  =============
``com.attocube.system.getDeviceType``           []                         [0, "AMC100"]
``com.attocube.system.errorNumberToString``     [language, errNo]          [0, text]
``com.attocube.amc.control.setControlOutput``   [axis, bool]               [0]
``com.attocube.amc.control.getControlOutput``   [axis]                     [0, bool]
``com.attocube.amc.control.setControlMove``     [axis, bool]               [0]
``com.attocube.amc.control.getControlMove``     [axis]                     [0, bool]
``com.attocube.amc.move.setControlTargetPosition``  [axis, nm]             [0]
``com.attocube.amc.move.getControlTargetPosition``  [axis]                 [0, nm]
``com.attocube.amc.move.getPosition``           [axis]                     [0, nm]
``com.attocube.amc.status.getStatusMoving``     [axis]                     [0, 0 idle/1 moving]
``com.attocube.amc.status.getStatusTargetRange``  [axis]                   [0, bool]
``com.attocube.amc.status.getStatusConnected``  [axis]                     [0, bool]
==============================================  =========================  =============

The error numbers below are this emulator's (the driver asks ``errorNumberToString`` for
the text, as the vendor's client does): 1 controller fault (the ``error`` fault), 2 move
rejected (output or closed loop off), 3 target out of range, 4 invalid axis.
"""

from __future__ import annotations

import json

from mracq.emulators.lineserver import LineServer
from mracq.emulators.mrfm_model import EmulatedMRFM

P = "com.attocube."
ERRORS = {0: "No error", 1: "Controller fault: positioner drive error",
          2: "Move rejected: output or closed-loop control not enabled",
          3: "Target position out of range", 4: "Invalid axis"}
TRAVEL = (-5e-3, 5e-3)  # m


class AttocubeAMC(LineServer):
    """One emulated AMC100 on ``host:port``."""

    terminator = b"\r\n"
    name = "scanner (attocube AMC100)"

    def __init__(self, model: EmulatedMRFM, host="127.0.0.1", port=0, command_log=None):
        super().__init__(host, port, command_log)
        self.model = model
        self.power_on_reset()

    def power_on_reset(self) -> None:
        self.output = [False] * 3
        self.control_move = [False] * 3

    def reply(self, line: str) -> bytes | None:
        try:
            req = json.loads(line)
            method, params, rid = req["method"], list(req.get("params") or []), req.get("id")
        except (ValueError, KeyError, TypeError):
            return self._send({"jsonrpc": "2.0", "error": {"code": -32700,
                                                          "message": "Parse error"}, "id": None})
        try:
            result = self.call(method, params)
        except KeyError:
            return self._send({"jsonrpc": "2.0", "error": {"code": -32601, "message":
                               f"Method not found: {method}"}, "id": rid})
        return self._send({"jsonrpc": "2.0", "result": result, "id": rid})

    def _send(self, obj) -> bytes:
        return (json.dumps(obj) + "\r\n").encode()

    def call(self, method: str, params: list) -> list:
        m = self.model
        if method == P + "system.getDeviceType":
            return [0, "AMC100"]
        if method == P + "system.errorNumberToString":
            return [0, ERRORS.get(int(params[1]), f"Unknown error {params[1]}")]
        if self.faults.take("error") is not None:
            return [1]
        axis = int(params[0]) if params else -1
        known = {P + "amc.control.setControlOutput", P + "amc.control.getControlOutput",
                 P + "amc.control.setControlMove", P + "amc.control.getControlMove",
                 P + "amc.move.setControlTargetPosition",
                 P + "amc.move.getControlTargetPosition", P + "amc.move.getPosition",
                 P + "amc.status.getStatusMoving", P + "amc.status.getStatusTargetRange",
                 P + "amc.status.getStatusConnected"}
        if method not in known:
            raise KeyError(method)
        if not 0 <= axis <= 2:
            return [4]
        name = method.rsplit(".", 1)[1]
        if name == "setControlOutput":
            self.output[axis] = bool(params[1])
            return [0]
        if name == "getControlOutput":
            return [0, self.output[axis]]
        if name == "setControlMove":
            if params[1] and not self.output[axis]:
                return [2]
            self.control_move[axis] = bool(params[1])
            if not params[1]:
                m.halt(axis)
            return [0]
        if name == "getControlMove":
            return [0, self.control_move[axis]]
        if name == "setControlTargetPosition":
            target = float(params[1]) * 1e-9
            if not TRAVEL[0] <= target <= TRAVEL[1]:
                return [3]
            if not (self.output[axis] and self.control_move[axis]):
                return [2]
            if self.faults.take("nosettle") is not None:
                m.stall_next = True
            m.move(axis, target)
            return [0]
        if name == "getControlTargetPosition":
            return [0, m.axes[axis].target * 1e9]
        if name == "getPosition":
            return [0, m.position(axis) * 1e9]
        if name == "getStatusMoving":
            return [0, int(m.moving(axis))]
        if name == "getStatusTargetRange":
            return [0, not m.moving(axis)]
        return [0, True]  # getStatusConnected
