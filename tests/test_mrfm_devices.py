"""MRFM devices and plans with a real RunEngine: interlock, limits, stored runs."""

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.utils import LimitError

from mracq.devices.mrfm import InterlockError, build_mrfm_devices
from mracq.plans.mrfm import cs_multislice_scan, multislice_scan, xyz_scan
from mracq.sim.clock import VirtualClock
from mracq.sim.mrfm.field import SEED_F0
from mracq.sim.mrfm.setup import default_setup

INSTRUMENTS = {
    "scanner": {"min_standoff": 15e-9, "x_range": [-1e-6, 1e-6], "y_range": [-1e-6, 1e-6],
                "z_range": [15e-9, 2e-6], "max_step": 1e-6},
    "rf": {"min_frequency": 50e6, "max_frequency": 400e6, "max_power": 10.0,
           "max_bandwidth": 5e6},
    "readout": {"min_integration": 1e-3, "max_integration": 3600.0},
}
F0 = SEED_F0[::12]


@pytest.fixture(scope="module")
def setup():
    return default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=32, n_z=12, f0=F0)


@pytest.fixture()
def rig(setup):
    clock = VirtualClock()
    rng = np.random.default_rng(0)
    density = setup.phantom(np.random.default_rng(1))
    devs = build_mrfm_devices(INSTRUMENTS, clock, rng, setup=setup, density=density)
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return devs, clock, RE, docs, density


def test_interlock_refuses_before_motion(rig):
    devs, *_ = rig
    sc = devs["scanner"]
    before = sc.position
    with pytest.raises(InterlockError, match=r"\(10\.000, 20\.000, 12\.000\) nm"):
        sc.set((10e-9, 20e-9, 12e-9))
    with pytest.raises(InterlockError):
        sc.z.set(14e-9)
    assert sc.position == before
    with pytest.raises(LimitError):
        sc.set((2e-6, 0.0, 20e-9))


def test_plan_violating_standoff_is_refused_before_any_message(rig):
    devs, clock, RE, docs, _ = rig
    x = np.arange(3) * 4e-9
    with pytest.raises(InterlockError, match=r"\(0\.000, 0\.000, 10\.000\) nm"):
        RE(xyz_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, [20e-9, 10e-9]))
    assert docs == [] and clock.now == 0.0
    assert devs["scanner"].position == (0.0, 0.0, 15e-9)
    with pytest.raises(LimitError):
        RE(multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x,
                           f0_list=[500e6]))
    assert docs == []


def test_multislice_scan_stores_everything(rig, setup):
    devs, clock, RE, docs, density = rig
    x = np.arange(4) * 4e-9
    res = RE(multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, f0_list=F0,
                             t_m=30.0)).plan_result
    assert res.data.shape == (4, 4, len(F0))
    assert res.hardware_time == pytest.approx(16 * len(F0) * 30.0)
    start = next(d for n, d in docs if n == "start")
    assert start["plan_name"] == "multislice_scan"
    assert [p["f0"] for p in start["pulses"]] == pytest.approx(list(F0))
    assert np.array(start["mask"]).all() and start["geometry"]["shape"] == [4, 4, len(F0)]
    descs = {d["name"] for n, d in docs if n == "descriptor"}
    assert descs == {"primary", "cube"}
    clean = setup.forward(density)[:4, :4]
    sd = setup.noise_std(clean, 30.0)
    z = (res.data - clean) / sd
    assert abs(z.mean()) < 0.5 and 0.6 < z.std() < 1.5


def test_cs_scan_stores_mask(rig):
    devs, clock, RE, docs, _ = rig
    x = np.arange(5) * 4e-9
    res = RE(cs_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, 0.5,
                                np.random.default_rng(3), f0_list=F0[:2], t_m=1.0)).plan_result
    start = next(d for n, d in docs if n == "start")
    assert np.array_equal(np.array(start["mask"], bool), res.mask)
    assert np.isnan(res.data[~res.mask]).all() and np.isfinite(res.data[res.mask]).all()
    n_events = sum(1 for n, d in docs if n == "event" and d["data"].get("scanner_x") is not None)
    assert n_events == res.mask.sum()
    assert clock.now == pytest.approx(res.mask.sum() * 2 * 1.0)


def test_rf_limits_and_pulse_train(rig):
    devs, *_ = rig
    rf = devs["rf"]
    with pytest.raises(LimitError):
        rf.power.set(20.0)
    rf.resonator_frequency.set(2e6).wait()
    train = rf.pulse_train(1.5)
    assert train["rate"] == 4e6 and train["n_pulses"] == 6_000_000


