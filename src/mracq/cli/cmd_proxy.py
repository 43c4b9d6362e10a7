"""``mracq proxy``: forward 0MQ document streams from publishers to subscribers.

Publishers (sessions with ``publish=``) connect to the input, workers and viewers to the
output. Both listen on 127.0.0.1 unless an address says otherwise.
"""

from __future__ import annotations

HELP = "0MQ proxy for live document streams (loopback by default)"


def add_arguments(parser) -> None:
    parser.add_argument("--in", dest="in_address", metavar="ADDR", default="5577",
                        help="where publishers connect (default 5577 = tcp://127.0.0.1:5577)")
    parser.add_argument("--out", dest="out_address", metavar="ADDR", default="5578",
                        help="where subscribers connect (default 5578 = tcp://127.0.0.1:5578)")


def run(args) -> int:
    import signal

    from mracq.cli import CLIError
    from mracq.stream import StreamProxy

    try:
        proxy = StreamProxy(args.in_address, args.out_address)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    signal.signal(signal.SIGTERM, lambda *_: proxy.stop())
    print(f"mracq proxy: publishers -> {proxy.in_address}, subscribers <- "
          f"{proxy.out_address} (Ctrl-C stops)", flush=True)
    try:
        proxy.start()
    except KeyboardInterrupt:
        pass
    return 0
