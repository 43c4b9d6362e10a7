"""mracq.plans."""
