"""MRFM over the wire: ``mracq emulate mrfm`` + a multislice scan over TCP against the
in-process simulator (same sample), and the wall time per point.

Run from the worktree root::

    PYTHONPATH=src nice python benchmarks/mrfm_wire.py [--n-xy 16] [--pulses 4] [--t-m 10]
        [--seeds 3] [--positioner attocube_amc] [--out benchmarks/mrfm_wire.json]

For each seed: one scan through the emulator (a new emulator process, that seed) and one
in-process scan (the same phantom, noise seed + 100), each reconstructed by ADMM-TV.
Figures: the data's z-scores against the noise-free forward model (mean, sd: 0 and 1 for
the physics model), the relative L2 distance of the wire's reconstruction to the in-process
one and of two in-process reconstructions to each other (the noise floor), both
reconstructions' error against the phantom, and the wall time per point over TCP.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bluesky import RunEngine

from mracq.config import validate_config
from mracq.devices.mrfm import build_mrfm_devices
from mracq.emulators.process import MRFMEmulatorProcess
from mracq.plans.mrfm import multislice_scan
from mracq.recon.mrfm.pipeline import reconstruct
from mracq.sim.clock import VirtualClock
from mracq.sim.mrfm.field import SEED_F0, SEED_F_BW
from mracq.sim.mrfm.setup import default_setup


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-xy", type=int, default=16)
    p.add_argument("--step", type=float, default=5.0, help="nm")
    p.add_argument("--n-z", type=int, default=8)
    p.add_argument("--pulses", type=int, default=4)
    p.add_argument("--t-m", type=float, default=10.0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--positioner", default="attocube_amc", choices=["attocube_amc", "pi_gcs"])
    p.add_argument("--out", default="benchmarks/mrfm_wire.json")
    a = p.parse_args(argv)
    step = a.step * 1e-9
    f0 = SEED_F0[np.unique(np.linspace(0, len(SEED_F0) - 1, a.pulses).round().astype(int))]
    setup = default_setup("membrane", "multislice", voxel_size=step, n_xy=a.n_xy, n_z=a.n_z,
                          f0=f0)
    density = setup.phantom(np.random.default_rng(1))
    clean = setup.forward(density)
    sd = setup.noise_std(clean, a.t_m)
    x = np.fft.fftfreq(a.n_xy, 1.0 / a.n_xy) * step
    RE = RunEngine(call_returns_result=True)
    rows = []
    for seed in range(a.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            rig = MRFMEmulatorProcess(tmp, seed, ["--n-xy", str(a.n_xy), "--step", str(a.step),
                                                  "--n-z", str(a.n_z), "--time-scale", "1e-4",
                                                  "--phantom-seed", "1", "--positioner",
                                                  a.positioner])
            try:
                d = build_mrfm_devices(validate_config(rig.raw).instruments, VirtualClock(),
                                       np.random.default_rng(0))
                t0 = time.perf_counter()
                wire = RE(multislice_scan(d["scanner"], d["rf"], d["readout"], x, x, 15e-9,
                                          f0, SEED_F_BW, a.t_m)).plan_result.data
                per_point = (time.perf_counter() - t0) / a.n_xy**2
                d["scanner"].transport.close()
                d["readout"].backend.close()
            finally:
                rig.stop()
        locs = []
        for k in (100, 200):
            dl = build_mrfm_devices({}, VirtualClock(), np.random.default_rng(seed + k),
                                    setup=setup, density=density)
            locs.append(RE(multislice_scan(dl["scanner"], dl["rf"], dl["readout"], x, x,
                                           15e-9, f0, SEED_F_BW, a.t_m)).plan_result.data)
        rw, r1, r2 = (reconstruct(v, setup, n_iter=300) for v in (wire, *locs))
        zw, z1 = (wire - clean) / sd, (locs[0] - clean) / sd
        row = {"seed": seed, "z_wire": [float(zw.mean()), float(zw.std())],
               "z_local": [float(z1.mean()), float(z1.std())],
               "recon_wire_vs_local": rel(rw, r1), "recon_local_vs_local": rel(r2, r1),
               "error_wire": rel(rw, density), "error_local": rel(r1, density),
               "wall_s_per_point": per_point}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"grid": [a.n_xy, a.n_xy, a.n_z], "step_nm": a.step, "pulses": len(f0),
           "t_m": a.t_m, "positioner": a.positioner, "runs": rows,
           "load": os.getloadavg()[0]}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"load {out['load']:.2f}; written {a.out}")


if __name__ == "__main__":
    main()
