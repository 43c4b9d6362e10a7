"""``mracq qserver-profile DIR``: a bluesky-queueserver startup folder for mracq.

Writes ``DIR/00-mracq.py`` (a session, its devices, the queueable plans) and
``DIR/user_group_permissions.yaml``, then prints the commands that start Redis and the
RE Manager on loopback.
"""

from __future__ import annotations

from pathlib import Path

HELP = "write a bluesky-queueserver startup profile (devices, plans, permissions)"


def add_arguments(parser) -> None:
    parser.add_argument("dir", type=Path, help="startup folder to write")
    parser.add_argument("--publish", metavar="ADDR", default=None,
                        help="also publish every document to this 0MQ proxy input")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    g = parser.add_argument_group("session")
    g.add_argument("--config", metavar="TOML", help="lab configuration file")
    g.add_argument("--data-dir", metavar="DIR", help="embedded catalog folder for the runs")
    g.add_argument("--url", metavar="URL", help="a Tiled server instead")


def run(args) -> int:
    from mracq.cli import CLIError
    from mracq.qserver import PLANS, write_profile

    if args.config and not Path(args.config).is_file():
        raise CLIError(f"{args.config}: no such file")
    try:
        files = write_profile(args.dir, config=args.config, data_dir=args.data_dir,
                              url=args.url, publish=args.publish, overwrite=args.force)
    except FileExistsError as exc:
        raise CLIError(f"{exc}; use --force") from exc
    d = args.dir.expanduser().absolute()
    print("wrote " + ", ".join(str(f) for f in files))
    print(f"plans: {', '.join(PLANS)}, count, scan")
    print("start (loopback only):")
    print('  redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no &')
    print(f"  start-re-manager --startup-dir {d} --redis-addr 127.0.0.1:6379 "
          "--zmq-control-addr tcp://127.0.0.1:60615 --zmq-info-addr tcp://127.0.0.1:60625")
    print("  qserver environment open && qserver status")
    return 0
