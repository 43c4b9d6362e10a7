"""One emulated NV rig: the three protocol servers, their shared NV, a control port.

:func:`start_nv_rig` starts a microwave source (SCPI), a Pulse Streamer 8/2 and an
NI-DAQmx counter card around one :class:`~mracq.emulators.nv_model.EmulatedNV`, and a
control port that takes one JSON object per line (loopback only) and answers one:

- ``{"cmd": "ping"}`` -> ``{"ok": true, "pid": ...}``;
- ``{"cmd": "state"}`` -> microwave settings, runs played, counter tasks;
- ``{"cmd": "fault", "instrument": "mw"|"pulser"|"counter", "kind": "delay"|"garble"|
  "error"|"down", "value": seconds}`` arms a fault (:mod:`mracq.emulators.base`).

:meth:`NVRig.lab_config` gives the lab-configuration TOML that points mracq at the rig.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from dataclasses import dataclass

from mracq.emulators.nidaqmx_counter import NiDaqmxCounterEmulator
from mracq.emulators.nv_model import GATE_ROLES, EmulatedNV, Wiring
from mracq.emulators.pulse_streamer import PulseStreamerEmulator
from mracq.emulators.scpi_microwave import MODELS, ScpiMicrowave

log = logging.getLogger(__name__)

INSTRUMENTS = ("mw", "pulser", "counter")


@dataclass
class NVRig:
    """A running emulated NV rig (see :func:`start_nv_rig`)."""

    nv: EmulatedNV
    mw: ScpiMicrowave
    pulser: PulseStreamerEmulator
    counter: NiDaqmxCounterEmulator
    control_port: int
    host: str
    _control: socketserver.TCPServer | None = None

    def handle(self, msg: dict) -> dict:
        cmd = msg.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid()}
        if cmd == "state":
            mw = self.nv.mw
            return {"ok": True, "mw": {"frequency": mw.frequency, "power_dbm": mw.power_dbm,
                                       "output": mw.output, "iq": mw.iq,
                                       "pulse_mod": mw.pulse_mod},
                    "runs_played": self.nv.runs_played, "streams": self.pulser.streams,
                    "tasks": sorted(self.nv.tasks)}
        if cmd == "fault":
            return inject_fault(self, INSTRUMENTS, msg)
        return {"ok": False, "error": f"unknown cmd {cmd!r}; expected ping, state or fault"}

    def lab_config(self, sim: dict | None = None) -> str:
        """Lab-configuration TOML that points mracq at this rig."""
        ch = self.nv.wiring.channels
        w = self.nv.wiring
        chan_items = ", ".join(f"{k} = {json.dumps(v)}" for k, v in ch.items())
        counters = ", ".join(json.dumps(w.counter(r)) for r in GATE_ROLES)
        gates = ", ".join(json.dumps(w.gate_terminal(r)) for r in GATE_ROLES)
        lines = [
            f"# emulated NV rig (mracq emulate nv, pid {os.getpid()}, control port "
            f"{self.control_port})",
            "[instruments.mw]",
            f'driver = "{self.mw.model}"',
            f'address = "TCPIP0::{self.host}::{self.mw.port}::SOCKET"',
            "max_frequency = 6e9",
            "",
            "[instruments.nv]",
            'driver = "pulsestreamer"',
            f'address = "{self.pulser.host}"',
            f"channels = {{{chan_items}}}",
            f'counter = {{driver = "nidaqmx", address = "{self.host}:{self.counter.port}", '
            f'counters = [{counters}], gates = [{gates}], '
            f'photons = "{w.photon_terminal}"}}',
        ]
        if sim:
            lines += ["", "[sim]  # the emulated NV's parameters (the demo's reference)"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in sim.items() if v is not None]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        close_rig(self, (self.mw, self.pulser, self.counter))


def inject_fault(rig, instruments: tuple, msg: dict, refuse=None) -> dict:
    """Arm a fault on one of a rig's wire servers (control command ``fault``).

    Parameters
    ----------
    rig
        The rig; ``getattr(rig, name)`` is the server of instrument ``name``.
    instruments : tuple of str
        The instrument names the rig accepts.
    msg : dict
        ``{"instrument", "kind", "value"}``: ``kind`` "down" takes the server down for
        ``value`` seconds, any other kind is armed on its :class:`~.base.Faults`.
    refuse : callable, optional
        ``refuse(instrument, kind)`` -> error text for a fault this rig does not have, or
        None.

    Returns
    -------
    dict
        The control reply: ``{"ok": True}`` or ``{"ok": False, "error": ...}``.
    """
    inst = msg.get("instrument")
    if inst not in instruments:
        return {"ok": False, "error": f"instrument must be one of {instruments}"}
    server = getattr(rig, inst)
    kind, value = msg.get("kind"), float(msg.get("value", 0.0))
    try:
        if refuse is not None and (why := refuse(inst, kind)):
            raise ValueError(why)
        if kind == "down":
            server.down(value)
        else:
            server.faults.arm(kind, value)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True}


def start_nv_rig(sim: dict | None = None, *, host: str = "127.0.0.1",
                 pulser_host: str | None = None, mw_port: int = 0, counter_port: int = 0,
                 control_port: int = 0, model: str = "rs_sgs100a",
                 wiring: Wiring | None = None) -> NVRig:
    """Start an emulated NV rig (servers on threads of this process).

    Parameters
    ----------
    sim : dict, optional
        ``[sim]`` parameters of the NV (``seed``, ``bright_rate``, ``contrast``, ``field``).
    host : str
        Address of the microwave, counter and control servers (loopback by default).
    pulser_host : str, optional
        Address of the Pulse Streamer (fixed ports 8050 and 21328); default ``host``.
    mw_port, counter_port, control_port : int
        0: a free port each.
    model : str
        Microwave model, one of :data:`mracq.emulators.scpi_microwave.MODELS`.
    """
    if model not in MODELS:
        raise ValueError(f"unknown microwave model {model!r}; known: {', '.join(MODELS)}")
    nv = EmulatedNV(sim, wiring)
    mw = ScpiMicrowave(nv, host, mw_port, model)
    pulser = PulseStreamerEmulator(nv, pulser_host or host)
    counter = NiDaqmxCounterEmulator(nv, host, counter_port)
    start_servers((mw, pulser, counter))
    return serve_control(NVRig(nv, mw, pulser, counter, 0, host), host, control_port,
                         "emulator-control")


def start_servers(servers) -> None:
    """Start every instrument server, or none: one that fails stops those started."""
    started = []
    try:
        for s in servers:
            s.start()
            started.append(s)
    except OSError:
        for s in started:
            s.stop()
        raise


def serve_control(rig, host: str, port: int, name: str):
    """Serve ``rig.handle`` as JSON lines on ``host:port`` (0: a free port) in a daemon
    thread; sets ``rig._control`` and ``rig.control_port`` and returns ``rig``."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            for raw in self.rfile:
                try:
                    reply = rig.handle(json.loads(raw))
                except (ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                self.wfile.write((json.dumps(reply) + "\n").encode())

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    rig._control = Server((host, port), Handler)
    rig.control_port = rig._control.server_address[1]
    threading.Thread(target=rig._control.serve_forever, daemon=True, name=name).start()
    return rig


def close_rig(rig, servers) -> None:
    """Stop the control server `serve_control` started for ``rig``, then ``servers``."""
    if rig._control is not None:
        rig._control.shutdown()
        rig._control.server_close()
    for s in servers:
        s.close()


def control(port: int, msg: dict, host: str = "127.0.0.1", timeout: float = 5.0) -> dict:
    """Send one control message to a running rig and return its answer."""
    import socket

    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall((json.dumps(msg) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
