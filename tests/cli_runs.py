"""Small stored runs of every kind, for the CLI tests and ``benchmarks/cli.py``.

Each helper runs a real plan through a session's RunEngine (so the TiledWriter stores it)
and returns the run's scan_id.
"""

from __future__ import annotations

import numpy as np

MRFM_INSTRUMENTS = {
    "scanner": {"min_standoff": 15e-9, "x_range": [-1e-6, 1e-6], "y_range": [-1e-6, 1e-6],
                "z_range": [15e-9, 2e-6], "max_step": 1e-6},
    "rf": {"min_frequency": 50e6, "max_frequency": 400e6, "max_power": 10.0,
           "max_bandwidth": 5e6},
    "readout": {"min_integration": 1e-3, "max_integration": 3600.0},
}


def _scan_id(session) -> int:
    return int(session.RE.md["scan_id"])


def store_coherence(session, n: int = 4, points: int = 6) -> int:
    from mracq.plans.coherence import coherence_scan

    session.RE(coherence_scan(session.devices["nv"], "cpmg", np.geomspace(4e-6, 60e-6, points),
                              n=n, shots=20_000))
    return _scan_id(session)


def store_cosy(session) -> int:
    from mracq.plans.cosy import cosy_random_mask
    from mracq.sim.cosy.model import T_GRID

    grid = T_GRID[:12]
    session.RE(cosy_random_mask(session.devices["nv"], 0.3, t1=grid, t2=grid, every=1000,
                                shots=20_000, rng=np.random.default_rng(1)))
    return _scan_id(session)


def small_mrfm(session, n_xy: int = 32):
    """MRFM devices on a small simulated sample (4 nm voxels), sharing the session clock."""
    from mracq.devices.mrfm import build_mrfm_devices
    from mracq.sim.mrfm.field import SEED_F0
    from mracq.sim.mrfm.setup import default_setup

    setup = default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=n_xy, n_z=12,
                          f0=SEED_F0[::12])
    devs = build_mrfm_devices(MRFM_INSTRUMENTS, session.clock, np.random.default_rng(0),
                              setup=setup, density=setup.phantom(np.random.default_rng(1)))
    return devs, setup


def store_mrfm(session) -> int:
    from mracq.plans.mrfm import cs_multislice_scan

    devs, setup = small_mrfm(session)
    x = np.fft.fftfreq(setup.n_xy, 1.0 / setup.n_xy)[:6] * setup.voxel_size
    session.RE(cs_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, 0.7,
                                  np.random.default_rng(1), f0_list=setup.f0, t_m=5.0))
    return _scan_id(session)


def store_estimate_run(session) -> int:
    from mracq.plans.vqns import store_estimate
    from mracq.recon.vqns.model import Measurement, reconstruct

    t = np.geomspace(1e-6, 50e-6, 10)
    ms = [Measurement("cpmg-4", t, np.exp(-(t / 20e-6) ** 2), [0.02] * 10),
          Measurement("se", t, np.exp(-(t / 10e-6) ** 2), [0.02] * 10)]
    res = reconstruct(ms, restarts=4, seed=1, max_iter=150)
    session.RE(store_estimate(res, [], step=2))
    return _scan_id(session)


def store_failed(session) -> int:
    """A coherence scan that fails after two points (exit_status 'fail')."""
    import bluesky.preprocessors as bpp

    from mracq.plans.coherence import coherence_scan

    plan = coherence_scan(session.devices["nv"], "se", np.geomspace(1e-6, 40e-6, 6),
                          shots=20_000)
    count = {"n": 0}

    def boom(msg):
        if msg.command == "trigger":
            count["n"] += 1
            if count["n"] == 3:
                raise RuntimeError("simulated instrument failure")
        return None, None

    try:
        session.RE(bpp.plan_mutator(plan, boom))
    except RuntimeError:
        pass
    return _scan_id(session)


def store_open(session) -> int:
    """A run with a start document only (its process died before anything else)."""
    import time
    import uuid

    from bluesky_tiled_plugins import TiledWriter

    scan_id = _scan_id(session) + 1
    session.RE.md["scan_id"] = scan_id
    TiledWriter(session.catalog)("start", {"uid": str(uuid.uuid4()), "time": time.time(),
                                           "scan_id": scan_id, "plan_name": "coherence_scan",
                                           "sequence": "se"})
    return scan_id
