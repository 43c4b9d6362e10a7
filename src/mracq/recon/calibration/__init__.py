"""NV calibration: fits of ODMR, Rabi and Ramsey data and the adaptive ODMR strategy.

- `fits`: `fit_odmr` (Lorentzian / Gaussian dips, optionally the 14N triplet), `fit_rabi`
  (damped Rabi oscillation, pi and pi/2 durations), `fit_ramsey` (detuning from fringes);
  each returns a `Fit` with values and standard errors;
- `grid`: the line's posterior on a (width, centre) grid with depth and baseline integrated
  out, and the preposterior design on it (used by the strategy);
- `strategy`: `AdaptiveODMR`, a particle posterior over the line that picks the next
  frequency (suggest/ingest) and stops at a target uncertainty of the centre.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("Fit", "HYPERFINE_14N_SPLITTING", "fit_odmr", "fit_rabi", "fit_ramsey",
                     "odmr_jacobian", "odmr_model", "pooled_sigma", "rabi_model", "ramsey_model"),
                    "fits"),
    **dict.fromkeys(("AdaptiveODMR",), "strategy"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
