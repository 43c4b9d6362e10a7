"""Ophyd devices of an MRFM setup: three-axis scanner, rf source, resonator readout.

Conventions (seed coordinates, :mod:`mracq.sim.mrfm`): the scanner position ``(x, y, z)`` is
the magnet axis relative to the sample frame laterally (m) and the gap ``z`` between the
bottom of the sample volume and the nominal magnet surface (m). The hard interlock refuses
any target with ``z < min_standoff`` *before* anything moves; the error names the point.

The simulated backend (:class:`SimulatedMRFM`) computes the spin force variance of a sample
density for the current position and each rf pulse with the PSF model of
:mod:`mracq.sim.mrfm.psf`, draws in-phase and out-of-phase variance estimates (App. A), and
advances the virtual clock by T_m per pulse.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal, SoftPositioner
from ophyd.status import AndStatus, Status, StatusBase
from ophyd.utils import LimitError

from mracq.sim.mrfm.field import SEED_F0, SEED_F_BW, CylinderMagnet
from mracq.sim.mrfm.noise import SEED_F_MEAS, SEED_S_TH, SEED_TAU_M, quadrature_variances
from mracq.sim.mrfm.psf import apply_blocks, psf_blocks

log = logging.getLogger(__name__)


class InterlockError(LimitError):
    """A move would bring sample and magnet closer than the minimum standoff."""


class LimitedSignal(Signal):
    """Signal with (low, high) limits, checked in ``set``/``put`` before the value changes."""

    def __init__(self, *args, limits=(0.0, 0.0), units="", **kwargs):
        super().__init__(*args, **kwargs)
        self._lim = tuple(limits)
        self._units = units

    @property
    def limits(self):
        return self._lim

    def check_value(self, value):
        v = float(value)
        if not math.isfinite(v):
            raise LimitError(f"{self.name}: value must be finite, got {value!r}")
        lo, hi = self._lim
        if lo < hi and not lo <= v <= hi:
            raise LimitError(f"{self.name} = {v:g} {self._units} is outside [{lo:g}, {hi:g}] "
                             f"{self._units}")

    def set(self, value, **kwargs):
        self.check_value(value)
        return super().set(value, **kwargs)


class ScannerAxis(SoftPositioner):
    """One scanner axis: soft limits, maximum step and the parent's interlock."""

    def check_value(self, pos):
        parent = self.parent
        if parent is not None and getattr(parent, "_interlock_ready", False):
            point = {a: getattr(parent, a).commanded for a in ("x", "y", "z")}
            point[self.attr_name] = float(pos)
            parent.check_point((point["x"], point["y"], point["z"]))
        super().check_value(pos)

    @property
    def commanded(self) -> float:
        """The last target (m): where a closed loop holds the axis, within its tolerance of
        the readback; the interlock checks targets (a loop settling 0.01 nm below the
        standoff target must not block the next lateral move)."""
        return getattr(self, "_commanded", self.position)

    def move(self, position, wait=True, **kwargs):
        """Check (interlock, limits, then the maximum step from here) and move."""
        self.check_value(position)
        parent = self.parent
        if parent is not None and getattr(parent, "_interlock_ready", False):
            step = parent.max_step.get()
            if abs(float(position) - self.position) > step:
                raise LimitError(f"{self.name}: step to {float(position):g} m exceeds "
                                 f"max_step {step:g} m")
        return super().move(position, wait=wait, **kwargs)

    def _setup_move(self, position, status):
        """Move through the parent's transport (a closed-loop positioner) when it has one:
        the readback is where the axis settled; an instrument error propagates from ``set``
        (the checks above ran first: nothing was sent for a refused target)."""
        transport = getattr(self.parent, "transport", None)
        if transport is None:
            return super()._setup_move(position, status)
        self._commanded = float(position)
        settled = transport.move(self.attr_name, float(position))
        self._set_position(settled)
        self._done_moving(success=True)


