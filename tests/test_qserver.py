"""bluesky-queueserver with mracq's startup profile: Redis and the RE Manager on loopback,
a coherence scan and a VQNS loop queued through bluesky-queueserver-api, their runs read
back from the catalog."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _procs import free_port, stop_group

pytest.importorskip("bluesky_queueserver", reason="bluesky-queueserver is not installed")
api = pytest.importorskip("bluesky_queueserver_api",
                          reason="bluesky-queueserver-api is not installed")

REDIS = shutil.which("redis-server")
MANAGER = shutil.which("start-re-manager") or str(Path(sys.executable).with_name(
    "start-re-manager"))
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture()
def redis_port(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen([REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("redis-server did not start")
        yield port
    finally:
        stop_group(proc)


@pytest.mark.slow
def test_queue_runs_coherence_scan_and_vqns_loop(tmp_path, redis_port):
    from bluesky_queueserver_api import BPlan
    from bluesky_queueserver_api.zmq import REManagerAPI

    from mracq.config import load_config
    from mracq.devices import build_devices
    from mracq.qserver import write_profile
    from mracq.storage import close_catalog, open_catalog, run_table

    profile, data = tmp_path / "profile", tmp_path / "data"
    write_profile(profile, data_dir=data)
    # the simulated NV of the default config: its resonance, as a user would look it up
    freq = build_devices(load_config())["nv"].transport.nv.transition_frequency
    control, info = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = tmp_path / "manager.log"
    with open(log, "w") as out:
        manager = subprocess.Popen(
            [MANAGER, "--startup-dir", str(profile), "--redis-addr",
             f"127.0.0.1:{redis_port}", "--zmq-control-addr", control, "--zmq-info-addr", info,
             "--zmq-publish-console", "OFF"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    RM = REManagerAPI(zmq_control_addr=control, zmq_info_addr=info)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                RM.status()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or manager.poll() is not None:
                    pytest.fail(f"RE Manager did not start: {log.read_text()[-3000:]}")
                time.sleep(0.5)
        RM.environment_open()
        RM.wait_for_idle(timeout=240)
        status = RM.status()
        assert status["worker_environment_exists"], log.read_text()[-3000:]
        allowed = RM.plans_allowed()["plans_allowed"]
        assert {"coherence_scan", "vqns_adaptive", "prepare_nv", "cosy_random_mask",
                "multislice_scan"} <= set(allowed)
        devices = RM.devices_allowed()["devices_allowed"]
        assert {"nv", "mw", "laser", "scanner", "rf", "readout"} <= set(devices)

        times = list(np.geomspace(2e-6, 1e-4, 12))
        for item in (
                BPlan("prepare_nv", "mw", "laser", frequency=freq, power_dbm=0.0),
                BPlan("coherence_scan", "nv", "cpmg", times, n=8, shots=200_000),
                BPlan("vqns_adaptive", "nv", fid_times=list(np.geomspace(2e-7, 2e-5, 15)),
                      se_times=list(np.geomspace(1e-6, 1e-4, 15)), max_measurements=3,
                      candidates=["cpmg-2", "cpmg-4", "cpmg-8"],
                      n_points=15, shots=200_000, restarts=8, max_iter=400, seed=3)):
            r = RM.item_add(item)
            assert r["success"], r
        RM.queue_start()
        # wait_for_idle alone can return before the manager has left "idle" for the queue
        deadline = time.monotonic() + 300
        while True:
            st = RM.status()
            if st["items_in_history"] == 3 and st["manager_state"] == "idle":
                break
            assert time.monotonic() < deadline, (st, log.read_text()[-3000:])
            time.sleep(0.5)
        history = RM.history_get()["items"]
        assert [h["result"]["exit_status"] for h in history] == ["completed"] * 3, history
        run_uids = [h["result"]["run_uids"] for h in history]
        RM.environment_close()
        RM.wait_for_idle(timeout=60)
    finally:
        RM.close()
        stop_group(manager)

    assert run_uids[0] == [] and len(run_uids[1]) == 1
    assert len(run_uids[2]) == 3 + 2  # three measurements, two estimates
    catalog = open_catalog(data)
    try:
        scan = catalog[run_uids[1][0]]
        assert scan.metadata["start"]["plan_name"] == "coherence_scan"
        assert scan.metadata["start"]["sequence"] == "cpmg-8"
        c = run_table(scan)["coherence"]
        # 2-100 us of CPMG-8: the coherence decays from ~1 to ~0 (shot noise ~0.1-0.2)
        assert c.shape == (12,) and np.isfinite(c).all()
        assert c[:3].mean() - c[-3:].mean() > 0.5
        assert scan.metadata["stop"]["exit_status"] == "success"
        names = [catalog[u].metadata["start"]["plan_name"] for u in run_uids[2]]
        assert names.count("coherence_scan") == 3 and names.count("vqns_estimate") == 2
        last = catalog[run_uids[2][-1]]
        start = last.metadata["start"]
        assert set(start["measurement_uids"]) <= set(run_uids[2])
        assert len(start["sequences"]) == 3
        assert np.all(run_table(last)["mean"][0] > 0)
    finally:
        close_catalog(catalog)
