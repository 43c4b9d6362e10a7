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
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


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
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
