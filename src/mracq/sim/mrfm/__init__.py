"""MRFM physics (seed 002): magnet field, point-spread function, noise, phantoms, setups.

- `field`: the magnet (`CylinderMagnet`), resonance slices, the seed's Table 2;
- `psf`: the point-spread function in blocks and its application;
- `noise`: thermal force noise and the quadrature variances over T_m;
- `phantom`: test samples; `setup`: `default_setup` / `make_setup` for both protocols.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("PROTOCOLS", "MRFMSetup", "default_setup", "make_setup"), "setup"),
    "CylinderMagnet": "field",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
