"""Noise spectroscopy from CPMG coherence: VQNS (seed 001) and its comparators.

- `data`: `Measurement`, pulse numbers, simulated measurements, the sensitive band;
- `model`: `reconstruct` (batched restarts), `VQNSResult`, `suggest_next_sequence`;
- `chi` (torch) and `kernel` (numba): the closed-form chi of Lorentzian sums;
- `optim`: the batched Adam optimizer; `lm`: batched Levenberg-Marquardt with the
  background bank and the perturbed refits (the default); `sensitivity`: Eq. 7 of the seed;
- `strategy`: `NextSequenceStrategy`, the adaptive choice of the next CPMG sequence and
  time window (`expected_variance_reduction` per second of hardware time, or Eq. 7);
- `ddns`, `ftns`: the DDNS and FTNS reconstructions it is compared with.
"""

from mracq._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("COHERENCE_RANGE", "Measurement", "canonical_name", "decay_time",
                     "pulse_number", "sensitive_band", "simulate_measurements"), "data"),
    **dict.fromkeys(("VQNSResult", "candidate_scores", "lorentzian_spectrum", "noise_level",
                     "reconstruct", "suggest_next_sequence"), "model"),
    **dict.fromkeys(("DEFAULT_CANDIDATES", "NextSequenceStrategy",
                     "expected_variance_reduction"), "strategy"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
