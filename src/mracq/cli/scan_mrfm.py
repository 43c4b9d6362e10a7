"""``mracq scan mrfm``: an MRFM scan, its ADMM-TV reconstruction, and a figure of each.

Defaults are the seed's experiment (docs/mrfm.md): a membrane resonator, 168 x 168
positions 1 nm apart (centred on the sample, periodic grid), the 15 nm standoff, the 46
inversion pulses of Table 2 (multislice) or the 133.9 MHz pulse on 46 planes 1 nm apart
(XYZ), T_m = 30 s per pulse and position. ``--quick`` scans a 32 x 32 grid of 4 nm steps
with every 6th pulse (about a minute here). With the built-in configuration the
instruments are simulated; the simulated sample is the seed's 40 nm sphere phantom.

Stored: the scan (one run, as :mod:`mracq.plans.mrfm` stores it) and the reconstruction
(a ``mrfm_reconstruction`` run with the volume in m^-3 and its grid), both shown by
``mracq show``.
"""

from __future__ import annotations

import sys

from mracq.cli import CLIError
from mracq.cli.common import positive_float, positive_int

HELP = ("MRFM scan (multislice or XYZ, simulated by default) + ADMM-TV reconstruction; "
        "seed parameters by default, --quick for a small grid")

QUICK = {"n_xy": 32, "step": 4.0, "pulses": 8, "n_z": 12}
SEED = {"n_xy": 168, "step": 1.0, "pulses": 46, "n_z": 46}


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    add_session_arguments(parser)
    g = parser.add_argument_group("scan (units: nm, s; defaults: the seed's experiment)")
    g.add_argument("--protocol", choices=["multislice", "xyz"], default="multislice",
                   help="multislice: one plane, many pulses; xyz: one pulse, many planes")
    g.add_argument("--quick", action="store_true",
                   help="small grid: 32 x 32 positions, 4 nm steps, 8 pulses/planes, 12 layers")
    g.add_argument("--n-xy", type=positive_int, default=None,
                   help="positions per lateral axis (default 168; --quick 32)")
    g.add_argument("--step", type=positive_float, default=None, metavar="NM",
                   help="lateral step = voxel edge, nm (default 1; --quick 4)")
    g.add_argument("--standoff", type=positive_float, default=15.0, metavar="NM",
                   help="gap between sample bottom and magnet surface, nm (default 15)")
    g.add_argument("--pulses", type=positive_int, default=None,
                   help="multislice: how many of the seed's 46 pulses (evenly spread); "
                        "xyz: how many planes, one step apart (default 46; --quick 8)")
    g.add_argument("--t-m", type=positive_float, default=30.0, metavar="S",
                   help="integration time per pulse and position, s (default 30)")
    g.add_argument("--sampling", type=float, default=1.0, metavar="P",
                   help="compressed sensing: fraction of positions measured, (0, 1] "
                        "(default 1: all)")
    g.add_argument("--geometry", choices=["membrane", "cantilever"], default="membrane",
                   help="resonator (simulated instruments)")
    g.add_argument("--n-z", type=positive_int, default=None,
                   help="sample layers to reconstruct, one step each (default 46; --quick 12)")
    g.add_argument("--n-iter", type=positive_int, default=None, help="ADMM iterations")
    g.add_argument("--seed", type=int, default=None, help="seed of the simulated noise")
    g.add_argument("--no-reconstruct", action="store_true", help="only scan and store")
    parser.add_argument("--out", metavar="DIR", help="figure folder (default: DATA_DIR/figures)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plan_grid(args) -> dict:
    """Scan parameters in SI from the options, checked (CLIError); nothing is touched."""
    import numpy as np

    from mracq.sim.mrfm.field import SEED_F0, SEED_F0_XYZ

    base = QUICK if args.quick else SEED
    n_xy = args.n_xy or base["n_xy"]
    step = (args.step or base["step"]) * 1e-9
    n_p = args.pulses or base["pulses"]
    n_z = args.n_z or base["n_z"]
    if n_xy < 4 or n_xy > 512:
        raise CLIError(f"--n-xy {n_xy}: use 4..512 positions per axis")
    if not 0.1e-9 <= step <= 50e-9:
        raise CLIError(f"--step {step * 1e9:g} nm: use 0.1..50 nm")
    if not 0 < args.sampling <= 1:
        raise CLIError(f"--sampling {args.sampling:g}: a fraction in (0, 1]")
    if args.protocol == "multislice":
        if n_p > len(SEED_F0):
            raise CLIError(f"--pulses {n_p}: the seed has {len(SEED_F0)} pulses")
        pick = np.unique(np.linspace(0, len(SEED_F0) - 1, n_p).round().astype(int))
        f0 = [float(f) for f in SEED_F0[pick]]
        heights = [args.standoff * 1e-9]
    else:
        if n_p > 200:
            raise CLIError(f"--pulses {n_p}: at most 200 planes")
        f0 = [float(SEED_F0_XYZ)]
        heights = [args.standoff * 1e-9 + k * step for k in range(n_p)]
    if n_z * step > 300e-9:
        raise CLIError(f"--n-z {n_z} x {step * 1e9:g} nm reaches {n_z * step * 1e9:.0f} nm "
                       "above the standoff, where the field gradient resolves nothing; use "
                       "fewer layers")
    x = np.fft.fftfreq(n_xy, 1.0 / n_xy) * step  # periodic grid, index 0 at the centre
    points = n_xy * n_xy * len(heights) * (args.sampling if args.sampling < 1 else 1)
    channels = len(f0) if args.protocol == "multislice" else len(heights)
    return {"n_xy": n_xy, "step": step, "n_z": n_z, "f0": f0, "heights": heights, "x": x,
            "points": int(points), "channels": channels,
            "hardware_s": points * args.t_m * (len(f0) if args.protocol == "multislice" else 1)}


def run(args) -> int:
    import time

    import numpy as np

    from mracq.cli.common import config_from_args, figure_dir, human_time, storage_from_args

    grid = plan_grid(args)
    cfg = config_from_args(args)
    data_dir, url, key = storage_from_args(args)
    simulated = all(cfg.instruments.get(n, {}).get("backend", "sim") == "sim"
                    for n in ("scanner", "rf", "readout"))
    wired = [n for n in ("scanner", "rf", "readout")
             if cfg.instruments.get(n, {}).get("driver", "sim") != "sim"]
    if not simulated:
        raise CLIError("`mracq scan mrfm` drives simulated MRFM instruments or vendor drivers "
                       "(instruments.*.driver); the lab configuration names a VISA backend "
                       "(use `mracq shell`)")
    if wired and len(wired) != 3:
        raise CLIError(f"instruments {', '.join(wired)} have drivers, the others not: give "
                       "scanner, rf and readout a driver (or none, to simulate)")
    standoff = cfg.instruments.get("scanner", {}).get("min_standoff", 0.0)
    if args.standoff * 1e-9 < standoff:
        raise CLIError(f"--standoff {args.standoff:g} nm is below the scanner's minimum "
                       f"standoff {standoff * 1e9:g} nm (instruments.scanner.min_standoff)")
    rng = np.random.default_rng(args.seed if args.seed is not None else cfg.sim.get("seed"))
    _say(f"MRFM {args.protocol} scan: {grid['n_xy']} x {grid['n_xy']} positions, "
         f"{grid['step'] * 1e9:g} nm steps, {grid['channels']} "
         f"{'pulses' if args.protocol == 'multislice' else 'planes'}, standoff "
         f"{args.standoff:g} nm, T_m = {args.t_m:g} s: {grid['points']} points, simulated "
         f"hardware time {human_time(grid['hardware_s'])}")
    t0 = time.perf_counter()
    if wired:  # over the wire: the instruments measure, the setup models them for ADMM
        setup, devices, clock = _wired_rig(args, grid, cfg, rng)
    else:
        setup, devices, clock = _simulated_rig(args, grid, cfg, rng)
    _check_points(devices, grid, args)
    _say(f"precompute done in {time.perf_counter() - t0:.0f} s")

    from mracq.session import make_session

    session = make_session(cfg, data_dir=data_dir, url=url, api_key=key, devices=devices,
                           clock=clock)
    with session:
        res = _scan(session, devices, grid, args, rng)
        out = figure_dir(args, None if url else session.data_dir)
        where = url or session.data_dir
        scan_id = session.RE.md["scan_id"]
        print(f"scan stored: scan {scan_id} ({res.uid[:8]}) in {where}; simulated hardware "
              f"time {human_time(res.hardware_time)}")
        _figure(session, scan_id, out)
        if args.no_reconstruct:
            print(f"reconstruct later: `mracq analyze mrfm {scan_id}`")
            return 0
        vol = _reconstruct(res, setup, args)
        rec_id = _store_volume(session, vol, setup, grid, res.uid, args)
        print(f"reconstruction stored: scan {rec_id}; density {np.min(vol) / 1e27:.3g}.."
              f"{np.max(vol) / 1e27:.3g} nm^-3")
        from mracq.cli.analyze_mrfm import plausibility

        for text in plausibility(vol, setup.z_layers):
            print(f"warning: {text}")
        _figure(session, rec_id, out)
    return 0


def _setup(args, grid):
    from mracq.sim.mrfm.setup import default_setup

    kw = {"voxel_size": grid["step"], "n_xy": grid["n_xy"], "n_z": grid["n_z"],
          "z0": grid["heights"][0]}
    if args.protocol == "multislice":
        kw["f0"] = grid["f0"]
    else:
        kw.update(f0=grid["f0"], n_heights=len(grid["heights"]))
    try:
        return default_setup(args.geometry, args.protocol, **kw)
    except ValueError as exc:
        raise CLIError(f"the scan geometry is not possible: {exc}") from None


def _wired_rig(args, grid, cfg, rng):
    """Setup (reconstruction model) and the devices over the lab's drivers (a real rig or
    `mracq emulate mrfm`: give the same --n-xy and --step as its sample grid)."""
    from mracq.devices.drivers import InstrumentError
    from mracq.devices.mrfm import build_mrfm_devices
    from mracq.sim.clock import VirtualClock

    setup = _setup(args, grid)
    clock = VirtualClock()
    try:
        devices = build_mrfm_devices(cfg.instruments, clock, rng)
    except (InstrumentError, ValueError) as exc:
        raise CLIError(f"cannot reach the MRFM instruments: {exc}") from None
    _say("instruments connected: " + ", ".join(
        d.label for d in (devices["scanner"].transport, devices["readout"].backend.lockin,
                          devices["readout"].backend.source)))
    return setup, devices, clock


def _simulated_rig(args, grid, cfg, rng):
    """Setup (reconstruction model) and simulated devices sharing its sample grid."""
    import time

    from mracq.devices.mrfm import build_mrfm_devices
    from mracq.sim.clock import VirtualClock

    _say(f"precomputing the scan operator ({grid['channels']} channels x {grid['n_z']} "
         f"layers on {grid['n_xy']}^2; ~10 s at the seed size on 2 cores)...")
    t0 = time.perf_counter()
    setup = _setup(args, grid)
    _say(f"  scan operator ready ({time.perf_counter() - t0:.0f} s); simulating the sample")
    density = setup.phantom(rng)
    clock = VirtualClock()
    devices = build_mrfm_devices(cfg.instruments, clock, rng, setup=setup, density=density)
    # the simulator computes each pulse's response on first use (minutes at the seed
    # size, silently, at the first point); the setup gives them all at once
    backend = devices["readout"].backend
    planes = setup.forward(density)
    if hasattr(backend, "_planes"):
        for c in range(setup.n_channels):
            z = grid["heights"][0 if args.protocol == "multislice" else c]
            f = grid["f0"][c if args.protocol == "multislice" else 0]
            backend._planes[(round(f), round(setup.f_bw), round(z / 1e-12))] = planes[:, :, c]
    return setup, devices, clock


def _check_points(devices, grid, args):
    from mracq.plans.mrfm import check_scan

    x = grid["x"]
    corners = [(a, b, h) for a in (x.min(), x.max()) for b in (x.min(), x.max())
               for h in grid["heights"]]
    try:
        check_scan(devices["scanner"], devices["rf"], corners, grid["f0"], args.t_m,
                   devices["readout"])
    except Exception as exc:  # LimitError / InterlockError / ValueError: name the fix
        raise CLIError(f"the scan is outside the instrument limits: {exc}") from None


class _Progress:
    """A live line every ~5 % of the points: position (nm) and the largest signal (aN^2)."""

    def __init__(self, total: int):
        import time

        self.total, self.n, self.t0 = max(total, 1), 0, time.perf_counter()
        self.every = max(1, self.total // 20)

    def __call__(self, name, doc):
        import time

        import numpy as np

        if name == "start":
            print(f"{'point':>13}  {'x (nm)':>8} {'y (nm)':>8} {'z (nm)':>8}  "
                  f"{'max signal (aN^2)':>17}  elapsed", flush=True)
        if name != "event" or "scanner_x" not in doc["data"]:
            return
        self.n += 1
        if self.n % self.every and self.n != self.total:
            return
        d = doc["data"]
        sig = np.max(np.asarray(d.get("readout_spin_signal", [np.nan]), float)) * 1e36
        print(f"{self.n:>6}/{self.total:<6}  {d['scanner_x'] * 1e9:8.1f} "
              f"{d['scanner_y'] * 1e9:8.1f} {d['scanner_z'] * 1e9:8.1f}  {sig:17.4g}  "
              f"{time.perf_counter() - self.t0:.0f} s", flush=True)


def _scan(session, devices, grid, args, rng):
    from mracq.cli.common import run_interruptibly
    from mracq.plans.mrfm import cs_multislice_scan, multislice_scan, xyz_scan

    sc, rf, ro = devices["scanner"], devices["rf"], devices["readout"]
    x = grid["x"]
    if args.protocol == "xyz":
        plan = xyz_scan(sc, rf, ro, x, x, grid["heights"], f0=grid["f0"][0], t_m=args.t_m)
    elif args.sampling < 1:
        plan = cs_multislice_scan(sc, rf, ro, x, x, args.sampling, rng, z=grid["heights"][0],
                                  f0_list=grid["f0"], t_m=args.t_m)
    else:
        plan = multislice_scan(sc, rf, ro, x, x, z=grid["heights"][0], f0_list=grid["f0"],
                               t_m=args.t_m)
    token = session.RE.subscribe(_Progress(grid["points"]))
    try:
        return run_interruptibly(session, plan, "the scan",
                                 again="`mracq scan mrfm` with the same options").plan_result
    finally:
        session.RE.unsubscribe(token)


def _reconstruct(res, setup, args):
    import time

    import numpy as np

    from mracq.recon.mrfm.pipeline import ADMM_DEFAULTS, reconstruct

    n_iter = args.n_iter or ADMM_DEFAULTS["n_iter"]
    t0 = time.perf_counter()

    def progress(k, _density):
        if (k + 1) % max(1, n_iter // 5) == 0:
            _say(f"  ADMM iteration {k + 1}/{n_iter} ({time.perf_counter() - t0:.0f} s)")

    _say(f"reconstructing (ADMM-TV, {n_iter} iterations)...")
    sampled = None if res.mask.all() else res.mask
    try:
        return reconstruct(np.nan_to_num(res.data), setup, mask=sampled, method="admm",
                           n_iter=n_iter, callback=progress)
    except KeyboardInterrupt:
        from mracq.cli import Interrupted

        raise Interrupted("reconstruction stopped; the scan is stored: reconstruct it with "
                          "`mracq analyze mrfm -1`") from None


def _store_volume(session, vol, setup, grid, scan_uid, args):
    import bluesky.plan_stubs as bps
    import numpy as np
    from ophyd import Signal

    sig = Signal(name="volume", value=np.asarray(vol, float))
    md = {"plan_name": "mrfm_reconstruction", "scan_uid": scan_uid, "method": "admm",
          "units": {"volume": "m^-3"},
          "geometry": {"x": grid["x"].tolist(), "y": grid["x"].tolist(),
                       "z_layers": [float(z) for z in setup.z_layers],
                       "voxel_size": grid["step"]},
          "plan_args": {"n_iter": args.n_iter, "protocol": args.protocol}}

    def plan():
        yield from bps.open_run(md=md)
        yield from bps.trigger_and_read([sig])
        yield from bps.close_run()

    session.RE(plan())
    return session.RE.md["scan_id"]


def _figure(session, scan_id, out):
    from mracq.cli.cmd_show import draw
    from mracq.cli.store import TiledStore

    store = TiledStore(session.catalog)
    r = store.get_run(scan_id)
    tables = {s: r.table(s) for s in r.streams}
    png = out / f"scan-{scan_id}-{r.start['uid'][:8]}.png"
    fig = draw(r, tables, png)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"figure: {png}")
