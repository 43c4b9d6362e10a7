"""The spectrum figure marks where the data give only an upper bound."""

from types import SimpleNamespace

import numpy as np


def test_spectrum_mean_is_drawn_solid_only_where_the_band_excludes_zero():
    from mracq.viz import plot_spectrum

    omega = np.geomspace(1e4, 1e8, 200)
    mean = 1e6 / (1 + (omega / 1e6) ** 2)
    std = np.where(omega < 1e7, 0.1 * mean, 2.0 * mean)  # above 1e7: band reaches zero
    res = SimpleNamespace(omega=omega, mean=mean, std=std, band=(2e4, 5e7))
    fig = plot_spectrum(res)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    solid = np.asarray(lines["VQNS mean"].get_xdata()) * 2 * np.pi
    solid_y = np.asarray(lines["VQNS mean"].get_ydata(), float)
    bound = next(ln for k, ln in lines.items() if k.startswith("upper bound only"))
    bound_y = np.asarray(bound.get_ydata(), float)
    inside = (omega >= 2e4) & (omega <= 5e7)
    assert np.allclose(solid, omega[inside])
    assert np.isfinite(solid_y[omega[inside] < 1e7]).all()
    assert np.isnan(solid_y[omega[inside] >= 1e7]).all()
    assert np.isfinite(bound_y[omega[inside] >= 1e7]).all()
    assert np.isnan(bound_y[omega[inside] < 1e7]).all()
