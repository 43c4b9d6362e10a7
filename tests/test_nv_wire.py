"""NV instruments over the wire: the vendors' unchanged clients (pyvisa, RsInstrument,
pulsestreamer, nidaqmx) against ``mracq emulate nv`` in another process."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mracq.config import ConfigError, validate_config
from mracq.devices import build_devices
from mracq.devices.drivers import InstrumentError
from mracq.emulators.process import EmulatorProcess as Rig
from mracq.pulses import Pulse, PulseProgram, coherence_programs, rabi, xy8

SEED = 21
F0 = 2.870e9 - 28.025e9 * 0.05  # transition of the default simulated NV


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("rig"), SEED)
    yield r
    r.stop()


def _prepare(d, frequency=F0, iq=True):
    d["mw"].frequency.put(frequency)
    d["mw"].power.put(0.0)
    d["mw"].output.put(True)
    d["laser"].output.put(True)


def _counts(d, program, shots=50_000):
    d["nv"].program.put(program)
    d["nv"].shots.put(shots)
    d["nv"].trigger()
    return tuple(int(x) for x in d["nv"].counts.get())


def _programs():
    grid = [1e-6, 2.4e-6, 7.2e-6]  # on the 1 ns grid: the wire plays the same timing
    return (coherence_programs("fid", [150e-9, 1.2e-6]) + coherence_programs("hahn", grid)
            + coherence_programs("cpmg", grid, n=4) + [xy8(6.4e-6, 1)]
            + [rabi(t) for t in (0.0, 20e-9, 57e-9)])


def test_counts_through_the_wire_equal_the_in_process_simulator(rig):
    wire = build_devices(validate_config(rig.raw))
    local = build_devices(validate_config({"sim": {"seed": SEED}}))
    for freq in (F0, F0 + 3e6):  # on resonance and detuned: the NV sees the source
        for d in (wire, local):
            _prepare(d, freq)
        for p in _programs():
            assert _counts(wire, p) == _counts(local, p), (freq, p.metadata)
    # the counts follow the microwave set over SCPI: output off -> no contrast
    wire["mw"].output.put(False)
    s, b, d_ = _counts(wire, coherence_programs("hahn", [1e-6])[0], shots=200_000)
    assert abs(s - b) < 5 * math.sqrt(b) and b - d_ > 10 * math.sqrt(b)
    wire["nv"].transport.close()
    wire["mw"].transport.close()


def test_iq_modulation_sets_the_phase_the_nv_sees(rig):
    from mracq.devices.drivers.scpi_microwave import ScpiMicrowave

    cfg = validate_config(rig.raw)
    d = build_devices(cfg)
    _prepare(d)
    # a Hahn echo pi/2_X - pi_Y - pi/2_X ends in ms = -1 (dark); with IQ off every pulse
    # is X and pi/2_X - pi_X - pi/2_X is a full turn: back to ms = 0 (bright)
    p = coherence_programs("hahn", [1e-6])[0]
    with_iq = _counts(d, p, 200_000)
    mw: ScpiMicrowave = d["mw"].transport
    mw.set_iq(False)
    assert mw.get_iq() is False
    without = _counts(d, p, 200_000)
    mw.set_iq(True)
    v_iq = (with_iq[0] - with_iq[2]) / (with_iq[1] - with_iq[2])
    v_no = (without[0] - without[2]) / (without[1] - without[2])
    assert v_iq < 0.2 and v_no > 0.8, (with_iq, without)
    mw.set_pulse_modulation(True)
    assert mw.get_pulse_modulation() is True
    d["nv"].transport.close()
    mw.close()


def test_rsinstrument_and_keysight_dialect(rig):
    from mracq.devices.drivers.scpi_microwave import ScpiMicrowave

    addr = rig.raw["instruments"]["mw"]["address"]
    rs = ScpiMicrowave(addr, model="rs_sgs100a", client="rsinstrument")
    rs.set_frequency(2.5e9)
    assert rs.get_frequency() == 2.5e9
    assert rs.client.rs.idn_string.startswith("Rohde&Schwarz,SGS100A")
    rs.close()
    with pytest.raises(Exception, match="not a keysight_n5183b"):
        ScpiMicrowave(addr, model="keysight_n5183b")


def test_keysight_dialect():
    """Keysight's commands through pyvisa, against the SCPI server on a thread (the
    protocol; the process and the other instruments are tested above)."""
    from mracq.devices.drivers.scpi_microwave import ScpiMicrowave as Driver
    from mracq.emulators.nv_model import EmulatedNV
    from mracq.emulators.scpi_microwave import ScpiMicrowave as Server

    nv = EmulatedNV({"seed": 0})
    server = Server(nv, model="keysight_n5183b")
    server.start()
    try:
        mw = Driver(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", model="keysight_n5183b")
        mw.set_frequency(1.5e9)
        mw.set_power_dbm(-3.5)
        mw.set_output(True)
        assert (mw.get_frequency(), mw.get_power_dbm(), mw.get_output()) == (1.5e9, -3.5, True)
        assert nv.mw.iq is True  # :DM:STAT ON with :OUTP:MOD:STAT ON
        with pytest.raises(InstrumentError, match="-222"):  # out of the N5183B's range
            mw.set_power_dbm(25.0)
        assert mw.get_power_dbm() == -3.5
        mw.close()
    finally:
        server.close()


# ----------------------------------------------------------------------- compile, config
CH = {"laser": 0, "mw": 1, "gate": 2, "gate_bright": 3, "gate_dark": 4, "mw_i": "A0",
      "mw_q": "A1"}


def test_compiled_sequence_decodes_to_the_same_physics():
    from mracq.devices.drivers.pulse_streamer import compile_program
    from mracq.emulators.nv_model import EmulatedNV, Wiring, decode

    nv = EmulatedNV({"seed": 0}, Wiring(dict(CH)))
    for p in _programs():
        c = compile_program(p, CH)
        assert sum(s[0] for s in c.steps) == c.run_ns == round(p.duration * 1e9) + 8000
        steps = [(n, sum(1 << k for k in ch), round(0x7FFF * a0), round(0x7FFF * a1))
                 for n, ch, a0, a1 in c.steps]
        dec = decode(steps, CH, iq_on=True)
        prog = nv.signal_program(dec)
        assert len(prog.pulses_on("mw")) == len(p.pulses_on("mw"))
        assert nv.nv.population(prog) == pytest.approx(nv.nv.population(p), abs=1e-9)
        assert len(dec.windows[3]) == len(dec.windows[4]) == 1  # the two references


@pytest.mark.parametrize("program, match", [
    (PulseProgram((Pulse("laser", 1e-6), Pulse("mw", 0.4e-9))), "shorter than the minimum"),
    (PulseProgram((Pulse("laser", 1e-6), Pulse("rf", 1e-6))), "'rf' is not wired"),
    (PulseProgram((Pulse("mw", 40e-9, frequency=2e9),)), "carrier frequency"),
    (PulseProgram((Pulse("mw", 20.3e-9), Pulse("mw", 20.4e-9))), None),  # back to back: fine
])
def test_unplayable_programs_are_refused_with_the_pulse_named(program, match):
    from mracq.devices.drivers.pulse_streamer import compile_program

    if match is None:
        compile_program(program, CH)
        return
    with pytest.raises(ValueError, match=match):
        compile_program(program, CH)


def test_phase_needs_iq_outputs():
    from mracq.devices.drivers.pulse_streamer import compile_program

    no_iq = {k: v for k, v in CH.items() if not k.startswith("mw_")}
    with pytest.raises(ValueError, match="needs the IQ outputs"):
        compile_program(coherence_programs("hahn", [1e-6])[0], no_iq)
    compile_program(coherence_programs("fid", [1e-6])[0], no_iq)  # all X: plays


def test_lab_config_drivers_are_validated_on_load():
    ok = {"instruments": {"nv": {"driver": "pulsestreamer", "address": "10.0.0.7",
                                 "channels": CH,
                                 "counter": {"address": "localhost:31763",
                                             "counters": ["Dev1/ctr0", "Dev1/ctr1", "Dev1/ctr2"],
                                             "gates": ["/Dev1/PFI1", "/Dev1/PFI2", "/Dev1/PFI3"],
                                             "photons": "/Dev1/PFI0"}}}}
    validate_config(ok)
    bad = {"instruments": {"nv": {**ok["instruments"]["nv"],
                                  "channels": {**CH, "gate": 1, "mw_q": "A2"}},
                           "mw": {"driver": "rs_sgs100", "iq": "yes"}}}
    with pytest.raises(ConfigError) as e:
        validate_config(bad)
    msg = str(e.value)
    assert "instruments.nv.channels.gate and channels.mw both use output 1" in msg
    assert "channels.mw_q = 'A2'" in msg
    assert "instruments.mw.driver = 'rs_sgs100'" in msg and "rs_sgs100a" in msg
    assert "instruments.mw.iq = 'yes' must be true or false" in msg
    with pytest.raises(ConfigError, match="counter is required"):
        validate_config({"instruments": {"nv": {"driver": "pulsestreamer", "address": "x",
                                                "channels": CH}}})
    with pytest.raises(ConfigError, match="address is required"):
        validate_config({"instruments": {"mw": {"driver": "keysight_n5183b"}}})


def test_wire_and_in_process_xy8_shot_time_agree(rig):
    d = build_devices(validate_config(rig.raw))
    p = xy8(6.4e-6, 1)
    assert d["nv"].transport.time_per_shot(p) == pytest.approx(p.duration + 8e-6, abs=1e-12)
    assert np.isfinite(d["nv"].estimate_time([p], 1000))
    d["nv"].transport.close()
    d["mw"].transport.close()


def test_readme_lab_config_example_validates():
    from pathlib import Path

    from mracq.emulators.process import _toml as tomllib

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text[text.index("## Real instruments"):]
    toml = block[block.index("```toml") + 7:]
    cfg = validate_config(tomllib.loads(toml[:toml.index("```")]))
    assert cfg.instruments["nv"]["driver"] == "pulsestreamer"
    assert cfg.instruments["nv"]["channels"]["mw_q"] == "A1"
    assert cfg.instruments["mw"]["driver"] == "rs_sgs100a"


def test_pulse_streamer_client_json_and_binary_uploads(rig):
    """The vendor's client as is: both upload paths, trigger modes, status calls."""
    import contextlib
    import io

    from pulsestreamer import OutputState, PulseStreamer, TriggerRearm, TriggerStart

    with contextlib.redirect_stdout(io.StringIO()):
        ps = PulseStreamer(rig.pulser_host)
    assert ps._has_binary  # firmware >= 1.1.0: the binary port answered
    assert ps.getFirmwareVersion() == "2.1.0" and ps.getSerial()
    seq = [(3000, [0], 0, 0), (40, [1], 1.0, 0), (500, [0, 2], 0, 0)]
    before = rig.control(cmd="state")["streams"]
    ps.setTrigger(TriggerStart.SOFTWARE, TriggerRearm.AUTO)
    ps.stream(seq, 10)
    assert not ps.hasFinished() and ps.hasSequence()
    ps.startNow()
    assert _finished(ps)
    ps._has_binary = False  # the JSON-RPC upload of older firmware
    ps.setTrigger(TriggerStart.IMMEDIATE)
    ps.stream(seq, 10, OutputState.ZERO())
    assert _finished(ps) and not ps.isStreaming()
    assert rig.control(cmd="state")["streams"] == before + 2
    ps.reset()
    ps._has_binary = True


