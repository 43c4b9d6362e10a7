"""R&S SGS100A/SMB100A and Keysight N5183B/N5172B microwave sources over SCPI.

The transport protocol of :class:`~mracq.devices.nv.MicrowaveSource`: frequency (Hz),
power (dBm), output. Every setting is followed by ``SYST:ERR?`` (an entry other than
``0,"No error"`` raises :class:`InstrumentError` naming the command) and read back
(a value the source did not take raises). IQ and pulse modulation are switched on or off
when the connection opens (``iq``, ``pulse_modulation``); after a reconnection the last
frequency, power, output and modulation states are sent again, since a power-cycled
source comes back in its preset state.

Dialects (manuals: R&S SGS100A 1176.8016.02, SMB100A 1407.0806.32; Keysight N5180-90056):

==============  ===========================  ==========================================
setting         R&S                          Keysight
==============  ===========================  ==========================================
frequency       ``:SOUR:FREQ:CW <Hz>``       ``:FREQ:CW <Hz>``
power           ``:SOUR:POW:LEV:IMM:AMPL``   ``:POW:AMPL <dBm>``
output          ``:OUTP:STAT ON|OFF``        ``:OUTP:STAT ON|OFF``
IQ modulation   ``:SOUR:IQ:STAT ON|OFF``     ``:DM:STAT ON|OFF`` (+ ``:OUTP:MOD:STAT ON``)
pulse mod.      ``:SOUR:PULM:STAT ON|OFF``   ``:PULM:STAT ON|OFF`` (+ ``:OUTP:MOD:STAT ON``)
FM on/off       ``:SOUR:FM:STAT ON|OFF``     ``:FM:STAT ON|OFF`` (+ ``:OUTP:MOD:STAT ON``)
FM deviation    ``:SOUR:FM:DEV <Hz>``        ``:FM:DEV <Hz>``
FM rate         ``:SOUR:LFO:FREQ <Hz>``      ``:FM:INT:FREQ <Hz>``
==============  ===========================  ==========================================

FM is what an MRFM inversion pulse train needs (:meth:`ScpiMicrowave.set_fm`): the
carrier at the slice's centre frequency, swept by +- the half-bandwidth at twice the
resonator frequency (SMB100A, N5183B/N5172B; the SGS100A has no FM and refuses it).

Clients: ``client="pyvisa"`` (pyvisa-py: ``TCPIP0::HOST::5025::SOCKET`` raw socket,
``TCPIP0::HOST::inst0::INSTR`` VXI-11, ``TCPIP0::HOST::hislip0::INSTR``) or
``client="rsinstrument"`` (R&S's ``RsInstrument``: ``SelectVisa=socketio`` for raw
sockets, ``pyvisa-py`` otherwise; it also checks ``*STB?`` after each command).
"""

from __future__ import annotations

import logging

from mracq.devices.drivers.base import InstrumentError, Reconnecting

log = logging.getLogger(__name__)


class GarbledReply(ValueError):
    """A reply that is not SCPI text."""

DIALECTS = {
    "rs": {"freq": ":SOUR:FREQ:CW", "pow": ":SOUR:POW:LEV:IMM:AMPL", "outp": ":OUTP:STAT",
           "iq": ":SOUR:IQ:STAT", "pulm": ":SOUR:PULM:STAT", "mod": None,
           "fm": ":SOUR:FM:STAT", "fm_dev": ":SOUR:FM:DEV", "fm_rate": ":SOUR:LFO:FREQ"},
    "keysight": {"freq": ":FREQ:CW", "pow": ":POW:AMPL", "outp": ":OUTP:STAT",
                 "iq": ":DM:STAT", "pulm": ":PULM:STAT", "mod": ":OUTP:MOD:STAT",
                 "fm": ":FM:STAT", "fm_dev": ":FM:DEV", "fm_rate": ":FM:INT:FREQ"},
}
MODELS = {"rs_sgs100a": "rs", "rs_smb100a": "rs", "keysight_n5183b": "keysight",
          "keysight_n5172b": "keysight"}


