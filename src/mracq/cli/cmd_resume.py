"""``mracq resume RUN``: go on with an adaptive run that a crash or an abort cut short."""

from __future__ import annotations

HELP = ("go on with an adaptive run cut short (cosy_adaptive): stored points are not "
        "measured again")

RESUMABLE = ("cosy_adaptive",)


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    parser.add_argument("run", help="uid, uid prefix (>= 5 chars), scan_id, or -N")
    add_session_arguments(parser)


def run(args) -> int:
    import numpy as np

    from mracq.cli import CLIError
    from mracq.cli.common import open_session
    from mracq.storage import RunNotFoundError, resume_state

    session = open_session(args)
    try:
        for uid in session.recovered:
            print(f"recovered run {uid[:8]} from its journal (the process had stopped)")
        try:
            state = resume_state(session.catalog, args.run)
        except RunNotFoundError as exc:
            raise CLIError(str(exc)) from exc
        start = state["start"]
        name = start.get("plan_name")
        if name not in RESUMABLE:
            raise CLIError(f"run {start['uid'][:8]} is a {name} run; `mracq resume` goes on "
                           f"with {', '.join(RESUMABLE)} runs (adaptive_multislice_scan and "
                           "vqns_loop: pass resume= in Python)")
        status = (state["stop"] or {}).get("exit_status")
        n_old = len(state["primary"].get("i", []))
        print(f"resuming {name} run {start['uid'][:8]} (scan {start.get('scan_id')}, "
              f"{status or 'not closed'}): {n_old} points stored")
        from mracq.plans.coherence import prepare_nv
        from mracq.plans.cosy import cosy_adaptive

        d = session.devices
        nv_sim = getattr(getattr(d["nv"], "transport", None), "nv", None)
        if nv_sim is not None:  # simulated NV: on resonance, as the demo does
            session.RE(prepare_nv(d["mw"], d["laser"], frequency=nv_sim.transition_frequency,
                                  power_dbm=0.0))
        kw = {k: v for k, v in (start.get("plan_args") or {}).items()}
        res = session.RE(cosy_adaptive(
            d["nv"], t1=np.asarray(start["t1_grid"]), t2=np.asarray(start["t2_grid"]),
            program_kw=start.get("program_kw") or {}, resume=state, **kw)).plan_result
        print(f"new run {res['uid'][:8]}: {res['n_points'] - n_old} new points, "
              f"{res['n_points']} in all; stopped: {res['stop_reason']}")
    finally:
        session.close()
    return 0
