"""The command line as a new user meets it: fast listing, `show` figures per kind of run,
one-line errors that create nothing, `scan mrfm`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A data folder with one run of every kind; {kind: scan_id}."""
    from cli_runs import (
        store_coherence,
        store_cosy,
        store_estimate_run,
        store_failed,
        store_mrfm,
        store_open,
    )
    from mracq.config import validate_config
    from mracq.plans.coherence import prepare_nv
    from mracq.session import make_session

    data = tmp_path_factory.mktemp("cli") / "data"
    with make_session(validate_config({"sim": {"seed": 0}}), data_dir=data) as s:
        nv = s.devices["nv"].transport.nv
        s.RE(prepare_nv(s.devices["mw"], s.devices["laser"],
                        frequency=nv.transition_frequency, power_dbm=0.0))
        kinds = {"coherence": store_coherence(s), "cosy": store_cosy(s),
                 "mrfm": store_mrfm(s), "spectrum": store_estimate_run(s),
                 "failed": store_failed(s), "open": store_open(s)}
    return data, kinds


def _mracq(*args, env=None, cwd=None):
    e = dict(os.environ, PYTHONPATH=SRC, **(env or {}))
    e.pop("MRACQ_CONFIG", None) if "MRACQ_CONFIG" not in (env or {}) else None
    e.pop("MRACQ_DATA_DIR", None) if "MRACQ_DATA_DIR" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "mracq", *map(str, args)], env=e, cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_runs_lists_every_kind_fast_reader_matches_tiled(stored):
    from mracq.cli.store import LocalStore, TiledStore
    from mracq.storage import close_catalog, open_catalog

    data, kinds = stored
    local = LocalStore(data)
    fast = local.list_runs(50)
    client = open_catalog(data)
    try:
        tiled = TiledStore(client)
        assert fast == tiled.list_runs(50)
        for ref in (kinds["mrfm"], kinds["cosy"], -1):
            a, b = local.get_run(ref), tiled.get_run(ref)
            assert a.metadata == b.metadata and sorted(a.streams) == sorted(b.streams)
            for stream in a.streams:
                ta, tb = a.table(stream), b.table(stream)
                assert set(ta) == set(tb), stream
                for key in ta:
                    np.testing.assert_array_equal(ta[key], tb[key])
    finally:
        close_catalog(client)
        local.close()
    out = _mracq("runs", "--data-dir", data)
    assert out.returncode == 0, out.stderr
    for plan in ("coherence_scan", "cosy_random_mask", "multislice_scan", "vqns_estimate"):
        assert plan in out.stdout
    assert "open/aborted" in out.stdout and "fail" in out.stdout