def test_strategy_prefers_predicted_signal():
    from mracq.recon.mrfm.strategy import SignalWeightedStrategy

    st = SignalWeightedStrategy((10, 10), np.random.default_rng(0), explore=0.0)
    pred = np.zeros((10, 10, 2))
    pred[:5, :, :] = 1.0
    st.update(pred)
    sug = st.suggest(40)
    pts = [(s["i"], s["j"]) for s in sug]
    assert len(set(pts)) == 40 and all(i < 5 for i, _ in pts)
    assert len({s["_id"] for s in sug}) == 40
    st.ingest([{"_id": s["_id"]} for s in sug])  # outcomes keyed by _id
    assert st.sampled.sum() == 40 and len(st.suggest(100)) == 60


def test_strategy_weight_is_detectability_not_energy():
    """Above the noise a position counts ~1 per channel whatever its size; below it ~SNR^2."""
    from mracq.recon.mrfm.strategy import SignalWeightedStrategy

    st = SignalWeightedStrategy((4, 4), np.random.default_rng(0))
    sigma = 2e-34
    pred = np.zeros((4, 4, 3))
    pred[0, 0], pred[1, 1], pred[2, 2] = 100 * sigma, 1000 * sigma, 0.01 * sigma
    st.update(pred, sigma)
    w = st.weight
    assert w[1, 1] / w[0, 0] == pytest.approx(1.0, abs=0.02)
    assert w[0, 0] == pytest.approx(3 * (100 / 101) ** 2)
    assert w[2, 2] == pytest.approx(3 * (0.01 / 1.01) ** 2)
    st.update(pred)  # no noise estimate: energy, 100x apart in amplitude
    assert st.weight[1, 1] / st.weight[0, 0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="noise_std"):
        st.update(pred, 0.0)


def test_adaptive_scan_runs_and_respects_budget(rig, setup):
    from mracq.plans.mrfm import adaptive_multislice_scan

    devs, clock, RE, docs, _ = rig
    res = RE(adaptive_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], setup,
                                      t_m=1.0, budget=0.25, batch=0.125,
                                      rng=np.random.default_rng(0), n_iter=5)).plan_result
    assert res.mask.sum() == 256
    assert clock.now == pytest.approx(256 * len(F0) * 1.0)
    start = next(d for n, d in docs if n == "start")
    assert "criterion" in start and start["plan_name"] == "adaptive_multislice_scan"
    bad = default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=32, n_z=12, f0=F0,
                        z0=10e-9)
    n_docs = len(docs)
    with pytest.raises(InterlockError, match="10.000\\) nm"):
        RE(adaptive_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], bad))
    assert len(docs) == n_docs


def test_analyze_cli_from_npz(tmp_path, rig, setup):
    import json

    from mracq.cli import main

    devs, clock, RE, docs, density = rig
    x = np.fft.fftfreq(setup.n_xy, 1.0 / setup.n_xy) * setup.voxel_size
    data = setup.measure(density, 30.0, np.random.default_rng(2))
    meta = {"protocol": "multislice", "pulses": [{"f0": float(f)} for f in F0],
            "geometry": {"x": sorted(x.tolist()), "z": [setup.z0], "resonator": "membrane"}}
    path = tmp_path / "scan.npz"
    np.savez(path, data=data, mask=np.ones(data.shape[:2], bool), meta=json.dumps(meta))
    out = tmp_path / "out"
    assert main(["analyze", "mrfm", str(path), "--out", str(out), "--n-z", "12",
                 "--n-iter", "5"]) == 0
    vol = np.load(out / "volume.npy")
    assert vol.shape == setup.sample_shape and (out / "slices.png").exists()


