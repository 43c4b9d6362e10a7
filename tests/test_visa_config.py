"""VISA from the lab config: resource, library (@sim, a pyvisa-sim YAML file) and
open_resource options, against QCoDeS' pyvisa-sim model of an R&S SGS100A."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from ophyd.utils import LimitError

from mracq.config import ConfigError, load_config, validate_config
from mracq.devices import build_nv_devices
from mracq.devices.transports import sim_yaml_path, visa_library
from mracq.sim.clock import VirtualClock


def _qcodes_sgs100a() -> Path:
    spec = importlib.util.find_spec("qcodes")  # no import: qcodes is slow to import
    if spec is None:
        pytest.skip("qcodes is not installed (pip install mracq[test])")
    path = Path(spec.submodule_search_locations[0]) / "instrument" / "sims" / "RSSGS100A.yaml"
    assert path.is_file(), path
    return path


def _devices(cfg):
    return build_nv_devices(cfg.instruments, cfg.sim, VirtualClock(), np.random.default_rng(0))


def test_qcodes_sgs100a_through_a_lab_config(tmp_path):
    yaml = _qcodes_sgs100a()
    lab = tmp_path / "lab.toml"
    lab.write_text(f"""
[instruments.mw]
backend = "GPIB::1::INSTR"
visa_library = "{yaml}"
max_power_dbm = 5
visa_options = {{ query_delay = 0.002, timeout = 1500 }}
""")
    cfg = load_config(lab)
    dev = _devices(cfg)
    mw = dev["mw"]
    res = mw.transport.res
    assert res.query_delay == 0.002 and res.timeout == 1500  # visa_options honoured
    assert "SGS100A_simulated" in mw.transport.idn()
    mw.frequency.set(1.4703e9).wait(5)
    mw.power.set(-3.5).wait(5)
    mw.output.set(True).wait(5)
    # what the model stored is what a real SGS100A takes (SOUR:FREQ, SOUR:POW, :OUTP:STAT)
    assert mw.frequency.get() == pytest.approx(1.4703e9)
    assert mw.power.get() == -3.5
    assert mw.output.get() is True
    assert float(res.query("SOUR:FREQ?")) == 1.4703e9
    assert res.query(":OUTP:STAT?") == "ON"
    assert res.query("FREQ?") == "ERROR"  # the short form the transport used to send
    with pytest.raises(LimitError):
        mw.power.set(8.0)  # max_power_dbm from the same lab file: nothing sent
    assert float(res.query("SOUR:POW?")) == -3.5
    mw.output.set(False).wait(5)
    assert mw.output.get() is False
    res.close()


def test_library_as_resource_suffix_and_packaged_sim():
    yaml = _qcodes_sgs100a()
    cfg = validate_config({"instruments": {"mw": {"backend": f"GPIB::2::INSTR@{yaml}"}}})
    mw = _devices(cfg)["mw"]
    mw.frequency.set(2.0e9).wait(5)
    assert mw.frequency.get() == 2.0e9
    mw.transport.res.close()
    cfg = validate_config({"instruments": {
        "mw": {"backend": "TCPIP0::mw.sim::inst0::INSTR", "visa_library": "@sim"},
        "laser": {"backend": "TCPIP0::laser.sim::inst0::INSTR", "visa_library": "@sim",
                  "visa_options": {"query_delay": 0.001}}}})
    dev = _devices(cfg)
    assert "SimMW" in dev["mw"].transport.idn()
    dev["laser"].output.set(True).wait(5)
    assert dev["laser"].output.get() is True
    assert dev["laser"].transport.res.query_delay == 0.001


def test_visa_library_resolution():
    assert visa_library("GPIB::1::INSTR@sim") == ("GPIB::1::INSTR", f"{sim_yaml_path()}@sim")
    assert visa_library("GPIB::1::INSTR", "@py") == ("GPIB::1::INSTR", "@py")
    assert visa_library("GPIB::1::INSTR@py", "/x/a.yaml") == ("GPIB::1::INSTR", "/x/a.yaml@sim")
    assert visa_library("GPIB::1::INSTR@/x/a.yaml") == ("GPIB::1::INSTR", "/x/a.yaml@sim")
    assert visa_library("GPIB::1::INSTR") == ("GPIB::1::INSTR", "")


def test_visa_library_validated_on_load(tmp_path):
    (tmp_path / "inst").mkdir()
    (tmp_path / "inst" / "sg.yaml").write_text("spec: '1.1'\n")
    lab = tmp_path / "lab.toml"
    lab.write_text('[instruments.mw]\nbackend = "GPIB::1::INSTR"\n'
                   'visa_library = "inst/sg.yaml@sim"\n')
    cfg = load_config(lab)  # relative to the lab file
    assert cfg.instruments["mw"]["visa_library"] == str(tmp_path / "inst" / "sg.yaml")
    lab.write_text('[instruments.mw]\nvisa_library = "missing.yaml"\n'
                   '[instruments.laser]\nvisa_library = "py"\n')
    with pytest.raises(ConfigError) as err:
        load_config(lab)
    text = str(err.value)
    assert "instruments.mw.visa_library = 'missing.yaml': no such file" in text
    assert "instruments.laser.visa_library = 'py' is not a VISA library" in text
