"""MRFM instruments over the wire: ``mracq emulate mrfm`` in another process (attocube AMC
positioner, SR860 lock-in, SMB100A rf source around one emulated sample), the devices and
plans unchanged: the same reconstruction as in-process, the interlock before any command,
faults and an emulator kill mid-scan with every stored point kept once."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.utils import LimitError

from mracq.config import validate_config
from mracq.devices.drivers import InstrumentError
from mracq.devices.mrfm import InterlockError, build_mrfm_devices
from mracq.emulators.process import MRFMEmulatorProcess
from mracq.plans.mrfm import multislice_scan
from mracq.sim.clock import VirtualClock
from mracq.sim.mrfm.field import SEED_F0, SEED_F_BW
from mracq.sim.mrfm.setup import default_setup
from mracq.storage import get_run, run_table, subscribe_writer
from wire_faults import fail_after

N_XY, STEP, N_Z = 16, 5e-9, 8
F0 = SEED_F0[::12]  # 4 slices
T_M = 10.0
EXTRA = ["--n-xy", str(N_XY), "--step", str(STEP * 1e9), "--n-z", str(N_Z),
         "--time-scale", "1e-4", "--phantom-seed", "1"]
COORDS = np.fft.fftfreq(N_XY, 1.0 / N_XY) * STEP


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = MRFMEmulatorProcess(tmp_path_factory.mktemp("mrfmrig"), 7, EXTRA)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def setup():
    return default_setup("membrane", "multislice", voxel_size=STEP, n_xy=N_XY, n_z=N_Z, f0=F0)


def _wire(rig, timeout=5.0):  # the emulator computes a slice's PSF on first use
    raw = rig.raw
    for name in ("scanner", "readout", "rf"):
        raw["instruments"][name]["timeout"] = timeout
    raw["instruments"]["scanner"]["move_timeout"] = 0.5
    return build_mrfm_devices(validate_config(raw).instruments, VirtualClock(),
                              np.random.default_rng(0))


def _close(d):
    d["scanner"].transport.close()
    d["readout"].backend.close()


def _scan(d, x=COORDS, y=COORDS, mask=None, f0=F0):
    return multislice_scan(d["scanner"], d["rf"], d["readout"], x, y, z=15e-9, f0_list=f0,
                           f_bw=SEED_F_BW, t_m=T_M, mask=mask)


def test_multislice_over_tcp_reconstructs_as_in_process(rig, setup):
    from mracq.recon.mrfm.pipeline import reconstruct

    RE = RunEngine(call_returns_result=True)
    density = setup.phantom(np.random.default_rng(1))
    clean = setup.forward(density)
    wire = _wire(rig)
    data = {"wire": RE(_scan(wire)).plan_result.data}
    _close(wire)
    local = build_mrfm_devices({}, VirtualClock(), np.random.default_rng(11), setup=setup,
                               density=density)
    data[11] = RE(_scan(local)).plan_result.data
    data[12] = setup.measure(density, T_M, np.random.default_rng(12))  # the noise model
    sd = setup.noise_std(clean, T_M)
    z = {k: (v - clean) / sd for k, v in data.items()}
    # the wire's points scatter about the noise-free data as the simulator's do (AR(1)
    # samples at 38 Hz with tau_m = 20 ms carry a little less than T_m / tau_m dof)
    assert abs(z["wire"].mean()) < 0.15, z["wire"].mean()
    assert 0.8 < z["wire"].std() < 1.5 * z[11].std(), (z["wire"].std(), z[11].std())
    rec = {k: reconstruct(v, setup, n_iter=150) for k, v in data.items()}

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    # the wire's reconstruction is as close to the in-process ones as they are to each other
    assert rel(rec["wire"], rec[11]) < 1.5 * rel(rec[12], rec[11]) + 0.02, \
        (rel(rec["wire"], rec[11]), rel(rec[12], rec[11]))
    assert rel(rec["wire"], density) < 1.2 * rel(rec[11], density) + 0.02


def test_plan_below_standoff_is_refused_before_any_command(rig):
    d = _wire(rig)
    RE = RunEngine(call_returns_result=True)
    rig.control(cmd="clear_log")
    with pytest.raises(InterlockError, match="minimum standoff"):
        RE(multislice_scan(d["scanner"], d["rf"], d["readout"], COORDS[:3], COORDS[:3],
                           z=10e-9, f0_list=F0, t_m=T_M))
    with pytest.raises(InterlockError):
        d["scanner"].z.set(5e-9)
    d["scanner"].max_step.put(50e-9)
    with pytest.raises(LimitError, match="max_step"):
        d["scanner"].x.set(d["scanner"].x.position + 100e-9)
    assert rig.control(cmd="log")["log"] == []  # nothing reached the emulator
    _close(d)


class _Session:
    def __init__(self, rig, catalog, timeout=5.0):
        self.RE = RunEngine(call_returns_result=True)
        self.catalog = catalog
        subscribe_writer(self.RE, catalog)
        self.d = _wire(rig, timeout)


def _fail_after(session, k, action, plan):
    """`wire_faults.fail_after` counting the scan's readout events only."""
    return fail_after(session, k, action, plan,
                      counts=lambda doc: "readout_spin_signal" in doc["data"])


