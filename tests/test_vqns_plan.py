"""Closed-loop VQNS plan with a real RunEngine, simulated devices and an embedded Tiled."""

import numpy as np
import pytest
from bluesky import RunEngine

from mracq.config import load_config
from mracq.devices import build_devices
from mracq.plans.coherence import prepare_nv
from mracq.plans.vqns import family_of, vqns_loop
from mracq.recon.vqns.data import decay_time
from mracq.recon.vqns.strategy import NextSequenceStrategy
from mracq.sim.spectra import default_nv_spectrum
from mracq.storage import get_run, subscribe_writer


def test_family_of():
    assert family_of("fid") == ("fid", None)
    assert family_of("SE") == ("hahn", None)
    assert family_of("cpmg-8") == ("cpmg", 8)
    assert family_of("xy8-2") == ("xy8", 2)


@pytest.fixture
def setup(tmp_catalog):
    config = load_config()
    devices = build_devices(config, rng=np.random.default_rng(5))
    RE = RunEngine(call_returns_result=True)
    subscribe_writer(RE, tmp_catalog)
    nv = devices["nv"]
    f_res = nv.transport.nv.transition_frequency
    RE(prepare_nv(devices["mw"], devices["laser"], frequency=f_res, power_dbm=0.0))
    spec = default_nv_spectrum(config.sim.get("field", 0.05))
    return RE, nv, spec, tmp_catalog


def _strategy(spec, **kw):
    t_fid = decay_time(spec, 0, 3.0)
    t_se = decay_time(spec, 1, 3.0)
    initial = [("fid", np.linspace(t_fid / 12, t_fid, 12)),
               ("se", np.linspace(t_se / 12, t_se, 12))]
    return NextSequenceStrategy(["cpmg-2", "cpmg-4", "cpmg-8"], initial=initial, n_points=12,
                                reconstruct_kw={"n_lorentzians": 3, "restarts": 6,
                                                "max_iter": 400}, seed=0, **kw)


def test_loop_stores_every_measurement_and_estimate(setup):
    RE, nv, spec, catalog = setup
    strat = _strategy(spec, max_measurements=3, target=0.0)
    seen = []
    out = RE(vqns_loop(nv, strat, shots=300_000,
                       on_estimate=lambda r, s: seen.append(s))).plan_result
    assert out["sequences"][:2] == ["fid", "se"] and len(out["sequences"]) == 3
    assert out["sequences"][2] in ("cpmg-2", "cpmg-4", "cpmg-8")
    assert len(out["measurement_uids"]) == 3 and len(out["estimate_uids"]) == 2
    assert seen == [2, 3] and out["hardware_time"] > 0
    for uid, seq in zip(out["measurement_uids"], out["sequences"], strict=True):
        start = get_run(catalog, uid).metadata["start"]
        assert start["plan_name"] == "coherence_scan" and start["sequence"] == seq
    last = get_run(catalog, out["estimate_uids"][-1])
    start = last.metadata["start"]
    assert start["plan_name"] == "vqns_estimate"
    assert start["measurement_uids"] == out["measurement_uids"]
    assert start["sequences"] == out["sequences"]
    data = last["primary"].read()
    omega = np.asarray(data["omega"]).reshape(-1)
    mean = np.asarray(data["mean"]).reshape(-1)
    assert np.allclose(omega, out["result"].omega) and np.allclose(mean, out["result"].mean)


def test_loop_respects_time_budget(setup):
    RE, nv, spec, _ = setup
    strat = _strategy(spec, max_measurements=5, target=0.0)
    # enough for FID only
    t_fid = strat.initial[0][1]
    from mracq.pulses import coherence_programs

    budget = 1.5 * nv.estimate_time(coherence_programs("fid", t_fid), 100_000)
    out = RE(vqns_loop(nv, strat, shots=100_000, time_budget=budget)).plan_result
    assert out["sequences"] == ["fid"] and out["stopped"] == "budget"
    assert out["hardware_time"] <= budget and out["estimate_uids"] == []
