"""mracq.devices."""
