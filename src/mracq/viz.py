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
    lo, hi = -0.15, 1.15
    for c in curves:
        t = np.asarray(c["t"]) * 1e6
        y = np.asarray(c["coherence"], float)
        if y.size and np.isfinite(y).any():  # never clip a measured point off the axes
            lo, hi = min(lo, np.nanmin(y) - 0.05), max(hi, np.nanmax(y) + 0.05)
        ax.errorbar(t, c["coherence"], yerr=c.get("sigma"), fmt="o-", ms=3, lw=1, capsize=2,
                    label=c["sequence"])
    t_all = np.concatenate([np.asarray(c["t"], float).ravel() for c in curves] or [[1.0]])
    t_all = t_all[t_all > 0]
    if t_all.size and t_all.max() > 3 * t_all.min():  # log only when t spans a range
        ax.set_xscale("log")
    ax.set_xlabel("free evolution time t (us)")
    ax.set_ylabel("coherence C(t)")
    ax.set_ylim(lo, hi)
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


def plot_spectrum(result, path: str | Path | None = None, *, truth=None, points=None,
                  title: str = "", n_sd: float = 2.0):
    """A reconstructed noise spectrum with its confidence band and the constrained range.

    The one place a VQNS spectrum is drawn (demo, ``analyze vqns``, ``show``).

    The estimate and its band (mean +- 2 sd) are drawn only where the data constrain the
    spectrum (``result.band``); the frequencies outside are shaded and labelled as such,
    since what a model puts there is extrapolation, not measurement. Inside, where the
    band reaches zero (mean - n_sd sd <= 0) the data give only an upper bound: the mean is
    drawn dotted there and labelled as not identified.

    Parameters
    ----------
    result : mracq.recon.vqns.VQNSResult or any object with the same fields
        ``omega`` (rad/s), ``mean`` and ``std`` (rad^2/s) and ``band`` ((lo, hi) rad/s, the
        range the measurements constrain; outside it the band is greyed out).
    path : path, optional
        Write a PNG there (150 dpi).
    truth : callable, optional
        The true S(omega), for simulated data.
    points : tuple of arrays, optional
        ``(omega, S)`` to overlay as dots (e.g. DDNS estimates).
    n_sd : float
        Half-width of the band in standard deviations (default 2: ~95 %).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    omega = np.asarray(result.omega, float)
    keep = omega > 0  # a log axis: a zero-frequency sample cannot be drawn
    omega = omega[keep]
    f = omega / (2 * np.pi)
    mean = np.asarray(result.mean, float)[keep]
    std = np.asarray(result.std, float)[keep]
    band = getattr(result, "band", None)
    # the estimate only where the data constrain it: outside, a model's numbers are
    # extrapolation, not measurement
    inside = ((omega >= band[0]) & (omega <= band[1]) if band is not None
              else np.ones(omega.shape, bool))
    fi, mi, si = f[inside], mean[inside], std[inside]
    ax.fill_between(fi, np.maximum(mi - n_sd * si, mi * 1e-3), mi + n_sd * si,
                    alpha=0.3, color="C0", label=f"VQNS mean +- {n_sd:g} sd")
    # identified: the band excludes zero; elsewhere the data bound S from above only,
    # and the mean is drawn dotted, not as a measured value
    ident = mi - n_sd * si > 0
    ax.plot(fi, np.where(ident, mi, np.nan), color="C0", lw=1.5, label="VQNS mean")
    if not ident.all():
        ax.plot(fi, np.where(ident, np.nan, mi), color="C0", lw=1, ls=":",
                label=f"upper bound only (mean - {n_sd:g} sd <= 0): mean not identified")
    if truth is not None:
        ax.plot(f, truth(omega), "k--", lw=1, label="true spectrum")
    if points is not None:
        w, s = (np.asarray(a, float) for a in points)
        ax.plot(w / (2 * np.pi), s, ".", color="k", ms=3, label="DDNS")
    if band is not None and len(f):
        lo, hi = (float(b) / (2 * np.pi) for b in band)
        shade = {"color": "0.5", "alpha": 0.15, "lw": 0}
        if lo > f[0]:
            ax.axvspan(f[0], lo, label="not constrained by the data", **shade)
        if hi < f[-1]:
            ax.axvspan(hi, f[-1], label=None if lo > f[0] else "not constrained by the data",
                       **shade)
        ax.set_xlim(f[0], f[-1])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("frequency omega / 2 pi (Hz)")
    ax.set_ylabel("S(omega) (rad^2/s, two-sided)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _finish(fig, ax, title, path)


def _cosy_axes(n1: int, n2: int, t1, t2, dt: float | None):
    """Time grids (us) and centred frequency grids (kHz) of a COSY map."""
    if t1 is None or t2 is None:
        t1 = np.arange(n1) * (dt or 1.0)
        t2 = np.arange(n2) * (dt or 1.0)
    t1, t2 = np.asarray(t1, float), np.asarray(t2, float)
    d1 = float(np.median(np.diff(t1))) if t1.size > 1 else 1.0
    d2 = float(np.median(np.diff(t2))) if t2.size > 1 else 1.0
    f1 = np.fft.fftshift(np.fft.fftfreq(n1, d1)) / 1e3
    f2 = np.fft.fftshift(np.fft.fftfreq(n2, d2)) / 1e3
    return t1 * 1e6, t2 * 1e6, f1, f2


def _extent(x, y):
    """imshow extent for pixel centres ``x`` (columns) and ``y`` (rows), origin lower."""
    dx = (x[-1] - x[0]) / max(len(x) - 1, 1) if len(x) > 1 else 1.0
    dy = (y[-1] - y[0]) / max(len(y) - 1, 1) if len(y) > 1 else 1.0
    return [x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2]


def plot_cosy(measured, mask, reconstruction=None, spectrum=None, path=None, *, t1=None,
              t2=None, dt: float | None = None, title: str = "COSY", method: str = ""):
    """A COSY map: the measured entries with the sampling mask, the reconstruction and the
    2D spectrum, each with a colour bar; times in us, frequencies in kHz, f1 upwards.

    Parameters
    ----------
    measured : array (n1, n2)
        Measured signal (entries outside ``mask`` are ignored).
    mask : array of bool (n1, n2)
        Which entries were measured.
    reconstruction, spectrum : array (n1, n2), optional
        Completed map and its centred magnitude spectrum (``fftshift``-ed).
    t1, t2 : array, optional
        Evolution times (s) of rows and columns; else ``dt`` (s) steps from 0.
    """
    plt = _plt()
    measured = np.asarray(measured, float)
    mask = np.asarray(mask, bool)
    n1, n2 = measured.shape
    t1u, t2u, f1, f2 = _cosy_axes(n1, n2, t1, t2, dt)
    panels = [("measured (blank: not sampled)", np.where(mask, measured, np.nan), "t"),
              ("sampling mask", mask.astype(float), "mask")]
    if reconstruction is not None:
        panels.append((f"reconstruction{f' ({method})' if method else ''}",
                       np.asarray(reconstruction, float), "t"))
    if spectrum is not None:
        panels.append(("|2D spectrum|", np.asarray(spectrum, float), "f"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 3.8), squeeze=False)
    signal = [p[1] for p in panels if p[2] == "t"]
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in signal] or [np.zeros(1)])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
    for ax, (name, img, kind) in zip(axes[0], panels, strict=True):
        if kind == "f":
            im = ax.imshow(img, origin="lower", aspect="auto", cmap="magma",
                           extent=_extent(f2, f1))
            ax.set(xlabel="f2 (kHz)", ylabel="f1 (kHz)")
            label = "|S(f1, f2)| (arb.)"
        else:
            kw = ({"cmap": "gray_r", "vmin": 0, "vmax": 1} if kind == "mask"
                  else {"cmap": "viridis", "vmin": vmin, "vmax": vmax})
            im = ax.imshow(np.ma.masked_invalid(img), origin="lower", aspect="auto",
                           extent=_extent(t2u, t1u), **kw)
            ax.set(xlabel="t2 (us)", ylabel="t1 (us)")
            label = "measured (1) / missing (0)" if kind == "mask" else "signal"
        fig.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def plot_montage(volume, path=None, *, x=None, y=None, labels=None, mask=None,
                 title: str = "", unit: str = "", scale: float = 1.0, max_panels: int = 24):
    """Slices of a 3D array as one montage on one colour scale, axes in nm.

    Parameters
    ----------
    volume : array (nx, ny, n)
        One image per last index (channels of an MRFM data cube, or layers of a
        reconstruction).
    x, y : array, optional
        Positions (m) of the first two axes; default pixel indices.
    labels : list of str, optional
        One title per slice (e.g. ``"z = 15.0 nm"`` or ``"f0 = 133.9 MHz"``).
    mask : array of bool (nx, ny), optional
        Sampled positions; unsampled ones are left blank.
    unit : str
        Colour-bar label (after scaling by ``scale``).
    max_panels : int
        At most this many slices, evenly spread over the stack (labels say which).
    """
    plt = _plt()
    vol = np.asarray(volume, float)
    if vol.ndim == 2:
        vol = vol[:, :, None]
    vol = vol * scale
    nx, ny, n = vol.shape
    pick = np.unique(np.linspace(0, n - 1, min(n, max_panels)).round().astype(int))
    labels = list(labels) if labels is not None else [f"slice {k}" for k in range(n)]
    xs = np.arange(nx) if x is None else np.asarray(x, float) * 1e9
    ys = np.arange(ny) if y is None else np.asarray(y, float) * 1e9
    order_x, order_y = np.argsort(xs), np.argsort(ys)  # fft-ordered grids: show in space
    vol = vol[order_x][:, order_y]
    xs, ys = xs[order_x], ys[order_y]
    if mask is not None:
        m = np.asarray(mask, bool)[order_x][:, order_y]
        vol = np.where(m[:, :, None], vol, np.nan)
    shown = vol[:, :, pick]
    finite = shown[np.isfinite(shown)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ncol = int(np.ceil(np.sqrt(len(pick))))
    nrow = int(np.ceil(len(pick) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.3 * ncol + 1.2, 2.3 * nrow + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    unit_xy = "nm" if x is not None else "pixel"
    im = None
    for ax, k in zip(axes.flat, pick, strict=False):
        im = ax.imshow(np.ma.masked_invalid(vol[:, :, k].T), origin="lower", cmap="viridis",
                       vmin=vmin, vmax=vmax, extent=_extent(xs, ys))
        ax.set_title(labels[k], fontsize=8)
    for ax in axes.flat[len(pick):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel(f"x ({unit_xy})", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"y ({unit_xy})", fontsize=8)
    fig.suptitle(title + (f" ({len(pick)} of {n} slices)" if len(pick) < n else ""))
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    cax = fig.add_axes((0.86, 0.12, 0.022, 0.76))
    fig.colorbar(im, cax=cax, label=unit)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


class LiveCosy:
    """A live image for the COSY plans: ``cosy_random_mask(nv, ..., live=LiveCosy())``.

    Each call ``(reconstruction, spectrum, n_points)`` redraws the reconstruction (t in us)
    and its centred 2D spectrum (f in kHz, f1 upwards) with colour bars in one figure.

    Parameters
    ----------
    t1, t2 : array, optional
        Evolution times (s) of the map's rows and columns (default: the plan's grid,
        ``mracq.sim.cosy.model.T_GRID``).
    path : path, optional
        Also save each frame there (PNG), e.g. for a terminal without a display.
    """

    def __init__(self, t1=None, t2=None, path=None):
        self.t1, self.t2, self.path = t1, t2, path
        self.fig = None
        self.frames = 0

    def __call__(self, reconstruction, spectrum, n_points):
        plt = _plt()
        rec = np.asarray(reconstruction, float)
        spec = np.asarray(spectrum, float)
        if self.t1 is None or self.t2 is None:
            from mracq.sim.cosy.model import T_GRID

            self.t1 = T_GRID[: rec.shape[0]] if self.t1 is None else self.t1
            self.t2 = T_GRID[: rec.shape[1]] if self.t2 is None else self.t2
        t1u, t2u, f1, f2 = _cosy_axes(*rec.shape, self.t1, self.t2, None)
        if self.fig is None:
            self.fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
            self.images = [
                axes[0].imshow(rec, origin="lower", aspect="auto", cmap="viridis",
                               extent=_extent(t2u, t1u)),
                axes[1].imshow(spec, origin="lower", aspect="auto", cmap="magma",
                               extent=_extent(f2, f1)),
            ]
            axes[0].set(xlabel="t2 (us)", ylabel="t1 (us)")
            axes[1].set(xlabel="f2 (kHz)", ylabel="f1 (kHz)", title="|2D spectrum|")
            self.fig.colorbar(self.images[0], ax=axes[0], label="signal")
            self.fig.colorbar(self.images[1], ax=axes[1], label="|S(f1, f2)| (arb.)")
            self.fig.tight_layout()
        for im, data in zip(self.images, (rec, spec), strict=True):
            im.set_data(data)
            im.set_clim(float(np.nanmin(data)), float(np.nanmax(data)))
        self.images[0].axes.set_title(f"reconstruction after {n_points} points")
        self.frames += 1
        if self.path is not None:
            self.fig.savefig(self.path, dpi=100)
        if plt.get_backend().lower() != "agg":
            plt.pause(0.01)
