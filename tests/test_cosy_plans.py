"""COSY plans on the simulated NV with a real RunEngine and an embedded Tiled catalog."""

import numpy as np
import pytest
from bluesky import RunEngine

from mracq.config import load_config
from mracq.devices import build_devices
from mracq.plans.coherence import prepare_nv
from mracq.plans.cosy import cosy_adaptive, cosy_random_mask
from mracq.recon.cosy.strategy import EnsembleDisagreement
from mracq.sim.cosy.model import T_GRID, CosyModel
from mracq.sim.nv import GAMMA_E, ZERO_FIELD_SPLITTING
from mracq.storage import get_run, run_table, subscribe_writer

GRID = T_GRID[:12]


@pytest.fixture(scope="module")
def setup(tmp_catalog):
    devices = build_devices(load_config(), rng=np.random.default_rng(5))
    RE = RunEngine(call_returns_result=True)
    subscribe_writer(RE, tmp_catalog)
    f_res = ZERO_FIELD_SPLITTING - GAMMA_E * 0.05
    RE(prepare_nv(devices["mw"], devices["laser"], frequency=f_res, power_dbm=0.0))
    return devices, RE


def test_random_mask_plan_measures_and_stores(setup, tmp_catalog):
    devices, RE = setup
    nv = devices["nv"]
    frames = []
    res = RE(cosy_random_mask(nv, 0.3, t1=GRID, t2=GRID, every=20,
                              rng=np.random.default_rng(1),
                              live=lambda r, s, k: frames.append(k))).plan_result
    n = round(0.3 * 144)
    assert res["n_points"] == n and res["mask"].sum() == n
    assert np.isfinite(res["measured"]).sum() == n
    assert frames == [20, 40, n]
    truth = CosyModel().map(GRID, GRID)
    run = get_run(tmp_catalog, res["uid"])
    table = run_table(run)
    assert len(table["nv_value"]) == n
    i, j = table["i"].astype(int), table["j"].astype(int)
    assert len(set(zip(i, j, strict=True))) == n
    z = (table["nv_value"] - truth[i, j]) / table["nv_error"]
    assert np.all(np.abs(z) < 5), z.max()
    np.testing.assert_allclose(res["measured"][i, j], table["nv_value"])
    rec = run_table(run, "reconstruction")
    np.testing.assert_array_equal(rec["mask"][0].astype(bool), res["mask"])
    np.testing.assert_allclose(rec["reconstruction"][0], res["reconstruction"])
    # method="auto" (the default): its choice and validation error are stored and returned
    val = res["validation"]
    # a blend is reported as "stack(...)" or "aggregate(...)"; its held-out error as "stack"
    assert str(rec["recon_method"][0]) == val["method"]
    assert val["method"].split("(")[0] in val["cv_rmse"]
    assert float(rec["validation_rmse"][0]) == pytest.approx(val["validation_rmse"])
    assert val["noise"] == pytest.approx(np.sqrt(np.mean(table["nv_error"] ** 2)))
    true = np.sqrt(np.mean((res["reconstruction"] - truth) ** 2))
    assert float(rec["map_error"][0]) == val["error"] < 3 * true + 0.2 * val["noise"]
    assert val["validation_rmse"] > val["noise"]
    assert run.metadata["start"]["plan_name"] == "cosy_random_mask"
    # hardware time: shots x (program + two reference shots) per point
    est = run.metadata["start"]["hardware_time_estimate"]
    assert res["hardware_time"] == pytest.approx(est, rel=1e-9)
    assert est > n * 150_000 * 100e-6


def test_adaptive_plan_grows_mask_without_repeats(setup, tmp_catalog):
    devices, RE = setup
    res = RE(cosy_adaptive(devices["nv"], t1=GRID, t2=GRID, initial=0.1, batch=10,
                           max_coverage=0.4, tol=1e-6, members=2, method="svt",
                           rng=np.random.default_rng(2))).plan_result
    assert res["stop_reason"] == "budget"
    assert res["n_points"] == round(0.4 * 144)
    table = run_table(get_run(tmp_catalog, res["uid"]))
    pairs = list(zip(table["i"].astype(int), table["j"].astype(int), strict=True))
    assert len(pairs) == len(set(pairs)) == res["n_points"]
    assert len(res["changes"]) >= 3


def test_adaptive_couplings_strategy_needs_the_field_and_falls_back_off_resonance(
        setup, tmp_catalog, caplog):
    """strategy="couplings" without a field is refused before any run opens; at the
    default rig's 50 mT with the 158 mT tau the coupling search has nothing to fit (a
    warning per batch), so the batches are designed on the plane-wave model."""
    devices, RE = setup
    nv = devices["nv"]
    n_runs = len(tmp_catalog)
    with pytest.raises(ValueError, match="needs method='auto' and the field"):
        RE(cosy_adaptive(nv, t1=GRID, t2=GRID, strategy="couplings"))
    with pytest.raises(ValueError, match="needs method='auto' and the field"):
        RE(cosy_adaptive(nv, t1=GRID, t2=GRID, strategy="couplings", field=0.05,
                         method="svt"))
    assert len(tmp_catalog) == n_runs
    with caplog.at_level("WARNING", logger="mracq"):
        res = RE(cosy_adaptive(nv, t1=GRID, t2=GRID, initial=0.2, batch=10, max_coverage=0.3,
                               tol=1e-6, strategy="couplings", field=0.05,
                               rng=np.random.default_rng(3))).plan_result
    assert res["n_points"] == round(0.3 * 144) and res["stop_reason"] == "budget"
    start = get_run(tmp_catalog, res["uid"]).metadata["start"]
    assert start["field"] == 0.05 and "couplings" in start["criterion"]
    assert sum("no physics candidates at field 0.050000 T" in r.getMessage()
               for r in caplog.records) >= 2


