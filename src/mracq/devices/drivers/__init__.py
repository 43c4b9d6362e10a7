"""Vendor drivers behind the NV devices (the device classes do not change).

- :mod:`~mracq.devices.drivers.scpi_microwave`: R&S SGS100A/SMB100A and Keysight N5183B/
  N5172B microwave sources, SCPI through pyvisa (raw socket, VXI-11, HiSLIP) or R&S's
  ``RsInstrument``;
- :mod:`~mracq.devices.drivers.pulse_streamer`: a Swabian Pulse Streamer 8/2 through the
  vendor's ``pulsestreamer`` client (the compiler from :class:`~mracq.pulses.PulseProgram`
  to its sequence, with the lab's channel map), counting with
- :mod:`~mracq.devices.drivers.nidaqmx_counter`: NI-DAQmx counter tasks through
  ``nidaqmx`` over NI's gRPC Device Server.

Every driver call that fails (connection dropped, timeout, an instrument error, a reply
that is not in the protocol) raises :class:`~mracq.devices.drivers.base.InstrumentError`
naming the instrument and the command; the driver then reconnects on its next call.
:func:`build_microwave` and :func:`build_sequencer` make them from a validated lab
configuration (``driver``, ``address``, ``channels``, ``counter`` keys).
"""

from __future__ import annotations

from mracq.devices.drivers.base import InstrumentError

__all__ = ["InstrumentError", "build_microwave", "build_sequencer", "MICROWAVE_DRIVERS",
           "SEQUENCER_DRIVERS"]

MICROWAVE_DRIVERS = ("rs_sgs100a", "rs_smb100a", "keysight_n5183b", "keysight_n5172b")
SEQUENCER_DRIVERS = ("pulsestreamer",)


def build_microwave(cfg: dict):
    """A microwave driver from the validated ``[instruments.mw]`` table."""
    from mracq.devices.drivers.scpi_microwave import ScpiMicrowave

    return ScpiMicrowave(cfg["address"], model=cfg["driver"], client=cfg.get("client", "pyvisa"),
                         timeout=cfg.get("timeout", 5.0), iq=cfg.get("iq", True),
                         pulse_modulation=cfg.get("pulse_modulation", False))


def build_sequencer(cfg: dict, clock=None):
    """A Pulse Streamer + NI counter driver from the validated ``[instruments.nv]`` table."""
    from mracq.devices.drivers.nidaqmx_counter import GatedCounter
    from mracq.devices.drivers.pulse_streamer import PulseStreamerSequencer

    c = cfg["counter"]
    counter = GatedCounter(c["address"], c["counters"], c["gates"], c["photons"],
                           timeout=cfg.get("timeout", 5.0))
    return PulseStreamerSequencer(
        cfg["address"], cfg["channels"], counter, clock=clock,
        timeout=cfg.get("timeout", 5.0), min_pulse=cfg.get("min_pulse", 2e-9),
        reference_duration=cfg.get("reference_duration", 4e-6),
        pi_duration=cfg.get("pi_duration", 40e-9))
