"""Sessions: embedded, invalid config, and against a real Tiled server with an API key."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
from bluesky.plans import count
from ophyd.sim import det, det1

from _procs import free_port, serve_tiled
from mracq.config import ConfigError
from mracq.session import Session, make_session
from mracq.storage import get_run, list_runs, run_table

API_KEY = "SECRET"


class _Clock:
    """Stand-in for mracq.sim.clock.VirtualClock (now, advance)."""

    def __init__(self):
        self.now = 0.0

    def advance(self, dt):
        self.now += dt


def test_invalid_config_creates_nothing(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(ConfigError, match=r"instruments\.mw\.max_power_dbm = 45 is outside"):
        make_session({"instruments": {"mw": {"max_power_dbm": 45}}}, data_dir=data_dir,
                     devices={})
    bad = tmp_path / "lab.toml"
    bad.write_text("[instruments.laser]\nbackend = 'COM3'\n")
    with pytest.raises(ConfigError, match=f"is not a backend.*in {bad}"):
        make_session(bad, data_dir=data_dir, devices={})
    assert not data_dir.exists()


def test_embedded_session_interactive(tmp_path, capsys):
    clock = _Clock()
    with make_session({"sim": {"seed": 3}}, data_dir=tmp_path, devices={"det": det},
                      interactive=True, clock=clock) as s:
        assert isinstance(s, Session) and s.clock is clock and s.devices == {"det": det}
        assert s.config.sim["seed"] == 3 and s.url is None
        assert s.rng.random() == np.random.default_rng(3).random()
        result = s.RE(count([det], 3))
        assert result.exit_status == "success"
        assert run_table(get_run(s.catalog, -1))["det"].shape == (3,)
        with pytest.raises(RuntimeError, match="already open in this process"):
            make_session(data_dir=tmp_path, devices={})
    assert s.closed
    out = capsys.readouterr().out
    assert "Transient Scan ID: 1" in out and "det" in out  # the live table


@pytest.mark.skipif(
    not hasattr(__import__("mracq.devices", fromlist=["x"]), "build_devices"),
    reason="mracq.devices.build_devices not on this branch yet")
def test_default_devices_are_built(tmp_path):  # pragma: no cover - after the merge
    with make_session(data_dir=tmp_path) as s:
        assert {"mw", "laser", "nv"} <= set(s.devices)


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """`tiled serve catalog --temp` with an API key, on a free port."""
    log = tmp_path_factory.mktemp("tiled-server") / "server.log"
    env = dict(os.environ, TMPDIR=str(log.parent))  # --temp makes its folder under TMPDIR
    yield from serve_tiled(["serve", "catalog", "--temp", "--api-key", API_KEY], free_port(),
                           log, wait=90, env=env)


def test_session_against_tiled_server(tiled_server, tmp_path, monkeypatch):
    monkeypatch.delenv("TILED_API_KEY", raising=False)
    with pytest.raises(httpx.HTTPStatusError, match="401: Invalid API key"):
        make_session(url=tiled_server, api_key="WRONG", data_dir=tmp_path / "bad",
                     devices={})
    with make_session(url=tiled_server, api_key=API_KEY, data_dir=tmp_path,
                      devices={"det": det, "det1": det1}) as s:
        assert s.url == tiled_server
        uid = s.RE(count([det, det1], 3)).run_start_uids[0]
        expect = det.read()["det"]["value"]
        run = get_run(s.catalog, uid[:8])
        table = run_table(run)
        np.testing.assert_array_equal(table["det"], [expect] * 3)
        assert table["det1"].shape == (3,)
        assert list_runs(s.catalog, limit=1)[0]["uid"] == uid
        assert not (tmp_path / "catalog.db").exists()  # runs went to the server
        assert (tmp_path / "runengine-md.json").is_file()
    # the API key from the environment, scan_id continuing from the local metadata
    monkeypatch.setenv("TILED_API_KEY", API_KEY)
    with make_session({"storage": {"url": tiled_server}}, data_dir=tmp_path,
                      devices={}) as s:
        assert s.RE(count([det], 1)).exit_status == "success"
        assert list_runs(s.catalog, limit=1)[0]["scan_id"] == 2
