"""MRFM instruments over the wire: the transports behind Scanner and ResonatorReadout.

A lab configuration that names a ``driver`` in ``[instruments.scanner]`` gets a closed-loop
positioner behind the :class:`~mracq.devices.mrfm.Scanner` (attocube AMC or PI GCS,
:mod:`mracq.devices.drivers.positioners`); one that names drivers in
``[instruments.readout]`` and ``[instruments.rf]`` gets :class:`WireMRFM` behind the
:class:`~mracq.devices.mrfm.ResonatorReadout`: an SRS SR860 lock-in
(:mod:`mracq.devices.drivers.sr860`) and a SCPI rf source with FM (the NV rig's
:class:`~mracq.devices.drivers.scpi_microwave.ScpiMicrowave`). The devices and the plans
do not change: the interlock and the limits are checked in the devices before a transport
is called.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _driver(instruments: dict, name: str) -> str:
    return (instruments.get(name) or {}).get("driver") or "sim"


def scanner_transport(instruments: dict):
    """The positioner driver of ``[instruments.scanner]``, or None (simulated)."""
    cfg = instruments.get("scanner") or {}
    driver = _driver(instruments, "scanner")
    if driver == "sim":
        return None
    from mracq.devices.drivers.positioners import PIGCS, AttocubeAMC

    cls = {"attocube_amc": AttocubeAMC, "pi_gcs": PIGCS}[driver]
    kw = {k: cfg[k] for k in ("timeout", "tolerance", "settle_time", "move_timeout", "axes")
          if cfg.get(k) is not None}
    return cls(cfg["address"], **kw)


class WireMRFM:
    """Readout backend: per pulse, the rf source on the slice, then a lock-in capture.

    ``measure(point, pulses, f_bw, t_m)`` has the simulated backend's signature; ``point``
    is where the scanner already is (the positioner is there: it is not used). The source
    sweeps +- ``f_bw`` (FM deviation) at twice the resonator frequency around each pulse's
    centre frequency; its output is on while measuring. ``clock`` is advanced by t_m per
    pulse (hardware time of the plans).
    """

    geometry = None

    def __init__(self, lockin, source, rf_device, clock, level_dbm: float = 0.0):
        self.lockin, self.source, self.rf = lockin, source, rf_device
        self.clock = clock
        self.level_dbm = float(level_dbm)
        self._fm = None

    def measure(self, point, pulses, f_bw, t_m):
        """In- and out-of-phase force variances (N^2) of each pulse (Hz) at the scanner."""
        fm = (float(f_bw), 2.0 * float(self.rf.resonator_frequency.get()))
        if self._fm != fm:
            self.source.set_power_dbm(self.level_dbm)
            self.source.set_fm(fm[0], fm[1], True)
            self._fm = fm
        vin, vout = [], []
        for f in pulses:
            self.source.set_frequency(float(f))
            if self.source._last.get("output") is not True:
                self.source.set_output(True)
            a, b = self.lockin.force_variances(t_m)
            vin.append(a)
            vout.append(b)
            if self.clock is not None:
                self.clock.advance(float(t_m))
        return np.array(vin), np.array(vout)

    def close(self) -> None:
        for d in (self.lockin, self.source):
            d.close()


def wire_backend(instruments: dict, clock, rf_device):
    """:class:`WireMRFM` from ``[instruments.readout]`` and ``[instruments.rf]``, or None."""
    ro, rf = _driver(instruments, "readout"), _driver(instruments, "rf")
    if ro == "sim" and rf == "sim":
        return None
    if ro == "sim" or rf == "sim":
        raise ValueError("instruments.readout and instruments.rf go over the wire together "
                         "(the lock-in's signal needs the rf slice): give both a driver")
    from mracq.devices.drivers.scpi_microwave import ScpiMicrowave
    from mracq.devices.drivers.sr860 import SR860

    rcfg, fcfg = instruments["readout"], instruments["rf"]
    lockin = SR860(rcfg["address"], **{k: rcfg[k] for k in (
        "sensitivity", "time_constant", "capture_rate", "volts_per_newton", "timeout")
        if rcfg.get(k) is not None})
    source = ScpiMicrowave(fcfg["address"], model=rf, client=fcfg.get("client") or "pyvisa",
                           timeout=fcfg.get("timeout") or 5.0, iq=False,
                           pulse_modulation=False, name="rf")
    return WireMRFM(lockin, source, rf_device, clock, fcfg.get("level_dbm") or 0.0)
