"""Tiled storage through a real RunEngine + TiledWriter into an embedded catalog."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import jsonschema
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd import Signal

from mracq.storage import (
    RunNotFoundError,
    default_data_dir,
    get_run,
    list_runs,
    run_table,
    subscribe_writer,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def RE(tmp_catalog):
    RE = RunEngine(call_returns_result=True)
    subscribe_writer(RE, tmp_catalog)
    return RE


def set_and_read(signals, rows, md=None):
    """One event per row; row[i] is the value of signals[i]."""

    @bpp.run_decorator(md=md or {"plan_name": "set_and_read"})
    def inner():
        for row in rows:
            for sig, value in zip(signals, row, strict=True):
                yield from bps.mv(sig, value)
            yield from bps.trigger_and_read(signals)

    return (yield from inner())


def test_small_and_large_arrays_and_scalars_read_back_exactly(RE, tmp_catalog):
    rng = np.random.default_rng(1)
    a3 = Signal(name="a3", value=np.zeros(3))
    a1k = Signal(name="a1k", value=np.zeros(1000))
    img = Signal(name="img", value=np.zeros((4, 5)))
    s = Signal(name="s", value=0.0)
    rows = [(rng.normal(size=3), rng.normal(size=1000), rng.normal(size=(4, 5)),
             float(rng.normal())) for _ in range(4)]
    result = RE(set_and_read([a3, a1k, img, s], rows))
    assert result.exit_status == "success"
    run = get_run(tmp_catalog, result.run_start_uids[0])
    table = run_table(run)
    assert set(table) == {"a3", "a1k", "img", "s", "time", "seq_num"}
    for i, name in enumerate(["a3", "a1k", "img", "s"]):
        expect = np.array([row[i] for row in rows])
        assert table[name].dtype == np.float64, name
        np.testing.assert_array_equal(table[name], expect)
    np.testing.assert_array_equal(table["seq_num"], [1, 2, 3, 4])
    assert np.all(np.diff(table["time"]) >= 0)


class DeclaredSignal(Signal):
    """A Signal whose describe() carries ``dtype_numpy`` in event-model's form (``<i8``).

    (ophyd 1.11's ``Signal(dtype=...)`` writes ``'int64'``, which event-model rejects.)
    """

    def describe(self):
        desc = super().describe()
        desc[self.name]["dtype_numpy"] = np.asarray(self.get()).dtype.str
        return desc


def test_ophyd_dtype_argument_is_rejected_by_event_model(RE):
    bad = Signal(name="n_bad", value=np.zeros(3, dtype=np.int64), dtype="int64", shape=(3,))
    assert bad.describe()["n_bad"]["dtype_numpy"] == "int64"
    with pytest.raises(jsonschema.ValidationError, match="'int64' is not valid"):
        RE(set_and_read([bad], [(np.arange(3),)]))


def test_integer_arrays_keep_their_dtype_when_declared(RE, tmp_catalog):
    declared = DeclaredSignal(name="n_decl", value=np.zeros(3, dtype=np.int64))
    plain = Signal(name="n_plain", value=np.zeros(3, dtype=np.int64))
    rows = [(np.arange(3) + 10 * k, np.arange(3) + 10 * k) for k in range(2)]
    run = get_run(tmp_catalog, RE(set_and_read([declared, plain], rows)).run_start_uids[0])
    table = run_table(run)
    np.testing.assert_array_equal(table["n_decl"], [[0, 1, 2], [10, 11, 12]])
    assert table["n_decl"].dtype == np.int64
    # Without dtype_numpy in describe() the stored array is float64 (values still exact).
    np.testing.assert_array_equal(table["n_plain"], [[0, 1, 2], [10, 11, 12]])
    assert table["n_plain"].dtype == np.float64


def test_paused_and_resumed_run_stores_every_point_once(RE, tmp_catalog):
    from bluesky.utils import RunEngineInterrupted

    sig = Signal(name="z", value=0.0)
    acknowledged = threading.Event()

    def pause_from_another_thread():
        RE.request_pause(defer=True)  # blocks until the RunEngine's loop takes it
        acknowledged.set()

    @bpp.run_decorator(md={"plan_name": "pausable"})
    def plan():
        for k in range(5):
            yield from bps.checkpoint()
            yield from bps.mv(sig, float(k))
            yield from bps.trigger_and_read([sig])
            if k == 1:  # as Ctrl-C would, from outside the RunEngine's thread
                threading.Thread(target=pause_from_another_thread, daemon=True).start()
                for _ in range(200):
                    if acknowledged.is_set():
                        break
                    yield from bps.sleep(0.05)

    try:
        with pytest.raises(RunEngineInterrupted):
            RE(plan())
        assert acknowledged.is_set() and RE.state == "paused"
        result = RE.resume()
    finally:
        if RE.state == "paused":  # leave the shared RunEngine usable
            RE.abort()
    assert result.exit_status == "success"
    table = run_table(get_run(tmp_catalog, result.run_start_uids[0]))
    assert table["seq_num"].tolist() == [1, 2, 3, 4, 5]
    assert table["z"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_list_and_get_runs(RE, tmp_catalog):
    sig = Signal(name="x", value=0.0)
    uids = [RE(set_and_read([sig], [(float(k),)], md={"plan_name": f"p{k}"})).run_start_uids[0]
            for k in range(3)]
    runs = list_runs(tmp_catalog, limit=2)
    assert [r["uid"] for r in runs] == uids[::-1][:2]  # newest first
    newest = runs[0]
    assert newest["plan_name"] == "p2" and newest["exit_status"] == "success"
    assert newest["num_events"] == 1 and newest["scan_id"] == RE.md["scan_id"]
    assert newest["time"] <= time.time() and newest["date"]

    assert get_run(tmp_catalog, newest["scan_id"]).metadata["start"]["uid"] == uids[2]
    assert get_run(tmp_catalog, str(newest["scan_id"] - 1)).metadata["start"]["uid"] == uids[1]
    assert get_run(tmp_catalog, -1).metadata["start"]["uid"] == uids[2]
    assert get_run(tmp_catalog, "-3").metadata["start"]["uid"] == uids[0]
    assert get_run(tmp_catalog, uids[1][:8]).metadata["start"]["uid"] == uids[1]
    assert run_table(get_run(tmp_catalog, uids[1]))["x"].tolist() == [1.0]

    with pytest.raises(RunNotFoundError, match="no run with scan_id 9999"):
        get_run(tmp_catalog, 9999)
    with pytest.raises(RunNotFoundError, match="no run with uid starting 'zzzzzz'"):
        get_run(tmp_catalog, "zzzzzz")
    with pytest.raises(RunNotFoundError, match="too short"):
        get_run(tmp_catalog, "ab")
    with pytest.raises(RunNotFoundError, match="does not exist"):
        get_run(tmp_catalog, -10_000)
    with pytest.raises(KeyError, match="no stream 'baseline'"):
        run_table(get_run(tmp_catalog, -1), "baseline")


def test_failed_run_is_stored_with_its_events(RE, tmp_catalog):
    sig = Signal(name="y", value=0.0)

    @bpp.run_decorator(md={"plan_name": "fails"})
    def plan():
        for k in range(3):
            yield from bps.mv(sig, float(k))
            yield from bps.trigger_and_read([sig])
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        RE(plan())
    newest = list_runs(tmp_catalog, limit=1)[0]
    assert newest["plan_name"] == "fails" and newest["exit_status"] == "fail"
    assert run_table(get_run(tmp_catalog, newest["uid"]))["y"].tolist() == [0.0, 1.0, 2.0]


def test_default_data_dir_order(monkeypatch, tmp_path):
    from mracq.config import validate_config

    cfg = validate_config({"storage": {"data_dir": str(tmp_path / "cfg")}})
    monkeypatch.setenv("MRACQ_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir(cfg) == tmp_path / "env"
    monkeypatch.delenv("MRACQ_DATA_DIR")
    assert default_data_dir(cfg) == tmp_path / "cfg"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir(validate_config({})) == tmp_path / "xdg" / "mracq"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir(validate_config({})) == tmp_path / "home/.local/share/mracq"


def test_scan_id_continues_after_reopening(tmp_path):
    from bluesky.plans import count
    from ophyd.sim import det

    from mracq.session import make_session

    with make_session(data_dir=tmp_path, devices={"det": det}) as s:
        ids = [s.RE(count([det])).run_start_uids[0] for _ in range(2)]
        assert s.RE.md["scan_id"] == 2
    with make_session(data_dir=tmp_path, devices={"det": det}) as s:
        ids.append(s.RE(count([det])).run_start_uids[0])
        runs = list_runs(s.catalog, limit=10)
    assert [r["scan_id"] for r in runs] == [3, 2, 1]
    assert [r["uid"] for r in runs] == ids[::-1]


def test_busy_folder_and_clean_exit(tmp_path, tmp_catalog, tmp_catalog_dir):
    """A process that opens a session, writes a run and exits without closing anything
    terminates promptly and keeps its scan_id; a second process on a folder in use gets
    a clear error."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from bluesky.plans import count
        from ophyd.sim import det
        from mracq.session import make_session
        from mracq.storage import StorageBusyError, open_catalog
        try:
            open_catalog({str(tmp_catalog_dir)!r})
        except StorageBusyError as exc:
            print("BUSY", exc)
        s = make_session(data_dir={str(tmp_path)!r}, devices={{}})
        s.RE(count([det], 2))
        print("RUNS", len(s.catalog))
    """)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RUNS 1" in proc.stdout
    assert "BUSY the data folder" in proc.stdout and "in use by another process" in proc.stdout
    assert elapsed < 60, elapsed

    from mracq.session import make_session

    with make_session(data_dir=tmp_path, devices={}) as s:
        assert s.RE.md["scan_id"] == 1
        assert list_runs(s.catalog)[0]["num_events"] == 2


def test_uid_prefix_of_digits_is_found_when_no_scan_id_matches(RE, tmp_catalog,
                                                               tmp_catalog_dir):
    """About 2 % of 8-character uid prefixes are all digits: `mracq show 16572170` must
    find that run, not fail on "no run with scan_id 16572170"."""
    from mracq.cli.store import LocalStore

    def empty():
        yield from bps.open_run(md={"plan_name": "empty"})
        yield from bps.close_run()

    for _ in range(120):  # P(no uid starts with 5 digits, not 0) ~ 3e-5
        uid = RE(empty()).run_start_uids[0]
        k = next((i for i, c in enumerate(uid) if not c.isdigit()), len(uid))
        if k >= 5 and uid[0] != "0":
            break
    else:
        pytest.fail("no uid with a 5-digit prefix in 120 runs")
    prefix = uid[:k]
    assert get_run(tmp_catalog, prefix).metadata["start"]["uid"] == uid
    store = LocalStore(tmp_catalog_dir)
    try:
        assert store.get_run(prefix).start["uid"] == uid
    finally:
        store.close()
    with pytest.raises(RunNotFoundError, match="no run with scan_id 1234"):
        get_run(tmp_catalog, "1234")  # too short to be a uid prefix
