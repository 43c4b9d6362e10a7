"""Lab configuration: which backend drives each instrument, and its limits.

A lab configuration is a TOML file.  The built-in default (``mracq/data/default_config.toml``)
simulates every instrument; a lab file is merged over it, so it names only what differs::

    [instruments.mw]
    backend = "TCPIP0::10.0.0.5::inst0::INSTR"
    max_power_dbm = 5

Everything is validated on load, before any device is built, against :data:`SCHEMA`
(key -> type, allowed range, unit, default, description).  Errors are
:class:`ConfigError` (a ``ValueError``) naming the full key, the value, the allowed range
with its unit and the file.  Units are SI (Hz, W, m, s); microwave power is in dBm.

This module is layer 1: standard library (and ``tomli`` on Python 3.10) only.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "SIM_SCHEMA",
    "STORAGE_KEYS",
    "ConfigError",
    "LabConfig",
    "Param",
    "default_config_text",
    "is_visa_resource",
    "load_config",
    "schema_table",
    "validate_config",
]

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None


class ConfigError(ValueError):
    """An invalid lab configuration.

    ``errors`` lists every problem found (one line each); the message joins them.
    """

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Param:
    """One configuration key.

    Parameters
    ----------
    kind : str
        ``"float"``, ``"int"``, ``"range"`` (two increasing floats), ``"str"``, ``"bool"``,
        ``"table"``, ``"backend"`` or ``"library"`` (a VISA library).
    default : object
        Value used when the file does not name the key (``None``: no value).
    lo, hi : float, optional
        Allowed range (inclusive, unless ``lo_open``), in ``unit``.
    unit : str
        Unit of the value (SI, or dBm).
    description : str
        One line for documentation and error messages.
    lo_open : bool
        Exclude ``lo`` itself (strictly positive quantities).
    """

    kind: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    description: str = ""
    lo_open: bool = False

    def range_text(self) -> str:
        """The allowed range with unit, e.g. ``[-140, 30] dBm``."""
        if self.lo is None and self.hi is None:
            return ""
        left = "(" if self.lo_open else "["
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{left}{lo}, {hi}] {self.unit}".rstrip()


def _backend() -> Param:
    return Param("backend", "sim", description='"sim" or a VISA resource string')


def _visa_options() -> Param:
    return Param("table", None, description="extra keyword arguments for pyvisa open_resource "
                 "(timeout in ms, query_delay in s, read_termination, ...)")


def _visa_library() -> Param:
    return Param("library", None, description='VISA library: "@py" (pyvisa-py), "@ivi", '
                 '"@sim" (packaged pyvisa-sim file) or a pyvisa-sim YAML file')


_F_LIMITS = (1e3, 50e9)


# --- vendor drivers (issue 13): driver, address, channel map per instrument ---------------
MW_DRIVERS = ("sim", "visa", "rs_sgs100a", "rs_smb100a", "keysight_n5183b", "keysight_n5172b")
NV_DRIVERS = ("sim", "visa", "pulsestreamer")
SCANNER_DRIVERS = ("sim", "attocube_amc", "pi_gcs")
READOUT_DRIVERS = ("sim", "srs_sr860")
RF_DRIVERS = ("sim", "rs_smb100a", "keysight_n5183b", "keysight_n5172b", "rs_sgs100a")
SEQ_DIGITAL_ROLES = ("laser", "mw", "gate", "gate_bright", "gate_dark", "rf")
SEQ_ANALOG_ROLES = ("mw_i", "mw_q")
SEQ_REQUIRED_ROLES = ("laser", "mw", "gate", "gate_bright", "gate_dark")


def _driver_params(drivers) -> dict[str, Param]:
    return {
        "driver": Param("str", None, description=f"instrument driver: {', '.join(drivers)}"),
        "address": Param("str", None, description="VISA resource, IP address or host:port"),
        "timeout": Param("float", None, 0, 3600, "s", "per-command timeout", lo_open=True),
    }


def check_channel_map(channels: dict) -> list[str]:
    """Problems of a Pulse Streamer channel map (empty if none).

    Digital roles (outputs 0-7): ``laser``, ``mw``, ``gate``, ``gate_bright``,
    ``gate_dark`` (required) and ``rf``; analog roles ``mw_i``, ``mw_q`` (``"A0"``/``"A1"``,
    both or neither).
    """
    errs = []
    for role in SEQ_REQUIRED_ROLES:
        if role not in channels:
            errs.append(f"channels.{role} is missing (a digital output 0-7)")
    used: dict = {}
    for role, out in channels.items():
        if role in SEQ_DIGITAL_ROLES:
            if isinstance(out, bool) or not isinstance(out, int) or not 0 <= out <= 7:
                errs.append(f"channels.{role} = {out!r} must be a digital output 0-7")
                continue
        elif role in SEQ_ANALOG_ROLES:
            if out not in ("A0", "A1"):
                errs.append(f'channels.{role} = {out!r} must be "A0" or "A1"')
                continue
        else:
            errs.append(f"channels.{role} is not a role; known: "
                        f"{', '.join(SEQ_DIGITAL_ROLES + SEQ_ANALOG_ROLES)}")
            continue
        if out in used:
            errs.append(f"channels.{role} and channels.{used[out]} both use output {out!r}")
        used[out] = role
    if ("mw_i" in channels) != ("mw_q" in channels):
        errs.append("channels.mw_i and channels.mw_q go together (IQ needs both)")
    return errs


def _check_counter(counter: dict) -> list[str]:
    errs = []
    if counter.get("driver", "nidaqmx") != "nidaqmx":
        errs.append(f"counter.driver = {counter.get('driver')!r}: only \"nidaqmx\" is supported")
    addr = counter.get("address")
    if not (isinstance(addr, str) and addr.rpartition(":")[2].isdigit()):
        errs.append(f"counter.address = {addr!r} must be \"host:port\" of the NI gRPC Device "
                    "Server")
    for key in ("counters", "gates"):
        v = counter.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, str) for x in v)):
            errs.append(f"counter.{key} = {v!r} must list 3 strings (signal, bright, dark)")
    if not isinstance(counter.get("photons"), str):
        errs.append(f"counter.photons = {counter.get('photons')!r} must be the photon "
                    'terminal, e.g. "/Dev1/PFI0"')
    unknown = set(counter) - {"driver", "address", "counters", "gates", "photons"}
    if unknown:
        errs.append(f"counter has unknown keys {sorted(unknown)}")
    return errs


def _check_driver(name: str, values: dict) -> list[str]:
    """Driver, address and channel-map problems of one instrument table."""
    driver = values.get("driver")
    if driver is None or name not in ("mw", "nv", "scanner", "readout", "rf"):
        return []
    pre = f"instruments.{name}"
    known = {"mw": MW_DRIVERS, "nv": NV_DRIVERS, "scanner": SCANNER_DRIVERS,
             "readout": READOUT_DRIVERS, "rf": RF_DRIVERS}[name]
    if driver not in known:
        return [_unknown(f"{pre}.driver = {driver!r}:", driver, known, "driver")]
    errs = []
    if driver in ("sim", "visa"):
        return errs
    if values.get("backend", "sim") != "sim":
        errs.append(f"{pre}: give driver or backend, not both")
    if not values.get("address"):
        errs.append(f"{pre}.address is required for driver {driver!r}")
    if name in ("scanner", "readout") and values.get("address") and \
            not str(values["address"]).rpartition(":")[2].isdigit():
        errs.append(f"{pre}.address = {values['address']!r} must be \"host:port\"")
    if name == "readout":
        for key, series, first in (("sensitivity", (1.0, 0.5, 0.2), 0),
                                   ("time_constant", (1.0, 3.0), -6)):
            v = values.get(key)
            steps = [m * 10.0 ** (first + k * (1 if first else -1)) for k in range(12)
                     for m in series]
            if v is not None and not any(abs(v - x) <= 1e-6 * x for x in steps):
                errs.append(f"{pre}.{key} = {v:g} is not an SR860 setting (a "
                            f"{'-'.join(f'{m:g}' for m in series)} series)")
    if name in ("mw", "rf") and values.get("client", "pyvisa") not in ("pyvisa", "rsinstrument"):
        errs.append(f"{pre}.client = {values.get('client')!r} must be \"pyvisa\" or "
                    '"rsinstrument"')
    if name == "nv":
        errs += [f"{pre}.{e}" for e in check_channel_map(values.get("channels") or {})]
        if values.get("counter") is None:
            errs.append(f"{pre}.counter is required for driver {driver!r} (the photon counter)")
        else:
            errs += [f"{pre}.{e}" for e in _check_counter(values["counter"])]
    return errs

#: Instruments and their keys: name -> key -> :class:`Param`.
SCHEMA: dict[str, dict[str, Param]] = {
    "mw": {
        "backend": _backend(),
        "min_frequency": Param("float", 9e3, *_F_LIMITS, "Hz", "lowest output frequency"),
        "max_frequency": Param("float", 6e9, *_F_LIMITS, "Hz", "highest output frequency"),
        "max_power_dbm": Param("float", 10.0, -140, 30, "dBm", "highest output power"),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
        **_driver_params(MW_DRIVERS),
        "client": Param("str", None, description='"pyvisa" (default) or "rsinstrument"'),
        "iq": Param("bool", None, description="IQ modulation on (default true)"),
        "pulse_modulation": Param("bool", None, description="pulse modulation on"),
    },
    "laser": {
        "backend": _backend(),
        "max_power": Param("float", 0.05, 0, 2, "W", "highest optical power"),
        "wavelength": Param("float", 532e-9, 200e-9, 2e-6, "m", "laser wavelength"),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
    },
    "nv": {
        "backend": _backend(),
        "min_pulse": Param("float", 2e-9, 1e-10, 1e-6, "s", "shortest pulse"),
        "min_delay": Param("float", 2e-9, 0, 1e-6, "s", "shortest delay between pulses"),
        "resolution": Param("float", 1e-9, 1e-12, 1e-6, "s", "timing grid of the sequencer"),
        "max_program_duration": Param("float", 10e-3, 0, 1, "s", "longest single shot",
                                      lo_open=True),
        "max_shots": Param("int", 100_000_000, 1, 1e10, "", "most repetitions per trigger"),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
        **_driver_params(NV_DRIVERS),
        "channels": Param("table", None, description="Pulse Streamer channel map (role -> output)"),
        "counter": Param("table", None, description="photon counter: driver, address, "
                         "counters, gates, photons"),
        "reference_duration": Param("float", None, 1e-7, 1e-3, "s",
                                    "each reference shot (default 4e-6)"),
        "pi_duration": Param("float", None, 1e-9, 1e-5, "s",
                             "pi pulse of the dark reference (default 40e-9)"),
    },
    "scanner": {
        "backend": _backend(),
        "min_standoff": Param("float", 15e-9, 0, 1e-3, "m", "closest tip-sample distance"),
        "x_range": Param("range", [-1e-6, 1e-6], -1e-2, 1e-2, "m", "x travel"),
        "y_range": Param("range", [-1e-6, 1e-6], -1e-2, 1e-2, "m", "y travel"),
        "z_range": Param("range", [15e-9, 2e-6], -1e-2, 1e-2, "m", "z travel (tip height)"),
        "max_step": Param("float", 1e-6, 0, 1e-3, "m", "largest single move", lo_open=True),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
        **_driver_params(SCANNER_DRIVERS),
        "tolerance": Param("float", None, 0, 1e-6, "m", "settled when within this of the "
                           "target (default 0.5e-9)", lo_open=True),
        "settle_time": Param("float", None, 0, 60, "s", "held within tolerance this long"),
        "move_timeout": Param("float", None, 0, 3600, "s", "a move not settled by then "
                              "fails (default 10)", lo_open=True),
        "axes": Param("table", None, description="controller axis of x, y, z (AMC: 0-2, "
                      'PI: "1"-"3")'),
    },
    "rf": {
        "backend": _backend(),
        "min_frequency": Param("float", 50e6, *_F_LIMITS, "Hz", "lowest rf frequency"),
        "max_frequency": Param("float", 400e6, *_F_LIMITS, "Hz", "highest rf frequency"),
        "max_power": Param("float", 10.0, 0, 1000, "W", "highest rf power"),
        "max_bandwidth": Param("float", 5e6, 0, 1e9, "Hz", "widest frequency sweep"),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
        **_driver_params(RF_DRIVERS),
        "client": Param("str", None, description='"pyvisa" (default) or "rsinstrument"'),
        "level_dbm": Param("float", None, -140, 30, "dBm", "source level into the rf "
                           "amplifier (default 0)"),
    },
    "readout": {
        "backend": _backend(),
        "min_integration": Param("float", 1e-3, 1e-9, 1e6, "s", "shortest integration time"),
        "max_integration": Param("float", 3600.0, 1e-9, 1e6, "s", "longest integration time"),
        "visa_options": _visa_options(),
        "visa_library": _visa_library(),
        **_driver_params(READOUT_DRIVERS),
        "sensitivity": Param("float", None, 1e-9, 1, "V", "lock-in full scale (an SR860 "
                             "setting: 1, 0.5, 0.2, 0.1, ... 1e-9; default 0.1)"),
        "time_constant": Param("float", None, 1e-6, 3e4, "s", "lock-in time constant "
                               "(1e-6, 3e-6, ... 3e4; default 3e-3)"),
        "capture_rate": Param("float", None, 0, 1.25e6, "Hz", "highest capture rate of the "
                              "X/Y stream (default 50)", lo_open=True),
        "volts_per_newton": Param("float", None, 0, 1e30, "V/N", "lock-in output per "
                                  "resonator force (calibration)", lo_open=True),
    },
}

#: Known ``[sim]`` keys (others are allowed and passed through unchecked).
SIM_SCHEMA: dict[str, Param] = {
    "seed": Param("int", None, 0, 2**63 - 1, "", "seed of the simulator's random generator"),
    # bounds where the simulation still means something: below 1e-6 photons/shot no
    # shot count reaches a finite coherence; a contrast of 0 carries no signal; above
    # 0.1025 T the ms=0 -> -1 line of the NV would be below 0 Hz
    "bright_rate": Param("float", 0.03, 1e-6, 100, "photons/shot", "NV ms=0 photon rate"),
    "contrast": Param("float", 0.3, 0, 1, "", "fractional dark/bright contrast",
                      lo_open=True),
    "field": Param("float", 0.05, 0, 1.0, "T", "static field along the NV axis (a number "
                   "in tesla; the ms=0 <-> -1 line is at |D - gamma_e B|)"),
    "spectrum": Param("str", "default", description="name of the simulated noise spectrum"),
    "rabi_frequency": Param("float", 12.5e6, 0, 1e9, "Hz", "NV Rabi frequency at 0 dBm",
                            lo_open=True),
    "hyperfine": Param("float", 0.0, -1e7, 1e7, "Hz",
                       "14N hyperfine splitting of the NV line (-2.16e6; 0: none)"),
}

#: Keys of the ``[storage]`` table (all optional strings).
STORAGE_KEYS = ("data_dir", "url", "api_key")

_TOP_KEYS = ("storage", "instruments", "sim")


@dataclass(frozen=True)
class LabConfig:
    """A validated lab configuration.

    Attributes
    ----------
    storage : dict
        ``data_dir`` (absolute path string or None), ``url`` (Tiled server or None),
        ``api_key`` (or None).
    instruments : dict of str to dict
        Per instrument, every key of :data:`SCHEMA` with defaults filled in (SI units).
    sim : dict
        Simulator parameters (known keys type-checked, others passed through).
    path : pathlib.Path or None
        The lab file this came from (None: built-in default or a dict).
    """

    storage: dict
    instruments: dict[str, dict]
    sim: dict
    path: Path | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def instrument(self, name: str) -> dict:
        """Settings of one instrument; ``KeyError`` listing the known names."""
        try:
            return self.instruments[name]
        except KeyError:
            known = ", ".join(sorted(self.instruments))
            raise KeyError(f"no instrument {name!r} in the lab configuration; "
                           f"known: {known}") from None

    def to_dict(self) -> dict:
        """A JSON-safe copy for start documents (the API key is left out)."""
        storage = {k: v for k, v in self.storage.items() if k != "api_key"}
        return {
            "storage": storage,
            "instruments": copy.deepcopy(self.instruments),
            "sim": copy.deepcopy(self.sim),
            "path": None if self.path is None else str(self.path),
        }


def is_visa_resource(text: str) -> bool:
    """True for a VISA resource string (``"GPIB0::19::INSTR"``, ``"...@sim"``)."""
    return isinstance(text, str) and "::" in text and not any(c.isspace() for c in text)


def default_config_text() -> str:
    """The text of the built-in all-sim configuration."""
    return resources.files("mracq").joinpath("data/default_config.toml").read_text("utf-8")


def _parse(text: str, source: str) -> dict:
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError([f"cannot read {source}: Python < 3.11 needs the package 'tomli' "
                           "(pip install tomli)"])
    try:
        return _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        raise ConfigError([f"{source} is not valid TOML: {exc}"]) from exc


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | os.PathLike | None = None) -> LabConfig:
    """Load and validate a lab configuration.

    Parameters
    ----------
    path : str or path-like, optional
        A TOML file.  Default: env ``MRACQ_CONFIG``, else the built-in all-sim config.
        The file is merged over the built-in defaults.

    Returns
    -------
    LabConfig

    Raises
    ------
    ConfigError
        Unreadable file, invalid TOML, unknown keys or instruments, values of the wrong
        type or outside their allowed range.
    """
    if path is None:
        path = os.environ.get("MRACQ_CONFIG") or None
    if path is None:
        return validate_config({}, path=None)
    path = Path(path).expanduser()
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read lab configuration {path}: {exc}"]) from exc
    return validate_config(_parse(text, str(path)), path=path)


def validate_config(raw: dict, *, path: str | os.PathLike | None = None) -> LabConfig:
    """Validate a configuration dict (merged over the built-in defaults).

    Parameters
    ----------
    raw : dict
        Parsed TOML (or an equivalent dict); it may name only what differs from the
        defaults.
    path : str or path-like, optional
        Where ``raw`` came from: named in errors; a relative ``storage.data_dir`` is taken
        relative to its folder.

    Returns
    -------
    LabConfig

    Raises
    ------
    ConfigError
        Listing every problem found.
    """
    if not isinstance(raw, dict):
        raise ConfigError([f"a lab configuration must be a table, not {type(raw).__name__}"])
    path = None if path is None else Path(path)
    where = f" (in {path})" if path is not None else ""
    merged = _merge(_parse(default_config_text(), "the built-in default config"), raw)
    errors: list[str] = []

    for key in merged:
        if key not in _TOP_KEYS:
            errors.append(_unknown(key, key, _TOP_KEYS, "top-level table") + where)

    storage = _validate_storage(merged.get("storage", {}), path, errors, where)
    instruments = {}
    tables = merged.get("instruments", {})
    if not isinstance(tables, dict):
        errors.append(f"instruments must be a table{where}")
        tables = {}
    for name, table in tables.items():
        prefix = f"instruments.{name}"
        if name not in SCHEMA:
            errors.append(_unknown(prefix, name, SCHEMA, "instrument") + where)
            continue
        if not isinstance(table, dict):
            errors.append(f"{prefix} must be a table, not {_show(table)}{where}")
            continue
        instruments[name] = _validate_table(prefix, table, SCHEMA[name], errors, where,
                                            allow_unknown=False)
        _cross_check(name, instruments[name], errors, where)
        _resolve_library(prefix, instruments[name], path, errors, where)
        errors.extend(e + where for e in _check_driver(name, instruments[name]))

    sim_table = merged.get("sim", {})
    if not isinstance(sim_table, dict):
        errors.append(f"sim must be a table{where}")
        sim_table = {}
    sim = _validate_table("sim", sim_table, SIM_SCHEMA, errors, where, allow_unknown=True)

    if errors:
        raise ConfigError(errors)
    return LabConfig(storage=storage, instruments=instruments, sim=sim, path=path, raw=raw)


def _show(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unknown(full: str, key: str, known, what: str) -> str:
    msg = f"{full} is not a known {what}; known: {', '.join(sorted(known))}"
    close = difflib.get_close_matches(key, list(known), n=1)
    return msg + (f" (did you mean {close[0]!r}?)" if close else "")


def _validate_storage(table, path, errors, where) -> dict:
    out = {k: None for k in STORAGE_KEYS}
    if not isinstance(table, dict):
        errors.append(f"storage must be a table{where}")
        return out
    for key, value in table.items():
        if key not in STORAGE_KEYS:
            errors.append(_unknown(f"storage.{key}", key, STORAGE_KEYS, "key") + where)
        elif not isinstance(value, str) or not value:
            errors.append(f"storage.{key} = {_show(value)} must be a non-empty string{where}")
        else:
            out[key] = value
    if out["data_dir"] is not None:
        d = Path(out["data_dir"]).expanduser()
        if not d.is_absolute() and path is not None:
            d = path.parent / d
        out["data_dir"] = str(d.absolute())
    return out


def _validate_table(prefix, table, schema, errors, where, *, allow_unknown) -> dict:
    out = {}
    for key, value in table.items():
        full = f"{prefix}.{key}"
        param = schema.get(key)
        if param is None:
            if allow_unknown:
                out[key] = copy.deepcopy(value)
            else:
                errors.append(_unknown(full, key, schema, "key") + where)
            continue
        try:
            out[key] = _check(full, value, param)
        except ValueError as exc:
            errors.append(f"{exc}{where}")
    for key, param in schema.items():
        if key not in out and param.default is not None:
            out[key] = copy.deepcopy(param.default)
    if "visa_options" in schema and out.get("visa_options") is None:
        out["visa_options"] = {}
    if "seed" in schema and "seed" not in out:
        out["seed"] = None
    return out


def _number(full: str, value: Any, param: Param) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        unit = f" in {param.unit}" if param.unit else ""
        raise ValueError(f"{full} = {_show(value)} is not a number (expected {param.kind}{unit})")
    if not math.isfinite(value):
        raise ValueError(f"{full} = {_show(value)} is not finite")
    lo_bad = param.lo is not None and (value < param.lo or (param.lo_open and value == param.lo))
    hi_bad = param.hi is not None and value > param.hi
    if lo_bad or hi_bad:
        raise ValueError(f"{full} = {_show(value)} is outside the allowed range "
                         f"{param.range_text()}")
    return value


def _check(full: str, value: Any, param: Param) -> Any:
    kind = param.kind
    if kind == "float":
        return float(_number(full, value, param))
    if kind == "int":
        v = _number(full, value, param)
        if float(v) != int(v):
            raise ValueError(f"{full} = {_show(value)} is not an integer")
        return int(v)
    if kind == "range":
        if not (isinstance(value, list) and len(value) == 2):
            raise ValueError(f"{full} = {_show(value)} must be [low, high] in {param.unit}")
        lo, hi = (float(_number(f"{full}[{i}]", v, param)) for i, v in enumerate(value))
        if not lo < hi:
            raise ValueError(f"{full} = {_show(value)}: low must be below high ({param.unit})")
        return [lo, hi]
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{full} = {_show(value)} must be a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{full} = {_show(value)} must be true or false")
        return value
    if kind == "table":
        if not isinstance(value, dict):
            raise ValueError(f"{full} = {_show(value)} must be a table")
        return copy.deepcopy(value)
    if kind == "library":
        text = value if isinstance(value, str) else ""
        if text.startswith("@") and len(text) > 1 or _is_yaml(text):
            return text
        raise ValueError(f'{full} = {_show(value)} is not a VISA library: use "@py", "@ivi", '
                         '"@sim" or the path of a pyvisa-sim YAML file')
    if kind == "backend":
        if value == "sim" or is_visa_resource(value):
            return value
        raise ValueError(
            f"{full} = {_show(value)} is not a backend: use \"sim\" or a VISA resource "
            'string such as "TCPIP0::10.0.0.5::inst0::INSTR", "GPIB0::19::INSTR", '
            '"ASRL/dev/ttyUSB0::INSTR" (append "@sim" for pyvisa-sim)')
    raise AssertionError(f"unknown parameter kind {kind!r}")  # pragma: no cover


def _is_yaml(text: str) -> bool:
    """A pyvisa-sim instrument file, optionally with pyvisa's ``@sim`` suffix."""
    return text.removesuffix("@sim").lower().endswith((".yaml", ".yml"))


