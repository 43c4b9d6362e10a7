"""COSY map completion (seed 000): DLNet, DLMC and the adaptive sampling strategy.

- `dlnet`: the network and its shipped weights; `training`: its data and training loop;
- `dlmc`: `reconstruct(measured, mask, method)` (auto, orig, SVT, DL, DLMC, spectral);
- `auto`: ``method="auto"``, the cross-validated choice and its validation error;
- `spectral`: the off-grid plane-wave fit (the harmonic prior of any cluster's map);
- `shared`: `fit_shared_path`, the plane-wave fit with one frequency set for t1 and t2;
- `design`: `PlaneWaveDesign`, where to measure next (V-optimal under the fitted model);
- `strategy`: `EnsembleDisagreement`, the earlier ensemble-disagreement strategy.

The singular value thresholding it uses is shared: `mracq.recon.svt`.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("METHODS", "reconstruct"), "dlmc"),
    **dict.fromkeys(("DLNet", "load_weights", "save_weights"), "dlnet"),
    "EnsembleDisagreement": "strategy",
    "PlaneWaveDesign": "design",
    **dict.fromkeys(("AutoReport", "reconstruct_auto"), "auto"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
