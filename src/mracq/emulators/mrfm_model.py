"""The physics one ``mracq emulate mrfm`` process shares between its protocol servers.

:class:`EmulatedMRFM` holds the sample (the seed's sphere phantom on a periodic grid, as
:mod:`mracq.sim.mrfm`), the positioner's three closed-loop axes, the rf source's settings
(a :class:`~mracq.emulators.nv_model.MicrowaveState`, the state the SCPI source emulator
sets, FM deviation = inversion half-bandwidth) and the lock-in's capture buffer. The
lock-in's X/Y samples at a capture's start follow the spin force variance at the
positioner's place and the rf slice then in force (rf output off: thermal noise only).

Units: m, s, Hz, N^2 inside; each protocol server converts at its edge.

Motion: a move to ``target`` is a damped oscillation about ``target + e`` (``e`` uniform in
+- ``resolution``, the closed loop's final error) with time constant ``tau`` and period
``period`` (nominal s), so it overshoots and takes time; ``time_scale`` (wall s per nominal s)
makes rehearsals fast. With the ``nosettle`` fault armed, the next move stalls at 70 % of
the way and keeps reporting "moving". With ``state_file`` the settled positions survive a
restart (a positioner with absolute sensors keeps its place across a power cycle).

Lock-in samples: X = g (spin + thermal in-phase force), Y = g (thermal out-of-phase force),
each an AR(1) Gaussian series of correlation time ``tau_m`` sampled at the capture rate;
var(X) / g^2 = s + th, var(Y) / g^2 = th with th = S_th^2 f_meas (seed App. A).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from mracq.emulators.nv_model import MicrowaveState
from mracq.sim.mrfm.field import CylinderMagnet
from mracq.sim.mrfm.noise import SEED_F_MEAS, SEED_S_TH, SEED_TAU_M, thermal_variance
from mracq.sim.mrfm.phantom import sphere_phantom
from mracq.sim.mrfm.psf import apply_blocks, psf_blocks

log = logging.getLogger(__name__)

#: Height grid of the model's planes, m (a settled z within +- Z_GRID/2 uses one plane).
Z_GRID = 0.1e-9


class Axis:
    """One closed-loop axis (m, nominal s)."""

    def __init__(self, position: float):
        self.position0 = float(position)  # where the last move started
        self.target = float(position)
        self.final = float(position)      # where the loop settles (target + error)
        self.t0 = -math.inf
        self.stalled = False

    def at(self, t: float, tau: float, period: float) -> float:
        """Position at nominal time ``t``."""
        dt = t - self.t0
        if self.stalled:
            return self.position0 + 0.7 * (self.target - self.position0)
        if dt >= 12 * tau:
            return self.final
        return self.final + (self.position0 - self.final) * math.exp(-dt / tau) * \
            math.cos(2 * math.pi * dt / period)

    def moving(self, t: float, tau: float, resolution: float) -> bool:
        if self.stalled:
            return True
        dt = t - self.t0
        return dt < 12 * tau and abs(self.position0 - self.final) * math.exp(-dt / tau) \
            > resolution


class EmulatedMRFM:
    """Shared physics of the emulated MRFM rig (see the module docstring).

    Parameters
    ----------
    sim : dict
        ``seed`` (noise), ``phantom_seed``, ``n_xy``, ``voxel_size`` (m), ``n_z``,
        ``geometry``, ``volts_per_newton`` (lock-in gain, V/N), ``time_scale``.
    state_file : path, optional
        Settled positions are kept here across restarts.
    """

    def __init__(self, sim: dict | None = None, state_file=None):
        sim = dict(sim or {})
        self.sim = sim
        self.lock = threading.RLock()
        self.rng = np.random.default_rng(sim.get("seed"))
        self.n_xy = int(sim.get("n_xy", 32))
        self.voxel_size = float(sim.get("voxel_size", 4e-9))
        self.n_z = int(sim.get("n_z", 12))
        self.geometry = sim.get("geometry", "membrane")
        self.magnet = CylinderMagnet()
        self.b0 = 3.0
        self.tau_m, self.s_th, self.f_meas = SEED_TAU_M, SEED_S_TH, SEED_F_MEAS
        self.th = thermal_variance(self.s_th, self.f_meas)
        self.gain = float(sim.get("volts_per_newton", 1e14))
        self.time_scale = float(sim.get("time_scale", 1.0))
        self.tau, self.period, self.resolution = 2e-3, 6e-3, 0.02e-9
        self.speed = 10e-6  # m/s before the loop takes over: the first part of a move
        self._density = None
        self._phantom_seed = sim.get("phantom_seed", 1)
        self._planes: dict = {}
        self.mw = MicrowaveState(frequency=133.9e6, power_dbm=-30.0)
        self.state_file = Path(state_file) if state_file else None
        start = [0.0, 0.0, float(sim.get("z_start", 50e-9))]
        if self.state_file is not None and self.state_file.exists():
            start = json.loads(self.state_file.read_text())["position"]
        self.axes = [Axis(p) for p in start]
        self.stall_next = False
        self._t_origin = time.monotonic()

    # ---------------------------------------------------------------- time and motion
    def now(self) -> float:
        """Nominal time, s (wall time / time_scale)."""
        return (time.monotonic() - self._t_origin) / self.time_scale

    def sleep(self, nominal: float) -> None:
        time.sleep(max(0.0, nominal * self.time_scale))

    def move(self, axis: int, target: float) -> None:
        """Start a closed-loop move of ``axis`` (0, 1, 2) to ``target`` (m)."""
        with self.lock:
            a = self.axes[axis]
            t = self.now()
            a.position0 = a.at(t, self.tau, self.period)
            a.target = float(target)
            a.final = a.target + self.rng.uniform(-self.resolution, self.resolution)
            a.t0 = t + abs(a.target - a.position0) / self.speed
            a.stalled = self.stall_next
            self.stall_next = False
        self._save_later()

    def halt(self, axis: int) -> None:
        """Stop ``axis`` where it is (closed loop off)."""
        with self.lock:
            a = self.axes[axis]
            here = self.position(axis)
            a.position0 = a.target = a.final = here
            a.t0, a.stalled = -math.inf, False
        self._save_later()

    def position(self, axis: int) -> float:
        with self.lock:
            t = self.now()
            a = self.axes[axis]
            if t < a.t0:  # still travelling at speed before the loop's ring-down
                frac = 1 - (a.t0 - t) * self.speed / max(abs(a.target - a.position0), 1e-30)
                return a.position0 + max(0.0, frac) * (a.target - a.position0)
            return a.at(t, self.tau, self.period)

    def moving(self, axis: int) -> bool:
        with self.lock:
            t = self.now()
            a = self.axes[axis]
            return t < a.t0 or a.moving(t, self.tau, self.resolution)

    def point(self) -> tuple[float, float, float]:
        return tuple(self.position(i) for i in range(3))

    def _save_later(self) -> None:
        if self.state_file is None:
            return
        with self.lock:
            finals = [a.final if not a.stalled else a.at(0, 1, 1) for a in self.axes]
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"position": finals}))
        os.replace(tmp, self.state_file)

    # ---------------------------------------------------------------- physics
    @property
    def density(self) -> np.ndarray:
        if self._density is None:
            self._density = sphere_phantom((self.n_xy, self.n_xy, self.n_z), self.voxel_size,
                                           np.random.default_rng(self._phantom_seed))
        return self._density

    def signal(self, point, f0: float, f_bw: float) -> float:
        """Noise-free spin force variance (N^2) at ``point`` (m) for a pulse at ``f0`` (Hz)."""
        x, y, z = point
        zq = round(z / Z_GRID) * Z_GRID
        key = (round(f0), round(f_bw), round(zq / 1e-12))
        if key not in self._planes:
            layers = zq + (np.arange(self.n_z) + 0.5) * self.voxel_size
            g = psf_blocks(self.magnet, [f0], [0.0], layers, self.n_xy, self.voxel_size,
                           self.geometry, f_bw, self.b0)
            self._planes[key] = apply_blocks(g, self.density)[:, :, 0]
        i = int(round(x / self.voxel_size)) % self.n_xy
        j = int(round(y / self.voxel_size)) % self.n_xy
        return float(self._planes[key][i, j])

    def spin_signal_now(self) -> float:
        """The spin force variance (N^2) at the current place and rf slice."""
        with self.lock:
            mw = self.mw
            if not mw.output or not mw.fm_on or mw.fm_deviation <= 0:
                return 0.0
            return self.signal(self.point(), mw.frequency, mw.fm_deviation)


class Capture:
    """One lock-in capture: X/Y samples (V) generated as the buffer fills."""

    def __init__(self, model: EmulatedMRFM, rate: float, n_max: int, channels: int):
        self.model, self.rate, self.n_max, self.channels = model, float(rate), int(n_max), \
            int(channels)
        self.t0 = model.now()
        s = model.spin_signal_now()
        self.sd = (math.sqrt(s + model.th) * model.gain, math.sqrt(model.th) * model.gain)
        self.rho = math.exp(-1.0 / (self.rate * model.tau_m))
        self.rng = np.random.default_rng(model.rng.integers(2**63))
        self.samples = np.empty((0, 2))
        self.stopped_at: int | None = None

    def count(self) -> int:
        """Samples in the buffer now."""
        if self.stopped_at is not None:
            return self.stopped_at
        return min(self.n_max, int((self.model.now() - self.t0) * self.rate))

    def running(self) -> bool:
        return self.stopped_at is None and self.count() < self.n_max

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = self.count()

    def data(self, n: int) -> np.ndarray:
        """The first ``n`` samples (n, 2): X, Y in V."""
        have = len(self.samples)
        if n > have:
            from scipy.signal import lfilter

            z = self.rng.standard_normal((n - have, 2))
            prev = self.samples[-1] / np.array(self.sd) if have else \
                self.rng.standard_normal(2)
            c = math.sqrt(1 - self.rho**2)
            out = lfilter([c], [1.0, -self.rho], z, axis=0, zi=(self.rho * prev)[None, :])[0]
            self.samples = np.vstack([self.samples, out * np.array(self.sd)])
        return self.samples[:n]
