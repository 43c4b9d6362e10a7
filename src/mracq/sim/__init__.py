"""mracq.sim."""