def _finished(ps, timeout=5.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while not ps.hasFinished():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("prop, value", [("frequency", 2.5e9), ("power", -7.25),
                                         ("status", 1), ("IQ_state", 1),
                                         ("pulsemod_state", 1)])
def test_scpi_emulator_answers_qcodes_sgs100a_description(prop, value):
    """The SGS100A commands as QCoDeS' pyvisa-sim file writes them (an outside source)."""
    import importlib.util
    import socket
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    qcodes = importlib.util.find_spec("qcodes")  # its file only: importing it takes seconds
    if qcodes is None:
        pytest.skip("qcodes is not installed")
    from mracq.emulators.nv_model import EmulatedNV
    from mracq.emulators.scpi_microwave import ScpiMicrowave as Server

    spec = yaml.safe_load((Path(qcodes.origin).parent / "instrument" / "sims" /
                           "RSSGS100A.yaml").read_text())
    p = spec["devices"]["SGS100A"]["properties"][prop]
    server = Server(EmulatedNV({"seed": 0}))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            f = s.makefile("rw", newline="\n")
            f.write(p["setter"]["q"].format(value) + "\n")
            f.write(p["getter"]["q"] + "\nSYST:ERR?\n")
            f.flush()
            assert float(f.readline()) == pytest.approx(value)
            assert f.readline().strip() == '0,"No error"'
    finally:
        server.close()
