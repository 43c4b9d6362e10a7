"""COSY map completion (seed 000): DLNet, DLMC and the adaptive sampling strategy.

- `dlnet`: the network and its shipped weights; `training`: its data and training loop;
- `dlmc`: `reconstruct(measured, mask, method)` (orig, SVT, DL, DLMC);
- `strategy`: `EnsembleDisagreement`, where to measure next.

The singular value thresholding it uses is shared: `mracq.recon.svt`.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("METHODS", "reconstruct"), "dlmc"),
    **dict.fromkeys(("DLNet", "load_weights", "save_weights"), "dlnet"),
    "EnsembleDisagreement": "strategy",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