def test_strategy_scores_disagreement_and_sparsity():
    x = np.cos(np.arange(20) * 0.7)[:, None] * np.cos(np.arange(20) * 0.4)[None, :]
    pick = np.random.default_rng(9).random((20, 20)) < 0.5
    pts = [(i, j, x[i, j]) for i in range(20) for j in range(20) if j < 10 and pick[i, j]]

    def strategy(gap_weight):
        s = EnsembleDisagreement((20, 20), np.random.default_rng(0), members=3, method="svt",
                                 gap_weight=gap_weight)
        s.ingest(pts)
        return s, [(p["i"], p["j"]) for p in s.suggest(10)]

    s, sug = strategy(10.0)  # sparsity dominates: the empty columns first
    assert len(set(sug)) == 10 and all(not s.mask[p] for p in sug)
    assert sum(j >= 10 for _, j in sug) >= 9
    s, sug = strategy(0.0)  # ensemble only
    assert len(set(sug)) == 10 and all(not s.mask[p] for p in sug)
    d = s.disagreement()
    assert np.all(d[s.mask] == 0) and d.max() > 1e-3


def test_plans_record_the_calibrated_field_and_tau_and_reconstruct_with_them(
        setup, tmp_catalog, tmp_catalog_dir, tmp_path, caplog):
    """The calibration's field and the sequence's tau go into the start document and to
    auto's physics candidates (budget 0 here: they are set up, not searched), and
    `mracq analyze cosy RUN` reads them back; a bad field given to the plan is refused
    before any run opens."""
    from mracq.pulses.calibration import PulseCalibration

    devices, RE = setup
    nv = devices["nv"]
    before = getattr(nv, "calibration", None)
    cal = PulseCalibration(ZERO_FIELD_SPLITTING - GAMMA_E * 0.05, 2e3, 40e-9, 0.05e-9,
                           20e-9, 0.03e-9, power_dbm=0.0)
    nv.calibration = cal
    try:
        with caplog.at_level("INFO", logger="mracq"):
            res = RE(cosy_random_mask(nv, 0.3, t1=GRID, t2=GRID, rng=np.random.default_rng(4),
                                      program_kw={"tau": 2.1e-6}, physics_budget_s=0)
                     ).plan_result
        # 2.1 us at 50 mT is off every 13C harmonic: the plan says so, with the 7th's tau
        assert any("off the 13C resonance at B = 0.0500 T" in r.getMessage()
                   and "tau = 6.537e-06 s" in r.getMessage() for r in caplog.records)
        start = get_run(tmp_catalog, res["uid"]).metadata["start"]
        assert start["field"] == pytest.approx(cal.field, rel=1e-12)
        assert abs(start["field"] - 0.05) < 1e-3 and start["field_source"] == "calibration"
        assert start["tau"] == 2.1e-6 and start["n_pulses"] == 40
        said = f"field {cal.field:.6f} T, tau 2.1e-06 s"
        assert any(said in r.getMessage() for r in caplog.records)
        caplog.clear()
        from mracq.cli import main

        with caplog.at_level("INFO", logger="mracq.recon.cosy"):
            assert main(["analyze", "cosy", res["uid"], "--data-dir", str(tmp_catalog_dir),
                         "--out-dir", str(tmp_path), "--physics-budget", "0"]) == 0
        assert any(said in r.getMessage() for r in caplog.records)
        got = np.load(tmp_path / f"cosy_{start['scan_id']}_recon.npy")
        np.testing.assert_allclose(got, res["reconstruction"], rtol=0, atol=1e-12)
        n_runs = len(tmp_catalog)
        for bad in (-1.0, float("nan"), 5.0):
            with pytest.raises(ValueError, match="field"):
                RE(cosy_random_mask(nv, 0.3, t1=GRID, t2=GRID, field=bad))
        assert len(tmp_catalog) == n_runs
        nv.calibration = None
        res = RE(cosy_adaptive(nv, t1=GRID, t2=GRID, initial=0.1, batch=10, max_coverage=0.2,
                               method="svt", rng=np.random.default_rng(2))).plan_result
        start = get_run(tmp_catalog, res["uid"]).metadata["start"]
        assert start["field"] is None and start["field_source"] is None
        assert start["tau"] == pytest.approx(2045e-9)
    finally:
        nv.calibration = before
