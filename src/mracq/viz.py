"""Figures for the CLI and interactive use (matplotlib, Agg-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import IPython

            if IPython.get_ipython() is None:
                matplotlib.use("Agg")
        except ImportError:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, title: str, path: str | Path | None):
    """Title, tight layout, and save to ``path`` (150 dpi) when given."""
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_coherence(curves, path: str | Path | None = None, *, title: str = "NV coherence"):
    """Coherence curves with error bars on a log time axis.

    Parameters
    ----------
    curves : sequence of dict
        Each with ``sequence`` (label), ``t`` (s), ``coherence`` and ``sigma``.
    path : path, optional
        Write a PNG there (150 dpi).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for c in curves:
        t = np.asarray(c["t"]) * 1e6
        ax.errorbar(t, c["coherence"], yerr=c.get("sigma"), fmt="o-", ms=3, lw=1, capsize=2,
                    label=c["sequence"])
    ax.set_xscale("log")
    ax.set_xlabel("free evolution time t (us)")
    ax.set_ylabel("coherence C(t)")
    ax.set_ylim(-0.15, 1.15)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(ncols=2, fontsize=8, title="sequence")
    return _finish(fig, ax, title, path)


def plot_table(columns: dict, x: str, ys: list[str], path: str | Path | None = None, *,
               title: str = ""):
    """Generic plot of stored event columns: ``ys`` against ``x``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xv = np.asarray(columns[x])
    for y in ys:
        yv = np.asarray(columns[y])
        if yv.ndim == 1:
            ax.plot(xv, yv, "o-", ms=3, label=y)
    ax.set_xlabel(x)
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, ax, title, path)


def plot_spectrum(result, path: str | Path | None = None, *, truth=None, title: str = ""):
    """A reconstructed noise spectrum with its confidence band (and the truth, if known).

    The estimate and its band (mean +- 2 sd) are drawn only where the data constrain the
    spectrum (``result.band``); the frequencies outside are shaded and labelled as such,
    since what a model puts there is extrapolation, not measurement.

    Parameters
    ----------
    result : mracq.recon.vqns.VQNSResult
        ``omega`` (rad/s), ``mean`` and ``std`` (rad^2/s), ``band`` (rad/s).
    truth : callable, optional
        The true S(omega), for simulated data.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    w = np.asarray(result.omega, float)
    lo, hi = result.band
    keep = w > 0
    w = w[keep]
    f = w / (2 * np.pi)
    mean, std = np.asarray(result.mean)[keep], np.asarray(result.std)[keep]
    inside = (w >= lo) & (w <= hi)
    fi, mi, si = f[inside], mean[inside], std[inside]
    ax.fill_between(fi, np.maximum(mi - 2 * si, mi * 1e-3), mi + 2 * si, alpha=0.3,
                    color="C0", label="VQNS mean +- 2 sd")
    ax.plot(fi, mi, color="C0", lw=1.5, label="VQNS mean")
    if truth is not None:
        ax.plot(f, truth(w), "k--", lw=1, label="true spectrum")
    x0, x1 = (f.min(), f.max()) if f.size else (lo / (2 * np.pi), hi / (2 * np.pi))
    shade = dict(color="0.85", alpha=0.6, lw=0, zorder=0)
    if x0 < lo / (2 * np.pi):
        ax.axvspan(x0, lo / (2 * np.pi), label="not constrained by the data", **shade)
    if x1 > hi / (2 * np.pi):
        ax.axvspan(hi / (2 * np.pi), x1, label=None if x0 < lo / (2 * np.pi) else
                   "not constrained by the data", **shade)
    ax.set_xlim(x0, x1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency omega / 2 pi (Hz)")
    ax.set_ylabel("S(omega) (rad^2/s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _finish(fig, ax, title, path)
