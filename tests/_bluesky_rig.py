"""Small simulated NV and MRFM rigs shared by the Bluesky-tool tests."""

from __future__ import annotations

import numpy as np

from mracq.config import validate_config
from mracq.devices import build_nv_devices
from mracq.devices.mrfm import build_mrfm_devices
from mracq.sim.clock import VirtualClock
from mracq.sim.mrfm.field import SEED_F0
from mracq.sim.nv import GAMMA_E, ZERO_FIELD_SPLITTING

F_RES = ZERO_FIELD_SPLITTING - GAMMA_E * 0.05
MRFM_F0 = SEED_F0[::12]
LAB = {"instruments": {"mw": {"max_power_dbm": 5.0}, "scanner": {"min_standoff": 15e-9}}}


def nv_rig(seed=5):
    cfg = validate_config(LAB)
    return build_nv_devices(cfg.instruments, cfg.sim, VirtualClock(),
                            np.random.default_rng(seed))


def mrfm_setup():
    from mracq.sim.mrfm.setup import default_setup

    return default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=8, n_z=6,
                         f0=MRFM_F0)


def mrfm_rig(setup, seed=0):
    cfg = validate_config(LAB)
    density = setup.phantom(np.random.default_rng(1))
    return build_mrfm_devices(cfg.instruments, VirtualClock(), np.random.default_rng(seed),
                              setup=setup, density=density)
