"""Microwave source emulator: SCPI over raw TCP, R&S SGS100A/SMB100A or Keysight N51x1.

Command table (R&S SGS100A user manual 1176.8016.02, SMB100A 1407.0806.32; Keysight
N5183B/N5172B programming guide N5180-90056), long or short forms, leading ``:`` and the
optional ``SOURce`` node accepted, several commands per line separated by ``;``:

==========================  ============================  ==================================
R&S                         Keysight                      meaning
==========================  ============================  ==================================
``FREQ <Hz>``, ``FREQ?``    ``:FREQ:CW <Hz>``             CW frequency (``[:CW|:FIXed]``)
``POW <dBm>``, ``POW?``     ``:POW:AMPL <dBm>``           level (``[:LEVel][:IMMediate]``)
``OUTP ON|OFF``             ``:OUTP:STAT ON|OFF``         RF output
``IQ:STAT ON|OFF``          ``:DM:STAT ON|OFF``           IQ modulation
``PULM:STAT ON|OFF``        ``:PULM:STAT ON|OFF``         pulse modulation
``FM:DEV <Hz>``             ``:FM:DEV <Hz>``              FM deviation (SMB100A, N51x1 only)
``FM:STAT ON|OFF``          ``:FM:STAT ON|OFF``           FM on/off
``LFO:FREQ <Hz>``           ``:FM:INT:FREQ <Hz>``         FM rate (internal LF generator)
(none)                      ``:OUTP:MOD:STAT ON|OFF``     modulation master switch
``SYST:ERR?``               ``:SYST:ERR?``                next error: ``0,"No error"``
==========================  ============================  ==================================

and the IEEE 488.2 commands ``*IDN? *RST *CLS *ESE *ESE? *SRE *SRE? *ESR? *STB? *OPC?
*OPC *WAI *OPT?`` (RsInstrument sends ``*CLS``, ``*ESE 1``, ``*SRE 0``, ``*OPC?`` and
``*IDN?`` when it opens a session and polls ``*STB?``). An unknown header queues
``-113,"Undefined header"``, a value out of range ``-222,"Data out of range"``; ``*STB?``
sets bit 2 while the error queue is not empty. QCoDeS' pyvisa-sim file for the SGS100A
(``qcodes/instrument/sims/RSSGS100A.yaml``) answers the same queries.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
import time

from mracq.emulators.base import Restartable, stop_server
from mracq.emulators.nv_model import EmulatedNV, MicrowaveState

log = logging.getLogger(__name__)

MODELS = {
    "rs_sgs100a": dict(idn="Rohde&Schwarz,SGS100A,1416.0505k02/000000,4.2.76.0-emulated",
                       dialect="rs", f=(1e6, 12.75e9), p=(-120.0, 25.0), fm=False),
    "rs_smb100a": dict(idn="Rohde&Schwarz,SMB100A,1406.6000k03/000000,3.1.19.15-emulated",
                       dialect="rs", f=(100e3, 6e9), p=(-145.0, 30.0), fm=True),
    "keysight_n5183b": dict(idn="Keysight Technologies,N5183B,MY00000000,B.01.87-emulated",
                            dialect="keysight", f=(9e3, 20e9), p=(-130.0, 20.0), fm=True),
    "keysight_n5172b": dict(idn="Keysight Technologies,N5172B,MY00000000,B.01.87-emulated",
                            dialect="keysight", f=(9e3, 6e9), p=(-130.0, 20.0), fm=True),
}

_LONG = {"SOURCE": "SOUR", "FREQUENCY": "FREQ", "POWER": "POW", "LEVEL": "LEV",
         "IMMEDIATE": "IMM", "AMPLITUDE": "AMPL", "OUTPUT": "OUTP", "STATE": "STAT",
         "SYSTEM": "SYST", "ERROR": "ERR", "FIXED": "FIX", "MODULATION": "MOD",
         "COUNT": "COUN", "DEVIATION": "DEV", "INTERNAL": "INT", "LFOUTPUT": "LFO"}
_OPTIONAL_TAIL = {"FREQ": ("CW", "FIX"), "POW": ("LEV", "IMM", "AMPL")}
_SUFFIX = {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "GHZ": 1e9, "DBM": 1.0, "": 1.0}


def canonical(header: str) -> str:
    """SCPI header -> canonical short form without optional nodes (``:SOUR:FREQ:CW`` -> FREQ)."""
    nodes = [n for n in header.strip().lstrip(":").upper().split(":") if n]
    out = []
    for n in nodes:
        n = re.sub(r"(?<=[A-Z])1$", "", n)  # SOURce1, OUTPut1
        short = _LONG.get(n, n)
        for long, s in _LONG.items():
            if len(n) >= len(s) and long.startswith(n):
                short = s
        out.append(short)
    if out and out[0] == "SOUR":
        out = out[1:]
    if out and out[0] in _OPTIONAL_TAIL:
        out = [out[0]] + [n for n in out[1:] if n not in _OPTIONAL_TAIL[out[0]]]
    if out and out[-1] == "STAT" and len(out) > 1:
        out = out[:-1]
    if out and out[0] == "SYST" and out[1:] == ["ERR", "NEXT"]:
        out = out[:2]
    return ":".join(out)


class ScpiError(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(f'{code},"{text}"')
        self.code, self.text = code, text


def _number(arg: str, unit_kind: str) -> float:
    m = re.fullmatch(r"\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*", arg)
    if not m or m.group(2).upper() not in _SUFFIX:
        raise ScpiError(-104, "Data type error")
    return float(m.group(1)) * _SUFFIX[m.group(2).upper()]


def _bool(arg: str) -> bool:
    a = arg.strip().upper()
    if a in ("1", "ON"):
        return True
    if a in ("0", "OFF"):
        return False
    raise ScpiError(-104, "Data type error")


class ScpiMicrowave(Restartable):
    """One emulated microwave source on ``host:port`` (``port=0``: a free port)."""

    def __init__(self, nv: EmulatedNV, host: str = "127.0.0.1", port: int = 0,
                 model: str = "rs_sgs100a"):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown microwave model {model!r}; known: {', '.join(MODELS)}")
        self.nv, self.host, self.port, self.model = nv, host, int(port), model
        self.spec = MODELS[model]
        self.name = f"microwave ({model})"
        self.errors: list[tuple[int, str]] = []
        self.ese = self.sre = self.esr = 0
        self.mod_master = True  # Keysight :OUTP:MOD
        self._server = None
        self._clients: set = set()
        self._thread = None

    # ------------------------------------------------------------------ server
    def start(self) -> None:
        emu = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                emu._clients.add(self.connection)
                try:
                    for raw in self.rfile:
                        reply = emu.handle_line(raw.decode("ascii", "replace"))
                        if reply is not None:
                            self.wfile.write(reply)
                except (OSError, ValueError):
                    pass
                finally:
                    emu._clients.discard(self.connection)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"scpi-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        self._server = stop_server(self._server, self._clients)

    def power_on_reset(self) -> None:
        with self.nv.lock:
            self.nv.mw = MicrowaveState()
        self.errors.clear()
        self.mod_master = True

    # ------------------------------------------------------------------ protocol
    def handle_line(self, line: str) -> bytes | None:
        replies = []
        for cmd in line.strip().split(";"):
            if not cmd.strip():
                continue
            try:
                ans = self.execute(cmd.strip())
            except ScpiError as exc:
                self.errors.append((exc.code, exc.text))
                continue
            if ans is not None:
                replies.append(ans)
        if not replies:
            return None
        delay = self.faults.take("delay")
        if delay:
            time.sleep(delay)
        if self.faults.take("garble") is not None:
            return b"\x8f#?!\xff garbled\n"
        return (";".join(replies) + "\n").encode("ascii")

    def _state(self, on: bool) -> str:
        return "1" if on else "0"

    def execute(self, cmd: str) -> str | None:
        header, _, arg = cmd.partition(" ")
        query = header.endswith("?")
        key = canonical(header.rstrip("?"))
        mw = self.nv.mw
        rs = self.spec["dialect"] == "rs"
        if self.faults.take("error") is not None:
            self.errors.append((-221, "Settings conflict"))
        if header.startswith("*"):
            return self._common(header.upper(), arg)
        if key == "SYST:ERR" and query:
            if self.errors:
                code, text = self.errors.pop(0)
                return f'{code:+d},"{text}"' if not rs else f'{code},"{text}"'
            return '0,"No error"' if rs else '+0,"No error"'
        if key == "SYST:ERR:COUN" and query:
            return str(len(self.errors))
        with self.nv.lock:
            if key == "FREQ":
                if query:
                    return f"{mw.frequency:.15g}" if rs else f"{mw.frequency:+.14E}"
                f = _number(arg, "freq")
                lo, hi = self.spec["f"]
                if not lo <= f <= hi:
                    raise ScpiError(-222, "Data out of range")
                mw.frequency = f
                return None
            if key == "POW":
                if query:
                    return f"{mw.power_dbm:.15g}" if rs else f"{mw.power_dbm:+.8E}"
                p = _number(arg, "pow")
                lo, hi = self.spec["p"]
                if not lo <= p <= hi:
                    raise ScpiError(-222, "Data out of range")
                mw.power_dbm = p
                return None
            if self.spec.get("fm") and key in ("FM:DEV", "LFO:FREQ", "FM:INT:FREQ"):
                attr = "fm_deviation" if key == "FM:DEV" else "fm_rate"
                if query:
                    return f"{getattr(mw, attr):.15g}"
                v = _number(arg, "freq")
                if not 0 <= v <= (40e6 if attr == "fm_deviation" else 10e6):
                    raise ScpiError(-222, "Data out of range")
                setattr(mw, attr, v)
                return None
            if self.spec.get("fm") and key == "FM":
                if query:
                    return self._state(mw.fm_on)
                mw.fm_on = _bool(arg)
                return None
            switches = {"OUTP": "output", ("IQ" if rs else "DM"): "iq_raw", "PULM": "pulm_raw"}
            if not rs:
                switches["OUTP:MOD"] = "mod_master"
            if key in switches:
                attr = switches[key]
                if query:
                    return self._state(self._get_switch(attr))
                self._set_switch(attr, _bool(arg))
                return None
        raise ScpiError(-113, "Undefined header")

    def _get_switch(self, attr):
        if attr == "output":
            return self.nv.mw.output
        if attr == "mod_master":
            return self.mod_master
        return getattr(self, "_" + attr, False)

    def _set_switch(self, attr, on):
        mw = self.nv.mw
        if attr == "output":
            mw.output = on
        elif attr == "mod_master":
            self.mod_master = on
        else:
            setattr(self, "_" + attr, on)
        master = self.mod_master if self.spec["dialect"] == "keysight" else True
        mw.iq = bool(getattr(self, "_iq_raw", False) and master)
        mw.pulse_mod = bool(getattr(self, "_pulm_raw", False) and master)

    def _common(self, header: str, arg: str) -> str | None:
        h = header.rstrip("?")
        if header == "*IDN?":
            return self.spec["idn"]
        if header == "*OPC?":
            return "1"
        if h == "*RST":
            self.power_on_reset()
            self._iq_raw = self._pulm_raw = False
            return None
        if h == "*CLS":
            self.errors.clear()
            self.esr = 0
            return None
        if h in ("*ESE", "*SRE"):
            if header.endswith("?"):
                return str(self.ese if h == "*ESE" else self.sre)
            setattr(self, h[1:].lower(), int(_number(arg, "")))
            return None
        if header == "*ESR?":
            v, self.esr = self.esr, 0
            return str(v)
        if header == "*STB?":
            return str(4 if self.errors else 0)
        if header == "*OPT?":
            return "SGS-B106V,SGS-B112V" if self.spec["dialect"] == "rs" else "UNU,1EA,UNT"
        if h in ("*OPC", "*WAI"):
            return None
        raise ScpiError(-113, "Undefined header")
