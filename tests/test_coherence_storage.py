"""The coherence plan through a real session: RunEngine + ophyd + embedded Tiled."""

import threading
import time

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from mracq.config import validate_config
from mracq.plans.coherence import coherence_scan, prepare_nv, stored_programs
from mracq.pulses import coherence_programs
from mracq.session import make_session
from mracq.storage import get_run, run_table


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = make_session(validate_config({"sim": {"seed": 11}}),
                     data_dir=tmp_path_factory.mktemp("coh"))
    d = s.devices
    s.RE(prepare_nv(d["mw"], d["laser"], frequency=d["nv"].transport.nv.transition_frequency,
                    power_dbm=0.0))
    yield s
    s.close()


def test_stored_run_reads_back_equal(session):
    times = np.geomspace(2e-6, 1e-4, 7)
    res = session.RE(coherence_scan(session.devices["nv"], "xy8", times, n=2,
                                    shots=50_000)).plan_result
    run = get_run(session.catalog, res["uid"])
    table = run_table(run)
    np.testing.assert_array_equal(table["t"], times)
    np.testing.assert_array_equal(table["coherence"], res["coherence"])
    np.testing.assert_array_equal(table["coherence_error"], res["sigma"])
    s, b, d = table["signal_counts"], table["bright_counts"], table["dark_counts"]
    p = (s - d) / (b - d)  # the raw counts reproduce the stored coherence
    np.testing.assert_allclose(1 - 2 * p, table["coherence"], rtol=1e-12)
    start = run.metadata["start"]
    assert stored_programs(start) == coherence_programs("xy8", times, n=2)
    assert start["sequence"] == "xy8-2" and start["plan_name"] == "coherence_scan"
    assert start["hardware_time_estimate"] == pytest.approx(res["hardware_time"], rel=1e-9)


def test_pause_and_resume_stores_every_point_once(session):
    RE = session.RE
    times = np.geomspace(2e-6, 1e-4, 30)
    about_to_pause = threading.Event()

    def pause():  # as Ctrl-C does: from outside the RunEngine's thread
        about_to_pause.set()
        RE.request_pause(defer=False)

    def pause_at_fourth(name, doc):
        if name == "event" and doc["seq_num"] == 4 and not about_to_pause.is_set():
            threading.Thread(target=pause, daemon=True).start()
            about_to_pause.wait(5)
            time.sleep(0.05)  # let the request reach the RunEngine's loop

    token = RE.subscribe(pause_at_fourth)
    try:
        with pytest.raises(RunEngineInterrupted):
            RE(coherence_scan(session.devices["nv"], "hahn", times, shots=20_000))
        assert RE.state == "paused"
        res = RE.resume().plan_result
    finally:
        RE.unsubscribe(token)
        if RE.state == "paused":
            RE.abort()
    run = get_run(session.catalog, res["uid"])
    table = run_table(run)
    np.testing.assert_array_equal(table["t"], times)  # each t once, in order
    np.testing.assert_array_equal(table["seq_num"], np.arange(1, len(times) + 1))
    assert run.metadata["stop"]["exit_status"] == "success"


def test_cli_demo_runs_show(tmp_path, capsys):
    from mracq.cli import main

    data = str(tmp_path / "data")
    assert main(["demo", "--data-dir", data, "--points", "4", "--shots", "2000",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "cpmg-32" in out and "simulated hardware time" in out
    assert "calibration: resonance" in out
    assert "the reconstruction asked for cpmg-" in out  # one closed-loop step
    figs = tmp_path / "data" / "figures"
    for pattern in ("demo-coherence-*.png", "demo-spectrum-*.png"):
        pngs = list(figs.glob(pattern))
        assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    assert main(["runs", "--data-dir", data]) == 0
    listing = capsys.readouterr().out
    assert listing.count("coherence_scan") == 9  # the ladder (to CPMG-64) and the suggestion
    assert listing.count("vqns_estimate") == 2  # after the ladder and after the suggestion
    assert listing.count("calibration") >= 1  # the demo calibrates the rig first
    # scans 1-5: ODMR coarse/fine, Rabi, Ramsey, calibration; 6-13 the ladder (12: CPMG-32)
    assert main(["show", "12", "--data-dir", data, "--out", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "cpmg-32" in shown and "events    4" in shown
    assert main(["show", "nosuchrun", "--data-dir", data]) == 2