class _PyvisaClient:
    def __init__(self, address: str, timeout: float):
        import pyvisa

        rm = pyvisa.ResourceManager("@py")
        self.res = rm.open_resource(address, read_termination="\n", write_termination="\n")
        self.res.timeout = int(timeout * 1000)
        if address.upper().endswith("::SOCKET"):  # a setting and its SYST:ERR? go out at
            try:  # once, not 40 ms apart (Nagle + the instrument's delayed ACK); pyvisa-py
                import socket  # does not take VI_ATTR_TCPIP_NODELAY for SOCKET resources

                sock = rm.visalib.sessions[self.res.session].interface
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except Exception:  # noqa: BLE001 - an optimisation only
                pass

    def write(self, cmd):
        self.res.write(cmd)

    def query(self, cmd):
        try:
            return self.res.query(cmd).strip()
        except UnicodeDecodeError as exc:
            raise GarbledReply(f"garbled reply {exc.object[:32]!r}") from None

    def close(self):
        self.res.close()


class _RsClient:
    def __init__(self, address: str, timeout: float):
        from RsInstrument import RsInstrument

        if address.upper().endswith("::SOCKET"):  # RsInstrument's own socket client
            address = "TCPIP::" + address.split("::", 1)[1]
            options = "SelectVisa=socketio"
        else:
            options = "SelectVisa=pyvisa-py"
        self.rs = RsInstrument(address, True, False, options)
        self.rs.visa_timeout = int(timeout * 1000)

    def write(self, cmd):
        self.rs.write_str(cmd)

    def query(self, cmd):
        try:
            return self.rs.query_str(cmd).strip()
        except UnicodeDecodeError as exc:
            raise GarbledReply(f"garbled reply {exc.object[:32]!r}") from None

    def close(self):
        self.rs.close()


def _number(ans: str) -> float:
    return float(ans.strip().split(";")[0])


