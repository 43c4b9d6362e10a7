"""``mracq demo``: a simulated NV session end to end."""

from __future__ import annotations

HELP = ("simulated closed-loop NV session: calibrate the uncalibrated rig (ODMR, Rabi, "
        "Ramsey), measure FID, Hahn echo and CPMG-2...64, "
        "reconstruct the noise spectrum (VQNS), measure the sequence it suggests, "
        "reconstruct again; store every run, plot, report the hardware time")

DEFAULT_N = (2, 4, 8, 16, 32, 64)  # 64: the 1H line at 2.1 MHz lies inside the band
DEMO_RABI_FREQUENCY = 10e6  # Hz at 0 dBm: a 50 ns pi pulse, not the default 40 ns
CALIBRATION_SHOTS = 1_000_000


def calibrate_rig(session, nv_sim, *, show_truth=True):
    """Calibrate the demo rig at 0 dBm, searching +-2 mT around its nominal field."""
    import numpy as np

    from mracq.cli.cmd_calibrate import run_calibration
    from mracq.pulses.calibration import GAMMA_E, LEVEL_CROSSING_FIELD, line_frequency

    nominal = round(nv_sim.field, 2)
    centre = line_frequency(nominal)
    lo, hi = centre - GAMMA_E * 2e-3, centre + GAMMA_E * 2e-3
    print(f"calibrating (uncalibrated rig): line searched in {lo / 1e9:.4f}-{hi / 1e9:.4f} GHz")
    cal = run_calibration(session, lo, hi, power_dbm=0.0, shots=CALIBRATION_SHOTS,
                          coarse_points=61, fine_points=41, rabi_points=41,
                          ramsey_times=np.linspace(60e-9, 3e-6, 60),
                          above_crossing=nominal > LEVEL_CROSSING_FIELD)
    print(f"calibration: {cal.summary()}; the measurements below use it")
    if show_truth:
        print(f"  (simulated truth: resonance {nv_sim.transition_frequency / 1e9:.6f} GHz, "
              f"pi {nv_sim.pi_duration(0.0) * 1e9:.2f} ns)")
    return cal


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments, positive_int

    add_session_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="figure folder (default: DATA_DIR/figures)")
    parser.add_argument("--points", type=positive_int, default=20,
                        help="evolution times per curve, >= 2 (default 20)")
    parser.add_argument("--shots", type=positive_int, default=1_000_000,
                        help="shots per point, e.g. 1e6 (default 1e6)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated noise")
    parser.add_argument("--no-loop", action="store_true",
                        help="only the fixed FID/SE/CPMG ladder, no reconstruction")


def demo_times(label: str, points: int, larmor_hz: float | None = None):
    """Evolution times (s) suited to the default simulated NV for one sequence.

    With ``larmor_hz`` (the 1H Larmor frequency of the field in use, as an experimenter
    would compute it from B), a CPMG-n curve spends a quarter of its points around the
    time ``n / (2 f_L)`` where its filter passes that frequency, so that the nuclear peak
    is measured and not stepped over by the logarithmic grid.
    """
    import numpy as np

    if label == "fid":
        return np.geomspace(50e-9, 12e-6, points)
    if label == "se":
        return np.geomspace(1e-6, 60e-6, points)
    n = int(label.split("-")[1])  # T2 grows roughly as n^(1/2) for this bath
    lo, hi = max(1e-6, n * 100e-9), 50e-6 * n**0.5
    t_res = n / (2 * larmor_hz) if larmor_hz else 0.0
    n_res = points // 4 if lo < t_res < hi and points >= 8 else 0
    t = np.geomspace(lo, hi, points - n_res)
    if n_res:
        t = np.concatenate([t, t_res * np.linspace(0.95, 1.05, n_res)])
    return np.unique(t)


def _wired(config) -> bool:
    """True when the lab config drives the NV's mw and nv through vendor drivers (as
    ``mracq emulate nv`` prints); otherwise the demo simulates its instruments and takes
    only the storage and ``[sim]`` settings from the config."""
    drivers = [config.instruments.get(n, {}).get("driver") for n in ("mw", "nv")]
    return all(v not in (None, "sim", "visa") for v in drivers)