SUB = COORDS[:4]  # 4 x 4 positions, 2 slices
F_SUB = F0[:2]
K = 5


def _stored_xy(session, uid):
    run = get_run(session.catalog, uid)
    t = run_table(run)
    return np.column_stack([t["scanner_x"], t["scanner_y"]]), run.metadata["stop"]


def _expected(k):
    return np.array([(x, y) for x in SUB for y in SUB][:k])


@pytest.mark.parametrize("instrument, kind, value, match", [
    ("scanner", "nosettle", 0, "did not settle"),
    ("scanner", "error", 0, "controller error 1"),
    ("scanner", "down", 0.3, "scanner"),
    ("lockin", "error", 0, "execution error"),
    ("lockin", "delay", 1.0, "timed out|timeout"),
    ("lockin", "garble", 0, "garbled|not a binary block"),
    ("rf", "error", 0, "instrument error -221"),
])
def test_fault_mid_scan_stops_keeps_points_and_next_plan_reconnects(
        rig, tmp_catalog, instrument, kind, value, match):
    s = _Session(rig, tmp_catalog, 0.5 if kind == "delay" else 5.0)
    rig.control(cmd="clear_log")
    uid, err = _fail_after(s, K, lambda: rig.control(cmd="fault", instrument=instrument,
                                                      kind=kind, value=value),
                           _scan(s.d, SUB, SUB, f0=F_SUB))
    assert __import__("re").search(match, str(err)), str(err)
    assert "\n" not in str(err)
    xy, stop = _stored_xy(s, uid)
    np.testing.assert_allclose(xy, _expected(K), rtol=0, atol=0.3e-9)  # 0 lost, 0 extra
    assert stop["exit_status"] == "fail" and err.command in stop["reason"]
    log = [tuple(e) for e in rig.control(cmd="log")["log"]]
    targets = [i for i, (n, t) in enumerate(log) if "setControlTargetPosition" in t]
    # nothing moves after the error: no target is sent after the failing instrument's
    # last request (a stalled axis is stopped: closed loop off)
    last_other = max((i for i, (n, _) in enumerate(log) if not n.startswith("scanner")),
                     default=-1)
    if instrument != "scanner":
        assert max(targets) < last_other
    if kind == "nosettle":
        assert "setControlMove" in log[-1][1] and "false" in log[-1][1]
    __import__("time").sleep(value + 0.4)  # the instrument is back, the late reply gone
    res = s.RE(_scan(s.d, SUB[:1], SUB[:2], f0=F_SUB)).plan_result  # reconnects
    assert np.all(np.isfinite(res.data))
    _close(s.d)


def test_control_refuses_a_fault_the_rig_does_not_have(rig):
    assert rig.control(cmd="fault", instrument="lockin", kind="nosettle") == {
        "ok": False, "error": "nosettle is a positioner fault"}
    bad = rig.control(cmd="fault", instrument="counter", kind="error")
    assert not bad["ok"] and "scanner" in bad["error"]
    assert rig.control(cmd="fault", instrument="rf", kind="warp")["ok"] is False
    assert rig.control(cmd="state")["ok"]  # nothing armed: the rig still answers


def test_emulator_killed_and_restarted_mid_scan_loses_and_repeats_nothing(rig, tmp_catalog):
    s = _Session(rig, tmp_catalog)
    uid, err = _fail_after(s, K, rig.kill, _scan(s.d, SUB, SUB, f0=F_SUB))
    assert err.instrument and err.command
    xy1, stop = _stored_xy(s, uid)
    np.testing.assert_allclose(xy1, _expected(K), rtol=0, atol=0.3e-9)
    rig.restart()  # same ports; the positioner is where it was (absolute sensors)
    state = rig.control(cmd="state")
    np.testing.assert_allclose(state["position"][:2], xy1[-1], atol=1e-9)
    done = np.zeros((len(SUB), len(SUB)), bool)
    for x, y in xy1:
        done[np.abs(SUB - x).argmin(), np.abs(SUB - y).argmin()] = True
    res = s.RE(_scan(s.d, SUB, SUB, mask=~done, f0=F_SUB))  # the rest, after reconnecting
    xy2, stop2 = _stored_xy(s, res.plan_result.uid)
    assert stop2["exit_status"] == "success"
    both = np.vstack([xy1, xy2])
    keys = {(int(round(x / STEP)), int(round(y / STEP))) for x, y in both}
    assert len(both) == len(SUB) ** 2 == len(keys)  # every position once
    _close(s.d)


