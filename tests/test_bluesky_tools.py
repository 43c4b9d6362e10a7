"""Every plan under Bluesky's own tools: simulators, limits with write counters, describe vs
read, and event-model's document schemas."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky.simulators import check_limits, plot_raster_path, summarize_plan
from ophyd.utils import LimitError

from _bluesky_rig import F_RES, mrfm_rig, mrfm_setup, nv_rig
from mracq.devices.mrfm import InterlockError
from mracq.plans.calibration import odmr_scan, rabi_scan, ramsey_detuning
from mracq.plans.coherence import coherence_scan, prepare_nv
from mracq.plans.cosy import cosy_adaptive, cosy_random_mask
from mracq.plans.mrfm import (
    adaptive_multislice_scan,
    cs_multislice_scan,
    multislice_scan,
    xyz_scan,
)
from mracq.plans.vqns import vqns_loop
from mracq.sim.cosy.model import T_GRID

matplotlib.use("Agg")

GRID = T_GRID[:6]
X = np.arange(3) * 4e-9
TIMES = np.linspace(2e-6, 20e-6, 4)


def _vqns_strategy():
    from mracq.recon.vqns.strategy import NextSequenceStrategy

    return NextSequenceStrategy(["cpmg-2", "cpmg-4"],
                                initial=[("fid", TIMES), ("se", TIMES)], n_points=4,
                                max_measurements=3, target=0.0, seed=0,
                                reconstruct_kw={"n_lorentzians": 2, "restarts": 2,
                                                "max_iter": 100})


@pytest.fixture(scope="module")
def RE():
    return RunEngine(call_returns_result=True)  # check_limits needs an event loop


@pytest.fixture(scope="module")
def setup():
    return mrfm_setup()


def nv_plans(dev):
    """(name, plan factory) for every NV plan, small."""
    nv = dev["nv"]
    return [
        ("prepare_nv", lambda: prepare_nv(dev["mw"], dev["laser"], frequency=F_RES,
                                          power_dbm=0.0)),
        ("coherence_scan", lambda: coherence_scan(nv, "cpmg", TIMES, n=2, shots=20_000)),
        ("odmr_scan", lambda: odmr_scan(nv, dev["mw"], F_RES + np.linspace(-5e6, 5e6, 8),
                                        power_dbm=-20.0, shots=20_000)),
        ("rabi_scan", lambda: rabi_scan(nv, dev["mw"], np.linspace(0, 100e-9, 8),
                                        frequency=F_RES, shots=20_000)),
        ("ramsey_detuning", lambda: ramsey_detuning(nv, dev["mw"], np.linspace(0.1e-6, 1e-6, 10),
                                                    resonance=F_RES, shots=20_000)),
        ("vqns_loop", lambda: vqns_loop(nv, _vqns_strategy(), shots=20_000)),
        ("cosy_random_mask", lambda: cosy_random_mask(
            nv, 0.3, t1=GRID, t2=GRID, shots=5_000, every=5, method="svt",
            rng=np.random.default_rng(0))),
        ("cosy_adaptive", lambda: cosy_adaptive(
            nv, t1=GRID, t2=GRID, shots=5_000, initial=0.2, batch=4, max_coverage=0.5,
            members=2, method="svt", rng=np.random.default_rng(0))),
    ]


def mrfm_plans(dev, setup):
    sc, rf, ro = dev["scanner"], dev["rf"], dev["readout"]
    f0 = list(setup.f0)
    return [
        ("multislice_scan", lambda: multislice_scan(sc, rf, ro, X, X, 20e-9, f0, t_m=0.1)),
        ("xyz_scan", lambda: xyz_scan(sc, rf, ro, X, X, [20e-9, 24e-9], f0[0], t_m=0.1)),
        ("cs_multislice_scan", lambda: cs_multislice_scan(
            sc, rf, ro, X, X, 0.6, np.random.default_rng(0), 20e-9, f0, t_m=0.1)),
        ("adaptive_multislice_scan", lambda: adaptive_multislice_scan(
            sc, rf, ro, setup, t_m=0.1, budget=0.5, batch=0.25,
            rng=np.random.default_rng(0), n_iter=3)),
    ]


# ------------------------------------------------------------------ simulators
def test_simulators_walk_every_nv_plan(RE, capsys):
    dev = nv_rig()
    for name, make in nv_plans(dev):
        check_limits(make())
        summarize_plan(make())
        out = capsys.readouterr().out
        assert "Read" in out or name == "prepare_nv", name
        assert "mw_power -> 0.0" in out if name == "prepare_nv" else "Open Run" in out, name
    # the adaptive plans walk their non-adaptive part, then stop with a clear message
    summarize_plan(vqns_loop(dev["nv"], _vqns_strategy(), shots=20_000))
    out = capsys.readouterr().out
    assert out.count("Open Run") == 2  # FID and SE; the next sequence needs data


def test_simulators_walk_every_mrfm_plan(RE, capsys, setup):
    dev = mrfm_rig(setup)
    for name, make in mrfm_plans(dev, setup):
        check_limits(make())
        summarize_plan(make())
        out = capsys.readouterr().out
        assert "scanner_x ->" in out and "Read ['readout', 'scanner']" in out, name
        art = plot_raster_path(make(), "scanner_x", "scanner_y")
        n_points = len(art["events"].get_offsets())
        expect = {"multislice_scan": 9, "xyz_scan": 18, "adaptive_multislice_scan": 16}
        if name in expect:  # + 1: the cube event
            assert n_points == expect[name] + 1, name
    assert dev["scanner"].position == (0.0, 0.0, 15e-9)  # nothing moved


def test_check_limits_applies_the_standoff_interlock(RE):
    from mracq.devices.mrfm import build_mrfm_devices

    dev = build_mrfm_devices({"scanner": {"min_standoff": 20e-9, "z_range": [20e-9, 2e-6]}},
                             None, np.random.default_rng(0))
    with pytest.raises(InterlockError, match="minimum standoff 20 nm"):
        check_limits(bps.mv(dev["scanner"], (0, 0, 18e-9)))
    check_limits(bps.mv(dev["scanner"], (0, 0, 25e-9)))
    with pytest.raises(LimitError):
        check_limits(bps.mv(dev["rf"].pulse_list, [100e6, 500e6]))
    with pytest.raises(InterlockError):
        check_limits(bps.mv(dev["scanner"].z, 18e-9))


def test_check_limits_refuses_out_of_limit_nv_values(RE):
    dev = nv_rig()
    with pytest.raises(LimitError, match="mw_power = 8"):
        check_limits(prepare_nv(dev["mw"], dev["laser"], frequency=F_RES, power_dbm=8))
    with pytest.raises(LimitError, match="nv_shots"):
        check_limits(coherence_scan(dev["nv"], "fid", TIMES, shots=10**9))


# ------------------------------------------------------------------ write counters
class Counting:
    """Transport proxy counting calls of its writing methods (set_*, run, write)."""

    def __init__(self, inner):
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "writes", [])

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if callable(attr) and name.startswith(("set_", "run", "write")):
            def counted(*a, **k):
                self.writes.append(name)
                return attr(*a, **k)
            return counted
        return attr


def _count_nv(dev):
    for name in ("mw", "laser", "nv"):
        dev[name].transport = Counting(dev[name].transport)
    return lambda: sum(len(dev[n].transport.writes) for n in ("mw", "laser", "nv"))


def _count_mrfm(dev):
    """Every value change of every MRFM signal and axis, and every backend measurement."""
    writes = []
    for name in ("scanner", "rf", "readout"):
        for w in dev[name].walk_signals(include_lazy=True):
            sig = w.item
            sig.subscribe(lambda *a, _n=sig.name, **k: writes.append(_n), run=False)
    for ax in (dev["scanner"].x, dev["scanner"].y, dev["scanner"].z):
        ax.subscribe(lambda *a, **k: writes.append("move"), event_type="readback", run=False)
    backend = dev["readout"].backend
    measure = backend.measure
    backend.measure = lambda *a, **k: (writes.append("measure"), measure(*a, **k))[1]
    return lambda: len(writes)


def test_out_of_limit_nv_plans_write_nothing():
    RE = RunEngine(call_returns_result=True)
    dev = nv_rig()
    writes = _count_nv(dev)
    nv, mw, laser = dev["nv"], dev["mw"], dev["laser"]
    bad = [
        prepare_nv(mw, laser, frequency=F_RES, power_dbm=8),  # max_power_dbm = 5
        prepare_nv(mw, laser, frequency=7e9, power_dbm=0),
        prepare_nv(mw, laser, frequency=F_RES, power_dbm=0, laser_power=0.5),
        coherence_scan(nv, "fid", TIMES, shots=10**9),
        coherence_scan(nv, "cpmg", [1e-9, 2e-9], n=8, shots=1000),  # pulses overlap
        vqns_loop(nv, _vqns_strategy(), shots=10**9),
        cosy_random_mask(nv, 0.3, t1=GRID, t2=GRID, shots=10**9, method="svt"),
        cosy_adaptive(nv, t1=GRID, t2=GRID, shots=10**9, method="svt"),
    ]
    for plan in bad:
        with pytest.raises(ValueError):  # LimitError and pulse errors are ValueErrors
            RE(plan)
        assert writes() == 0, plan
    RE(prepare_nv(mw, laser, frequency=F_RES, power_dbm=0))
    assert writes() == 5  # the counter counts: frequency, power, laser power, 2 outputs


def test_out_of_limit_mrfm_plans_write_nothing(setup):
    from mracq.sim.mrfm.setup import default_setup

    RE = RunEngine(call_returns_result=True)
    dev = mrfm_rig(setup)
    writes = _count_mrfm(dev)
    sc, rf, ro = dev["scanner"], dev["rf"], dev["readout"]
    f0 = list(setup.f0)
    low = default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=8, n_z=6,
                        f0=setup.f0, z0=10e-9)
    bad = [
        multislice_scan(sc, rf, ro, X, X, 10e-9, f0),  # below the standoff
        multislice_scan(sc, rf, ro, X, X, 20e-9, f0, f_bw=6e6),  # max_bandwidth 5 MHz
        multislice_scan(sc, rf, ro, X, X, 20e-9, f0 + [500e6]),  # rf frequency
        multislice_scan(sc, rf, ro, X, X, 20e-9, f0, t_m=1e4),  # max_integration
        multislice_scan(sc, rf, ro, [0, 0.9e-6], X, 20e-9, f0),  # x range ok, step ok...
        xyz_scan(sc, rf, ro, X, X, [20e-9, 12e-9]),
        xyz_scan(sc, rf, ro, [-0.8e-6, 0.8e-6], X, [20e-9]),  # a 1.6 um step
        cs_multislice_scan(sc, rf, ro, X, X, 0.5, np.random.default_rng(0), 12e-9, f0),
        adaptive_multislice_scan(sc, rf, ro, low, t_m=0.1),
        adaptive_multislice_scan(sc, rf, ro, setup, t_m=1e-6),
    ]
    ok_index = 4
    for k, plan in enumerate(bad):
        if k == ok_index:  # within every limit: the counter must see the writes
            RE(plan)
            assert writes() > 0
            n = writes()
            continue
        with pytest.raises(ValueError):
            RE(plan)
        assert writes() == (0 if k < ok_index else n), k


# ------------------------------------------------------------------ describe vs read
def _agrees(desc: dict, reading: dict):
    assert set(desc) == set(reading)
    for key, dk in desc.items():
        v = reading[key]["value"]
        shape = list(np.shape(v))
        assert list(dk["shape"]) == shape, (key, dk, v)
        kind = dk["dtype"]
        if kind == "boolean":
            assert isinstance(v, (bool, np.bool_)), key
        elif kind == "integer":
            assert isinstance(v, (int, np.integer)) and not isinstance(v, bool), key
        elif kind == "number":
            assert isinstance(v, (float, int, np.floating, np.integer)), key
            assert not isinstance(v, bool), key
        elif kind == "string":
            assert isinstance(v, str), key
        else:
            assert kind == "array" and shape, key


def _check_device(dev):
    _agrees(dev.describe(), dev.read())
    _agrees(dev.describe_configuration(), dev.read_configuration())


def test_describe_agrees_with_read_before_and_after_trigger(setup):
    from mracq.devices.nv import CoherenceDetector
    from mracq.pulses import coherence_programs

    dev = nv_rig()
    RunEngine()(prepare_nv(dev["mw"], dev["laser"], frequency=F_RES, power_dbm=0.0))
    det = CoherenceDetector(dev["nv"])
    for d in (dev["mw"], dev["laser"], dev["nv"], det):
        _check_device(d)
    assert dev["mw"].describe_configuration()["mw_output"]["dtype"] == "boolean"
    assert dev["laser"].describe_configuration()["laser_output"]["dtype"] == "boolean"
    det.program.set(coherence_programs("hahn", [5e-6])[0])
    dev["nv"].shots.set(5000)
    det.trigger()
    for d in (dev["nv"], det):
        _check_device(d)

    mrfm = mrfm_rig(setup)
    ro, rf = mrfm["readout"], mrfm["rf"]
    for d in mrfm.values():
        _check_device(d)
    assert ro.describe()["readout_spin_signal"]["shape"] == [len(rf.pulse_list.get())]
    rf.pulse_list.set(list(setup.f0)).wait()
    _check_device(ro)  # before the first trigger with the new pulses
    ro.trigger()
    _check_device(ro)
    assert ro.describe()["readout_spin_signal"]["shape"] == [len(setup.f0)]


# ------------------------------------------------------------------ event-model schemas
def _validate(docs):
    from event_model import DocumentNames, schema_validators

    for name, doc in docs:  # as callbacks get them, and as JSON on a wire or on disk
        schema_validators[DocumentNames[name]].validate(doc)
        plain = json.loads(json.dumps(doc, default=lambda o: o.tolist()
                                      if isinstance(o, np.ndarray) else o.item()))
        schema_validators[DocumentNames[name]].validate(plain)
    return [n for n, _ in docs]


def test_every_plan_emits_schema_valid_documents(setup):
    dev = nv_rig()
    mrfm = mrfm_rig(setup)
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    names = {}
    for name, make in nv_plans(dev) + mrfm_plans(mrfm, setup):
        docs.clear()
        RE(make())
        kinds = _validate(docs)
        starts = [d for n, d in docs if n == "start"]
        names[name] = [d["plan_name"] for d in starts]
        if name == "vqns_loop":
            assert {d["loop_plan"] for d in starts} == {"vqns_loop"}
        if name != "prepare_nv":
            assert "event" in kinds and "descriptor" in kinds and "stop" in kinds, name
            assert all(d["exit_status"] == "success" for n, d in docs if n == "stop")
    for name in ("coherence_scan", "odmr_scan", "rabi_scan", "ramsey_detuning",
                 "cosy_random_mask", "cosy_adaptive", "multislice_scan",
                 "xyz_scan", "cs_multislice_scan", "adaptive_multislice_scan"):
        assert names[name] == [name]  # each run names the plan the user called
    assert set(names["vqns_loop"]) == {"coherence_scan", "vqns_estimate"}


def test_coherence_program_checks_agree_in_check_value_and_set(RE):
    from mracq.devices.nv import CoherenceDetector
    from mracq.pulses import PulseProgram, coherence_programs
    from mracq.pulses.model import Delay, Pulse

    dev = nv_rig()
    det = CoherenceDetector(dev["nv"])
    half = PulseProgram((Pulse("laser", 3e-6), Delay(1e-6), Pulse("mw", 20e-9, rotation=np.pi / 2),
                         Delay(1e-6), Pulse("laser", 3e-6)), {"sequence": "custom"})
    for _ in range(2):  # a refused program is refused again
        with pytest.raises(ValueError, match="measures no coherence"):
            check_limits(bps.mv(det.program, half))
    with pytest.raises(ValueError, match="measures no coherence"):
        det.program.set(half)
    assert dev["nv"].program.get() is None  # the sequencer never took it
    good = coherence_programs("hahn", [5e-6])[0]
    check_limits(bps.mv(det.program, good))
    det.program.set(good)
    assert dev["nv"].program.get() is good
