"""``mracq runs``: list stored runs."""

from __future__ import annotations

HELP = "list stored runs, newest first"


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments, positive_int

    add_session_arguments(parser)
    parser.add_argument("-n", "--limit", type=positive_int, default=20,
                        help="how many (default 20)")


def run(args) -> int:
    from mracq.cli.common import open_store_from_args

    store = open_store_from_args(args)
    try:
        rows = store.list_runs(args.limit)
        if not rows:
            print("no runs stored yet (try `mracq demo`)")
            return 0
        print(f"{'scan':>5}  {'uid':8}  {'date':19}  {'plan':24} {'sequence':9} "
              f"{'points':>6}  status")
        for r in rows:
            events = "?" if r["num_events"] is None else r["num_events"]
            print(f"{r['scan_id'] or '':>5}  {(r['uid'] or '?')[:8]:8}  {r['date'] or '':19}  "
                  f"{(r['plan_name'] or '')[:24]:24} {r['sequence'] or '':9} {events:>6}  "
                  f"{r['exit_status'] or 'open/aborted'}")
    finally:
        store.close()
    return 0
