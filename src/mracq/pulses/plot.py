"""Timing-diagram plot of a pulse program (matplotlib, imported lazily)."""

from __future__ import annotations

import math

from .model import PulseProgram

_COLOURS = {"laser": "tab:green", "mw": "tab:blue", "rf": "tab:purple", "gate": "tab:gray"}
_AXES = {0: "x", 1: "y", 2: "-x", 3: "-y"}


def _label(p) -> str:
    if p.rotation is None:
        return ""
    name = {round(math.pi, 9): "π", round(math.pi / 2, 9): "π/2"}.get(round(p.rotation, 9))
    if name is None:
        name = f"{p.rotation / math.pi:.3g}π"
    q = p.phase / (math.pi / 2)
    axis = _AXES.get(round(q) % 4) if abs(q - round(q)) < 1e-9 else f"{p.phase:.2f}"
    return f"{name}{axis}" if p.channel == "mw" else name


def plot_timing(program: PulseProgram, ax=None, *, max_labels=40):
    """Draw a timing diagram: one row per used channel, pulses as boxes.

    Parameters
    ----------
    program : PulseProgram
        The program to draw (one shot).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made if None.
    max_labels : int
        Rotation labels (π, π/2 with the phase axis) are written while a channel has at
        most this many pulses.

    Returns
    -------
    matplotlib.axes.Axes
        Time axis in µs; y tick labels are the channel names.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * max(1, len(program.channels))))
        fig.subplots_adjust(bottom=0.25, top=0.85)
    channels = program.channels
    for row, ch in enumerate(reversed(channels)):
        pulses = program.pulses_on(ch)
        ax.broken_barh([(p.start * 1e6, p.duration * 1e6) for p in pulses], (row - 0.35, 0.7),
                       facecolors=_COLOURS[ch], edgecolors="black", linewidth=0.5)
        if len(pulses) <= max_labels:
            for i, p in enumerate(pulses):
                text = _label(p)
                if text:  # alternate heights so neighbouring labels do not collide
                    ax.text(p.centre * 1e6, row + 0.38 + 0.22 * (i % 2), text, ha="center",
                            va="bottom", fontsize=7)
    ax.set_yticks(range(len(channels)))
    ax.set_yticklabels(list(reversed(channels)))
    ax.set_ylim(-0.5, len(channels) - 0.1)
    ax.set_xlim(0, program.duration * 1e6)
    ax.set_xlabel("time (µs)")
    seq = program.metadata.get("sequence")
    if seq is not None:
        extra = ", ".join(f"{k} = {program.metadata[k]:.4g}" for k in ("n", "t")
                          if isinstance(program.metadata.get(k), (int, float)))
        ax.set_title(f"{seq} ({extra})" if extra else str(seq))
    return ax

