"""``mracq show RUN``: summarize and plot one stored run, as its kind is usually looked at.

coherence runs: C(t) with error bars; VQNS estimates: the spectrum with its band and the
range the data constrain; COSY runs: measured map + mask, reconstruction and 2D spectrum;
MRFM scans and reconstructions: one slice montage on one colour scale, axes in nm; any
other run: its columns against the hinted dimension.
"""

from __future__ import annotations

HELP = "summarize and plot one stored run (uid, uid prefix, scan_id, or -1 for the newest)"


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    parser.add_argument("run", help="uid, uid prefix (>= 5 chars), scan_id, or -N")
    add_session_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="figure folder (default: DATA_DIR/figures)")
    parser.add_argument("--no-plot", action="store_true", help="summary only")


def kind_of(run) -> str:
    """``coherence``, ``spectrum``, ``cosy``, ``mrfm``, ``mrfm_volume`` or ``table``."""
    start = run.start
    name = start.get("plan_name") or ""
    if name == "vqns_estimate":
        return "spectrum"
    if name == "mrfm_reconstruction":
        return "mrfm_volume"
    if name.startswith("cosy") or "t1_grid" in start:
        return "cosy"
    if "cube" in run or ("geometry" in start and "pulses" in start):
        return "mrfm"
    if name == "coherence_scan" or "sequence" in start:
        return "coherence"
    return "table"


def _summary(run, tables) -> None:
    import datetime
    import json

    import numpy as np

    from mracq.cli.common import human_time

    start, stop = run.start, run.stop
    when = (datetime.datetime.fromtimestamp(start["time"]).isoformat(sep=" ", timespec="seconds")
            if "time" in start else "?")
    status = stop.get("exit_status") or ("open/aborted: the process ended before the run "
                                         "was closed; what was measured is below")
    print(f"scan {start.get('scan_id')}  uid {start.get('uid')}")
    print(f"  plan      {start.get('plan_name')}  started {when}  status {status}")
    if stop.get("reason"):
        print(f"  reason    {stop['reason'][:200]}")
    args_ = {k: v for k, v in (start.get("plan_args") or {}).items() if k != "times"}
    print(f"  plan_args {json.dumps(args_, default=str)[:200]}")
    if "sequence" in start:
        print(f"  sequence  {start['sequence']}  ({len(start.get('programs', []))} pulse "
              "programs stored in the start document)")
    for stream, table in tables.items():
        n = len(table.get("seq_num", table.get("time", ())))
        keys = run.stream_metadata(stream).get("data_keys") or {}
        print(f"  events    {n}" if stream == "primary" else f"  stream {stream!r}: {n} events")
        for key, val in table.items():
            if key in ("time", "seq_num"):
                continue
            v = np.asarray(val)
            unit = (keys.get(key) or {}).get("units") or ""
            if v.ndim == 1 and v.dtype.kind in "fiu" and v.size:
                print(f"    {key:24} [{v.min():.4g} .. {v.max():.4g}] {unit}")
            else:
                print(f"    {key:24} shape {v.shape} {unit}")
    if "hardware_time_estimate" in start:
        print(f"  hardware time {human_time(start['hardware_time_estimate'])} "
              "(estimated from the programs and shots)")


def run(args) -> int:
    from mracq.cli import CLIError
    from mracq.cli.common import figure_dir, open_store_from_args, storage_from_args
    from mracq.cli.store import LayoutError, TiledStore
    from mracq.storage import RunNotFoundError, open_catalog

    store = open_store_from_args(args)
    try:
        try:
            r = store.get_run(args.run)
        except RunNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        try:
            tables = {s: r.table(s) for s in r.streams}
        except LayoutError:  # a layout the fast reader does not know: Tiled reads it
            store.close()
            store = TiledStore(open_catalog(storage_from_args(args)[0]))
            r = store.get_run(args.run)
            tables = {s: r.table(s) for s in r.streams}
        _summary(r, tables)
        if not any(len(t.get("seq_num", ())) for t in tables.values()):
            print("  no events stored: nothing to plot")
            return 0
        if args.no_plot:
            return 0
        data_dir, url, _ = storage_from_args(args)
        out = figure_dir(args, None if url else data_dir)
        start = r.start
        png = out / f"scan-{start.get('scan_id')}-{start.get('uid', '?')[:8]}.png"
        draw(r, tables, png)
        print(f"figure: {png}")
    finally:
        store.close()
    return 0


