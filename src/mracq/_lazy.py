"""Lazy re-exports for the method subpackages (PEP 562).

A subpackage's ``__init__`` names the public objects of its modules without importing
them, so that ``import mracq.recon.vqns.data`` stays as light as the module itself
while ``from mracq.recon.vqns import reconstruct`` keeps working.
"""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package`` re-exporting ``{name: module}``."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
