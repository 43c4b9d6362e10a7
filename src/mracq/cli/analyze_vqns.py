"""``mracq analyze vqns FILE``: noise spectrum from a CSV of coherence decays.

Input rows ``sequence,t,coherence[,sigma]`` with a header line (sequence as ``fid``,
``se``, ``cpmg-N`` or ``xy8-N``; t in s; rows of one sequence in increasing t). Output:
``<out>.csv`` with ``omega_rad_s, freq_hz, mean, std, lower, upper`` (S in rad^2/s,
two-sided; band mean +- 2 std) and ``<out>.png`` with the band and the DDNS points.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mracq.cli import CLIError
from mracq.cli.common import positive_int

HELP = "VQNS noise spectrum (with confidence band and DDNS overlay) from a coherence CSV"
REQUIRED = ("sequence", "t", "coherence")


def add_arguments(parser) -> None:
    parser.add_argument("file", type=Path, help="CSV with columns sequence,t,coherence[,sigma]; "
                        "t is the total free evolution time in SECONDS (e.g. 2.5e-06)")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="output prefix (default: FILE without suffix + '_vqns')")
    parser.add_argument("--force", action="store_true",
                        help="overwrite earlier outputs (default: refuse)")
    parser.add_argument("-k", "--lorentzians", type=int, default=None,
                        help="Lorentzians per restart (default: automatic)")
    parser.add_argument("-r", "--restarts", type=positive_int, default=100,
                        help="successful restarts (default 100)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="loss threshold (default: from the error bars / App. B)")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="regularization strength (seed App. D)")
    parser.add_argument("--max-iter", type=positive_int, default=1000,
                        help="iteration cap per restart")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def read_csv(path: Path) -> list:
    """Measurements from the CSV; :class:`CLIError` naming the line for malformed input."""
    from mracq.recon.vqns.data import COHERENCE_RANGE, Measurement, pulse_number

    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    rows: dict[str, list] = {}
    order: list[str] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = None
        for lineno, row in enumerate(reader, start=1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in REQUIRED if c not in header]
                if missing:
                    raise CLIError(f"{path}:{lineno}: header lacks column(s) "
                                   f"{', '.join(missing)} (need sequence,t,coherence[,sigma]; "
                                   f"got {','.join(header)})")
                col = {c: header.index(c) for c in header}
                continue
            if len(row) < len(header):
                raise CLIError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
            seq = row[col["sequence"]].strip()
            try:
                key = seq.lower()
                pulse_number(key)
            except ValueError as exc:
                raise CLIError(f"{path}:{lineno}: {exc}") from None
            vals = {}
            for name in ("t", "coherence", "sigma"):
                if name not in col:
                    continue
                txt = row[col[name]].strip()
                if name == "sigma" and txt == "":
                    vals[name] = None
                    continue
                try:
                    v = float(txt)
                except ValueError:
                    raise CLIError(f"{path}:{lineno}: {name} = {txt!r} is not a number") from None
                if not math.isfinite(v):
                    raise CLIError(f"{path}:{lineno}: {name} is {txt} (not finite)")
                vals[name] = v
            if vals["t"] <= 0:
                raise CLIError(f"{path}:{lineno}: t = {vals['t']} s must be > 0")
            lo, hi = COHERENCE_RANGE
            if not lo <= vals["coherence"] <= hi:
                raise CLIError(f"{path}:{lineno}: coherence = {vals['coherence']} is outside "
                               f"[{lo}, {hi}]")
            if vals.get("sigma") is not None and vals["sigma"] <= 0:
                raise CLIError(f"{path}:{lineno}: sigma = {vals['sigma']} must be > 0")
            if key not in rows:
                rows[key] = []
                order.append(key)
            elif vals["t"] <= rows[key][-1][0]:
                raise CLIError(f"{path}:{lineno}: t = {vals['t']} s does not increase "
                               f"(previous {key} row at line {rows[key][-1][3]} has "
                               f"t = {rows[key][-1][0]} s)")
            rows[key].append((vals["t"], vals["coherence"], vals.get("sigma"), lineno))
    if header is None:
        raise CLIError(f"{path}: empty file (need a header sequence,t,coherence[,sigma])")
    if not rows:
        raise CLIError(f"{path}: no data rows")
    out = []
    for key in order:
        r = rows[key]
        sig = [x[2] for x in r]
        if any(s is None for s in sig) and not all(s is None for s in sig):
            first = next(x[3] for x in r if x[2] is None)
            raise CLIError(f"{path}:{first}: sigma missing here but given on other {key} rows")
        out.append(Measurement(key, [x[0] for x in r], [x[1] for x in r],
                               None if sig[0] is None else sig))
    return out


#: fewer points than this in one decay constrain little; below MIN_TOTAL, refuse
MIN_PER_SEQUENCE, MIN_TOTAL = 5, 4


def check_plausible(ms, path) -> list[str]:
    """Warnings for data that parse but are unlikely to mean what the user thinks."""
    warnings = []
    total = sum(len(m.t) for m in ms)
    if total < MIN_TOTAL:
        raise CLIError(f"{path}: {total} data point(s); a spectrum needs at least "
                       f"{MIN_TOTAL} (better >= {MIN_PER_SEQUENCE} per sequence)")
    thin = [m.sequence for m in ms if len(m.t) < MIN_PER_SEQUENCE]
    if thin:
        warnings.append(f"only a few points for {', '.join(thin)} (< {MIN_PER_SEQUENCE} each): "
                        "the spectrum will be poorly constrained")
    t_max = max(max(m.t) for m in ms)
    if t_max > 0.1:
        warnings.append(f"t reaches {t_max:g} s: t is in seconds (NV decays last us to ms); "
                        "if the file is in microseconds, multiply t by 1e-6")
    return warnings


def run(args) -> int:
    import numpy as np

    from mracq.cli.common import free_path
    from mracq.recon.vqns.ddns import ddns
    from mracq.recon.vqns.model import reconstruct

    ms = read_csv(args.file)
    for text in check_plausible(ms, args.file):
        print(f"warning: {text}")
    prefix = args.out or args.file.with_name(args.file.stem + "_vqns")
    csv_path = free_path(Path(str(prefix) + ".csv"), force=args.force)
    png = free_path(Path(str(prefix) + ".png"), force=args.force)
    if not Path(str(prefix)).parent.is_dir():
        raise CLIError(f"output folder {Path(str(prefix)).parent} does not exist")
    try:
        res = reconstruct(ms, n_lorentzians=args.lorentzians, restarts=args.restarts,
                          loss_threshold=args.threshold, weight_decay=args.weight_decay,
                          max_iter=args.max_iter, seed=args.seed, progress=None)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(str(exc)) from None
    lo, hi = res.band
    omega = np.geomspace(lo / 3, hi * 3, 400)
    mean, std = res.spectrum(omega), res.spectrum_std(omega)
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["omega_rad_s", "freq_hz", "mean", "std", "lower", "upper"])
        for row in zip(omega, omega / (2 * np.pi), mean, std, np.maximum(mean - 2 * std, 0),
                       mean + 2 * std, strict=True):
            w.writerow([f"{x:.8g}" for x in row])
    f_lo, f_hi = lo / (2 * np.pi), hi / (2 * np.pi)
    print(f"the data constrain {f_lo:.3g}-{f_hi:.3g} Hz (t from {min(min(m.t) for m in ms):.3g} "
          f"to {max(max(m.t) for m in ms):.3g} s)")
    print(f"{len(ms)} sequences ({', '.join(m.sequence for m in ms)}): {res.n_success} "
          f"restarts ok, {res.n_failed} redrawn, loss threshold {res.loss_threshold:.3g}, "
          f"{res.runtime_s:.1f} s")
    print(f"wrote {csv_path}")
    if not args.no_plot:
        _plot(png, omega, mean, std, res, ms, ddns_points=_ddns_or_none(ddns, ms))
        print(f"wrote {png}")
    return 0


def _ddns_or_none(ddns, ms):
    try:
        return ddns(ms)
    except ValueError:
        return None


def _plot(path, omega, mean, std, res, ms, ddns_points):
    from types import SimpleNamespace

    from mracq.viz import plot_spectrum

    shown = SimpleNamespace(omega=omega, mean=mean, std=std, band=res.band)
    points = None if ddns_points is None else (ddns_points.omega, ddns_points.spectrum)
    fig = plot_spectrum(shown, path, points=points,
                        title=", ".join(m.sequence for m in ms) + f" ({res.n_success} restarts)")
    import matplotlib.pyplot as plt

    plt.close(fig)
