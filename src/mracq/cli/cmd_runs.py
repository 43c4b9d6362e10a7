"""``mracq runs``: list stored runs."""

from __future__ import annotations

HELP = "list stored runs, newest first"


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    add_session_arguments(parser)
    parser.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")


def run(args) -> int:
    from mracq.cli.common import open_catalog_from_args
    from mracq.storage import close_catalog, list_runs

    client = open_catalog_from_args(args)
    try:
        rows = list_runs(client, args.limit)
        if not rows:
            print("no runs stored yet (try `mracq demo`)")
            return 0
        print(f"{'scan':>5}  {'uid':8}  {'date':19}  {'plan':22} {'sequence':9} "
              f"{'points':>6}  status")
        for r in rows:
            run_ = client[r["uid"]]
            seq = run_.metadata["start"].get("sequence", "")
            print(f"{r['scan_id'] or '':>5}  {r['uid'][:8]}  {r['date'] or '':19}  "
                  f"{(r['plan_name'] or '')[:22]:22} {seq:9} {r['num_events'] or 0:>6}  "
                  f"{r['exit_status'] or 'open/aborted'}")
    finally:
        close_catalog(client)
    return 0
