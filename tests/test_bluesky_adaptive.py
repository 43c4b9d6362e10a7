"""Each strategy under bluesky-adaptive 1.0's own ``optimize`` plan, on simulated devices,
until its stopping criterion."""

import numpy as np
import pytest
from bluesky import RunEngine

from mracq.plans.coherence import prepare_nv

bluesky_adaptive = pytest.importorskip("bluesky_adaptive")
from bluesky_adaptive.plans import optimize  # noqa: E402
from bluesky_adaptive.protocols import Optimizer, SupportsStoppingCriteria  # noqa: E402

from _bluesky_rig import F_RES, mrfm_rig, mrfm_setup, nv_rig  # noqa: E402


def _run(problem, n_points):
    RE = RunEngine(call_returns_result=True)
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(optimize(problem, iterations=None, n_points=n_points))
    starts = [d for n, d in docs if n == "start"]
    stops = [d for n, d in docs if n == "stop"]
    assert starts[0]["plan_name"] == "optimize" and len(stops) == len(starts)
    assert all(d["exit_status"] == "success" for d in stops)
    return docs


def test_vqns_strategy_under_optimize():
    from mracq.plans.adaptive import vqns_problem
    from mracq.recon.vqns.data import decay_time
    from mracq.recon.vqns.strategy import NextSequenceStrategy
    from mracq.sim.spectra import default_nv_spectrum

    dev = nv_rig()
    RunEngine()(prepare_nv(dev["mw"], dev["laser"], frequency=F_RES, power_dbm=0.0))
    spec = default_nv_spectrum(0.05)
    t_fid, t_se = decay_time(spec, 0, 3.0), decay_time(spec, 1, 3.0)
    strat = NextSequenceStrategy(
        ["cpmg-2", "cpmg-4"], initial=[("fid", np.linspace(t_fid / 8, t_fid, 8)),
                                       ("se", np.linspace(t_se / 8, t_se, 8))],
        n_points=8, max_measurements=3, target=0.0, seed=0,
        reconstruct_kw={"n_lorentzians": 2, "restarts": 2, "max_iter": 150})
    assert isinstance(strat, Optimizer) and isinstance(strat, SupportsStoppingCriteria)
    docs = _run(vqns_problem(dev["nv"], strat, shots=200_000), 1)
    stop, reason = strat.should_stop()
    assert stop and "max_measurements" in reason
    assert [m.sequence for m in strat.measurements][:2] == ["fid", "se"]
    assert len(strat.measurements) == 3
    scans = [d for n, d in docs if n == "start" and d["plan_name"] == "coherence_scan"]
    assert [d["vqns_sequence"] for d in scans] == [m.sequence for m in strat.measurements]
    (sid, params, outcome), = strat.get_best_points()
    assert params["sequence"] in ("se", "cpmg-2", "cpmg-4")
    assert 0 < outcome["relative_band_width"] < 10


def test_cosy_strategy_under_optimize():
    from mracq.plans.adaptive import cosy_problem
    from mracq.recon.cosy.strategy import EnsembleDisagreement
    from mracq.sim.cosy.model import T_GRID

    dev = nv_rig()
    RunEngine()(prepare_nv(dev["mw"], dev["laser"], frequency=F_RES, power_dbm=0.0))
    grid = T_GRID[:8]
    strat = EnsembleDisagreement((8, 8), np.random.default_rng(0), members=2, method="svt",
                                 budget=24, tol=1e-9)
    assert isinstance(strat, Optimizer) and isinstance(strat, SupportsStoppingCriteria)
    docs = _run(cosy_problem(dev["nv"], strat, t1=grid, t2=grid, shots=20_000), 6)
    assert strat.should_stop() == (True, "budget: 24 points measured")
    assert strat.mask.sum() == 24 and np.all(np.isfinite(strat.values[strat.mask]))
    assert len(strat.changes) == 3
    events = [d for n, d in docs if n == "event" and "nv_value" in d["data"]]
    assert len(events) == 24
    assert len({(e["data"]["i"], e["data"]["j"]) for e in events}) == 24
    (_, params, outcome), = strat.get_best_points()
    assert params == {"n_points": 24} and outcome["reconstruction"].shape == (8, 8)


def test_mrfm_strategy_under_optimize():
    from mracq.plans.adaptive import mrfm_problem
    from mracq.recon.mrfm.strategy import SignalWeightedStrategy

    setup = mrfm_setup()
    dev = mrfm_rig(setup)
    strat = SignalWeightedStrategy((8, 8), np.random.default_rng(0), setup=setup, t_m=1.0,
                                   budget=24, n_iter=5)
    assert isinstance(strat, Optimizer) and isinstance(strat, SupportsStoppingCriteria)
    docs = _run(mrfm_problem(dev["scanner"], dev["rf"], dev["readout"], strat, setup), 8)
    assert strat.should_stop() == (True, "budget: 24 positions measured")
    assert strat.sampled.sum() == 24 and strat.reconstruction is not None
    events = [d for n, d in docs if n == "event" and "readout_spin_signal" in d["data"]]
    assert len(events) == 24
    assert all(len(e["data"]["readout_spin_signal"]) == len(setup.f0) for e in events)
    (_, params, outcome), = strat.get_best_points()
    assert strat.sampled[params["i"], params["j"]] and outcome["spin_signal_energy"] > 0
