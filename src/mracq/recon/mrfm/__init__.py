"""MRFM image reconstruction (seed 002).

- `pipeline`: `reconstruct(data, setup, mask=None, method="admm")`, the entry point;
- `operators`: the block-circulant forward model and its norm;
- `admm`: ADMM with TV and non-negativity (full and subsampled data);
- `landweber`: the Landweber baseline; `cs`: compressed-sensing recovery of subsampled data;
- `strategy`: `SignalWeightedStrategy`, where the adaptive scan measures next.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("ADMM_DEFAULTS", "normalized_problem", "reconstruct"), "pipeline"),
    **dict.fromkeys(("HardwareTimeStrategy", "SignalWeightedStrategy"), "strategy"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