class ScpiMicrowave(Reconnecting):
    """A microwave source over SCPI (see the module docstring).

    Parameters
    ----------
    address : str
        VISA resource string, e.g. ``"TCPIP0::10.0.0.5::5025::SOCKET"``.
    model : str
        ``rs_sgs100a``, ``rs_smb100a``, ``keysight_n5183b`` or ``keysight_n5172b``.
    client : str
        ``"pyvisa"`` or ``"rsinstrument"``.
    timeout : float
        Per-command timeout, s.
    iq, pulse_modulation : bool
        Modulation states set on connecting.
    name : str
        Instrument name in error messages.
    """

    def __init__(self, address: str, *, model: str = "rs_sgs100a", client: str = "pyvisa",
                 timeout: float = 5.0, iq: bool = True, pulse_modulation: bool = False,
                 name: str = "mw"):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"unknown microwave model {model!r}; known: {', '.join(MODELS)}")
        if client not in ("pyvisa", "rsinstrument"):
            raise ValueError(f"client must be 'pyvisa' or 'rsinstrument', got {client!r}")
        self.address, self.model, self.client_kind = address, model, client
        self.timeout = float(timeout)
        self.cmd = DIALECTS[MODELS[model]]
        self.label = f"{name} ({model} at {address})"
        self._last: dict = {"iq": bool(iq), "pulm": bool(pulse_modulation)}
        self.idn = ""
        _ = self.client  # connect now: a wrong address fails at session start

    # ------------------------------------------------------------------ connection
    def _open(self):
        c = (_PyvisaClient if self.client_kind == "pyvisa" else _RsClient)(self.address,
                                                                           self.timeout)
        try:
            self.idn = c.query("*IDN?")
            self._check_idn(self.idn)
            c.write("*CLS")
            if self.cmd["mod"] and (self._last["iq"] or self._last["pulm"]):
                c.write(f"{self.cmd['mod']} ON")
            for key in ("iq", "pulm"):
                c.write(f"{self.cmd[key]} {'ON' if self._last[key] else 'OFF'}")
            self._check_errors(c, "connect (*CLS, modulation states)")
        except Exception:
            c.close()
            raise
        log.info("%s: %s", self.label, self.idn)
        return c

    def _close(self, client) -> None:
        client.close()

    def _check_idn(self, idn: str) -> None:
        vendor = "rohde" if self.model.startswith("rs_") else "keysight"
        model = self.model.split("_", 1)[1].upper()
        if vendor not in idn.lower() or model not in idn.upper():
            raise InstrumentError(self.label, "*IDN?", f"answered {idn!r}, not a "
                                  f"{self.model} (check driver and address)")

    def _after_reconnect(self) -> None:
        log.warning("%s: restoring the settings after reconnecting: %s", self.label, self._last)
        for key, setter in (("frequency", self.set_frequency), ("power", self.set_power_dbm),
                            ("fm_dev", self._set_fm_dev), ("fm_rate", self._set_fm_rate),
                            ("fm", self._set_fm_on), ("output", self.set_output)):
            if key in self._last:
                setter(self._last[key])

    def _check_errors(self, c, command: str) -> None:
        ans = c.query("SYST:ERR?")
        code = ans.split(",", 1)[0].strip()
        try:
            failed = int(code) != 0
        except ValueError:
            raise InstrumentError(self.label, f"{command}; SYST:ERR?",
                                  f"garbled reply {ans!r}") from None
        if failed:
            raise InstrumentError(self.label, command, f"instrument error {ans}")

    # ------------------------------------------------------------------ protocol
    def _set(self, key: str, command: str, readback: str, value, same) -> None:
        def run(c):
            c.write(command)
            self._check_errors(c, command)
            ans = c.query(readback)
            try:
                got = _number(ans) if not isinstance(value, bool) else ans.strip() in ("1", "ON")
            except ValueError:
                raise InstrumentError(self.label, readback, f"garbled reply {ans!r}") from None
            if not same(got, value):
                raise InstrumentError(self.label, command, f"read back {got!r} after "
                                      f"setting {value!r}")

        self.call(command, run, idempotent=True)
        self._last[key] = value

    def _get(self, query: str, parse):
        def run(c):
            ans = c.query(query)
            try:
                return parse(ans)
            except ValueError:
                raise InstrumentError(self.label, query, f"garbled reply {ans!r}") from None

        return self.call(query, run, idempotent=True)

    def get_frequency(self) -> float:
        return self._get(self.cmd["freq"] + "?", _number)

    def set_frequency(self, f: float) -> None:
        f = float(f)
        self._set("frequency", f"{self.cmd['freq']} {f:.3f}", self.cmd["freq"] + "?", f,
                  lambda a, b: abs(a - b) <= max(1e-3, 1e-11 * abs(b)))

    def get_power_dbm(self) -> float:
        return self._get(self.cmd["pow"] + "?", _number)

    def set_power_dbm(self, p: float) -> None:
        p = float(p)
        self._set("power", f"{self.cmd['pow']} {p:.2f}", self.cmd["pow"] + "?", p,
                  lambda a, b: abs(a - b) <= 0.006)

    def get_output(self) -> bool:
        return self._get(self.cmd["outp"] + "?", _bool)

    def set_output(self, on: bool) -> None:
        on = bool(on)
        self._set("output", f"{self.cmd['outp']} {'ON' if on else 'OFF'}",
                  self.cmd["outp"] + "?", on, lambda a, b: a == b)

    def set_fm(self, deviation: float, rate: float, on: bool = True) -> None:
        """Frequency modulation: +- ``deviation`` Hz at ``rate`` Hz (internal), on or off."""
        if self.cmd["mod"] and on:
            self.call(self.cmd["mod"], lambda c: (c.write(f"{self.cmd['mod']} ON"),
                                                  self._check_errors(c, self.cmd["mod"])))
        self._set_fm_dev(float(deviation))
        self._set_fm_rate(float(rate))
        self._set_fm_on(bool(on))

    def _set_fm_dev(self, v: float) -> None:
        self._set("fm_dev", f"{self.cmd['fm_dev']} {v:.3f}", self.cmd["fm_dev"] + "?", v,
                  lambda a, b: abs(a - b) <= max(1e-3, 1e-9 * abs(b)))

    def _set_fm_rate(self, v: float) -> None:
        self._set("fm_rate", f"{self.cmd['fm_rate']} {v:.3f}", self.cmd["fm_rate"] + "?", v,
                  lambda a, b: abs(a - b) <= max(1e-3, 1e-9 * abs(b)))

    def _set_fm_on(self, on: bool) -> None:
        self._set("fm", f"{self.cmd['fm']} {'ON' if on else 'OFF'}", self.cmd["fm"] + "?",
                  bool(on), lambda a, b: a == b)

    def get_iq(self) -> bool:
        return self._get(self.cmd["iq"] + "?", _bool)

    def set_iq(self, on: bool) -> None:
        self._set("iq", f"{self.cmd['iq']} {'ON' if on else 'OFF'}", self.cmd["iq"] + "?",
                  bool(on), lambda a, b: a == b)

    def get_pulse_modulation(self) -> bool:
        return self._get(self.cmd["pulm"] + "?", _bool)

    def set_pulse_modulation(self, on: bool) -> None:
        self._set("pulm", f"{self.cmd['pulm']} {'ON' if on else 'OFF'}",
                  self.cmd["pulm"] + "?", bool(on), lambda a, b: a == b)


def _bool(ans: str) -> bool:
    a = ans.strip().upper()
    if a not in ("0", "1", "ON", "OFF"):
        raise ValueError(ans)
    return a in ("1", "ON")
