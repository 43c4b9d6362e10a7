"""Lab configuration: defaults, merging, validation messages."""

from __future__ import annotations

import pytest

from mracq.config import SCHEMA, ConfigError, LabConfig, load_config, validate_config


def write(tmp_path, text, name="lab.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_is_all_sim_with_schema_defaults(monkeypatch):
    monkeypatch.delenv("MRACQ_CONFIG", raising=False)
    cfg = load_config()
    assert isinstance(cfg, LabConfig) and cfg.path is None
    assert set(cfg.instruments) == set(SCHEMA)
    assert all(inst["backend"] == "sim" for inst in cfg.instruments.values())
    for name, schema in SCHEMA.items():
        for key, param in schema.items():
            if param.default is not None:
                assert cfg.instruments[name][key] == param.default, (name, key)
    assert cfg.instruments["mw"]["max_power_dbm"] == 10.0
    assert cfg.instruments["scanner"]["z_range"] == [15e-9, 2e-6]
    assert cfg.instruments["nv"]["max_shots"] == 100_000_000
    assert isinstance(cfg.instruments["nv"]["max_shots"], int)
    assert cfg.sim["bright_rate"] == 0.03 and cfg.sim["contrast"] == 0.3
    assert cfg.sim["seed"] is None
    assert cfg.storage == {"data_dir": None, "url": None, "api_key": None}


def test_user_file_overrides_one_key(tmp_path):
    path = write(tmp_path, "[instruments.mw]\nmax_power_dbm = -3\n[sim]\nseed = 7\nmine = 1\n")
    cfg = load_config(path)
    assert cfg.path == path
    assert cfg.instruments["mw"]["max_power_dbm"] == -3.0
    assert cfg.instruments["mw"]["max_frequency"] == 6e9  # untouched default
    assert cfg.instruments["laser"]["max_power"] == 0.05
    assert cfg.sim["seed"] == 7 and cfg.sim["mine"] == 1 and cfg.sim["contrast"] == 0.3


def test_env_var_and_relative_data_dir(tmp_path, monkeypatch):
    path = write(tmp_path, '[storage]\ndata_dir = "runs"\n')
    monkeypatch.setenv("MRACQ_CONFIG", str(path))
    cfg = load_config()
    assert cfg.storage["data_dir"] == str(tmp_path / "runs")


def test_out_of_range_names_key_range_unit_and_file(tmp_path):
    path = write(tmp_path, "[instruments.mw]\nmax_power_dbm = 45\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"instruments.mw.max_power_dbm = 45 is outside the allowed range [-140, 30] dBm "
        f"(in {path})")


@pytest.mark.parametrize(("table", "expect"), [
    ({"laser": {"max_power": 2.5}}, "instruments.laser.max_power = 2.5 is outside the "
                                    "allowed range [0, 2] W"),
    ({"nv": {"max_program_duration": 0}}, "allowed range (0, 1] s"),
    ({"scanner": {"min_standoff": -1e-9}}, "instruments.scanner.min_standoff = -1e-09"),
    ({"nv": {"max_shots": 2.5}}, "instruments.nv.max_shots = 2.5 is not an integer"),
    ({"mw": {"max_power_dbm": "high"}}, "is not a number (expected float in dBm)"),
    ({"mw": {"max_power_dbm": float("nan")}}, "max_power_dbm = nan is not finite"),
    ({"scanner": {"x_range": [1e-6, -1e-6]}}, "low must be below high"),
    ({"scanner": {"z_range": [0.0, 1e-6]}}, "starts below instruments.scanner.min_standoff"),
])
def test_bad_values(table, expect):
    with pytest.raises(ConfigError, match=None) as err:
        validate_config({"instruments": table})
    assert expect in str(err.value)


def test_unknown_key_and_instrument_list_known_ones(tmp_path):
    path = write(tmp_path, "[instruments.mw]\nmax_powr_dbm = 1\n[instruments.wm]\n"
                           "backend = 'sim'\n[simulator]\nseed = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(err.value.errors) == 3
    text = str(err.value)
    assert ("instruments.mw.max_powr_dbm is not a known key; known: address, backend, client, "
            "driver, iq, max_frequency, max_power_dbm, min_frequency, pulse_modulation, "
            "timeout, visa_library, visa_options (did you mean 'max_power_dbm'?)") in text
    assert ("instruments.wm is not a known instrument; known: laser, mw, nv, readout, rf, "
            "scanner") in text
    assert "simulator is not a known top-level table; known: instruments, sim, storage" in text


@pytest.mark.parametrize("backend", ["TCPIP0::10.0.0.5::inst0::INSTR", "GPIB0::19::INSTR",
                                     "ASRL/dev/ttyUSB0::INSTR", "USB0::1::2::3::INSTR@sim"])
def test_visa_backends_accepted(backend):
    cfg = validate_config({"instruments": {"mw": {"backend": backend,
                                                  "visa_options": {"timeout": 2000}}}})
    assert cfg.instruments["mw"]["backend"] == backend
    assert cfg.instruments["mw"]["visa_options"] == {"timeout": 2000}


@pytest.mark.parametrize("backend", ["visa", "COM3", "", "TCPIP0 :: x", 3])
def test_bad_backend_rejected(backend):
    with pytest.raises(ConfigError) as err:
        validate_config({"instruments": {"nv": {"backend": backend}}}, path="lab.toml")
    assert str(err.value).startswith(f"instruments.nv.backend = {backend!r} is not a backend")
    assert str(err.value).endswith("(in lab.toml)")


@pytest.mark.parametrize("name", ["mw", "rf"])
def test_min_frequency_above_max_rejected(name):
    with pytest.raises(ConfigError) as err:
        validate_config({"instruments": {name: {"min_frequency": 7e9, "max_frequency": 6e9}}})
    assert str(err.value) == (f"instruments.{name}.min_frequency = 7e+09 Hz must be below "
                              f"instruments.{name}.max_frequency = 6e+09 Hz")


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(write(tmp_path, "[instruments.mw\n"))
    with pytest.raises(ConfigError, match="cannot read lab configuration"):
        load_config(tmp_path / "nope.toml")


def test_to_dict_drops_api_key():
    cfg = validate_config({"storage": {"url": "http://x:8000", "api_key": "SECRET"}})
    assert cfg.storage["api_key"] == "SECRET"
    d = cfg.to_dict()
    assert "api_key" not in d["storage"] and d["storage"]["url"] == "http://x:8000"
    assert "SECRET" not in repr(d)
