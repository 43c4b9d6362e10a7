"""``mracq demo``: a simulated NV session end to end."""

from __future__ import annotations

HELP = ("simulated NV session: measure FID, Hahn echo and CPMG-2...32, store the runs, "
        "plot the curves, report the hardware time")

DEFAULT_N = (2, 4, 8, 16, 32)


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    add_session_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="figure folder (default: DATA_DIR/figures)")
    parser.add_argument("--points", type=int, default=20, help="times per curve (default 20)")
    parser.add_argument("--shots", type=int, default=1_000_000,
                        help="shots per point (default 1e6)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated noise")


def demo_times(label: str, points: int):
    """Evolution times (s) suited to the default simulated NV for one sequence."""
    import numpy as np

    if label == "fid":
        return np.geomspace(50e-9, 12e-6, points)
    if label == "se":
        return np.geomspace(1e-6, 60e-6, points)
    n = int(label.split("-")[1])  # T2 grows roughly as n^(1/2) for this bath
    return np.geomspace(max(1e-6, n * 100e-9), 50e-6 * n**0.5, points)


def run(args) -> int:
    import time

    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import figure_dir, human_time
    from mracq.config import validate_config
    from mracq.plans.coherence import coherence_scan, prepare_nv
    from mracq.viz import plot_coherence

    if args.config:
        raise CLIError("the demo always runs on the built-in simulated instruments; "
                       "drop --config")
    if args.points < 2:
        raise CLIError("--points must be >= 2")
    t_wall = time.perf_counter()
    # the built-in all-simulated configuration, never $MRACQ_CONFIG: no real instrument
    # is touched by a demo
    raw = {} if args.seed is None else {"sim": {"seed": args.seed}}
    from mracq.session import make_session

    session = make_session(validate_config(raw), data_dir=args.data_dir, url=args.url,
                           api_key=args.api_key)
    with session:
        d = session.devices
        nv_sim = d["nv"].transport.nv
        print(f"mracq demo: simulated NV, B = {nv_sim.field * 1e3:.0f} mT, transition "
              f"{nv_sim.transition_frequency / 1e9:.5f} GHz; data in {session.data_dir}")
        session.RE(prepare_nv(d["mw"], d["laser"], frequency=nv_sim.transition_frequency,
                              power_dbm=0.0))
        plan = [("fid", None), ("hahn", None)] + [("cpmg", n) for n in DEFAULT_N]
        curves = []
        for family, n in plan:
            label = "fid" if family == "fid" else "se" if family == "hahn" else f"cpmg-{n}"
            res = session.RE(coherence_scan(d["nv"], family, demo_times(label, args.points),
                                            n=n, shots=args.shots)).plan_result
            scan_id = session.catalog[res["uid"]].metadata["start"]["scan_id"]
            res["scan_id"] = scan_id
            curves.append(res)
            print(f"  scan {scan_id:>4}  {res['uid'][:8]}  {label:<8} "
                  f"{len(res['t'])} points  hardware {human_time(res['hardware_time'])}")
        out = figure_dir(args, session.data_dir)
        first, last = curves[0]["scan_id"], curves[-1]["scan_id"]
        png = out / f"demo-coherence-{first}-{last}.png"
        plot_coherence(curves, png, title=f"mracq demo: scans {first}-{last} (simulated NV)")
        hw = float(np.sum([c["hardware_time"] for c in curves]))
        print(f"runs stored: scans {first}-{last} in {session.url or session.data_dir}")
        print(f"figure: {png}")
        print(f"simulated hardware time: {human_time(hw)} ({hw:.1f} s); "
              f"wall time {time.perf_counter() - t_wall:.1f} s")
        print("next: `mracq runs`, `mracq show -1`, `mracq shell`")
    return 0
