"""``mracq emulate nv|mrfm``: an emulated NV or MRFM rig on loopback, for rehearsing a lab
config."""

from __future__ import annotations

HELP = ("start instrument emulators that speak the real protocols around one simulated NV "
        "(R&S/Keysight SCPI, Pulse Streamer 8/2, NI-DAQmx gRPC) or MRFM sample (attocube "
        "AMC or PI GCS positioner, SR860 lock-in, SCPI rf source); print the lab config")


def add_arguments(parser) -> None:
    parser.add_argument("rig", choices=["nv", "mrfm"], help="which rig to emulate")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated NV")
    parser.add_argument("--model", default="rs_sgs100a",
                        choices=["rs_sgs100a", "rs_smb100a", "keysight_n5183b",
                                 "keysight_n5172b"], help="microwave source model (nv)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default loopback only)")
    parser.add_argument("--pulser-host", default=None,
                        help="address of the Pulse Streamer (fixed ports 8050/21328; "
                             "127.0.0.2, ... are loopback too); default --host")
    parser.add_argument("--mw-port", type=int, default=0, help="SCPI port (default: free)")
    parser.add_argument("--counter-port", type=int, default=0,
                        help="gRPC port of the counter (default: free)")
    parser.add_argument("--control-port", type=int, default=0,
                        help="fault-injection control port (default: free)")
    g = parser.add_argument_group("mrfm (units: nm, s)")
    g.add_argument("--positioner", choices=["attocube_amc", "pi_gcs"], default="attocube_amc",
                   help="positioner protocol: attocube AMC100 JSON-RPC or PI E-727 GCS")
    g.add_argument("--rf-model", default="rs_smb100a",
                   choices=["rs_smb100a", "keysight_n5183b", "keysight_n5172b"],
                   help="rf source (SCPI with FM)")
    g.add_argument("--n-xy", type=int, default=32, help="sample grid, positions per axis")
    g.add_argument("--step", type=float, default=4.0, metavar="NM", help="voxel edge, nm")
    g.add_argument("--n-z", type=int, default=12, help="sample layers")
    g.add_argument("--geometry", choices=["membrane", "cantilever"], default="membrane")
    g.add_argument("--phantom-seed", type=int, default=1, help="seed of the sphere phantom")
    g.add_argument("--time-scale", type=float, default=1.0,
                   help="wall seconds per instrument second (moves, captures); < 1 rehearses "
                        "faster than real time")
    g.add_argument("--scanner-port", type=int, default=0, help="positioner port (default free)")
    g.add_argument("--lockin-port", type=int, default=0, help="lock-in port (default free)")
    g.add_argument("--rf-port", type=int, default=0, help="rf source port (default free)")
    g.add_argument("--state", metavar="FILE", default=None,
                   help="keep the positioner's place here across restarts")
    parser.add_argument("--config-out", metavar="FILE",
                        help="write the lab config here (default: a file in the temp folder)")


def run(args) -> int:
    from mracq.cli import CLIError
    from mracq.emulators.control import start_nv_rig

    sim = {"seed": args.seed}
    if args.rig == "mrfm":
        from mracq.emulators.mrfm_rig import start_mrfm_rig

        if not (args.time_scale > 0 and args.step > 0 and args.n_xy >= 4 and args.n_z >= 1):
            raise CLIError("--time-scale and --step must be positive, --n-xy >= 4, --n-z >= 1")
        msim = {"seed": args.seed, "n_xy": args.n_xy, "voxel_size": args.step * 1e-9,
                "n_z": args.n_z, "geometry": args.geometry, "phantom_seed": args.phantom_seed,
                "time_scale": args.time_scale}
        try:
            rig = start_mrfm_rig(msim, host=args.host, positioner=args.positioner,
                                 rf_model=args.rf_model, scanner_port=args.scanner_port,
                                 lockin_port=args.lockin_port, rf_port=args.rf_port,
                                 control_port=args.control_port, state_file=args.state)
        except OSError as exc:
            raise CLIError(f"cannot start the emulators: {exc}") from None
        return _serve(rig, rig.lab_config(), args, "mrfm", "mracq shell --config")
    try:
        rig = start_nv_rig(sim, host=args.host, pulser_host=args.pulser_host,
                           mw_port=args.mw_port, counter_port=args.counter_port,
                           control_port=args.control_port, model=args.model)
    except OSError as exc:
        raise CLIError(f"cannot start the emulators: {exc} (the Pulse Streamer needs ports "
                       "8050 and 21328: is another emulator running? try --pulser-host "
                       "127.0.0.2)") from None
    text = rig.lab_config({k: v for k, v in sim.items() if v is not None})
    return _serve(rig, text, args, "nv", "mracq demo --config")


def _serve(rig, text, args, kind, try_cmd) -> int:
    """Write and print the lab config, serve until Ctrl-C or SIGTERM, stop the emulators."""
    import logging
    import os
    import signal
    import tempfile
    import threading
    from pathlib import Path

    log = logging.getLogger("mracq.emulate")
    if args.config_out:
        path = Path(args.config_out)
    else:
        fd, name = tempfile.mkstemp(prefix=f"mracq-emulated-{kind}-", suffix=".toml")
        os.close(fd)
        path = Path(name)
    path.write_text(text)
    print(text, end="")
    print(f"# lab config written to {path}")
    print(f"# try: {try_cmd} {path}")
    print("# Ctrl-C stops the emulators", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        rig.close()
        log.info("emulators stopped")
    return 0
