"""``mracq calibrate``: ODMR, Rabi and Ramsey; store the NV calibration and use it."""

from __future__ import annotations

HELP = ("calibrate the NV: find the resonance (CW ODMR, Ramsey) and the pi and pi/2 pulses "
        "(Rabi) at a microwave power; store the result, which later runs use")


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    add_session_arguments(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--field", type=float, metavar="T",
                       help="approximate field along the NV axis (T); searched +- --field-error "
                            "(default for simulated rigs: the configured field)")
    where.add_argument("--range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="frequency range to search for the ms=0 <-> -1 line (Hz)")
    parser.add_argument("--field-error", type=float, default=2e-3, metavar="T",
                        help="search half width around --field (T, default 2e-3)")
    parser.add_argument("--above-crossing", action="store_true",
                        help="with --range: the field is above the level crossing (~102.4 mT), "
                             "the line at gamma_e B - D (with --field: from the field)")
    parser.add_argument("--power", type=float, default=0.0, metavar="DBM",
                        help="microwave power of the measurements to come (dBm, default 0)")
    parser.add_argument("--shots", type=int, default=1_000_000,
                        help="shots per point (default 1e6)")


def search_range(args, config) -> tuple[float, float, bool]:
    """Frequencies (Hz) to search, from --range, --field or the simulated rig's field, and
    whether the field is above the level crossing."""
    from mracq.cli import CLIError
    from mracq.pulses.calibration import GAMMA_E, LEVEL_CROSSING_FIELD, line_frequency

    if args.range:
        lo, hi = args.range
        if not hi > lo:
            raise CLIError("--range LOW HIGH must increase")
        return lo, hi, bool(args.above_crossing)
    field = args.field
    if field is None:
        if config.instruments["nv"]["backend"] != "sim":
            raise CLIError("give --field (T) or --range LOW HIGH (Hz): where to look for "
                           "the NV line")
        field = config.sim.get("field", 0.05)
    if args.field_error <= 0:
        raise CLIError("--field-error must be > 0")
    if not field > 0:
        raise CLIError(f"--field must be > 0 T, got {field!r}")
    if abs(field - LEVEL_CROSSING_FIELD) <= args.field_error:
        raise CLIError(f"--field {field:g} T +- {args.field_error:g} T spans the level "
                       f"crossing at {LEVEL_CROSSING_FIELD * 1e3:.1f} mT: give --range")
    centre = line_frequency(field)
    half = GAMMA_E * args.field_error
    return centre - half, centre + half, field > LEVEL_CROSSING_FIELD


def run_calibration(session, lo, hi, *, power_dbm, shots, out=print, **kw):
    """Run :func:`mracq.plans.calibration.calibrate` (``kw``: its options), print each
    step, install the result."""
    from mracq.cli.common import human_time
    from mracq.plans.calibration import calibrate

    def step(name, res):
        fit = res["fit"]
        n, hw = len(res["value"]), human_time(res["hardware_time"])
        if fit is None:
            out(f"  {name:<12} {n:>4} points  hardware {hw}: no fit")
        elif name.endswith("odmr"):
            out(f"  {name:<12} {n:>4} points  hardware {hw}: centre "
                f"{fit['centre'] / 1e9:.6f} GHz +- {fit.errors['centre'] / 1e3:.3g} kHz, "
                f"half width {fit['width'] / 1e6:.3g} MHz ({fit.model})")
        elif name == "rabi":
            out(f"  {name:<12} {n:>4} points  hardware {hw}: Rabi "
                f"{fit['rabi_frequency'] / 1e6:.4g} MHz, pi {fit['pi_duration'] * 1e9:.2f} +- "
                f"{fit.errors['pi_duration'] * 1e9:.2g} ns")
        else:
            out(f"  {name:<12} {n:>4} points  hardware {hw}: detuning "
                f"{fit['detuning'] / 1e6:.5f} MHz +- {fit.errors['detuning'] / 1e3:.3g} kHz, "
                f"T2* {fit['t2_star'] * 1e6:.3g} us")

    d = session.devices
    cal = session.RE(calibrate(d["nv"], d["mw"], d["laser"], frequency_range=(lo, hi),
                               power_dbm=power_dbm, shots=shots, progress=step, **kw)).plan_result
    session.set_calibration(cal)
    return cal


def run(args) -> int:
    from mracq.cli import CLIError
    from mracq.cli.common import human_time, open_session
    from mracq.config import ConfigError, load_config

    if args.shots < 1:
        raise CLIError("--shots must be >= 1")
    try:  # the search range is checked before anything is opened
        lo, hi, above = search_range(args, load_config(args.config) if args.config
                                     else load_config())
    except (ConfigError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    session = open_session(args)
    with session:
        print(f"mracq calibrate: searching {lo / 1e9:.6f}-{hi / 1e9:.6f} GHz, "
              f"pulses at {args.power:g} dBm; data in {session.url or session.data_dir}")
        try:
            cal = run_calibration(session, lo, hi, power_dbm=args.power, shots=args.shots,
                                  above_crossing=above)
        except RuntimeError as exc:
            raise CLIError(f"calibration failed: {exc}") from exc
        scan_id = session.catalog[cal.uid].metadata["start"]["scan_id"]
        print(f"calibration: {cal.summary()}")
        print(f"stored as scan {scan_id} ({cal.uid[:8]}); later runs use it and name it in "
              f"their start documents; hardware time "
              f"{human_time(cal.extra.get('hardware_time', 0.0))}")
    return 0
