"""One emulated MRFM rig: positioner, lock-in and rf source around one shared physics model.

:func:`start_mrfm_rig` starts a closed-loop positioner (attocube AMC100 JSON-RPC or PI
E-727 GCS), an SRS SR860 lock-in and an R&S SMB100A / Keysight N51x1 rf source (SCPI, the
NV rig's emulator with FM) around one :class:`~mracq.emulators.mrfm_model.EmulatedMRFM`,
and a control port (JSON lines, loopback) answering

- ``{"cmd": "ping"}``, ``{"cmd": "state"}`` (positions in m, rf settings);
- ``{"cmd": "fault", "instrument": "scanner"|"lockin"|"rf", "kind": "delay"|"garble"|
  "error"|"down"|"nosettle", "value": s}`` (:mod:`mracq.emulators.base`; ``nosettle``:
  the positioner's next move stalls short of its target);
- ``{"cmd": "log"}`` every request line the instruments received, ``[name, text]``;
  ``{"cmd": "clear_log"}`` empties it.

:meth:`MRFMRig.lab_config` gives the lab-configuration TOML that points mracq at the rig.
"""

from __future__ import annotations

import os
import socketserver
from dataclasses import dataclass, field

from mracq.emulators.attocube_amc import AttocubeAMC
from mracq.emulators.control import close_rig, inject_fault, serve_control, start_servers
from mracq.emulators.mrfm_model import EmulatedMRFM
from mracq.emulators.pi_gcs import PIGCS
from mracq.emulators.scpi_microwave import ScpiMicrowave
from mracq.emulators.sr860 import SR860

INSTRUMENTS = ("scanner", "lockin", "rf")


def _positioner_only(instrument: str, kind: str) -> str | None:
    """A settle fault exists only on the positioner."""
    if kind == "nosettle" and instrument != "scanner":
        return "nosettle is a positioner fault"
    return None


POSITIONERS = {"attocube_amc": AttocubeAMC, "pi_gcs": PIGCS}


class LoggedScpiSource(ScpiMicrowave):
    """The SCPI source emulator with every request line in the rig's command log."""

    def __init__(self, model, host, port, kind, command_log):
        super().__init__(model, host, port, kind)
        self.name = f"rf ({kind})"
        self.log = command_log

    def handle_line(self, line: str):
        if line.strip():
            self.log.append((self.name, line.strip()))
        return super().handle_line(line)

    def power_on_reset(self) -> None:
        super().power_on_reset()
        self.nv.mw.frequency, self.nv.mw.power_dbm = 133.9e6, -30.0


@dataclass
class MRFMRig:
    model: EmulatedMRFM
    scanner: object
    lockin: SR860
    rf: LoggedScpiSource
    positioner: str
    host: str
    control_port: int = 0
    log: list = field(default_factory=list)
    _control: socketserver.TCPServer | None = None

    def handle(self, msg: dict) -> dict:
        cmd = msg.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd == "state":
            mw = self.model.mw
            return {"ok": True, "position": list(self.model.point()),
                    "moving": [self.model.moving(i) for i in range(3)],
                    "rf": {"frequency": mw.frequency, "output": mw.output,
                           "fm_on": mw.fm_on, "fm_deviation": mw.fm_deviation,
                           "fm_rate": mw.fm_rate}}
        if cmd == "log":
            return {"ok": True, "log": [list(e) for e in self.log]}
        if cmd == "clear_log":
            self.log.clear()
            return {"ok": True}
        if cmd == "fault":
            return inject_fault(self, INSTRUMENTS, msg, refuse=_positioner_only)
        return {"ok": False, "error": f"unknown cmd {cmd!r}; expected ping, state, fault, "
                "log or clear_log"}

    def lab_config(self) -> str:
        """Lab-configuration TOML that points mracq at this rig."""
        m = self.model
        lines = [
            f"# emulated MRFM rig (mracq emulate mrfm, pid {os.getpid()}, control port "
            f"{self.control_port})",
            "[instruments.scanner]",
            f'driver = "{self.positioner}"',
            f'address = "{self.host}:{self.scanner.port}"',
            "tolerance = 0.2e-9",
            "settle_time = 0.0",
            f"move_timeout = {max(2.0, 2.0 * m.time_scale):g}",
            "",
            "[instruments.readout]",
            'driver = "srs_sr860"',
            f'address = "{self.host}:{self.lockin.port}"',
            "sensitivity = 0.1",
            "time_constant = 0.003",
            "capture_rate = 500.0  # above 1 / tau_m: the stream resolves the spin noise",
            f"volts_per_newton = {m.gain:g}",
            "",
            "[instruments.rf]",
            f'driver = "{self.rf.model}"',
            f'address = "TCPIP0::{self.host}::{self.rf.port}::SOCKET"',
            "level_dbm = 0.0",
            "",
            "[sim]  # the emulated sample and noise (an in-process reference run uses them)",
            f"mrfm = {{n_xy = {m.n_xy}, voxel_size = {m.voxel_size:g}, n_z = {m.n_z}, "
            f'geometry = "{m.geometry}", phantom_seed = {m._phantom_seed}}}',
        ]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        close_rig(self, (self.scanner, self.lockin, self.rf))


def start_mrfm_rig(sim: dict | None = None, *, host: str = "127.0.0.1",
                   positioner: str = "attocube_amc", rf_model: str = "rs_smb100a",
                   scanner_port: int = 0, lockin_port: int = 0, rf_port: int = 0,
                   control_port: int = 0, state_file=None) -> MRFMRig:
    """Start an emulated MRFM rig (servers on threads of this process).

    Parameters
    ----------
    sim : dict, optional
        :class:`~mracq.emulators.mrfm_model.EmulatedMRFM` parameters (``seed``,
        ``phantom_seed``, ``n_xy``, ``voxel_size`` m, ``n_z``, ``geometry``,
        ``time_scale``).
    positioner : str
        ``"attocube_amc"`` or ``"pi_gcs"``.
    rf_model : str
        A SCPI source with FM: ``rs_smb100a``, ``keysight_n5183b``, ``keysight_n5172b``.
    scanner_port, lockin_port, rf_port, control_port : int
        0: a free port each.
    state_file : path, optional
        Where the positioner keeps its place across restarts.
    """
    if positioner not in POSITIONERS:
        raise ValueError(f"unknown positioner {positioner!r}; known: {', '.join(POSITIONERS)}")
    model = EmulatedMRFM(sim, state_file)
    log: list = []
    scanner = POSITIONERS[positioner](model, host, scanner_port, log)
    lockin = SR860(model, host, lockin_port, log)
    rf = LoggedScpiSource(model, host, rf_port, rf_model, log)
    rf.power_on_reset()
    start_servers((scanner, lockin, rf))
    return serve_control(MRFMRig(model, scanner, lockin, rf, positioner, host, log=log),
                         host, control_port, "mrfm-emulator-control")
