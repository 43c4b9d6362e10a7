"""mracq.recon."""
