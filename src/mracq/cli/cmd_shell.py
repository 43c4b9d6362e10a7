"""``mracq shell``: IPython with a live session loaded."""

from __future__ import annotations

HELP = "start IPython with the session (RE, devices, plans, catalog) loaded"

BANNER = """mracq shell: data in {data_dir}
  RE        RunEngine (Ctrl-C pauses; RE.resume() / RE.abort())
  devices   {devices}   (also as names: {names})
  catalog   Tiled client of stored runs; clock: simulated hardware time
  live      every scan prints a table in nm, us, MHz, aN^2 (all measured columns);
            COSY image: RE(cosy_random_mask(nv, 0.1, live=LiveCosy()))
  plans     bp, bps (bluesky); NV: prepare_nv, coherence_scan, vqns_loop,
            cosy_random_mask, cosy_adaptive; MRFM: xyz_scan, multislice_scan,
            cs_multislice_scan, adaptive_multislice_scan
  example   RE(prepare_nv(mw, laser, frequency=1.46875e9, power_dbm=0))
            RE(coherence_scan(nv, "cpmg", np.geomspace(2e-6, 1e-3, 20), n=8))
"""


def add_arguments(parser) -> None:
    from mracq.cli.common import add_session_arguments

    add_session_arguments(parser)


def namespace(session) -> dict:
    """The names the shell starts with."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import numpy as np

    from mracq.plans import coherence, cosy, mrfm, vqns

    ns = {"session": session, "RE": session.RE, "catalog": session.catalog,
          "devices": session.devices, "clock": session.clock, "np": np, "bp": bp,
          "bps": bps}
    for module, names in ((coherence, ("coherence_scan", "prepare_nv")),
                          (vqns, ("vqns_loop",)),
                          (cosy, ("cosy_random_mask", "cosy_adaptive")),
                          (mrfm, ("xyz_scan", "multislice_scan", "cs_multislice_scan",
                                  "adaptive_multislice_scan"))):
        ns.update({n: getattr(module, n) for n in names})
    from mracq.viz import LiveCosy

    ns["LiveCosy"] = LiveCosy  # RE(cosy_random_mask(nv, 0.1, live=LiveCosy()))
    ns.update(session.devices)
    return ns


def run(args) -> int:
    from IPython import start_ipython

    from mracq.cli.common import open_session

    session = open_session(args)
    with session:
        # a live table in nm / us / MHz with every measured column (not bluesky's
        # BestEffortCallback, which prints nm positions in metres and skips arrays)
        import sys

        from mracq.cli.live import UnitTable

        session.tokens.append(session.RE.subscribe(UnitTable()))
        if sys.stdout.isatty():
            from bluesky.utils import ProgressBarManager

            session.RE.waiting_hook = ProgressBarManager()
        ns = namespace(session)
        print(BANNER.format(data_dir=session.data_dir, devices=", ".join(session.devices),
                            names=" ".join(session.devices)))
        start_ipython(argv=["--no-banner"], user_ns=ns)
    return 0
