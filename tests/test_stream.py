"""0MQ document streams and reconstruction workers (mracq.stream, mracq.worker).

The end-to-end test runs the proxy and the worker as `mracq` commands in their own
processes, and the acquisition session in this one.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _procs import free_port, stop_group
from mracq.stream import (
    DocumentPublisher,
    DocumentSubscriber,
    StreamProxy,
    decode,
    encode,
    normalize_address,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


# -- wire format ---------------------------------------------------------------------------

@pytest.mark.parametrize("arr", [
    np.arange(6, dtype=np.int16).reshape(2, 3), np.linspace(0, 1, 7, dtype=np.float32),
    np.array([1 + 2j, 3 - 1j]), np.array([True, False]), np.array(["ab", "c"]),
    np.zeros((0, 3)), np.arange(24.0).reshape(2, 3, 4)[:, ::2],  # empty, non-contiguous
])
def test_msgpack_keeps_arrays_exact(arr):
    doc = {"uid": "u", "data": {"a": arr, "s": np.float64(2.5), "i": np.int64(3)},
           "nested": [{"b": arr}]}
    out = decode(encode(doc))
    for got in (out["data"]["a"], out["nested"][0]["b"]):
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
    assert out["data"]["s"] == 2.5 and out["data"]["i"] == 3


def test_json_arrays_become_lists_and_decode_sniffs_the_format():
    doc = {"data": {"a": np.arange(3.0), "n": np.int32(4)}, "name": "x"}
    body = encode(doc, "json")
    assert body.startswith(b"{")
    assert decode(body) == {"data": {"a": [0.0, 1.0, 2.0], "n": 4}, "name": "x"}


def test_no_pickle_on_the_wire():
    with pytest.raises(TypeError, match="no pickle"):
        encode({"a": np.array([object()], dtype=object)})
    with pytest.raises(TypeError, match="cannot stream"):
        encode({"a": object()})

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch /tmp/mracq-pwned",))

    for payload in (pickle.dumps({"a": 1}), pickle.dumps(Boom())):
        with pytest.raises(Exception):  # noqa: B017 - any decode error, never an unpickle
            decode(payload)
    assert not Path("/tmp/mracq-pwned").exists()
    with pytest.raises(ValueError, match="a document is a map"):
        decode(encode([1, 2]))  # type: ignore[arg-type]


def test_addresses_default_to_loopback():
    assert normalize_address(5577) == "tcp://127.0.0.1:5577"
    assert normalize_address("5578") == "tcp://127.0.0.1:5578"
    assert normalize_address("localhost:9") == "tcp://127.0.0.1:9"
    assert normalize_address("gpu-box:5578") == "tcp://gpu-box:5578"
    assert normalize_address(None) == "tcp://127.0.0.1:5577"
    with pytest.raises(ValueError, match="give a port"):
        normalize_address("gpu-box")


def test_proxy_forwards_everything_in_order_and_bluesky_can_read_it():
    proxy = StreamProxy("127.0.0.1:0", "127.0.0.1:0")
    assert proxy.in_address.startswith("tcp://127.0.0.1:")
    thread = threading.Thread(target=proxy.start)
    thread.start()
    try:
        with DocumentSubscriber(proxy.out_address) as sub:
            assert sub.wait_connected(5)
            with DocumentPublisher(proxy.in_address, prefix=b"acq") as pub:
                assert pub.connected
                for k in range(5000):
                    pub("event", {"seq_num": k, "data": {"x": np.full(3, k)}})
            got = []
            while (msg := sub.recv(timeout=2.0)) is not None:
                got.append(msg)
        assert len(got) == 5000
        assert [d["seq_num"] for _, _, d in got] == list(range(5000))
        assert got[-1][0] == b"acq" and got[-1][1] == "event"
        np.testing.assert_array_equal(got[-1][2]["data"]["x"], [4999] * 3)
        # bluesky's own RemoteDispatcher reads the stream with our deserializer
        from bluesky.callbacks.zmq import RemoteDispatcher

        seen = []
        disp = RemoteDispatcher(proxy.out_address, deserializer=decode)
        disp.subscribe(lambda name, doc: seen.append(name))

        def publish_later():
            time.sleep(1.0)
            with DocumentPublisher(proxy.in_address) as pub:
                pub("start", {"uid": "a", "time": 0.0})
            time.sleep(0.5)
            disp.loop.call_soon_threadsafe(disp._task.cancel)

        t = threading.Thread(target=publish_later)
        t.start()
        with pytest.raises(asyncio.CancelledError):  # how a RemoteDispatcher is stopped
            disp.start()
        t.join()
        assert seen == ["start"]
    finally:
        proxy.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_publisher_without_proxy_warns_and_does_not_block(caplog):
    port = free_port()
    t0 = time.perf_counter()
    with DocumentPublisher(port, wait=0.3) as pub:
        assert not pub.connected
        pub("start", {"uid": "x"})
    assert time.perf_counter() - t0 < 5
    assert "no 0MQ proxy answered" in caplog.text


# -- workers in-process: the documents go through the wire format -------------------------

def _through_wire(worker):
    return lambda name, doc: worker(name, decode(encode(doc)))


def test_cosy_worker_reproduces_the_plans_reconstruction(tmp_catalog):
    from bluesky import RunEngine

    from mracq.config import load_config
    from mracq.devices import build_devices
    from mracq.plans.coherence import prepare_nv
    from mracq.plans.cosy import cosy_random_mask
    from mracq.sim.cosy.model import T_GRID
    from mracq.sim.nv import GAMMA_E, ZERO_FIELD_SPLITTING
    from mracq.storage import get_run, run_table
    from mracq.worker import ReconstructionWorker

    devices = build_devices(load_config(), rng=np.random.default_rng(5))
    RE = RunEngine(call_returns_result=True)
    worker = ReconstructionWorker("cosy", catalog=tmp_catalog, every=20)
    RE.subscribe(_through_wire(worker))
    RE(prepare_nv(devices["mw"], devices["laser"],
                  frequency=ZERO_FIELD_SPLITTING - GAMMA_E * 0.05, power_dbm=0.0))
    grid = T_GRID[:10]
    res = RE(cosy_random_mask(devices["nv"], 0.5, t1=grid, t2=grid, every=1000,
                              rng=np.random.default_rng(2))).plan_result
    assert worker.errors == 0 and len(worker.estimate_uids) == 3  # 20, 40, final 50
    runs = [get_run(tmp_catalog, u) for u in worker.estimate_uids]
    assert [r.metadata["start"]["n_points"] for r in runs] == [20, 40, 50]
    final = runs[-1]
    start = final.metadata["start"]
    assert start["plan_name"] == "cosy_estimate" and start["source_uids"] == [res["uid"]]
    assert start["final"] is True and start["mracq_worker"] == "cosy"
    rec = run_table(final, "reconstruction")
    np.testing.assert_array_equal(rec["mask"][0].astype(bool), res["mask"])
    np.testing.assert_allclose(rec["reconstruction"][0], res["reconstruction"], rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(rec["spectrum"][0], res["spectrum"], rtol=1e-6, atol=1e-9)


def test_mrfm_worker_builds_the_cube_from_events_and_reconstructs(tmp_catalog):
    from bluesky import RunEngine

    from mracq.devices.mrfm import build_mrfm_devices
    from mracq.plans.mrfm import cs_multislice_scan
    from mracq.sim.clock import VirtualClock
    from mracq.sim.mrfm.field import SEED_F0
    from mracq.sim.mrfm.setup import default_setup
    from mracq.storage import get_run, run_table
    from mracq.worker import ReconstructionWorker

    f0 = SEED_F0[::12]
    setup = default_setup("membrane", "multislice", voxel_size=4e-9, n_xy=32, n_z=12, f0=f0)
    instruments = {
        "scanner": {"min_standoff": 15e-9, "x_range": [-1e-6, 1e-6],
                    "y_range": [-1e-6, 1e-6], "z_range": [15e-9, 2e-6], "max_step": 1e-6},
        "rf": {"min_frequency": 50e6, "max_frequency": 400e6, "max_power": 10.0,
               "max_bandwidth": 5e6},
        "readout": {"min_integration": 1e-3, "max_integration": 3600.0}}
    devs = build_mrfm_devices(instruments, VirtualClock(), np.random.default_rng(0),
                              setup=setup, density=setup.phantom(np.random.default_rng(1)))
    RE = RunEngine(call_returns_result=True)
    seen = []
    worker = ReconstructionWorker("mrfm", catalog=tmp_catalog, n_z=4, n_iter=20)
    original = worker.handler._cube
    worker.handler._cube = lambda run: seen.append(original(run)) or seen[-1]
    # the same run once without its cube stream: the worker assembles it from positions
    events_only = ReconstructionWorker("mrfm", n_z=4, n_iter=20)
    events_only.handler._estimate = lambda run, final: seen.append(
        events_only.handler._cube(run)) or []

    _descs = set()

    def no_cube(name, doc):
        if name == "descriptor" and doc["name"] == "cube":
            _descs.add(doc["uid"])
        if name in ("descriptor", "event") and (doc.get("uid") in _descs
                                                or doc.get("descriptor") in _descs):
            return
        events_only(name, decode(encode(doc)))

    RE.subscribe(_through_wire(worker))
    RE.subscribe(no_cube)
    x = np.arange(6) * 4e-9
    res = RE(cs_multislice_scan(devs["scanner"], devs["rf"], devs["readout"], x, x, 0.6,
                                np.random.default_rng(3), f0_list=f0, t_m=10.0)).plan_result
    assert worker.errors == 0 and len(worker.estimate_uids) == 1
    (cube_a, mask_a), (cube_b, mask_b) = seen
    np.testing.assert_array_equal(mask_a, res.mask)
    np.testing.assert_array_equal(mask_b, res.mask)
    np.testing.assert_allclose(cube_a, np.nan_to_num(res.data))
    np.testing.assert_allclose(cube_b, np.nan_to_num(res.data))
    run = get_run(tmp_catalog, worker.estimate_uids[0])
    start = run.metadata["start"]
    assert start["plan_name"] == "mrfm_estimate" and start["source_uids"] == [res.uid]
    dens = run_table(run, "reconstruction")["density"][0]
    assert dens.shape == (6, 6, 4) and np.isfinite(dens).all() and dens.max() > 0


# -- end to end: proxy and worker in their own processes ------------------------------------

def _start(args, log):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "mracq", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_for_line(path, text, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"no {text!r} from {proc.args}: {path.read_text()[-3000:]}")


@pytest.mark.slow
def test_worker_in_another_process_reconstructs_the_live_loop(tmp_path):
    """A 1000-point scan and a VQNS loop whose strategy uses the remote worker's estimates:
    every published document arrives (counted), the worker's estimate runs are stored with
    their source runs, and equal what the acquisition stored from them."""
    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.plans.vqns import vqns_loop
    from mracq.session import make_session
    from mracq.storage import close_catalog, get_run, open_catalog, run_table
    from mracq.worker import RemoteEstimates, RemoteVQNSStrategy

    p_in, p_out = free_port(), free_port()
    plog, wlog = tmp_path / "proxy.log", tmp_path / "worker.log"
    with open(plog, "w") as fp, open(wlog, "w") as fw:
        proxy = _start(["proxy", "--in", str(p_in), "--out", str(p_out)], fp)
        worker = None
        try:
            _wait_for_line(plog, "mracq proxy:", proxy, 30)
            worker = _start(["-v", "worker", "vqns", "--zmq", str(p_out), "--publish",
                             str(p_in), "--data-dir", str(tmp_path / "worker"), "--restarts",
                             "8", "--max-iter", "400", "--seed", "1"], fw)
            _wait_for_line(wlog, "listening on", worker)
            counted = []
            with make_session(validate_config({"sim": {"seed": 0}}),
                              data_dir=tmp_path / "acq", publish=p_in) as s, \
                    RemoteEstimates(p_out) as remote:
                assert s.publisher.connected
                s.RE.subscribe(lambda name, doc: counted.append(name))
                d = s.devices
                s.RE(prepare_nv(d["mw"], d["laser"],
                                frequency=d["nv"].transport.nv.transition_frequency,
                                power_dbm=0.0))
                big = s.RE(coherence_scan(d["nv"], "fid", np.linspace(1e-7, 2e-5, 1000),
                                          shots=100_000)).plan_result
                strategy = RemoteVQNSStrategy(
                    remote, initial=[("fid", np.geomspace(2e-7, 2e-5, 20)),
                                     ("se", np.geomspace(1e-6, 1e-4, 20))],
                    candidates=["cpmg-2", "cpmg-4", "cpmg-8"], max_measurements=3,
                    n_points=20, timeout=300)
                loop = s.RE(vqns_loop(d["nv"], strategy, shots=100_000)).plan_result
                sent = s.publisher.sent
                local = {u: get_run(s.catalog, u) for u in loop["estimate_uids"]}
                local = {u: (r.metadata["start"], run_table(r)) for u, r in local.items()}
            # every document sent has been received once the worker says so; then stop it
            _wait_for_line(wlog, f"worker: {sent} documents received", worker)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=120)
        finally:
            if worker is not None:
                stop_group(worker)
            stop_group(proxy)
    out = wlog.read_text()
    assert worker.returncode == 0, out[-3000:]
    assert counted.count("event") == 1000 + 3 * 20 + 2 and len(counted) == sent
    assert f"{sent} documents, 4 runs, 2 estimates, 0 errors" in out, out[-2000:]
    assert len(loop["measurement_uids"]) == 3 and len(loop["estimate_uids"]) == 2

    catalog = open_catalog(tmp_path / "worker")
    try:
        runs = [catalog[u] for u in catalog]
        assert [r.metadata["start"]["plan_name"] for r in runs] == ["vqns_estimate"] * 2
        assert big["uid"] not in str([r.metadata["start"] for r in runs])  # not in a loop
        for k, (r, (lstart, ltable)) in enumerate(zip(runs, local.values(), strict=True)):
            start = r.metadata["start"]
            assert start["measurement_uids"] == loop["measurement_uids"][:k + 2]
            assert start["source_uids"] == start["measurement_uids"]
            assert start["sequences"] == loop["sequences"][:k + 2] == lstart["sequences"]
            table = run_table(r)
            # what the acquisition stored is the worker's estimate, not a local one
            for key in ("omega", "mean", "std"):
                np.testing.assert_array_equal(table[key], ltable[key])
            assert lstart["samples"] == start["samples"]
            assert np.all(table["mean"][0] > 0)
    finally:
        close_catalog(catalog)


def test_session_publishes_when_asked_by_the_environment(tmp_path, monkeypatch):
    from bluesky.plans import count
    from ophyd.sim import det

    from mracq.session import make_session

    proxy = StreamProxy("127.0.0.1:0", "127.0.0.1:0")
    thread = threading.Thread(target=proxy.start)
    thread.start()
    try:
        with DocumentSubscriber(proxy.out_address) as sub:
            assert sub.wait_connected(5)
            monkeypatch.setenv("MRACQ_PUBLISH", proxy.in_address)
            with make_session(data_dir=tmp_path, devices={"det": det}) as s:
                uid = s.RE(count([det], 3)).run_start_uids[0]
                pub = s.publisher
            assert pub is not None and pub.sent == 6
            names = []
            while (msg := sub.recv(timeout=2.0)) is not None:
                names.append(msg[1])
                if msg[1] == "start":
                    assert msg[2]["uid"] == uid
        assert names == ["start", "descriptor", "event", "event", "event", "stop"]
    finally:
        proxy.stop()
        thread.join(10)