class Scanner(Device):
    """Three-axis scanner with soft limits and a hard minimum-standoff interlock.

    Configure with :meth:`configure_limits`; every target is checked by :meth:`check_point`
    (interlock first, then soft limits and the maximum step), before any axis moves.
    """

    x = Cpt(ScannerAxis, init_pos=0.0, kind="hinted")
    y = Cpt(ScannerAxis, init_pos=0.0, kind="hinted")
    z = Cpt(ScannerAxis, init_pos=15e-9, kind="hinted")
    min_standoff = Cpt(Signal, value=15e-9, kind="config")
    max_step = Cpt(Signal, value=1e-6, kind="config")

    def __init__(self, *args, transport=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.transport = transport
        for a in ("x", "y", "z"):
            axis = getattr(self, a)  # instantiate the axes before the interlock is armed
            if transport is not None:  # where the positioner is now
                axis._set_position(transport.position(a))
        self._interlock_ready = True

    def configure_limits(self, cfg: dict):
        """Apply a ``[instruments.scanner]`` table: min_standoff, x/y/z_range (m), max_step."""
        self.min_standoff.put(float(cfg.get("min_standoff", 15e-9)))
        self.max_step.put(float(cfg.get("max_step", 1e-6)))
        for a in ("x", "y", "z"):
            rng = cfg.get(f"{a}_range")
            if rng is not None:
                getattr(self, a)._limits = (float(rng[0]), float(rng[1]))
        z0 = max(self.min_standoff.get(), self.z.limits[0])
        if self.z.position < z0:
            self.z.set(z0).wait()

    def check_point(self, point):
        """Raise :class:`InterlockError` or ``LimitError`` if ``point`` (m) is not allowed."""
        x, y, z = (float(v) for v in point)
        if not all(math.isfinite(v) for v in (x, y, z)):
            raise LimitError(f"scanner point {point!r} is not finite")
        smin = self.min_standoff.get()
        if z < smin:
            raise InterlockError(
                f"interlock: point (x, y, z) = ({x * 1e9:.3f}, {y * 1e9:.3f}, {z * 1e9:.3f}) nm "
                f"brings sample and magnet closer than the minimum standoff {smin * 1e9:g} nm")
        for a, v in zip("xyz", (x, y, z), strict=True):
            lo, hi = getattr(self, a).limits
            if lo < hi and not lo <= v <= hi:
                raise LimitError(f"scanner {a} = {v:g} m of point ({x:g}, {y:g}, {z:g}) is "
                                 f"outside [{lo:g}, {hi:g}] m")

    def check_value(self, point):
        """The checks of :meth:`set` that do not depend on where the scanner is now.

        Interlock (minimum standoff), soft limits and finiteness of ``point`` = (x, y, z)
        in m; Bluesky's ``check_limits`` calls this for ``mv(scanner, point)``. The
        maximum step depends on the current position, which a dry run does not change, so
        :meth:`set` checks it (and the plans check it between consecutive points up front).
        """
        try:
            if len(point) != 3:
                raise TypeError
        except TypeError:
            raise LimitError(f"{self.name}: a point is (x, y, z) in m, got {point!r}") from None
        self.check_point(point)

    def check_step(self, point):
        """Raise ``LimitError`` if any axis of ``point`` is more than max_step away."""
        step = self.max_step.get()
        for a, v in zip("xyz", point, strict=True):
            if abs(float(v) - getattr(self, a).position) > step:
                raise LimitError(f"scanner {a}: step to {float(v):g} m exceeds max_step "
                                 f"{step:g} m")

    def set(self, point):
        """Move to ``point`` = (x, y, z) in m; everything is checked before any motion."""
        self.check_value(point)
        self.check_step(point)
        st = [getattr(self, a).set(float(v)) for a, v in zip("xyz", point, strict=True)]
        return AndStatus(AndStatus(st[0], st[1]), st[2])

    @property
    def position(self):
        return (self.x.position, self.y.position, self.z.position)


class PulseListSignal(Signal):
    """Centre frequencies (Hz) of the inversion pulses, each checked against the rf limits."""

    def check_value(self, value):
        try:
            f0 = [float(f) for f in np.atleast_1d(value)]
        except (TypeError, ValueError):
            raise LimitError(f"{self.name}: {value!r} is not a list of frequencies (Hz)") \
                from None
        if not f0:
            raise LimitError(f"{self.name}: the pulse list is empty")
        for f in f0:
            self.parent.frequency.check_value(f)

    def put(self, value, **kwargs):
        self.check_value(value)
        super().put([float(f) for f in np.atleast_1d(value)], **kwargs)

    def set(self, value, **kwargs):
        self.check_value(value)
        self.put(value)
        st = StatusBase()
        st.set_finished()
        return st


class RFSource(Device):
    """rf source for adiabatic inversion pulses.

    ``pulse_list`` holds the centre frequencies (Hz) the readout cycles through at each
    position; pulses repeat at twice the resonator frequency (seed Fig. 1e).
    """

    frequency = Cpt(LimitedSignal, value=133.9e6, limits=(50e6, 400e6), units="Hz",
                    kind="config")
    bandwidth = Cpt(LimitedSignal, value=SEED_F_BW, limits=(0.0, 5e6), units="Hz",
                    kind="config")
    power = Cpt(LimitedSignal, value=1.0, limits=(0.0, 10.0), units="W", kind="config")
    resonator_frequency = Cpt(LimitedSignal, value=1e6, limits=(1.0, 1e9), units="Hz",
                              kind="config")
    pulse_list = Cpt(PulseListSignal, value=[133.9e6], kind="config")

    def configure_limits(self, cfg: dict):
        """Apply an ``[instruments.rf]`` table (min/max_frequency Hz, max_power W, ...)."""
        self.frequency._lim = (float(cfg.get("min_frequency", 50e6)),
                               float(cfg.get("max_frequency", 400e6)))
        self.bandwidth._lim = (0.0, float(cfg.get("max_bandwidth", 5e6)))
        self.power._lim = (0.0, float(cfg.get("max_power", 10.0)))

    def set_pulses(self, f0_list, f_bw=None):
        """Check and store the list of centre frequencies (Hz) and the half-bandwidth (Hz)."""
        f0 = [float(f) for f in np.atleast_1d(f0_list)]
        self.pulse_list.check_value(f0)
        if f_bw is not None:
            self.bandwidth.check_value(float(f_bw))
            self.bandwidth.set(float(f_bw)).wait()
        self.pulse_list.put(f0)
        self.frequency.put(f0[0])

    def pulse_train(self, t_m: float) -> dict:
        """Inversion train for one measurement of ``t_m`` s at the current centre frequency."""
        rate = 2 * self.resonator_frequency.get()
        return {"f0": self.frequency.get(), "f_bw": self.bandwidth.get(),
                "rate": rate, "n_pulses": int(round(rate * t_m)), "duration": float(t_m)}


class SimulatedMRFM:
    """Physics backend: force variances of a sample density at a scanner point.

    Parameters
    ----------
    density : ndarray (n_xy, n_xy, n_z) or callable
        Sample density, m^-3, on the periodic grid of a setup (lateral index 0 = origin), or
        a function returning it (evaluated at the first measurement).
    voxel_size : float
        Voxel edge, m.
    geometry : str
        "membrane" or "cantilever".
    clock : VirtualClock
        Advanced by T_m per pulse.
    rng : numpy.random.Generator
        Noise source.
    magnet, b0, tau_m, s_th, f_meas
        Physics parameters (T, s, N/sqrt(Hz), Hz).
    """

    def __init__(self, density, voxel_size, geometry, clock, rng, magnet=None, b0=3.0,
                 tau_m=SEED_TAU_M, s_th=SEED_S_TH, f_meas=SEED_F_MEAS):
        self._density = density
        self.voxel_size = float(voxel_size)
        self.geometry = geometry
        self.clock, self.rng = clock, rng
        self.magnet = magnet or CylinderMagnet()
        self.b0, self.tau_m, self.s_th, self.f_meas = b0, tau_m, s_th, f_meas
        self._planes: dict = {}

    @property
    def density(self) -> np.ndarray:
        """Sample density (m^-3); a callable given at construction is evaluated once."""
        if callable(self._density):
            self._density = self._density()
        return np.asarray(self._density, float)

    def _plane(self, f0, f_bw, z):
        key = (round(f0), round(f_bw), round(z / 1e-12))
        if key not in self._planes:
            n_xy, _, n_z = self.density.shape
            layers = z + (np.arange(n_z) + 0.5) * self.voxel_size
            g = psf_blocks(self.magnet, [f0], [0.0], layers, n_xy, self.voxel_size,
                           self.geometry, f_bw, self.b0)
            self._planes[key] = apply_blocks(g, self.density)[:, :, 0]
        return self._planes[key]

    def signal(self, point, f0, f_bw) -> float:
        """Noise-free spin force variance (N^2) at ``point`` (m) for a pulse (Hz)."""
        x, y, z = point
        i = int(round(x / self.voxel_size)) % self.density.shape[0]
        j = int(round(y / self.voxel_size)) % self.density.shape[1]
        return float(self._plane(f0, f_bw, z)[i, j])

    def measure(self, point, pulses, f_bw, t_m):
        """In- and out-of-phase variances (N^2) for each pulse; advances the clock."""
        s = np.array([self.signal(point, f, f_bw) for f in pulses])
        var_in, var_out = quadrature_variances(s, t_m, self.rng, self.tau_m, self.s_th,
                                               self.f_meas)
        self.clock.advance(t_m * len(pulses))
        return var_in, var_out


class ResonatorReadout(Device):
    """Lock-in readout of the resonator: force variances after an integration time per pulse.

    On trigger it measures every pulse of the rf source's ``pulse_list`` at the scanner's
    position and reports the in-phase and out-of-phase variances (N^2) and the spin signal
    ``in - mean(out)`` (the out-of-phase estimate is shared by the pulses at one position,
    seed App. A).
    """

    integration_time = Cpt(LimitedSignal, value=1.0, limits=(1e-3, 3600.0), units="s",
                           kind="config")
    in_phase = Cpt(Signal, value=[float("nan")], kind="normal")
    out_of_phase = Cpt(Signal, value=[float("nan")], kind="normal")
    spin_signal = Cpt(Signal, value=[float("nan")], kind="hinted")

    def __init__(self, *args, backend=None, scanner=None, rf=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend, self.scanner, self.rf = backend, scanner, rf
        if rf is not None:  # one value per pulse, also before the first trigger
            rf.pulse_list.subscribe(self._pulses_changed, run=True)

    def _pulses_changed(self, value=None, **kwargs):
        nan = [float("nan")] * len(value)
        for sig in (self.in_phase, self.out_of_phase, self.spin_signal):
            if len(sig.get()) != len(nan):
                sig.put(nan)

    def configure_limits(self, cfg: dict):
        """Apply a ``[instruments.readout]`` table (min/max_integration, s)."""
        self.integration_time._lim = (float(cfg.get("min_integration", 1e-3)),
                                      float(cfg.get("max_integration", 3600.0)))

    def describe(self):
        d = super().describe()
        n = len(self.rf.pulse_list.get()) if self.rf is not None else 1
        for sig in (self.in_phase, self.out_of_phase, self.spin_signal):
            d[sig.name].update(dtype="array", shape=[n], units="N^2")
        return d

    def trigger(self):
        pulses = self.rf.pulse_list.get()
        vin, vout = self.backend.measure(self.scanner.position, pulses,
                                         self.rf.bandwidth.get(), self.integration_time.get())
        self.in_phase.put(vin.tolist())
        self.out_of_phase.put(vout.tolist())
        self.spin_signal.put((vin - vout.mean()).tolist())
        st = Status(obj=self)
        st.set_finished()
        return st


def build_mrfm_devices(instruments: dict, clock, rng, setup=None, density=None) -> dict:
    """Scanner, rf source and readout: simulated, or over the wire where the tables name a
    ``driver`` (:mod:`mracq.devices.mrfm_wire`: a positioner behind the scanner, a lock-in
    and an rf source behind the readout).

    Parameters
    ----------
    instruments : dict
        Validated ``[instruments.*]`` tables (``scanner``, ``rf``, ``readout``).
    clock : VirtualClock
        Hardware-time accounting.
    rng : numpy.random.Generator
        Noise source.
    setup : MRFMSetup, optional
        Geometry and physics of the simulated sample (default: the seed's membrane geometry,
        1 nm voxels, 168 x 168 x 46 grid; PSFs are computed lazily per pulse and height).
    density : ndarray, optional
        Sample density (m^-3) on the setup's grid; default the seed's sphere phantom.
    """
    from mracq.devices.mrfm_wire import scanner_transport, wire_backend

    if setup is not None:
        geo, dx, shape = setup.geometry, setup.voxel_size, setup.sample_shape
        magnet, b0 = setup.magnet, setup.b0
        noise = dict(tau_m=setup.tau_m, s_th=setup.s_th, f_meas=setup.f_meas)
    else:
        geo, dx, shape, magnet, b0, noise = "membrane", 1e-9, (168, 168, 46), None, 3.0, {}
    if density is None:
        from mracq.sim.mrfm.phantom import sphere_phantom

        def density():
            return sphere_phantom(shape, dx, np.random.default_rng(0))
    scanner = Scanner(name="scanner", transport=scanner_transport(instruments))
    scanner.configure_limits(instruments.get("scanner", {}))
    rf = RFSource(name="rf")
    rf.configure_limits(instruments.get("rf", {}))
    rf.set_pulses(SEED_F0)
    backend = wire_backend(instruments, clock, rf)  # lock-in + rf source over the wire
    if backend is None:
        backend = SimulatedMRFM(density, dx, geo, clock, rng, magnet=magnet, b0=b0, **noise)
    readout = ResonatorReadout(name="readout", backend=backend, scanner=scanner, rf=rf)
    readout.configure_limits(instruments.get("readout", {}))
    return {"scanner": scanner, "rf": rf, "readout": readout}
