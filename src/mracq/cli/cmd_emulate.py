"""``mracq emulate nv``: an emulated NV rig on loopback, for rehearsing a lab config."""

from __future__ import annotations

HELP = ("start instrument emulators that speak the real protocols (R&S/Keysight SCPI, "
        "Pulse Streamer 8/2, NI-DAQmx gRPC) around one simulated NV; print the lab config")


def add_arguments(parser) -> None:
    parser.add_argument("rig", choices=["nv"], help="which rig to emulate")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulated NV")
    parser.add_argument("--model", default="rs_sgs100a",
                        choices=["rs_sgs100a", "rs_smb100a", "keysight_n5183b",
                                 "keysight_n5172b"], help="microwave source model")
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
    parser.add_argument("--config-out", metavar="FILE",
                        help="write the lab config here (default: a file in the temp folder)")


def run(args) -> int:
    import logging
    import os
    import signal
    import tempfile
    import threading
    from pathlib import Path

    from mracq.cli import CLIError
    from mracq.emulators.control import start_nv_rig

    log = logging.getLogger("mracq.emulate")
    sim = {"seed": args.seed}
    try:
        rig = start_nv_rig(sim, host=args.host, pulser_host=args.pulser_host,
                           mw_port=args.mw_port, counter_port=args.counter_port,
                           control_port=args.control_port, model=args.model)
    except OSError as exc:
        raise CLIError(f"cannot start the emulators: {exc} (the Pulse Streamer needs ports "
                       "8050 and 21328: is another emulator running? try --pulser-host "
                       "127.0.0.2)") from None
    text = rig.lab_config({k: v for k, v in sim.items() if v is not None})
    if args.config_out:
        path = Path(args.config_out)
    else:
        fd, name = tempfile.mkstemp(prefix="mracq-emulated-nv-", suffix=".toml")
        os.close(fd)
        path = Path(name)
    path.write_text(text)
    print(text, end="")
    print(f"# lab config written to {path}")
    print(f"# try: mracq demo --config {path}")
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