@pytest.mark.parametrize("kind", ["coherence", "spectrum", "cosy", "mrfm", "failed", "open"])
def test_show_draws_each_kind(stored, kind, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.image import AxesImage

    from mracq.cli import main
    from mracq.cli.cmd_show import draw
    from mracq.cli.store import LocalStore

    data, kinds = stored
    assert main(["show", str(kinds[kind]), "--data-dir", str(data), "--out",
                 str(tmp_path)]) == 0
    pngs = list(tmp_path.glob("scan-*.png"))
    if kind == "open":  # a start document only: summarized, nothing to draw
        assert pngs == []
        return
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000
    store = LocalStore(data)
    try:
        run = store.get_run(kinds[kind])
        tables = {s: run.table(s) for s in run.streams}
    finally:
        store.close()
    fig = draw(run, tables, None)
    images = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, AxesImage)]
    cbars = [im for im in images if im.colorbar is not None] + [
        ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    if kind in ("coherence", "failed"):
        ax = fig.axes[0]
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 1
        y = bars[0].lines[0].get_ydata()
        np.testing.assert_allclose(y, tables["primary"]["coherence"])
        assert ax.get_xlabel() == "free evolution time t (us)"
        if kind == "failed":
            assert len(y) == 2  # the two points measured before the failure
    elif kind == "spectrum":
        ax = fig.axes[0]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands, "no confidence band"
        assert ax.patches, "the unconstrained range is not marked"
        lo, hi = (b / (2 * np.pi) for b in run.start["band_rad_s"])
        edges = [x for p in ax.patches for x in (p.get_x(), p.get_x() + p.get_width())]
        assert any(x == pytest.approx(lo) for x in edges)
        assert any(x == pytest.approx(hi) for x in edges)
    elif kind == "cosy":
        assert len(images) == 4 and len(cbars) >= 4
        labels = {ax.get_xlabel() for ax in fig.axes}
        assert {"t2 (us)", "f2 (kHz)"} <= labels
        spec_ax = next(ax for ax in fig.axes if ax.get_xlabel() == "f2 (kHz)")
        lo, hi = spec_ax.get_ylim()
        assert lo < hi  # f1 increases upwards
        rec = tables["reconstruction"]
        np.testing.assert_allclose(images[2].get_array(), rec["reconstruction"][-1])
    elif kind == "mrfm":
        cube = tables["cube"]["cube_data"][-1]
        assert len(images) == cube.shape[2]
        clims = {im.get_clim() for im in images}
        assert len(clims) == 1  # one colour scale
        assert len({id(im.colorbar) for im in images if im.colorbar is not None}) == 1
        assert fig.axes[0].get_ylabel() == "y (nm)"
        mask = tables["cube"]["cube_mask"][-1].astype(bool)
        shown = np.ma.getmaskarray(images[0].get_array())
        assert shown.sum() == (~mask).sum()  # unsampled positions left blank
        vmax = max(c[1] for c in clims)
        assert vmax == pytest.approx(np.max(cube[mask]) * 1e36)  # aN^2


def _folders(path: Path) -> set:
    return {p for p in path.rglob("*")}


BAD = [
    (["runs", "--data-dir", "{new}"], "no runs stored"),
    (["runs", "-n", "0", "--data-dir", "{new}"], "whole number >= 1"),
    (["runs", "--config", "{missing}"], "cannot read lab configuration"),
    (["runs", "--config", "{broken}", "--data-dir", "{new}"], "broken.toml"),
    (["show", "nosuchrun", "--data-dir", "{data}"], "no run with uid starting"),
    (["show", "-999", "--data-dir", "{data}"], "does not exist"),
    (["show", "1", "--data-dir", "{new}"], "no runs stored"),
    (["demo", "--shots", "0", "--data-dir", "{new}"], "--shots"),
    (["demo", "--shots", "1e6x", "--data-dir", "{new}"], "not a number"),
    (["demo", "--points", "1", "--data-dir", "{new}"], "--points"),
    (["demo", "--config", "{badfield}", "--data-dir", "{new}"], "field"),
    (["shell", "--config", "{badfield}", "--data-dir", "{new}"], "field"),
    (["shell", "--config", "{broken}", "--data-dir", "{new}"], "broken.toml"),
    (["scan", "mrfm", "--standoff", "5", "--quick", "--data-dir", "{new}"], "standoff"),
    (["scan", "mrfm", "--n-xy", "2", "--data-dir", "{new}"], "--n-xy"),
    (["scan", "mrfm", "--sampling", "0", "--quick", "--data-dir", "{new}"], "--sampling"),
    (["analyze", "vqns", "{missing}"], "no such file"),
    (["analyze", "vqns", "{onerow}"], "at least"),
    (["analyze", "cosy", "{badcosy}", "--out-dir", "{new}"], "not a number"),
    (["analyze", "mrfm", "nosuch.npz", "--out", "{new}"], "no such file"),
    (["analyze", "mrfm", "-1", "--data-dir", "{new}", "--out", "{new2}"], "no runs stored"),
    (["train", "dlnet", "--minutes", "0", "--out", "{new}/w.pt"], "must be positive"),
]


@pytest.mark.parametrize("argv, text", BAD, ids=[" ".join(a[:2]) + f" #{i}"
                                                 for i, (a, _) in enumerate(BAD)])
def test_bad_input_one_line_and_nothing_created(argv, text, tmp_path, stored):
    data, _ = stored
    (tmp_path / "broken.toml").write_text("[storage\ndata_dir = 'x'\n")
    (tmp_path / "badfield.toml").write_text('[sim]\nfield = "0.05 T"\n')
    (tmp_path / "onerow.csv").write_text("sequence,t,coherence\nse,1e-6,0.9\n")
    (tmp_path / "badcosy.csv").write_text("1,2,3\n0.5x,,1\n1,1,1\n")
    names = {"new": tmp_path / "new", "new2": tmp_path / "new2", "data": data,
             "missing": tmp_path / "missing.toml", "broken": tmp_path / "broken.toml",
             "badfield": tmp_path / "badfield.toml", "onerow": tmp_path / "onerow.csv",
             "badcosy": tmp_path / "badcosy.csv"}
    args = [a.format(**names) for a in argv]
    before = _folders(tmp_path)
    res = _mracq(*args, cwd=tmp_path, env={"HOME": str(tmp_path / "home"),
                                           "XDG_DATA_HOME": str(tmp_path / "xdg")})
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert text in lines[0], lines[0]
    assert _folders(tmp_path) == before, _folders(tmp_path) - before


def test_debug_shows_the_traceback(tmp_path):
    res = _mracq("runs", "--data-dir", tmp_path / "nothing", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_config_data_dir_is_honoured_like_the_environment(stored, tmp_path):
    data, _ = stored
    cfg = tmp_path / "lab.toml"
    cfg.write_text(f"[storage]\ndata_dir = {str(data)!r}\n")
    by_option = _mracq("runs", "--config", cfg, env={"HOME": str(tmp_path)})
    by_env = _mracq("runs", env={"MRACQ_CONFIG": str(cfg), "HOME": str(tmp_path)})
    assert by_option.returncode == by_env.returncode == 0, by_option.stderr
    assert "vqns_estimate" in by_option.stdout and by_option.stdout == by_env.stdout


def test_shots_accepts_scientific_notation():
    from mracq.cli import build_parser

    args = build_parser().parse_args(["demo", "--shots", "1e6"])
    assert args.shots == 1_000_000 and isinstance(args.shots, int)


def test_analyze_outputs_are_not_overwritten(tmp_path, capsys):
    from mracq.cli import main

    rows = ["sequence,t,coherence"] + [f"se,{t:.3e},{np.exp(-(t / 20e-6) ** 2):.4f}"
                                       for t in np.geomspace(1e-6, 60e-6, 8)]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c_vqns.png").write_bytes(b"earlier")
    assert main(["analyze", "vqns", str(tmp_path / "c.csv"), "-r", "2"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "c_vqns.png").read_bytes() == b"earlier"


def test_vqns_time_unit_warning(tmp_path):
    from mracq.cli.analyze_vqns import check_plausible
    from mracq.recon.vqns.model import Measurement

    t_us = np.geomspace(1, 60, 8)  # a file in microseconds
    warn = check_plausible([Measurement("se", t_us, np.exp(-(t_us / 20) ** 2))], "f.csv")
    assert any("seconds" in w for w in warn)
    t_s = t_us * 1e-6
    assert check_plausible([Measurement("se", t_s, np.exp(-(t_s / 20e-6) ** 2))], "f") == []


def test_scan_mrfm_quick_stores_scan_and_plausible_reconstruction(tmp_path, capsys):
    from mracq.cli import main
    from mracq.cli.store import LocalStore

    data = tmp_path / "data"
    assert main(["scan", "mrfm", "--quick", "--n-xy", "16", "--pulses", "4", "--n-z", "8",
                 "--t-m", "30", "--seed", "1", "--data-dir", str(data)]) == 0
    res = capsys.readouterr()
    assert "precompute" in res.err
    assert "256/256" in res.out  # the live table reaches the last point
    assert "warning" not in res.out
    store = LocalStore(data)
    try:
        scan, rec = store.get_run(1), store.get_run(2)
        assert scan.start["plan_name"] == "multislice_scan"
        assert rec.start["plan_name"] == "mrfm_reconstruction"
        vol = rec.table("primary")["volume"][-1] / 1e27
        assert vol.shape == (16, 16, 8) and 20 < vol.max() < 200  # nm^-3, like the phantom
    finally:
        store.close()
    assert len(list((data / "figures").glob("scan-*.png"))) == 2


def test_plausibility_flags_speckle():
    from mracq.cli.analyze_mrfm import plausibility

    assert plausibility(np.full((4, 4, 4), 50e27)) == []
    assert "far above" in plausibility(np.full((4, 4, 4), 300e27))[0]


@pytest.mark.parametrize("sim, text", [
    ({"field": "0.05 T"}, "not a number"), ({"field": 1e9}, "outside"),
    ({"contrast": 0}, "outside"), ({"bright_rate": 1e-300}, "outside"),
])
def test_config_refuses_implausible_simulation(sim, text):
    from mracq.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=text):
        validate_config({"sim": sim})
    assert validate_config({"sim": {"field": 0.02}}).sim["field"] == 0.02


def test_repeat_count_bounded_and_refused_fast():
    import time

    from mracq.pulses.model import MAX_REPEAT, Delay, Pulse, PulseProgram, Repeat

    for bad in (float("inf"), float("nan"), MAX_REPEAT + 1, -1, 2.5, "3"):
        with pytest.raises(ValueError, match="Repeat count"):
            Repeat((Delay(1e-6),), bad)
    prog = PulseProgram((Repeat((Pulse("mw", 1e-8), Delay(1e-8)), MAX_REPEAT),))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="exceeds max_duration"):
        prog.validate()
    assert time.perf_counter() - t0 < 0.5  # not expanded (it took 9 s)


def test_ctrl_c_in_demo_keeps_the_data_and_closes_the_run(tmp_path):
    import signal
    import time

    from mracq.cli.store import LocalStore

    data = tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("MRACQ_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "mracq", "demo", "--no-loop", "--points",
                             "300", "--shots", "1e5", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("  scan"):  # the first run is complete, the second is running
            break
    # Ctrl-C once the running scan has emitted a point (its journal holds an event): the
    # run is then known to hold data, however slow the machine
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any('"name":"event"' in f.read_text()
               for f in (data / "journal").glob("*.jsonl")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "RE.resume" not in out + err
    # scans 1-5: the demo's calibration (ODMR coarse/fine, Rabi, Ramsey, calibration)
    assert "stored as scan 7 (closed as aborted)" in err and "mracq show 7" in err
    store = LocalStore(data)
    try:
        runs = store.list_runs()
        assert [r["exit_status"] for r in runs] == ["abort"] + ["success"] * 6
        kept = store.get_run(7).table("primary")
        assert 0 < len(kept["coherence"]) < 300  # what was measured before Ctrl-C
    finally:
        store.close()


def test_live_table_in_readable_units():
    import io

    from mracq.cli.live import UnitTable

    buf = io.StringIO()
    table = UnitTable(file=buf)
    table("start", {"uid": "abcdef12-x", "scan_id": 3, "plan_name": "multislice_scan"})
    table("descriptor", {"uid": "d1", "name": "primary", "data_keys": {
        "scanner_x": {"dtype": "number", "shape": []},
        "t": {"dtype": "number", "shape": [], "units": "s"},
        "readout_spin_signal": {"dtype": "array", "shape": [2], "units": "N^2"}}})
    table("event", {"descriptor": "d1", "seq_num": 1,
                    "data": {"scanner_x": 12e-9, "t": 2.5e-6, "readout_spin_signal": [1e-36,
                                                                                      3e-33]}})
    lines = buf.getvalue().splitlines()
    assert "scanner_x (nm)" in lines[1] and "t (us)" in lines[1] and "aN^2" in lines[1]
    assert lines[2].split() == ["1", "12", "2.5", "3000"]


def test_live_cosy_image_updates_one_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from mracq.viz import LiveCosy

    t = np.arange(8) * 18e-6
    live = LiveCosy(t, t, path=tmp_path / "live.png")
    rng = np.random.default_rng(0)
    for k in (10, 20):
        live(rng.random((8, 8)) * k, rng.random((8, 8)), k)
    assert live.frames == 2 and (tmp_path / "live.png").stat().st_size > 5000
    rec, spec = live.images
    assert rec.colorbar is not None and spec.colorbar is not None
    assert rec.get_clim()[1] > 10  # rescaled to the latest frame
    assert "20 points" in rec.axes.get_title()
