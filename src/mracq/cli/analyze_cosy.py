"""``mracq analyze cosy FILE``: reconstruct a sparsely sampled 2D COSY map offline."""

from __future__ import annotations

HELP = "reconstruct a 2D COSY map with missing entries (NaN) from CSV or .npy (DLMC)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="map as CSV (comma separated) or .npy; NaN marks missing")
    parser.add_argument(
        "--method", default="dlmc", choices=["dlmc", "dl", "svt", "orig"], help="default dlmc"
    )
    parser.add_argument("--out-dir", default=None, help="output folder (default: next to FILE)")
    parser.add_argument(
        "--dt", type=float, default=18e-6, help="time step of t1 and t2 in s (default 18e-6)"
    )
    parser.add_argument("--weights", default=None, help="DLNet weights (default: shipped)")


def load_map(path):
    """Read a 2D map from .npy or CSV; returns a float array (NaN = missing)."""
    import numpy as np

    from mracq.cli import CLIError

    try:
        if path.suffix == ".npy":
            m = np.load(path, allow_pickle=False)
        else:
            m = np.genfromtxt(path, delimiter=",", dtype=float, missing_values=("", "nan", "NaN"),
                              filling_values=np.nan)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from exc
    m = np.asarray(m, dtype=float)
    if m.ndim != 2:
        raise CLIError(f"{path} holds a {m.ndim}D array; a 2D map is needed")
    return m


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from mracq.cli import CLIError
    from mracq.recon.cosy.dlmc import reconstruct
    from mracq.recon.cosy.dlnet import load_weights
    from mracq.recon.metrics import spectrum2d

    path = Path(args.file)
    if not path.is_file():
        raise CLIError(f"no such file: {path}")
    if not args.dt > 0:
        raise CLIError(f"--dt must be > 0 s, got {args.dt}")
    measured = load_map(path)
    mask = np.isfinite(measured)
    net = load_weights(args.weights) if args.weights else None
    try:
        rec = reconstruct(measured, mask, args.method, net=net)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    spec = np.fft.fftshift(spectrum2d(rec))
    out_dir = Path(args.out_dir) if args.out_dir else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / path.stem
    np.save(f"{stem}_recon.npy", rec)
    np.savetxt(f"{stem}_recon.csv", rec, delimiter=",")
    np.save(f"{stem}_spectrum.npy", spec)
    png = f"{stem}_cosy.png"
    _plot(measured, rec, spec, args.dt, args.method, png)
    print(f"coverage {mask.mean():.1%}; wrote {stem}_recon.npy, {stem}_recon.csv, "
          f"{stem}_spectrum.npy, {png}")
    return 0


def _plot(measured, rec, spec, dt, method, png) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n1, n2 = rec.shape
    f1 = np.fft.fftshift(np.fft.fftfreq(n1, dt)) / 1e3
    f2 = np.fft.fftshift(np.fft.fftfreq(n2, dt)) / 1e3
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    ext_t = [0, n2 * dt * 1e3, n1 * dt * 1e3, 0]
    ax[0].imshow(np.ma.masked_invalid(measured), extent=ext_t)
    ax[0].set(title="measured (blank = missing)", xlabel="t2 (ms, from first point)",
              ylabel="t1 (ms)")
    ax[1].imshow(rec, extent=ext_t)
    ax[1].set(title=f"reconstruction ({method})", xlabel="t2 (ms)")
    ax[2].imshow(spec, extent=[f2[0], f2[-1], f1[-1], f1[0]])
    ax[2].set(title="|2D spectrum|", xlabel="f2 (kHz)", ylabel="f1 (kHz)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
