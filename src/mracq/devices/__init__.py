"""Ophyd devices with simulated-physics or VISA transports.

:func:`build_devices` makes every instrument a lab configuration names. NV devices:
``mw`` (:class:`~mracq.devices.nv.MicrowaveSource`), ``laser``
(:class:`~mracq.devices.nv.Laser`), ``nv`` (:class:`~mracq.devices.nv.PulseSequencer`).
MRFM devices (``scanner``, ``rf``, ``readout``) come from :mod:`mracq.devices.mrfm`.
"""

from __future__ import annotations

import logging

import numpy as np

from mracq.sim.clock import VirtualClock

log = logging.getLogger(__name__)

__all__ = ["build_devices", "build_nv_devices", "nv_physics_models"]


def nv_physics_models(sim: dict) -> list:
    """Physics models of the simulated NV from the ``[sim]`` config table.

    The dephasing model (coherence and Rabi programs) and the 13C COSY model
    (:mod:`mracq.sim.cosy`).
    """
    from mracq.sim.cosy.model import default_cosy_model
    from mracq.sim.nv import DephasingModel
    from mracq.sim.spectra import default_nv_spectrum

    name = sim.get("spectrum", "default")
    if name != "default":
        raise ValueError(f"sim.spectrum = {name!r}: only 'default' is built in; pass a "
                         "Spectrum to mracq.sim.nv.DephasingModel for others")
    models = [DephasingModel(default_nv_spectrum(sim.get("field", 0.05)))]
    models.append(default_cosy_model())
    return models


def build_nv_devices(instruments: dict, sim: dict, clock: VirtualClock,
                     rng: np.random.Generator) -> dict:
    """Microwave source, laser and sequencer from the validated instrument tables."""
    from mracq.devices import transports as tr
    from mracq.devices.nv import Laser, MicrowaveSource, PulseSequencer
    from mracq.sim.nv import Readout, SimulatedNV

    def backend(name):
        return instruments[name]["backend"]

    def visa(name):
        """The lab config's VISA library and open_resource options of one instrument."""
        return {"library": instruments[name].get("visa_library"),
                "options": instruments[name].get("visa_options") or {}}

    def vendor(name):  # a vendor driver (mracq.devices.drivers) named by `driver`
        return instruments[name].get("driver") not in (None, "sim", "visa")

    if vendor("mw"):
        from mracq.devices.drivers import build_microwave
        mw_t = build_microwave(instruments["mw"])
    else:
        mw_t = (tr.SimMicrowave() if backend("mw") == "sim"
                else tr.VisaMicrowave(backend("mw"), **visa("mw")))
    laser_t = (tr.SimLaser() if backend("laser") == "sim"
               else tr.VisaLaser(backend("laser"), **visa("laser")))
    if vendor("nv"):
        from mracq.devices.drivers import build_sequencer
        seq_t = build_sequencer(instruments["nv"], clock=clock)
    elif backend("nv") == "sim":
        readout = Readout(bright_rate=sim.get("bright_rate", 0.03),
                          contrast=sim.get("contrast", 0.3))
        nv = SimulatedNV(nv_physics_models(sim), readout, clock, rng,
                         field=sim.get("field", 0.05), rabi_frequency=sim.get("rabi_frequency"),
                         hyperfine=sim.get("hyperfine", 0.0))
        seq_t = tr.SimSequencer(nv, mw_t, laser_t)
    else:
        seq_t = tr.VisaSequencer(backend("nv"), clock=clock, **visa("nv"))
    return {
        "mw": MicrowaveSource(name="mw", transport=mw_t, limits=instruments["mw"]),
        "laser": Laser(name="laser", transport=laser_t, limits=instruments["laser"]),
        "nv": PulseSequencer(name="nv", transport=seq_t, limits=instruments["nv"]),
    }


def build_devices(config=None, *, clock: VirtualClock | None = None,
                  rng: np.random.Generator | None = None) -> dict:
    """Every device the lab configuration names.

    Parameters
    ----------
    config : mracq.config.LabConfig, optional
        Validated configuration; default: :func:`mracq.config.load_config`.
    clock : VirtualClock, optional
        Shared by all simulated backends (hardware-time accounting).
    rng : numpy.random.Generator, optional
        Noise source of the simulators; default seeded from ``config.sim['seed']``.
    """
    from mracq.config import load_config
    from mracq.devices.mrfm import build_mrfm_devices

    config = config if config is not None else load_config()
    clock = clock if clock is not None else VirtualClock()
    rng = rng if rng is not None else np.random.default_rng(config.sim.get("seed"))
    devices = build_nv_devices(config.instruments, config.sim, clock, rng)
    devices.update(build_mrfm_devices(config.instruments, clock, rng))
    return devices
