"""Faults on the wire, mid-scan: each ends the run with a message naming the instrument
and the command, every point measured before is stored once, the stop document says
failed, and the next plan reconnects once the instrument is back."""

from __future__ import annotations

import time

import bluesky.plans as bp
import numpy as np
import pytest

from mracq.config import validate_config
from mracq.emulators.process import EmulatorProcess as Rig
from mracq.plans.coherence import coherence_scan, prepare_nv
from mracq.storage import get_run, run_table
from wire_faults import fail_after

F0 = 2.870e9 - 28.025e9 * 0.05
TIMES = np.arange(1, 6) * 1e-6  # 5 points on the 1 ns grid
K = 2  # the fault strikes after this many stored points


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("faultrig"), 5)
    yield r
    r.stop()


class _Session:
    """RunEngine + devices over the wire + the shared test catalog (no make_session: its
    metadata store and catalog start are not what is tested here)."""

    def __init__(self, raw, catalog):
        from bluesky import RunEngine

        from mracq.devices import build_devices
        from mracq.storage import subscribe_writer

        self.RE = RunEngine(call_returns_result=True)
        self.catalog = catalog
        subscribe_writer(self.RE, catalog)
        self.devices = build_devices(validate_config(raw))


@pytest.fixture(scope="module")
def session(rig, tmp_catalog):
    raw = rig.raw
    raw["instruments"]["mw"]["timeout"] = 1.0
    raw["instruments"]["nv"]["timeout"] = 1.0
    s = _Session(raw, tmp_catalog)
    d = s.devices
    s.RE(prepare_nv(d["mw"], d["laser"], frequency=F0, power_dbm=0.0))
    yield s
    d["nv"].transport.close()
    d["mw"].transport.close()


def _check_stored(session, uid, column, expected, err):
    run = get_run(session.catalog, uid)
    stored = run_table(run)[column]
    # 0 lost, 0 duplicated, in order (the source keeps frequencies to 1 mHz)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-3)
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert err.instrument in stop["reason"] and err.command in stop["reason"]


def _scan(session):
    return coherence_scan(session.devices["nv"], "hahn", TIMES, shots=20_000)


def _back(rig, seconds):
    time.sleep(seconds)
    assert rig.control(cmd="ping")["ok"]


@pytest.mark.parametrize("instrument, command", [("pulser", "stream"),
                                                 ("counter", "StartTask")])
def test_sequencer_or_counter_down_mid_scan(rig, session, instrument, command):
    uid, err = fail_after(session, K, lambda: rig.control(
        cmd="fault", instrument=instrument, kind="down", value=0.6), _scan(session))
    label = "Pulse Streamer 8/2" if instrument == "pulser" else "nidaqmx at"
    assert label in str(err) and err.command == command, str(err)
    _check_stored(session, uid, "t", TIMES[:K], err)
    _back(rig, 0.8)
    res = session.RE(_scan(session)).plan_result  # reconnects
    assert len(res["t"]) == len(TIMES)


def test_microwave_down_mid_frequency_scan_then_settings_restored(rig, session):
    d = session.devices
    freqs = F0 + np.linspace(-5e6, 5e6, 5)
    d["nv"].program.put(coherence_programs_hahn())
    plan = bp.list_scan([d["nv"]], d["mw"].frequency, freqs)
    uid, err = fail_after(session, K, lambda: rig.control(
        cmd="fault", instrument="mw", kind="down", value=0.6), plan)
    assert err.instrument.startswith("mw (rs_sgs100a") and ":SOUR:FREQ:CW" in err.command
    _check_stored(session, uid, "mw_frequency", freqs[:K], err)
    _back(rig, 0.8)
    session.RE(bp.list_scan([d["nv"]], d["mw"].frequency, freqs))
    state = rig.control(cmd="state")["mw"]  # the power-cycled source got its settings back
    assert state["output"] is True and state["iq"] is True and state["frequency"] == freqs[-1]
    d["mw"].frequency.put(F0)


def coherence_programs_hahn():
    from mracq.pulses import hahn_echo

    return hahn_echo(2e-6)


@pytest.mark.parametrize("instrument, kind, match", [
    ("counter", "delay", "DEADLINE_EXCEEDED|Deadline"),   # a timeout
    ("counter", "garble", "garbled count nan"),
    ("counter", "error", "memory overflow"),            # a DAQmx error status
    ("pulser", "garble", "stream"),
    ("pulser", "error", "error code: 7"),               # the binary upload refused
])
def test_timeout_error_and_garbled_reply_mid_scan(rig, session, instrument, kind, match):
    uid, err = fail_after(session, K, lambda: rig.control(
        cmd="fault", instrument=instrument, kind=kind, value=1.4), _scan(session))
    assert err.instrument and err.command
    assert __import__("re").search(match, str(err)), str(err)
    _check_stored(session, uid, "t", TIMES[:K], err)
    time.sleep(1.5 if kind == "delay" else 0)  # the late reply is gone
    res = session.RE(_scan(session)).plan_result
    assert len(res["t"]) == len(TIMES)


@pytest.mark.parametrize("kind, match", [("error", "instrument error -221"),
                                         ("garble", "garbled reply")])
def test_microwave_error_queue_and_garbled_reply(rig, session, kind, match):
    d = session.devices
    freqs = F0 + np.linspace(-5e6, 5e6, 5)
    d["nv"].program.put(coherence_programs_hahn())
    uid, err = fail_after(session, K, lambda: rig.control(
        cmd="fault", instrument="mw", kind=kind), bp.list_scan([d["nv"]], d["mw"].frequency,
                                                               freqs))
    assert match in str(err) and "mw (rs_sgs100a" in str(err)
    _check_stored(session, uid, "mw_frequency", freqs[:K], err)
    session.RE(bp.list_scan([d["nv"]], d["mw"].frequency, freqs[:2]))
    d["mw"].frequency.put(F0)


def test_emulator_process_killed_and_restarted_mid_scan(rig, session):
    uid, err = fail_after(session, K, rig.kill, _scan(session))
    assert err.instrument and err.command
    _check_stored(session, uid, "t", TIMES[:K], err)
    rig.restart()  # same ports, power-on state
    session.RE(prepare_nv(session.devices["mw"], session.devices["laser"], frequency=F0,
                          power_dbm=0.0))
    res = session.RE(_scan(session)).plan_result
    assert len(res["t"]) == len(TIMES) and np.all(np.isfinite(res["coherence"]))
