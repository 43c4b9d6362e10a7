"""``mracq analyze cosy FILE``: reconstruct a sparsely sampled 2D COSY map offline."""

from __future__ import annotations

HELP = ("reconstruct a 2D COSY map with missing entries (NaN) from CSV or .npy (auto: the "
        "cross-validated best of DL, DLMC, SVT and a spectral fit, with its error)")


def add_arguments(parser) -> None:
    parser.add_argument("file", help="map as CSV (comma separated) or .npy; NaN marks missing")
    parser.add_argument(
        "--method", default="auto", choices=["auto", "dlmc", "dl", "svt", "spectral", "orig"],
        help="default auto (picks by cross-validation and reports the validation error)")
    parser.add_argument("--noise", type=float, default=None,
                        help="known RMS noise per point (map's units) for auto's error estimate")
    parser.add_argument("--out-dir", default=None, help="output folder (default: next to FILE)")
    parser.add_argument(
        "--dt", type=float, default=18e-6, help="time step of t1 and t2 in s (default 18e-6)"
    )
    parser.add_argument("--weights", default=None, help="DLNet weights (default: shipped)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite earlier outputs (default: refuse)")


def load_map(path):
    """Read a 2D map from .npy or CSV; returns a float array (NaN = missing)."""
    import numpy as np

    from mracq.cli import CLIError

    try:
        if path.suffix == ".npy":
            m = np.load(path, allow_pickle=False)
        else:
            m = _read_csv_map(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from exc
    m = np.asarray(m, dtype=float)
    if m.ndim != 2:
        raise CLIError(f"{path} holds a {m.ndim}D array; a 2D map is needed")
    return m


def _read_csv_map(path):
    """A CSV map; empty fields and nan are missing, anything else must be a number."""
    import csv
    import math

    from mracq.cli import CLIError

    rows = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            vals = []
            for col, txt in enumerate(row, start=1):
                txt = txt.strip()
                if txt == "" or txt.lower() == "nan":
                    vals.append(math.nan)
                    continue
                try:
                    vals.append(float(txt))
                except ValueError:
                    raise CLIError(f"{path}:{lineno}: column {col} is {txt!r}, not a number "
                                   "(leave a field empty or write nan for a missing entry)"
                                   ) from None
            if rows and len(vals) != len(rows[0]):
                raise CLIError(f"{path}:{lineno}: {len(vals)} fields, the first row has "
                               f"{len(rows[0])}")
            rows.append(vals)
    if not rows:
        raise CLIError(f"{path}: no data")
    return rows


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import free_path
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
    out_dir = Path(args.out_dir) if args.out_dir else path.parent
    stem = out_dir / path.stem
    outputs = [Path(f"{stem}{suffix}") for suffix in ("_recon.npy", "_recon.csv",
                                                       "_spectrum.npy", "_cosy.png",
                                                       "_validation.json")]
    for out in outputs:
        free_path(out, force=args.force)
    if mask.sum() < 3:
        raise CLIError(f"{path}: {int(mask.sum())} measured entries; a reconstruction needs "
                       "more")
    net = load_weights(args.weights) if args.weights else None
    try:
        rec = reconstruct(measured, mask, args.method, net=net, noise=args.noise)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    report = getattr(rec, "report", None)
    rec = np.asarray(rec)
    spec = np.fft.fftshift(spectrum2d(rec))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(f"{stem}_recon.npy", rec)
    np.savetxt(f"{stem}_recon.csv", rec, delimiter=",")
    np.save(f"{stem}_spectrum.npy", spec)
    png = f"{stem}_cosy.png"
    method = report.method if report is not None else args.method
    _plot(measured, rec, spec, args.dt, method, png)
    if report is not None:
        import json

        Path(f"{stem}_validation.json").write_text(json.dumps(report.to_dict(), indent=1))
        print(report.summary())
    print(f"coverage {mask.mean():.1%}; wrote {stem}_recon.npy, {stem}_recon.csv, "
          f"{stem}_spectrum.npy, {png}" + (f", {stem}_validation.json" if report else ""))
    return 0


def _plot(measured, rec, spec, dt, method, png) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from mracq.viz import plot_cosy

    fig = plot_cosy(measured, np.isfinite(measured), rec, spec, png, dt=dt,
                    title=f"COSY map ({method})", method=method)
    plt.close(fig)
