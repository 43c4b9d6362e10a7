"""Package layout: layers import only downward, methods keep to their subpackages, and the
names outside code calls stay where they were (docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mracq"
LAYER = {"pulses": 1, "config": 1, "_lazy": 1, "data": 1, "sim": 2, "recon": 3, "devices": 4,
         "emulators": 4, "plans": 5, "__init__": 6, "__main__": 6, "storage": 6, "session": 6,
         "cli": 6, "viz": 6, "stream": 6, "worker": 6, "qserver": 6}
METHODS = ("vqns", "cosy", "mrfm", "calibration")
FRAMEWORKS = ("bluesky", "ophyd", "tiled")


def _imports(path: Path):
    """Absolute module names imported by one file (relative imports resolved)."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module
                yield from (f"{node.module}.{a.name}" for a in node.names)


def _modules():
    return sorted(p for p in SRC.rglob("*.py"))


def _top(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_upward_or_cross_method_imports(path):
    own_layer = LAYER[_top(path)]
    parts = path.relative_to(SRC).parts
    own_method = parts[1] if len(parts) > 2 and parts[0] in ("sim", "recon") else None
    for name in _imports(path):
        if name.split(".")[0] in FRAMEWORKS:
            assert own_layer >= 4, f"{path.name}: layer {own_layer} imports {name}"
        if not name.startswith("mracq."):
            continue
        bits = name.split(".")
        assert LAYER[bits[1]] <= own_layer, f"{path.relative_to(SRC)} imports upward: {name}"
        # a method's modules are its own: another method's subpackage is off limits
        if own_method and bits[1] in ("sim", "recon") and len(bits) > 2 and bits[2] in METHODS:
            assert bits[2] == own_method, f"{path.relative_to(SRC)} imports {name}"


def test_devices_and_emulators_never_import_each_other():
    """A transport speaks the protocol, an emulator serves it: neither knows the other."""
    for side, other in (("devices", "emulators"), ("emulators", "devices")):
        for path in (SRC / side).rglob("*.py"):
            for name in _imports(path):
                assert not name.startswith(f"mracq.{other}"), f"{path.relative_to(SRC)}: {name}"


def test_no_prefixed_modules_remain():
    for layer in ("sim", "recon"):
        for path in (SRC / layer).glob("*.py"):
            assert not path.stem.startswith(("vqns_", "mrfm_", "cosy_")), path
    for root in (SRC, SRC.parents[1] / "tests", SRC.parents[1] / "benchmarks"):
        for path in root.rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            text = path.read_text()
            assert "mracq.recon.vqns_" not in text and "mracq.sim.mrfm_" not in text, path


@pytest.mark.parametrize("module, name", [
    ("mracq.recon.vqns", "Measurement"), ("mracq.recon.vqns", "reconstruct"),
    ("mracq.recon.vqns", "suggest_next_sequence"), ("mracq.recon.dlmc", "reconstruct"),
    ("mracq.sim.cosy", "simulate_map"), ("mracq.sim.mrfm", "default_setup"),
    ("mracq.recon.mrfm", "reconstruct"),
])
def test_public_names_kept(module, name):
    assert callable(getattr(importlib.import_module(module), name))


def test_strategies_are_pure():
    for method in METHODS:
        path = SRC / "recon" / method / "strategy.py"
        names = set(_imports(path))
        assert not any(n.split(".")[0] in FRAMEWORKS for n in names), path