def run(args) -> int:
    import time

    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import (
        config_from_args,
        figure_dir,
        human_time,
        run_interruptibly,
        storage_from_args,
    )
    from mracq.config import validate_config

    if args.points < 2:
        raise CLIError(f"--points {args.points}: a curve needs at least 2 evolution times")
    if args.shots > 100_000_000:
        raise CLIError(f"--shots {args.shots:g}: at most 1e8 shots per point")
    t_wall = time.perf_counter()
    # --config / $MRACQ_CONFIG give the storage (data folder, server) and the simulation
    # settings; the instruments are the built-in simulated ones unless the config names
    # vendor drivers for the NV's mw and nv (an emulator or a rig: `mracq emulate nv`)
    lab = config_from_args(args)
    data_dir, url, key = storage_from_args(args)
    if _wired(lab):  # NV instruments with vendor drivers (`mracq emulate nv`): used as named
        config = lab
    else:
        raw = {"sim": {k: v for k, v in lab.sim.items() if v is not None}}
        if "rabi_frequency" not in (lab.raw or {}).get("sim", {}):
            # an uncalibrated rig: its Rabi frequency is not the 12.5 MHz the default 40 ns
            # pi pulses assume; the demo calibrates it first (and finds the line itself)
            raw["sim"]["rabi_frequency"] = DEMO_RABI_FREQUENCY
        if args.seed is not None:
            raw["sim"]["seed"] = args.seed
        config = validate_config(raw)  # before the heavy imports: a bad value fails fast
    from mracq.plans.coherence import coherence_scan
    from mracq.plans.vqns import family_of, vqns_loop
    from mracq.recon.vqns.strategy import DEFAULT_CANDIDATES, NextSequenceStrategy
    from mracq.session import make_session
    from mracq.viz import plot_coherence, plot_spectrum

    session = make_session(config, data_dir=data_dir, url=url, api_key=key)
    with session:
        d = session.devices
        nv_sim = getattr(d["nv"].transport, "nv", None)
        where, in_process = "simulated NV", nv_sim is not None
        if nv_sim is None:  # instruments over the wire (mracq emulate nv, or a real rig)
            from mracq.devices import nv_physics_models
            from mracq.sim.nv import SimulatedNV

            nv_sim = SimulatedNV(nv_physics_models(config.sim),
                                 field=config.sim.get("field", 0.05))
            where = f"NV through {d['nv'].transport.label} and {d['mw'].transport.label}"
        print(f"mracq demo: {where} near B = {nv_sim.field * 1e3:.0f} mT; data in "
              f"{session.data_dir}")
        calibrate_rig(session, nv_sim, show_truth=in_process)
        ladder = ["fid", "se"] + [f"cpmg-{n}" for n in DEFAULT_N]
        from mracq.sim.spectra import GAMMA_1H

        f_1h = GAMMA_1H * nv_sim.field / (2 * np.pi)
        initial = [(label, demo_times(label, args.points, f_1h)) for label in ladder]
        curves, scan_ids = [], []

        def record(res):  # each measurement: a line of output and a curve in the figure
            scan_id = session.catalog[res["uid"]].metadata["start"]["scan_id"]
            scan_ids.append(scan_id)
            curves.append(res)
            print(f"  scan {scan_id:>4}  {res['uid'][:8]}  {res['sequence']:<8} "
                  f"{len(res['t'])} points  hardware {human_time(res['hardware_time'])}")

        again = "`mracq demo` again (it starts over)"
        if args.no_loop:
            for label, times in initial:
                family, n = family_of(label)
                record(run_interruptibly(session, coherence_scan(d["nv"], family, times, n=n,
                                                                 shots=args.shots),
                                         _stopped(scan_ids), again=again).plan_result)
            loop = None
        else:
            strategy = NextSequenceStrategy(DEFAULT_CANDIDATES, initial=initial,
                                            n_points=args.points,
                                            max_measurements=len(initial) + 1,
                                            reconstruct_kw={"restarts": 100}, seed=args.seed)
            loop = run_interruptibly(session, vqns_loop(d["nv"], strategy, shots=args.shots,
                                                        on_scan=record),
                                     _stopped(scan_ids), again=again).plan_result
        out = figure_dir(args, session.data_dir)
        first, last = scan_ids[0], scan_ids[-1]
        png = out / f"demo-coherence-{first}-{last}.png"
        plot_coherence(curves, png, title=f"mracq demo: scans {first}-{last} (simulated NV)")
        hw = float(np.sum([c["hardware_time"] for c in curves]))
        print(f"runs stored: scans {first}-{last} in {session.url or session.data_dir}")
        print(f"figure: {png}")
        if loop is not None and loop["result"] is not None:
            result = loop["result"]
            spng = out / f"demo-spectrum-{first}-{last}.png"
            plot_spectrum(result, spng, truth=nv_sim.models[0].spectrum,
                          title=f"VQNS noise spectrum from scans {first}-{last}")
            print(f"closed loop: after {', '.join(loop['sequences'][:len(initial)])} the "
                  f"reconstruction asked for {loop['sequences'][-1]}; measured it and "
                  f"reconstructed again ({len(loop['estimate_uids'])} spectrum estimates "
                  f"stored, {result.runtime_s:.1f} s for the last)")
            print(f"spectrum: {spng}")
        print(f"simulated hardware time: {human_time(hw)} ({hw:.1f} s); "
              f"wall time {time.perf_counter() - t_wall:.1f} s")
        print("next: `mracq runs`, `mracq show -1`, `mracq shell`")
    return 0


def _stopped(scan_ids) -> str:
    done = (f"after {len(scan_ids)} complete runs (scans {scan_ids[0]}-{scan_ids[-1]})"
            if scan_ids else "before the first run was complete")
    return f"the demo, {done},"
