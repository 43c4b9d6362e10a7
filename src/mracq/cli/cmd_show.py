"""``mracq show RUN``: summarize and plot one stored run."""

from __future__ import annotations

HELP = "summarize and plot one stored run (uid, uid prefix, scan_id, or -1 for the newest)"


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    parser.add_argument("run", help="uid, uid prefix (>= 5 chars), scan_id, or -N")
    add_session_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="figure folder (default: DATA_DIR/figures)")
    parser.add_argument("--no-plot", action="store_true", help="summary only")


def run(args) -> int:
    import datetime
    import json

    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import figure_dir, human_time, open_catalog_from_args
    from mracq.storage import RunNotFoundError, close_catalog, default_data_dir, get_run, run_table

    client = open_catalog_from_args(args)
    try:
        try:
            r = get_run(client, args.run)
        except RunNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        start = r.metadata["start"]
        stop = r.metadata.get("stop") or {}
        when = datetime.datetime.fromtimestamp(start["time"]).isoformat(sep=" ",
                                                                         timespec="seconds")
        print(f"scan {start.get('scan_id')}  uid {start['uid']}")
        print(f"  plan      {start.get('plan_name')}  started {when}  "
              f"status {stop.get('exit_status', 'open/aborted')}")
        if stop.get("reason"):
            print(f"  reason    {stop['reason']}")
        args_ = {k: v for k, v in (start.get("plan_args") or {}).items() if k != "times"}
        print(f"  plan_args {json.dumps(args_, default=str)[:200]}")
        if "sequence" in start:
            print(f"  sequence  {start['sequence']}  ({len(start.get('programs', []))} pulse "
                  "programs stored in the start document)")
        if "primary" not in r:
            print("  no events")
            return 0
        table = run_table(r)
        n = len(table["time"])
        print(f"  events    {n}")
        if n == 0:
            print("  no events stored (the run is still being written, or its process "
                  "stopped before any event was written)")
            return 0
        for key, val in table.items():
            if key in ("time", "seq_num"):
                continue
            v = np.asarray(val)
            if v.ndim == 1 and v.dtype.kind in "fiu":
                print(f"    {key:24} [{v.min():.4g} .. {v.max():.4g}]")
            else:
                print(f"    {key:24} shape {v.shape} {v.dtype}")
        if "hardware_time_estimate" in start:
            print(f"  hardware time {human_time(start['hardware_time_estimate'])} "
                  "(estimated from the programs and shots)")
        if args.no_plot:
            return 0
        out = figure_dir(args, None if args.url else (args.data_dir or default_data_dir()))
        png = out / f"scan-{start.get('scan_id')}-{start['uid'][:8]}.png"
        if {"t", "coherence"} <= set(table):
            from mracq.viz import plot_coherence

            plot_coherence([{"sequence": start.get("sequence", "?"), "t": table["t"],
                             "coherence": table["coherence"],
                             "sigma": table.get("coherence_error")}], png,
                           title=f"scan {start.get('scan_id')} ({start['uid'][:8]})")
        else:
            from mracq.viz import plot_table

            dims = (start.get("hints") or {}).get("dimensions") or [[["seq_num"]]]
            x = dims[0][0][0] if dims[0][0][0] in table else "seq_num"
            ys = [k for k, v in table.items() if k not in (x, "time", "seq_num")
                  and np.asarray(v).ndim == 1][:6]
            plot_table(table, x, ys, png, title=f"scan {start.get('scan_id')}")
        print(f"figure: {png}")
    finally:
        close_catalog(client)
    return 0
