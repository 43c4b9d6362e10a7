"""``mracq analyze cosy FILE|RUN``: reconstruct a sparsely sampled 2D COSY map offline.

FILE is a CSV or .npy map (NaN marks missing entries); RUN a stored COSY run (uid, scan id
or -1 in the catalog under ``--data-dir``): its measured points, its (t1, t2) grid and,
when the run recorded them (`mracq.plans.cosy`), the calibrated field and the pulse
spacing, which give ``method="auto"`` its physics candidates (minutes; ``--field`` and
``--tau`` give or override them, ``--physics-budget 0`` turns them off).
"""

from __future__ import annotations

HELP = ("reconstruct a 2D COSY map with missing entries (NaN) from CSV, .npy or a stored run "
        "(auto: the cross-validated best of DL, DLMC, SVT, spectral fits and, with the field "
        "known, a fit of the couplings; with its error)")


def add_arguments(parser) -> None:
    parser.add_argument("file", help="map as CSV (comma separated) or .npy, NaN marks "
                        "missing; or a stored run (uid, scan id, -1)")
    parser.add_argument("--data-dir", default=None,
                        help="catalog folder for a RUN (default: the configured data folder)")
    parser.add_argument("--config", metavar="TOML", help="lab configuration file (its "
                        "storage.data_dir is used for a RUN; default: $MRACQ_CONFIG)")
    parser.add_argument("--field", type=float, default=None,
                        help="field along the NV axis in T for auto's physics candidates "
                        "(default: the run's, from the calibration)")
    parser.add_argument("--tau", type=float, default=None,
                        help="decoupling pulse spacing in s (default: the run's)")
    parser.add_argument("--physics-budget", type=float, default=None, metavar="S",
                        help="wall time of the physics candidates' validation in s "
                        "(default 600; 0: none)")
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
    if not args.dt > 0:
        raise CLIError(f"--dt must be > 0 s, got {args.dt}")
    if path.is_file():
        measured, seq = load_map(path), {}
        stem = (Path(args.out_dir) if args.out_dir else path.parent) / path.stem
    elif path.suffix.lower() in (".csv", ".npy", ".txt") or "/" in args.file:
        raise CLIError(f"no such file: {path}")
    else:
        measured, seq, name = load_run(args)
        stem = Path(args.out_dir or ".") / name
    out_dir = stem.parent
    physics = _physics_kw(args, seq, measured.shape)
    mask = np.isfinite(measured)
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
        rec = reconstruct(measured, mask, args.method, net=net, noise=args.noise,
                          **(physics if args.method == "auto" else {}))
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
    t1 = seq.get("t1")
    _plot(measured, rec, spec, float(t1[1] - t1[0]) if t1 is not None else args.dt, method,
          png)
    if report is not None:
        import json

        Path(f"{stem}_validation.json").write_text(json.dumps(report.to_dict(), indent=1))
        print(report.summary())
    print(f"coverage {mask.mean():.1%}; wrote {stem}_recon.npy, {stem}_recon.csv, "
          f"{stem}_spectrum.npy, {png}" + (f", {stem}_validation.json" if report else ""))
    return 0


def load_run(args):
    """A stored COSY run: (measured map, NaN where missing; ``{"t1", "t2", "field", "tau",
    "n_pulses"}`` from its start document, None where it has none; a file stem)."""
    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import open_store_from_args
    from mracq.storage import RunNotFoundError

    store = open_store_from_args(args)
    try:
        run = store.get_run(args.file)
        start = dict(run.start)
        p = run.table("primary")
    except RunNotFoundError as exc:
        raise CLIError(str(exc)) from exc
    except KeyError as exc:
        raise CLIError(f"run {args.file!r} has no measured points: {exc}") from exc
    finally:
        store.close()
    t1 = np.asarray(start.get("t1_grid", []), float)
    t2 = np.asarray(start.get("t2_grid", []), float)
    value = next((k for k in p if k.endswith("_value")), None)
    if t1.size < 2 or t2.size < 2 or value is None or "i" not in p:
        raise CLIError(f"run {args.file!r} is not a COSY run (no t1/t2 grid or points)")
    measured = np.full((t1.size, t2.size), np.nan)
    measured[np.asarray(p["i"], int), np.asarray(p["j"], int)] = np.asarray(p[value], float)
    seq = {"t1": t1, "t2": t2, "field": start.get("field"), "tau": start.get("tau"),
           "n_pulses": start.get("n_pulses")}
    return measured, seq, f"cosy_{start.get('scan_id', start.get('uid', 'run')[:8])}"


def _physics_kw(args, seq, shape) -> dict:
    """Keywords of `reconstruct` for auto's physics candidates ({}: none), checked."""
    from mracq.cli import CLIError
    from mracq.recon.cosy.auto import PHYSICS_BUDGET_S
    from mracq.recon.cosy.physics import physics_sequence

    field = args.field if args.field is not None else seq.get("field")
    tau = args.tau if args.tau is not None else seq.get("tau")
    if field is None and tau is None:
        return {}
    if tau is None and args.field is not None:
        raise CLIError("--field needs --tau (the sequence's pulse spacing in s)")
    if field is None:
        return {}  # the run's tau alone: no calibrated field, no physics candidates
    kw = {"field": field, "tau": tau, "t1": seq.get("t1"), "t2": seq.get("t2"),
          "n_pulses": seq.get("n_pulses") or 40,
          "physics_budget_s": (PHYSICS_BUDGET_S if args.physics_budget is None
                               else args.physics_budget)}
    try:
        physics_sequence(*(kw[k] for k in ("field", "tau", "t1", "t2", "n_pulses")), shape,
                         kw["physics_budget_s"])
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return kw


def _plot(measured, rec, spec, dt, method, png) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from mracq.viz import plot_cosy

    fig = plot_cosy(measured, np.isfinite(measured), rec, spec, png, dt=dt,
                    title=f"COSY map ({method})", method=method)
    plt.close(fig)
