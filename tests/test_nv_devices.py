"""NV ophyd devices: limits before transport, VISA through pyvisa-sim, the coherence plan."""

import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.utils import LimitError

from mracq.config import load_config
from mracq.devices import build_devices
from mracq.devices.nv import MicrowaveSource, PulseSequencer
from mracq.devices.transports import VisaMicrowave, VisaSequencer
from mracq.plans.coherence import coherence_scan, prepare_nv
from mracq.pulses import Delay, Pulse, PulseProgram, coherence_programs
from mracq.sim.filter_function import coherence
from mracq.sim.nv import GAMMA_E, ZERO_FIELD_SPLITTING
from mracq.sim.spectra import default_nv_spectrum

F_RES = ZERO_FIELD_SPLITTING - GAMMA_E * 0.05


@pytest.fixture
def devices():
    return build_devices(load_config(), rng=np.random.default_rng(3))


@pytest.fixture
def RE():
    return RunEngine(call_returns_result=True)


def test_out_of_range_power_rejected_before_transport(devices, RE):
    mw = devices["mw"]
    before = mw.transport.get_power_dbm()
    with pytest.raises(LimitError, match=r"mw_power = 25 dBm is outside the allowed range"):
        RE(prepare_nv(mw, devices["laser"], frequency=F_RES, power_dbm=25.0))
    assert mw.transport.get_power_dbm() == before


def test_frequency_limits_come_from_config(devices):
    with pytest.raises(LimitError, match="Hz"):
        devices["mw"].frequency.set(7e9)


def test_invalid_program_rejected_on_set(devices):
    bad = PulseProgram((Pulse("mw", 1e-10), Delay(1e-6)), {"sequence": "custom"})
    with pytest.raises(ValueError, match="pulse 0"):
        devices["nv"].program.set(bad)
    with pytest.raises(LimitError, match="shots"):
        devices["nv"].shots.set(0)


def test_visa_microwave_through_pyvisa_sim():
    mw = MicrowaveSource(name="mw", transport=VisaMicrowave("TCPIP0::mw.sim::inst0::INSTR@sim"),
                         limits={"min_frequency": 9e3, "max_frequency": 6e9,
                                 "max_power_dbm": 10.0})
    mw.frequency.set(1.5e9).wait(5)
    mw.power.set(-3.5).wait(5)
    mw.output.set(True).wait(5)
    assert mw.frequency.get() == 1.5e9
    assert mw.power.get() == -3.5
    assert mw.output.get() is True
    with pytest.raises(LimitError):
        mw.power.set(12.0)
    assert mw.transport.get_power_dbm() == -3.5  # nothing was sent
    assert "SimMW" in mw.transport.idn()


def test_visa_sequencer_round_trip(RE):
    seq = PulseSequencer(name="nv", transport=VisaSequencer(
        "TCPIP0::sequencer.sim::inst0::INSTR@sim"), limits={})
    prog = coherence_programs("cpmg", [1e-5], n=4)[0]
    seq.program.set(prog).wait(5)
    seq.shots.set(1000).wait(5)
    seq.trigger().wait(5)
    # the instrument received the exact program and shot count
    assert PulseProgram.from_dict(__import__("json").loads(
        seq.transport.query("SEQ:PROG?"))) == prog
    assert seq.transport.query("SEQ:SHOTS?") == "1000"
    assert seq.value.get() == pytest.approx(0.0)  # canned counts 2100,3000,2100


def test_coherence_scan_measures_the_true_decay(devices, RE):
    RE(prepare_nv(devices["mw"], devices["laser"], frequency=F_RES, power_dbm=0.0))
    times = np.geomspace(2e-6, 1.5e-4, 12)
    res = RE(coherence_scan(devices["nv"], "cpmg", times, n=8, shots=400_000)).plan_result
    truth = coherence(default_nv_spectrum(), times, n=8)
    z = (res["coherence"] - truth) / res["sigma"]
    assert np.all(np.abs(z) < 4.5), z
    assert res["sequence"] == "cpmg-8"
    assert res["hardware_time"] > 0


def test_coherence_scan_validates_before_running(devices, RE):
    with pytest.raises(ValueError, match="increase"):
        RE(coherence_scan(devices["nv"], "hahn", [2e-6, 1e-6]))
    with pytest.raises(ValueError, match="too short"):
        RE(coherence_scan(devices["nv"], "xy8", [1e-7], n=4))


def test_visa_rejection_raises_at_the_write_and_answers_stay_aligned():
    """pyvisa-sim refuses a power above its range (20 dBm) with an error-queue entry: the
    write that caused it raises, naming instrument, command and message; later answers are
    not shifted."""
    from mracq.devices.transports import InstrumentError

    mw = MicrowaveSource(name="mw", transport=VisaMicrowave("TCPIP0::mw.sim::inst0::INSTR@sim"),
                         limits={"min_frequency": 9e3, "max_frequency": 6e9,
                                 "max_power_dbm": 30.0})  # our limit wider than the source's
    mw.frequency.set(1.5e9).wait(5)
    mw.power.set(-3.5).wait(5)
    mw.output.set(True).wait(5)
    with pytest.raises(InstrumentError, match=r"mw\.sim.*SimMW.*'SOUR:POW 25\.00'.*-222"):
        mw.power.set(25.0)
    assert mw.power.get() == -3.5 and mw.frequency.get() == 1.5e9
    assert mw.output.get() is True
    mw.output.set("off").wait(5)
    assert mw.output.get() is False and mw.transport.get_output() is False


@pytest.mark.parametrize("value", ["0", "false", "OFF", 0, False, np.False_])
def test_output_off_words_turn_the_output_off(devices, value):
    mw = devices["mw"]
    mw.output.set(True).wait(1)
    mw.output.set(value).wait(1)
    assert mw.output.get() is False


@pytest.mark.parametrize("value", [float("nan"), 2, 0.5, "maybe", None, [1]])
def test_output_refuses_what_is_not_on_off(devices, value):
    mw = devices["mw"]
    mw.output.set(False).wait(1)
    with pytest.raises(LimitError, match="on/off"):
        mw.output.set(value)
    assert mw.output.get() is False


def test_failed_status_names_what_failed():
    from mracq.devices.soft import NamedStatus

    st = NamedStatus("set mw_power")
    st.set_exception(RuntimeError("source refused"))
    assert str(st) == "set mw_power: failed (RuntimeError: source refused)"
