"""mracq.pulses."""