def draw(run, tables, png):
    """Draw one run into ``png`` according to its kind; returns the figure."""
    import numpy as np

    from mracq import viz

    start = run.start
    title = f"scan {start.get('scan_id')} ({start.get('uid', '?')[:8]}): {start.get('plan_name')}"
    status = run.stop.get("exit_status") or "open/aborted"
    if status != "success":
        title += f" [{status}: stopped early]"
    kind = kind_of(run)
    primary = tables.get("primary", {})
    if kind == "coherence" and {"t", "coherence"} <= set(primary):
        return viz.plot_coherence([{"sequence": start.get("sequence", "?"), "t": primary["t"],
                                    "coherence": primary["coherence"],
                                    "sigma": primary.get("coherence_error")}], png, title=title)
    if kind == "spectrum" and {"omega", "mean", "std"} <= set(primary):
        return viz.plot_spectrum(_stored_spectrum(start, primary), png, title=title)
    if kind == "cosy":
        return _draw_cosy(start, tables, png, title)
    if kind == "mrfm":
        return _draw_mrfm(start, tables, png, title)
    if kind == "mrfm_volume" and "volume" in primary:
        geo = start.get("geometry", {})
        z = np.asarray(geo.get("z_layers", []), float)
        vol = np.asarray(primary["volume"][-1], float)
        labels = ([f"z = {v * 1e9:.1f} nm" for v in z] if z.size == vol.shape[2] else None)
        return viz.plot_montage(vol, png, x=geo.get("x"), y=geo.get("y"), labels=labels,
                                title=title, unit="spin density (nm$^{-3}$)", scale=1e-27)
    dims = (start.get("hints") or {}).get("dimensions") or [[["seq_num"]]]
    x = dims[0][0][0] if dims[0][0][0] in primary else "seq_num"
    ys = [k for k, v in primary.items() if k not in (x, "time", "seq_num")
          and np.asarray(v).ndim == 1 and not k.endswith("_error")][:6]
    return viz.plot_table(primary, x, ys, png, title=title)


def _stored_spectrum(start, primary):
    from types import SimpleNamespace

    import numpy as np

    band = start.get("constrained_band_rad_s") or start.get("band_rad_s")
    return SimpleNamespace(omega=np.asarray(primary["omega"][-1], float),
                           mean=np.asarray(primary["mean"][-1], float),
                           std=np.asarray(primary["std"][-1], float),
                           band=tuple(band) if band else None)


def _draw_cosy(start, tables, png, title):
    import numpy as np

    from mracq import viz

    t1 = np.asarray(start.get("t1_grid", []), float)
    t2 = np.asarray(start.get("t2_grid", []), float)
    rec = tables.get("reconstruction", {})
    if rec and "measured" in rec and len(rec["measured"]):
        mask = np.asarray(rec["mask"][-1]).astype(bool)
        return viz.plot_cosy(rec["measured"][-1], mask, rec.get("reconstruction", [None])[-1],
                             rec.get("spectrum", [None])[-1], png, t1=t1, t2=t2, title=title,
                             method=(start.get("plan_args") or {}).get("method", ""))
    # no reconstruction stored (stopped early): the measured entries from the events
    p = tables["primary"]
    value = next(k for k in p if k.endswith("_value"))
    measured = np.full((t1.size, t2.size), np.nan)
    measured[p["i"].astype(int), p["j"].astype(int)] = p[value]
    return viz.plot_cosy(measured, np.isfinite(measured), None, None, png, t1=t1, t2=t2,
                         title=title + " (not reconstructed)")


def _draw_mrfm(start, tables, png, title):
    import numpy as np

    from mracq import viz

    geo = start.get("geometry", {})
    x, y = np.asarray(geo.get("x", []), float), np.asarray(geo.get("y", []), float)
    cube = tables.get("cube", {})
    if cube and "cube_data" in cube and len(cube["cube_data"]):
        data = np.asarray(cube["cube_data"][-1], float)
        mask = np.asarray(cube["cube_mask"][-1]).astype(bool)
    else:  # stopped before the cube was stored: assemble it from the events
        p = tables["primary"]
        n_ch = np.asarray(p["readout_spin_signal"]).reshape(len(p["seq_num"]), -1).shape[1]
        data = np.full((x.size, y.size, n_ch), np.nan)
        mask = np.zeros((x.size, y.size), bool)
        for px, py, sig in zip(p["scanner_x"], p["scanner_y"], p["readout_spin_signal"],
                               strict=True):
            i, j = int(np.argmin(abs(x - px))), int(np.argmin(abs(y - py)))
            data[i, j] = sig
            mask[i, j] = True
        title += " (stopped early)"
    if start.get("protocol") == "xyz":
        labels = [f"z = {h * 1e9:.1f} nm" for h in geo.get("z", [])]
    else:
        labels = [f"f0 = {p['f0'] / 1e6:.2f} MHz" for p in start.get("pulses", [])]
    if len(labels) != data.shape[2]:
        labels = None
    return viz.plot_montage(data, png, x=x, y=y, labels=labels, mask=mask, title=title,
                            unit="spin signal (aN$^2$)", scale=1e36)
