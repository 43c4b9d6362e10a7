"""NV-13C COSY physics (seed 000): maps from couplings, and couplings from spin positions.

- `model`: Hamiltonians, propagators, `simulate_map`, `shot_noise`, the `CosyModel` the
  simulated sequencer uses;
- `couplings`: hyperfine and dipolar tensors of 13C clusters, `random_clusters`;
- `families`: the cluster families maps are trained and judged on (`family_maps`,
  `add_noise`).
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("B_FIELD", "N_PULSES", "T_GRID", "TAU", "CosyModel", "CosyPropagators",
                     "cosy_propagators", "default_cosy_model", "default_pair",
                     "nuclear_hamiltonians", "random_maps", "shot_noise", "simulate_map",
                     "spin_operators"), "model"),
    **dict.fromkeys(("dipolar_tensors", "hyperfine_from_positions", "random_clusters"),
                    "couplings"),
    **dict.fromkeys(("FAMILIES", "add_noise", "family_couplings", "family_maps"), "families"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
