"""``mracq worker vqns|cosy|mrfm``: reconstruct live from a 0MQ document stream.

Subscribes to a proxy's output (``mracq proxy``; sessions publish with
``make_session(publish=...)``, commands with ``MRACQ_PUBLISH=5577 mracq ...``),
reconstructs the method's runs as their documents arrive, writes each estimate as a run
linked to its source runs (``source_uids``) to its own catalog, and publishes the
estimate documents back to the proxy. See :mod:`mracq.worker` for what is stored per
method.
"""

from __future__ import annotations

from mracq.cli.common import add_session_arguments

HELP = "reconstruct runs live from a 0MQ stream and store/publish the estimates"


def add_arguments(parser) -> None:
    parser.add_argument("method", choices=["vqns", "cosy", "mrfm"], help="what to reconstruct")
    parser.add_argument("--zmq", metavar="ADDR", default=None,
                        help="proxy output to subscribe to (default tcp://127.0.0.1:5578; "
                             "a bare port means 127.0.0.1)")
    parser.add_argument("--publish", metavar="ADDR", default=None,
                        help="proxy input for the estimates (default: the --zmq host, "
                             "port - 1)")
    parser.add_argument("--no-publish", action="store_true", help="do not publish estimates")
    parser.add_argument("--every", type=int, default=0, metavar="N",
                        help="cosy/mrfm: also reconstruct every N points (default: at the "
                             "end of each run only)")
    parser.add_argument("--restarts", type=int, default=None,
                        help="vqns: successful restarts per reconstruction (default 100)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="vqns: iteration cap per restart (default 1000)")
    parser.add_argument("--min-measurements", type=int, default=2,
                        help="vqns: decays needed before the first estimate (default 2)")
    parser.add_argument("--n-z", type=int, default=8, help="mrfm: layers to reconstruct")
    parser.add_argument("--n-iter", type=int, default=None, help="mrfm: ADMM iterations")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="exit after this many source runs have ended")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="exit after S seconds without a document (once one came)")
    add_session_arguments(parser)


def _options(args) -> dict:
    if args.method == "vqns":
        kw = {}
        if args.restarts is not None:
            kw["restarts"] = args.restarts
        if args.max_iter is not None:
            kw["max_iter"] = args.max_iter
        return {"min_measurements": args.min_measurements, "reconstruct_kw": kw,
                "seed": args.seed}
    if args.method == "cosy":
        return {"every": args.every}
    return {"every": args.every, "n_z": args.n_z, "n_iter": args.n_iter}


def run(args) -> int:
    import signal
    import threading
    from pathlib import Path

    from mracq.cli import CLIError
    from mracq.storage import close_catalog, default_data_dir, open_catalog
    from mracq.worker import serve

    if args.every < 0:
        raise CLIError("--every must be >= 0")
    data_dir = None
    if not args.url:
        data_dir = Path(args.data_dir) if args.data_dir else \
            default_data_dir().with_name(default_data_dir().name + "-worker")
    try:
        catalog = open_catalog(data_dir, url=args.url, api_key=args.api_key)
    except OSError as exc:
        raise CLIError(str(exc)) from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    where = args.url or data_dir
    publish = False if args.no_publish else args.publish

    def ready():
        print(f"mracq worker {args.method}: listening on {args.zmq or 'tcp://127.0.0.1:5578'}"
              f", estimates to {where}", flush=True)

    try:
        w = serve(args.method, args.zmq, catalog=catalog, publish=publish,
                  max_runs=args.max_runs, idle_timeout=args.idle_timeout, stop_event=stop,
                  on_ready=ready, **_options(args))
    except KeyboardInterrupt:
        print("mracq worker: interrupted", flush=True)
        return 130
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        close_catalog(catalog)
    print(f"mracq worker {args.method}: {w.documents} documents, {w.finished} runs, "
          f"{len(w.estimate_uids)} estimates, {w.errors} errors", flush=True)
    return 1 if w.errors else 0