def _resolve_library(prefix: str, values: dict, path, errors: list[str], where: str) -> None:
    """Make a YAML ``visa_library`` absolute (relative to the lab file) and check it exists."""
    lib = values.get("visa_library")
    if not lib or not _is_yaml(lib):
        return
    f = Path(lib.removesuffix("@sim")).expanduser()
    if not f.is_absolute() and path is not None:
        f = path.parent / f
    if not f.is_file():
        errors.append(f"{prefix}.visa_library = {lib!r}: no such file {f}{where}")
        return
    values["visa_library"] = str(f.absolute())


def _cross_check(name: str, values: dict, errors: list[str], where: str) -> None:
    pre = f"instruments.{name}"
    pairs = {"mw": ("min_frequency", "max_frequency", "Hz"),
             "rf": ("min_frequency", "max_frequency", "Hz"),
             "readout": ("min_integration", "max_integration", "s")}
    if name in pairs:
        lo_key, hi_key, unit = pairs[name]
        lo, hi = values.get(lo_key), values.get(hi_key)
        if lo is not None and hi is not None and not lo < hi:
            errors.append(f"{pre}.{lo_key} = {lo:g} {unit} must be below "
                          f"{pre}.{hi_key} = {hi:g} {unit}{where}")
    if name == "scanner" and "z_range" in values and "min_standoff" in values:
        if values["z_range"][0] < values["min_standoff"]:
            errors.append(f"{pre}.z_range = {values['z_range']} starts below "
                          f"{pre}.min_standoff = {values['min_standoff']:g} m{where}")


def schema_table() -> str:
    """The schema as a Markdown table (key, default, allowed range, unit, description)."""
    rows = ["| key | default | allowed | unit | description |", "| --- | --- | --- | --- | --- |"]
    groups = [(f"instruments.{n}", s) for n, s in SCHEMA.items()] + [("sim", SIM_SCHEMA)]
    for prefix, schema in groups:
        for key, p in schema.items():
            allowed = p.range_text().removesuffix(p.unit).strip() if p.unit else p.range_text()
            rows.append(f"| {prefix}.{key} | {p.default!r} | {allowed} | {p.unit} | "
                        f"{p.description} |")
    return "\n".join(rows)