def test_analyze_cli_uses_the_magnet_model(tmp_path, capsys):
    """Data from the rounded-rim magnet: --edge-radius 10 reconstructs them much better."""
    import json

    from mracq.cli import main
    from mracq.sim.mrfm.field import CylinderMagnet, calibrate_surface_offset

    rim = CylinderMagnet(edge_radius=10e-9)
    rim = CylinderMagnet(edge_radius=10e-9, surface_offset=calibrate_surface_offset(rim)[0])
    f0 = SEED_F0[::6]
    s = default_setup("membrane", "multislice", voxel_size=2e-9, n_xy=48, n_z=24, f0=f0,
                      magnet=rim)
    truth = s.phantom(np.random.default_rng(1))
    x = np.fft.fftfreq(s.n_xy, 1.0 / s.n_xy) * s.voxel_size
    meta = {"protocol": "multislice", "pulses": [{"f0": float(f)} for f in f0],
            "geometry": {"x": sorted(x.tolist()), "z": [s.z0], "resonator": "membrane"}}
    path = tmp_path / "scan.npz"
    np.savez(path, data=s.forward(truth), mask=np.ones((48, 48), bool), meta=json.dumps(meta))
    err = {}
    for edge in ("0", "10"):
        out = tmp_path / f"out{edge}"
        assert main(["analyze", "mrfm", str(path), "--out", str(out), "--n-z", "24",
                     "--n-iter", "40", "--edge-radius", edge]) == 0
        err[edge] = np.sqrt(np.mean((np.load(out / "volume.npy") - truth) ** 2))
    assert err["10"] < 0.9 * err["0"]  # 0.84 measured
    assert main(["analyze", "mrfm", str(path), "--edge-radius", "60"]) == 2
    assert "--edge-radius 60.0 nm: edge_radius must be in" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_cli_from_stored_run(tmp_path, rig, setup):
    from mracq.cli import main
    from mracq.storage import close_catalog, open_catalog, subscribe_writer

    devs, clock, RE, docs, density = rig
    client = open_catalog(tmp_path / "data")
    subscribe_writer(RE, client)
    x = np.fft.fftfreq(setup.n_xy, 1.0 / setup.n_xy)[:6] * setup.voxel_size
    RE(cs_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, 0.7,
                          np.random.default_rng(1), f0_list=F0, t_m=5.0))
    close_catalog(client)
    out = tmp_path / "out"
    assert main(["analyze", "mrfm", "-1", "--data-dir", str(tmp_path / "data"), "--out",
                 str(out), "--n-z", "4", "--n-iter", "3"]) == 0
    assert np.load(out / "volume.npy").shape == (6, 6, 4)


def test_adaptive_time_scan_spends_time_where_the_sample_is(rig, setup):
    """Pilot on a quarter of the positions, then one water-filled round: the clock counts
    exactly the integration time the strategy spent, new positions and revisits happen, and
    the round's time goes to points the reconstruction predicts signal at."""
    from mracq.plans.mrfm import adaptive_time_multislice_scan
    from mracq.recon.mrfm.strategy import HardwareTimeStrategy

    devs, clock, RE, docs, density = rig
    n_pts = int(np.prod(setup.data_shape))
    strat = HardwareTimeStrategy(setup.data_shape, t_ref=4.0, pilot_time=1.0,
                                 round_time=1.0 * n_pts, budget=1.25 * n_pts, t_step=0.5,
                                 pilot_fraction=0.25, rng=np.random.default_rng(3))
    res = RE(adaptive_time_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], setup,
                                           t_ref=4.0, pilot_time=1.0, t_step=0.5,
                                           strategy=strat, n_iter=100)).plan_result
    assert strat.rounds == 2
    assert clock.now == pytest.approx(strat.spent) and res.hardware_time == clock.now
    assert strat.spent <= 1.25 * n_pts + 1e-9
    pilot_pos = int(0.25 * setup.n_xy**2)
    assert res.mask.sum() > pilot_pos  # the round measured new positions
    assert (strat.time > 1.0).any()  # and revisited pilot points
    clean = setup.forward(density)
    sig = setup.noise_std(clean, 4.0)
    signal, empty = clean > 0.3 * sig, clean < 0.01 * sig
    assert strat.time[signal].mean() > 1.5 * strat.time[empty].mean()  # uniform: 1.0
    start = next(d for n, d in docs if n == "start")
    assert start["plan_name"] == "adaptive_time_multislice_scan"


def test_adaptive_time_scan_dry_run_stops_after_the_pilot(rig, setup, capsys):
    from bluesky.simulators import summarize_plan

    from mracq.plans.mrfm import adaptive_time_multislice_scan
    from mracq.recon.mrfm.strategy import HardwareTimeStrategy

    devs, clock, *_ = rig
    strat = HardwareTimeStrategy(setup.data_shape, 4.0, 1.0, 100.0, 1e4, t_step=0.5,
                                 pilot_fraction=0.05, rng=np.random.default_rng(0))
    summarize_plan(adaptive_time_multislice_scan(devs["scanner"], devs["rf"], devs["readout"],
                                                 setup, t_ref=4.0, pilot_time=1.0, t_step=0.5,
                                                 strategy=strat))
    out = capsys.readouterr().out
    assert out.count("Read ['readout', 'scanner']") == int(round(0.05 * setup.n_xy**2))
    assert strat.rounds == 0 and clock.now == 0.0