@pytest.fixture(scope="module")
def pi_rig(tmp_path_factory):
    r = MRFMEmulatorProcess(tmp_path_factory.mktemp("pirig"), 8,
                            [*EXTRA, "--positioner", "pi_gcs"])
    yield r
    r.stop()


def test_pi_gcs_positioner_moves_in_um_and_reports_controller_errors(pi_rig):
    from mracq.devices.drivers.positioners import PIGCS

    d = _wire(pi_rig)
    assert d["scanner"].transport.model == "pi_gcs"
    RE = RunEngine(call_returns_result=True)
    res = RE(_scan(d, COORDS[:2], COORDS[1:3], f0=F0[:1])).plan_result
    assert np.all(np.isfinite(res.data)) and res.data.shape == (2, 2, 1)
    x, y, z = pi_rig.control(cmd="state")["position"]
    assert abs(x - COORDS[1]) < 0.2e-9 and abs(y - COORDS[2]) < 0.2e-9 and abs(z - 15e-9) \
        < 0.2e-9
    _close(d)
    drv = PIGCS(pi_rig.raw["instruments"]["scanner"]["address"], timeout=2.0)
    with pytest.raises(InstrumentError, match="controller error 7: Position out of limits"):
        drv.move("x", 150e-6)  # beyond the E-727's +-100 um: the controller refuses
    assert abs(drv.position("x") - COORDS[1]) < 0.2e-9  # and did not move
    drv.close()


def test_srsinst_sr860_client_unchanged_reads_the_thermal_noise(pi_rig):
    """SRS's own client against the emulated SR860: settings by index, SNAP?, and the
    binary capture buffer; with the rf off the lock-in sees thermal force noise only, the
    same variance in X and Y, S_th^2 f_meas x g^2."""
    import time

    from srsinst.sr860 import SR860
    from srsinst.sr860.instruments.keys import Keys

    pi_rig.control(cmd="fault", instrument="rf", kind="down", value=0.0)  # power-on: rf off
    time.sleep(0.2)
    lia = SR860("tcpip", "127.0.0.1", int(pi_rig.raw["instruments"]["readout"]["address"]
                                          .rsplit(":", 1)[1]))
    try:
        assert lia.check_id()[0] == "SR860"
        lia.signal.voltage_sensitivity = 0.1
        lia.signal.time_constant = 3e-3
        assert (lia.signal.voltage_sensitivity, lia.signal.time_constant) == (0.1, 3e-3)
        assert len(lia.data.get_values(0, 1)) == 2
        lia.capture.config = Keys.XY
        lia.capture.buffer_size_in_kilobytes = 64  # 8192 XY pairs
        lia.capture.rate_divisor_exponent = 2     # 1220.7 Hz / 4 = 305 Hz
        assert abs(lia.capture.rate - 305.176) < 0.01
        lia.capture.start(0, 0)
        deadline = time.monotonic() + 10
        while lia.capture.state & 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        x, y = lia.capture.get_all_data()
    finally:
        lia.disconnect()
    g = float(pi_rig.raw["instruments"]["readout"]["volts_per_newton"])
    th = (10e-18) ** 2 * 40.0
    assert x.shape == y.shape == (8192,)
    # 8192 samples 3.3 ms apart, tau_m = 20 ms: ~1300 independent ones, 4 % sd
    for v in (x, y):
        assert abs(np.var(v) / g**2 / th - 1) < 0.2, np.var(v) / g**2 / th


def test_lab_config_refuses_bad_mrfm_driver_settings_before_connecting():
    from mracq.config import ConfigError

    def errors(tables):
        with pytest.raises(ConfigError) as e:
            validate_config({"instruments": tables})
        return str(e.value)

    text = errors({"readout": {"driver": "srs_sr860", "address": "h:1", "sensitivity": 0.3,
                               "time_constant": 2e-3},
                   "scanner": {"driver": "attocube_anc", "address": "h:9090"}})
    assert "sensitivity = 0.3 is not an SR860 setting" in text
    assert "time_constant = 0.002 is not an SR860 setting" in text
    assert "instruments.scanner.driver = 'attocube_anc'" in text
    assert 'must be "host:port"' in errors({"scanner": {"driver": "pi_gcs", "address": "h"}})
    assert "address is required" in errors({"rf": {"driver": "rs_smb100a"}})
    cfg = validate_config({"instruments": {"readout": {"driver": "srs_sr860",
                                                       "address": "127.0.0.1:1"}}})
    with pytest.raises(ValueError, match="go over the wire together"):
        build_mrfm_devices(cfg.instruments, VirtualClock(), np.random.default_rng(0))
